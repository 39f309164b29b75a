//! Quilt patches on the disk tier (issue 16): a patch read from a cold quilt's columns is kept
//! on disk under its patch ID, and a later read, after a restart too, is a disk hit that asks
//! no node; a damaged patch file (flipped, torn, truncated) is never served, it is quarantined
//! and the patch fetched from its columns again (503 with the nodes down); a patch file whose
//! content was changed with its checksums rewritten is found by the scrub, which checks it
//! against the quilt ID; and a cache directory written before patches existed is served as it
//! is, beside the new patch files.

mod harness;

use codec::quilt::{encode_quilt, PatchInput, QuiltPatchId};
use codec::{BlobId, EncodingConfig};
use gateway::GatewayConfig;
use harness::{blob, blob_file, config, Scenario};
use http::{Method, StatusCode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

const TOKEN: &str = "test-admin-token";
const HEADER: usize = 128;

fn tiered(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        cache_dir: Some(dir.to_path_buf()),
        admin_token: Some(TOKEN.into()),
        ..config()
    }
}

fn scrubbing(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        scrub_rate: 1 << 30,
        ..tiered(dir)
    }
}

fn ten_shards() -> SimConfig {
    SimConfig {
        n_shards: 10,
        ..SimConfig::default()
    }
}

/// Patches `a` (2 kB, tagged), `b` (30 kB: several columns) and `c` (300 bytes), stored as one
/// quilt on the nodes directly; each patch's identifier, bytes and ID.
async fn stored_quilt(s: &Scenario) -> (BlobId, Vec<(String, Vec<u8>, QuiltPatchId)>) {
    let files = [("a", 2_000, 1), ("b", 30_000, 2), ("c", 300, 3)];
    let data: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(name, len, seed)| (name.to_string(), blob(*len, 900 + seed)))
        .collect();
    let inputs: Vec<PatchInput<'_>> = data
        .iter()
        .map(|(name, bytes)| PatchInput {
            identifier: name.clone(),
            tags: match name.as_str() {
                "a" => [("content-type".to_string(), "text/plain".to_string())].into(),
                _ => BTreeMap::new(),
            },
            data: bytes,
        })
        .collect();
    let quilt = encode_quilt(&EncodingConfig::new(10).unwrap(), &inputs).unwrap();
    let quilt_id = s.store(&quilt.data).await;
    let ids = quilt.patch_ids(quilt_id);
    let out = data
        .into_iter()
        .map(|(name, bytes)| {
            let id = ids.iter().find(|(n, _)| *n == name).unwrap().1;
            (name, bytes, id)
        })
        .collect();
    (quilt_id, out)
}

fn patch_file(dir: &Path, id: &QuiltPatchId) -> PathBuf {
    let name = id.to_string();
    dir.join("patches").join(&name[..2]).join(name)
}

fn by_id(id: &QuiltPatchId) -> String {
    format!("/v1/blobs/by-quilt-patch-id/{id}")
}

async fn admin_cache(s: &Scenario) -> serde_json::Value {
    harness::admin_cache(s, TOKEN).await
}

/// Wait (boundedly) until the disk tier indexes `patches` patch files, and the index is ready.
async fn wait_patches(s: &Scenario, patches: u64) -> serde_json::Value {
    for _ in 0..1000 {
        let stats = admin_cache(s).await;
        if stats["disk"]["index_ready"] == true && stats["disk"]["patch_entries"] == patches {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the disk tier never held {patches} patches");
}

async fn all_nodes(s: &Scenario, offline: bool) {
    for node in 0..s.net.committee().nodes.len() {
        let faults = NodeFaults {
            offline,
            ..NodeFaults::default()
        };
        s.faults(node, faults).await;
    }
}

async fn count(s: &Scenario, series: &str) -> u64 {
    s.metric(series).await.unwrap_or(0.0) as u64
}

fn crc32c(bytes: &[u8]) -> [u8; 4] {
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32).to_le_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_patch_is_kept_on_disk_and_read_after_a_restart_without_a_node_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let (quilt_id, patches) = stored_quilt(&s).await;
    let (_, a, a_id) = &patches[0];
    let (_, b, b_id) = &patches[1];

    // Cold: index and patch columns from the nodes; kept in memory and on disk.
    let reply = s.get(&by_id(a_id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &a[..]);
    // By identifier: the index is known now, only the patch's columns are fetched.
    let reply = s.get(&format!("/v1/blobs/by-quilt-id/{quilt_id}/b")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &b[..]);
    let stats = wait_patches(&s, 2).await;
    let listed: Vec<&str> = stats["disk"]["top_patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patch_id"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&a_id.to_string().as_str()), "{stats}");
    assert!(listed.contains(&b_id.to_string().as_str()), "{stats}");
    assert_eq!(
        stats["disk"]["blob_entries"], 0,
        "the quilt is not cached whole"
    );
    // Published once each write has been made durable (after it was indexed).
    assert!(
        s.wait_for_metric("gateway_disk_cache_kind_entries{kind=\"patch\"}", 2.0)
            .await
    );
    assert_eq!(
        count(&s, "gateway_disk_cache_writes_total{kind=\"patch\"}").await,
        2
    );
    assert_eq!(
        count(&s, "gateway_disk_cache_kind_entries{kind=\"blob\"}").await,
        0
    );
    assert!(patch_file(dir.path(), a_id).exists());
    assert!(!blob_file(dir.path(), &quilt_id).exists());

    // After a restart: a disk hit, and no node hears of it.
    s.restart_gateway(tiered(dir.path())).await;
    wait_patches(&s, 2).await;
    let before = s.counters();
    let reply = s.get(&by_id(a_id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-cache"), Some("hit-disk"));
    assert_eq!(reply.header("x-quilt-patch-identifier"), Some("a"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("etag"), Some(format!("\"{a_id}\"").as_str()));
    assert_eq!(reply.bytes().as_ref(), &a[..]);
    let range = s
        .request(Method::GET, &by_id(b_id), &[("range", "bytes=20000-20999")])
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.header("x-cache"), Some("hit-disk"));
    assert_eq!(range.bytes().as_ref(), &b[20_000..21_000]);
    assert_eq!(s.counters(), before, "a disk hit asked a node");
    assert_eq!(
        count(&s, "gateway_quilt_patch_reads_total{source=\"hit-disk\"}").await,
        2
    );
    // Promoted to memory.
    let again = s.get(&by_id(a_id)).await;
    assert_eq!(again.header("x-cache"), Some("hit-memory"));
    assert_eq!(s.counters(), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_torn_and_truncated_patch_files_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let (_, patches) = stored_quilt(&s).await;
    let (_, b, b_id) = &patches[1];
    let path = patch_file(dir.path(), b_id);
    let reply = s.get(&by_id(b_id)).await;
    assert_eq!(reply.bytes().as_ref(), &b[..]);
    wait_patches(&s, 1).await;
    let good = std::fs::read(&path).unwrap();
    let content = good.len() - HEADER - 4;

    for (round, damage) in ["flip", "torn", "truncate"].into_iter().enumerate() {
        s.stop_gateway().await;
        let mut bytes = good.clone();
        match damage {
            "flip" => bytes[HEADER + content - 100] ^= 0x08,
            // The tail of the content never reached the device; the size is right.
            "torn" => bytes[HEADER + content - 4096..HEADER + content].fill(0),
            _ => bytes.truncate(HEADER + content / 2),
        }
        std::fs::write(&path, &bytes).unwrap();
        // The first damage is met with the nodes down: nothing else can answer.
        let nodes_down = round == 0;
        all_nodes(&s, nodes_down).await;
        s.restart_gateway(tiered(dir.path())).await;
        // Once the rebuild has looked at the file (a truncated one it quarantines itself).
        harness::wait_disk_indexed(&s, TOKEN).await;
        let reply = s.get(&by_id(b_id)).await;
        if nodes_down {
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{damage}");
            assert!(!path.exists(), "{damage}: the bad file is still in place");
            all_nodes(&s, false).await;
            let reply = s.get(&by_id(b_id)).await;
            assert_eq!(reply.status, StatusCode::OK, "{damage}");
            assert_eq!(reply.header("x-cache"), Some("miss"), "{damage}");
            assert_eq!(reply.bytes().as_ref(), &b[..], "{damage}");
        } else {
            assert_eq!(reply.status, StatusCode::OK, "{damage}");
            assert_eq!(reply.header("x-cache"), Some("miss"), "{damage}");
            assert_eq!(reply.bytes().as_ref(), &b[..], "{damage}");
        }
        assert_eq!(
            count(&s, "gateway_disk_cache_integrity_failures_total").await,
            1,
            "{damage}"
        );
        // Refetched from its columns and written again, as it was.
        wait_patches(&s, 1).await;
        assert_eq!(std::fs::read(&path).unwrap(), good, "{damage}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        3
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_rewritten_with_its_checksums_is_found_by_the_scrub_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let (_, patches) = stored_quilt(&s).await;
    for (_, bytes, id) in &patches[..2] {
        assert_eq!(s.get(&by_id(id)).await.bytes().as_ref(), &bytes[..]);
    }
    wait_patches(&s, 2).await;
    s.stop_gateway().await;

    // Change a data byte of patch `b`, then make every per-read check agree: the chunk's
    // CRC32C and the header's BLAKE3 over the header and the table. Only the quilt ID can tell.
    let (_, b, b_id) = &patches[1];
    let path = patch_file(dir.path(), b_id);
    let mut bytes = std::fs::read(&path).unwrap();
    let table = bytes.len() - 4;
    bytes[table - 5000] ^= 0x20;
    let sum = crc32c(&bytes[HEADER..table]);
    bytes[table..].copy_from_slice(&sum);
    let mut check = blake3::Hasher::new();
    check.update(&bytes[..88]);
    check.update(&bytes[table..]);
    bytes[88..120].copy_from_slice(check.finalize().as_bytes());
    std::fs::write(&path, &bytes).unwrap();

    // The restarted gateway scrubs at once: `b` fails against its quilt's columns, `a` passes.
    s.restart_gateway(scrubbing(dir.path())).await;
    assert!(
        s.wait_for_metric(
            "gateway_disk_scrub_kind_failures_total{kind=\"patch\"}",
            1.0
        )
        .await,
        "the scrub never failed the patch file"
    );
    assert!(
        s.wait_for_metric("gateway_disk_scrub_kind_files_total{kind=\"patch\"}", 1.0)
            .await,
        "the scrub never verified the good patch file"
    );
    assert!(!path.exists(), "tampered file still in place");
    let stats = admin_cache(&s).await;
    assert_eq!(stats["disk"]["patch_entries"], 1, "{stats}");
    assert_eq!(stats["disk"]["scrub"]["failures"], 1, "{stats}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
    // Never served after: the next read fetches its columns, with the right bytes.
    let reply = s.get(&by_id(b_id)).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &b[..]);
    let (_, a, a_id) = &patches[0];
    let reply = s.get(&by_id(a_id)).await;
    assert_eq!(reply.header("x-cache"), Some("hit-disk"));
    assert_eq!(reply.bytes().as_ref(), &a[..]);
    s.stop().await;
}

/// The fixture's blobs (`tests/fixtures/disk-v2`): Blob ID, length, and the rule its bytes
/// follow.
const V2_BLOBS: [(&str, usize, u64, u64); 2] = [
    ("UWRSE-ZVxSlUCpd9uAs9B9JXjN6_04sBtpUNbqSh8Rg", 70_000, 17, 5),
    ("aJaZJt0ReQytpqQx-ikwOXiiF0Hpx1ID1yrU-p5nlUs", 5000, 29, 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_written_before_patches_is_served_unchanged_beside_patch_files() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = harness::copy_fixture_blobs("disk-v2", V2_BLOBS.map(|b| b.0), dir.path());
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let (_, patches) = stored_quilt(&s).await;
    let (_, c, c_id) = &patches[2];
    assert_eq!(s.get(&by_id(c_id)).await.bytes().as_ref(), &c[..]);
    wait_patches(&s, 1).await;

    // Nodes down, gateway restarted: only the disk tier can answer, for both kinds.
    all_nodes(&s, true).await;
    s.restart_gateway(tiered(dir.path())).await;
    let stats = wait_patches(&s, 1).await;
    assert_eq!(stats["disk"]["blob_entries"], 2, "{stats}");
    for (text, len, mul, add) in V2_BLOBS {
        let want: Vec<u8> = (0..len as u64).map(|i| (i * mul + add) as u8).collect();
        // The content is what these IDs commit to, so the fixture is a real cache.
        let meta = codec::compute_metadata(&EncodingConfig::new(10).unwrap(), &want).unwrap();
        assert_eq!(meta.blob_id().to_string(), text);
        let reply = s.get(&format!("/v1/blobs/{text}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{text}");
        assert_eq!(reply.header("x-cache"), Some("hit-disk"), "{text}");
        assert_eq!(reply.bytes().as_ref(), &want[..], "{text}");
    }
    let reply = s.get(&by_id(c_id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-cache"), Some("hit-disk"));
    assert_eq!(reply.bytes().as_ref(), &c[..]);
    assert_eq!(
        count(&s, "gateway_disk_cache_integrity_failures_total").await,
        0
    );
    // The blob files were not rewritten.
    for (text, ..) in V2_BLOBS {
        let id: BlobId = text.parse().unwrap();
        assert_eq!(
            std::fs::read(blob_file(dir.path(), &id)).unwrap(),
            std::fs::read(blob_file(&fixture, &id)).unwrap()
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_quilt_takes_its_patches_off_the_disk_and_they_answer_451() {
    let dir = tempfile::tempdir().unwrap();
    let list_dir = tempfile::tempdir().unwrap();
    let list = list_dir.path().join("blocklist.yaml");
    std::fs::write(&list, "[]\n").unwrap();
    let listed = GatewayConfig {
        blocklist: Some(list.clone()),
        ..tiered(dir.path())
    };
    let mut s = Scenario::with(ten_shards(), listed.clone()).await;
    let (quilt_id, patches) = stored_quilt(&s).await;
    for (_, bytes, id) in &patches[..2] {
        assert_eq!(s.get(&by_id(id)).await.bytes().as_ref(), &bytes[..]);
    }
    wait_patches(&s, 2).await;
    let auth = format!("Bearer {TOKEN}");
    let reply = s
        .request(
            Method::PUT,
            &format!("/admin/blocklist/{quilt_id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Purged from the disk tier at once: files and what was kept beside them.
    let stats = admin_cache(&s).await;
    assert_eq!(stats["disk"]["patch_entries"], 0, "{stats}");
    for (_, _, id) in &patches[..2] {
        assert!(!patch_file(dir.path(), id).exists());
        assert!(!dir.path().join("meta").join(id.to_string()).exists());
    }
    // Refused from every tier, by either route, after a restart too.
    for restart in [false, true] {
        if restart {
            s.restart_gateway(listed.clone()).await;
        }
        for (_, _, id) in &patches {
            let reply = s.get(&by_id(id)).await;
            assert_eq!(reply.status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
        }
        let reply = s.get(&format!("/v1/blobs/by-quilt-id/{quilt_id}/a")).await;
        assert_eq!(reply.status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    }
    assert_eq!(wait_patches(&s, 0).await["disk"]["entries"], 0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_quilt_takes_its_patches_out_of_memory_and_off_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let (quilt_id, patches) = stored_quilt(&s).await;
    let (_, a, a_id) = &patches[0];
    assert_eq!(s.get(&by_id(a_id)).await.header("x-cache"), Some("miss"));
    wait_patches(&s, 1).await;
    assert_eq!(
        s.get(&by_id(a_id)).await.header("x-cache"),
        Some("hit-memory")
    );

    let auth = format!("Bearer {TOKEN}");
    let reply = s
        .request(
            Method::DELETE,
            &format!("/admin/cache/{quilt_id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(admin_cache(&s).await["disk"]["patch_entries"], 0);
    assert!(!patch_file(dir.path(), a_id).exists());

    // Neither tier has it now: the read goes back to the nodes for the index and the columns.
    let before = s.counters();
    let reply = s.get(&by_id(a_id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &a[..]);
    assert_ne!(
        s.counters(),
        before,
        "a purged patch was served without the nodes"
    );
    s.stop().await;
}
