//! The disk tier's integrity rules (issue 18): a torn final chunk is never served; a file whose
//! checksums were rewritten to match corrupted content is found by the scrub, quarantined and
//! refilled, and never served after; a cache directory written by the release before format 2
//! is served after the upgrade.

mod harness;

use codec::BlobId;
use gateway::GatewayConfig;
use harness::{blob, blob_file, config, Scenario};
use http::{Method, StatusCode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use storage_sim::{NodeFaults, SimConfig};

const TOKEN: &str = "test-admin-token";
const HEADER: usize = 128;
const CHUNK: usize = 1 << 20;

fn tiered(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        cache_dir: Some(dir.to_path_buf()),
        admin_token: Some(TOKEN.into()),
        ..config()
    }
}

fn ten_shards() -> SimConfig {
    SimConfig {
        n_shards: 10,
        ..SimConfig::default()
    }
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

/// Wait (boundedly) until the file of a blob of `len` bytes (format 2) is in place.
async fn wait_for_file(path: &Path, len: usize) {
    let size = (HEADER + len + 4 * len.div_ceil(CHUNK)) as u64;
    for _ in 0..1000 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

async fn admin_cache(s: &Scenario) -> serde_json::Value {
    harness::admin_cache(s, TOKEN).await
}

fn crc32c(bytes: &[u8]) -> [u8; 4] {
    (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32).to_le_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_chunk_is_never_served_then_refilled_or_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let len = CHUNK + CHUNK / 2;
    let data = blob(len, 11);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let path = blob_file(dir.path(), &id);
    wait_for_file(&path, len).await;
    s.stop_gateway().await;
    // A torn write: the tail of the final chunk never reached the device (zeros), the size is
    // as it should be.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER + len - 4096..HEADER + len].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    all_nodes(&s, true).await;
    s.restart_gateway(tiered(dir.path())).await;
    harness::wait_disk_indexed(&s, TOKEN).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!path.exists(), "torn file still in place");
    assert_eq!(
        s.metric("gateway_disk_cache_integrity_failures_total")
            .await,
        Some(1.0)
    );
    // A range inside the intact first chunk is no hit either: the file is gone.
    let range = s
        .request(
            Method::GET,
            &format!("/v1/blobs/{id}"),
            &[("range", "bytes=0-99")],
        )
        .await;
    assert_eq!(range.status, StatusCode::SERVICE_UNAVAILABLE);

    all_nodes(&s, false).await;
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    wait_for_file(&path, len).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_checksum_table_is_found_by_the_scrub_quarantined_and_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let len = CHUNK + 300_000;
    let data = blob(len, 12);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let path = blob_file(dir.path(), &id);
    wait_for_file(&path, len).await;
    s.stop_gateway().await;

    // Corrupt a byte of chunk 1, then make every per-read check agree: its CRC32C in the table
    // and the header's BLAKE3 over the header and the table. Only the Blob ID can tell now.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER + CHUNK + 777] ^= 0x20;
    let table = HEADER + len;
    let sum = crc32c(&bytes[HEADER + CHUNK..HEADER + len]);
    bytes[table + 4..table + 8].copy_from_slice(&sum);
    let mut check = blake3::Hasher::new();
    check.update(&bytes[..88]);
    check.update(&bytes[table..]);
    bytes[88..120].copy_from_slice(check.finalize().as_bytes());
    std::fs::write(&path, &bytes).unwrap();

    // The restarted gateway scrubs at once (its first pass starts when the index is ready).
    let scrubbing = GatewayConfig {
        scrub_rate: 1 << 30,
        ..tiered(dir.path())
    };
    s.restart_gateway(scrubbing).await;
    assert!(
        s.wait_for_metric("gateway_disk_scrub_failures_total", 1.0)
            .await,
        "the scrub never failed the file"
    );
    assert!(!path.exists(), "tampered file still in place");
    let stats = admin_cache(&s).await;
    assert_eq!(stats["disk"]["scrub"]["failures"], 1, "{stats}");
    assert_eq!(stats["disk"]["entries"], 0, "{stats}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count(),
        1
    );

    // Never served after: the next read refills from the nodes, with the right bytes.
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    wait_for_file(&path, len).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_verifies_good_files_and_keeps_their_metadata_beside_them() {
    let dir = tempfile::tempdir().unwrap();
    let scrubbing = GatewayConfig {
        scrub_rate: 1 << 30,
        ..tiered(dir.path())
    };
    let s = Scenario::with(ten_shards(), scrubbing).await;
    let data = blob(300_000, 13);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    wait_for_file(&blob_file(dir.path(), &id), data.len()).await;
    // The first pass ran on an empty index; a second one (after its interval) is not awaited
    // here: check the file the way the scrub does, through the same code, from the library.
    let disk = s.api().filler().cache().disk().unwrap().clone();
    let meta = codec::compute_metadata(&codec::EncodingConfig::new(10).unwrap(), &data).unwrap();
    let outcome = tokio::task::spawn_blocking(move || {
        disk.store_metadata(&meta).unwrap();
        disk.scrub_file(&id, &meta, 0).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        outcome,
        gateway::disk::ScrubOutcome::Verified {
            bytes: data.len() as u64
        }
    );
    assert!(dir.path().join("meta").join(id.to_string()).exists());
    assert_eq!(s.metric("gateway_disk_scrub_files_total").await, Some(1.0));
    s.stop().await;
}

/// The fixture's blobs: Blob ID, length, and the rule its bytes follow.
const V1_BLOBS: [(&str, usize, u64, u64); 2] = [
    (
        "VBqM5CsXNhScpgDZxab4-g8jqRW5cf2j7rHspy_auyY",
        1572864,
        31,
        7,
    ),
    ("aLVbMiwMeggirYfOQXs5bXPTEJIhgJDCg2Zrez-wHYU", 4000, 131, 3),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_written_before_format_2_is_served_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    harness::copy_fixture_blobs("disk-v1", V1_BLOBS.map(|b| b.0), dir.path());
    // The nodes never held these blobs. The scrub is on: with no metadata to be had for them
    // (the nodes say they do not exist), it counts both files unscrubbable and leaves them
    // served.
    let scrubbing = GatewayConfig {
        scrub_rate: 1 << 30,
        ..tiered(dir.path())
    };
    let s = Scenario::with(ten_shards(), scrubbing).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.metric("gateway_disk_scrub_unscrubbable_total").await != Some(2.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the scrub never gave up on the old files"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nodes down too: only the old files can answer.
    all_nodes(&s, true).await;
    for (text, len, mul, add) in V1_BLOBS {
        let want: Vec<u8> = (0..len as u64).map(|i| (i * mul + add) as u8).collect();
        // The content is what these IDs commit to, so the fixture is a real cache.
        let meta =
            codec::compute_metadata(&codec::EncodingConfig::new(10).unwrap(), &want).unwrap();
        assert_eq!(meta.blob_id().to_string(), text);
        let reply = s.get(&format!("/v1/blobs/{text}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{text}");
        assert_eq!(reply.header("x-cache"), Some("hit-disk"), "{text}");
        assert_eq!(reply.bytes().as_ref(), &want[..], "{text}");
        let range = s
            .request(
                Method::GET,
                &format!("/v1/blobs/{text}"),
                &[("range", "bytes=1000-2999")],
            )
            .await;
        assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(range.bytes().as_ref(), &want[1000..3000]);
    }
    let failures = s
        .metric("gateway_disk_cache_integrity_failures_total")
        .await;
    assert_eq!(failures.unwrap_or(0.0), 0.0);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The scrub's kept suffix covers (issue 18): the first full check of a file keeps each row's
// cover in its meta file; later passes check with it; a forged node quarantines the file (never
// a silent pass) and is dropped; a damaged meta file is fetched again, not blamed on the blob.

/// Byte offset of the first cover node in a meta file with covers, and its row count and nodes
/// per row (layout in `gateway::disk::scrub`).
fn meta_covers(meta_file: &[u8]) -> Option<(usize, u32, u16)> {
    if meta_file.get(..8)? != b"WGMETA\0\x02" {
        return None;
    }
    let body = u32::from_le_bytes(meta_file[8..12].try_into().unwrap()) as usize;
    let at = 12 + body;
    let rows = u32::from_le_bytes(meta_file[at..at + 4].try_into().unwrap());
    let per_row = u16::from_le_bytes(meta_file[at + 4..at + 6].try_into().unwrap());
    Some((at + 8, rows, per_row))
}

/// Flip one bit of cover node `node`; with `fix_sum`, recompute the file's CRC32C as someone who
/// can write the cache directory would.
fn forge_cover(path: &Path, node: usize, fix_sum: bool) {
    let mut bytes = std::fs::read(path).unwrap();
    let (first, ..) = meta_covers(&bytes).expect("covers kept");
    bytes[first + 32 * node + 5] ^= 0x04;
    if fix_sum {
        let end = bytes.len() - 4;
        let sum = crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&sum);
    }
    std::fs::write(path, &bytes).unwrap();
}

/// Change one content byte at `at` and make every per-read check agree (the chunk's CRC32C and
/// the header's BLAKE3 over the header and table).
fn rewrite_with_checksums(path: &Path, len: usize, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[HEADER + at] ^= 0x10;
    let chunk = at / CHUNK;
    let table = HEADER + len;
    let end = (HEADER + (chunk + 1) * CHUNK).min(HEADER + len);
    let sum = crc32c(&bytes[HEADER + chunk * CHUNK..end]);
    bytes[table + 4 * chunk..table + 4 * chunk + 4].copy_from_slice(&sum);
    let mut check = blake3::Hasher::new();
    check.update(&bytes[..88]);
    check.update(&bytes[table..]);
    bytes[88..120].copy_from_slice(check.finalize().as_bytes());
    std::fs::write(path, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_covers_are_added_by_a_full_check_and_a_forged_one_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing in memory: every read after the fill is the disk tier's or a refill.
    let disk_only = GatewayConfig {
        memory_max_object: 0,
        ..tiered(dir.path())
    };
    let s = Scenario::with(ten_shards(), disk_only).await;
    let len = CHUNK + 300_000;
    let data = blob(len, 14);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let path = blob_file(dir.path(), &id);
    wait_for_file(&path, len).await;
    let meta_path = dir.path().join("meta").join(id.to_string());
    let config = codec::EncodingConfig::new(10).unwrap();
    let meta = codec::compute_metadata(&config, &data).unwrap();
    let rows = len.div_ceil(config.row_len(meta.symbol_size()) as usize) as u32;
    let disk = s.api().filler().cache().disk().unwrap().clone();
    let scrub = |meta: codec::VerifiedMetadata| {
        let disk = disk.clone();
        tokio::task::spawn_blocking(move || disk.scrub_file(&id, &meta, 0).unwrap())
    };
    let verified = gateway::disk::ScrubOutcome::Verified { bytes: len as u64 };

    // A meta file as written before covers existed: bare BCS. The first pass checks in full
    // and keeps the covers.
    disk.store_metadata(&meta).unwrap();
    assert_eq!(meta_covers(&std::fs::read(&meta_path).unwrap()), None);
    assert_eq!(scrub(meta.clone()).await.unwrap(), verified);
    let (_, kept_rows, per_row) = meta_covers(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert_eq!(kept_rows, rows);
    assert!(per_row >= 1);
    assert_eq!(disk.stored_cover_rows(&id, config), Some(rows as usize));
    // The next pass checks with them.
    assert_eq!(scrub(meta.clone()).await.unwrap(), verified);
    let stats = disk.scrub_stats();
    assert_eq!(
        (stats.files_checked_in_full, stats.files_checked_with_cover),
        (1, 1)
    );

    // Rot in the meta file (its CRC32C fails) is not blamed on the blob's file: the meta file
    // is dropped, the metadata fetched again, and the file checked in full.
    forge_cover(&meta_path, 0, false);
    assert_eq!(disk.stored_metadata(&id, config), None);
    assert!(!meta_path.exists());
    disk.store_metadata(&meta).unwrap();
    assert_eq!(scrub(meta.clone()).await.unwrap(), verified);
    assert_eq!(disk.scrub_stats().files_checked_in_full, 2);
    assert_eq!(disk.stored_cover_rows(&id, config), Some(rows as usize));

    // A forged node with a matching CRC32C: the intact file fails, is quarantined, and the
    // covers are dropped. Never a pass.
    forge_cover(&meta_path, (rows as usize - 1) * per_row as usize, true);
    assert!(matches!(
        scrub(meta.clone()).await.unwrap(),
        gateway::disk::ScrubOutcome::Failed { .. }
    ));
    assert!(!path.exists(), "file still in place after a forged cover");
    assert_eq!(stats_entries(&s).await, 0);
    assert_eq!(disk.stored_cover_rows(&id, config), None);
    assert_eq!(disk.stored_metadata(&id, config), Some(meta.clone()));
    // Refilled on the next read, and the next pass checks the new file in full again.
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    wait_for_file(&path, len).await;
    assert_eq!(scrub(meta.clone()).await.unwrap(), verified);
    assert_eq!(disk.scrub_stats().files_checked_in_full, 3);
    assert_eq!(disk.stored_cover_rows(&id, config), Some(rows as usize));
    s.stop().await;
}

async fn stats_entries(s: &Scenario) -> u64 {
    admin_cache(s).await["disk"]["entries"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_row_is_found_by_the_scrub_with_kept_covers_and_never_served_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(ten_shards(), tiered(dir.path())).await;
    let len = CHUNK + 300_000;
    let data = blob(len, 15);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let path = blob_file(dir.path(), &id);
    wait_for_file(&path, len).await;
    // One full check keeps the covers.
    let config = codec::EncodingConfig::new(10).unwrap();
    let meta = codec::compute_metadata(&config, &data).unwrap();
    let disk = s.api().filler().cache().disk().unwrap().clone();
    let kept = tokio::task::spawn_blocking(move || {
        disk.store_metadata(&meta).unwrap();
        disk.scrub_file(&id, &meta, 0).unwrap();
        disk.stored_cover_rows(&id, config)
    })
    .await
    .unwrap();
    assert!(kept.is_some());
    s.stop_gateway().await;

    // A byte of the last row changes, and the per-read checks are made to agree.
    rewrite_with_checksums(&path, len, len - 1000);
    let scrubbing = GatewayConfig {
        scrub_rate: 1 << 30,
        ..tiered(dir.path())
    };
    s.restart_gateway(scrubbing).await;
    assert!(
        s.wait_for_metric("gateway_disk_scrub_failures_total", 1.0)
            .await,
        "the scrub never failed the file"
    );
    assert!(!path.exists(), "tampered file still in place");
    let stats = admin_cache(&s).await;
    let scrub = &stats["disk"]["scrub"];
    assert_eq!(scrub["failures"], 1, "{stats}");
    // It was the covers' check that failed it (the covers are dropped only then), on the
    // scrub's own thread, at the lowest priority it could get, and it reports what it did.
    let meta_file = std::fs::read(dir.path().join("meta").join(id.to_string())).unwrap();
    assert_eq!(meta_covers(&meta_file), None);
    assert!(
        scrub["priority"] == "idle" || scrub["priority"] == "nice-19",
        "{stats}"
    );
    assert!(scrub["pass_bytes_done"].as_u64().unwrap() > 0, "{stats}");
    assert!(scrub["achieved_rate"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        s.metric("gateway_disk_scrub_achieved_bytes_per_second")
            .await
            .unwrap_or(0.0)
            > 0.0
    );

    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    wait_for_file(&path, len).await;
    s.stop().await;
}

/// Enough shards for blobs of a few MiB.
fn twenty_shards() -> SimConfig {
    SimConfig {
        n_shards: 20,
        ..SimConfig::default()
    }
}

/// A gateway whose memory tier takes no blob of these tests and whose scrub is off: every hit
/// streams from the disk tier, and only a read finds what the test breaks.
fn disk_only(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        memory_max_object: 1,
        scrub_rate: 0,
        ..tiered(dir)
    }
}

/// A blob, read once (a fill, which writes it to disk) and once more (a disk hit, which keeps
/// its file open for the hits after it); returns its ID, bytes and file.
async fn on_disk(s: &Scenario, dir: &Path, len: usize, seed: u64) -> (BlobId, Vec<u8>, PathBuf) {
    let data = blob(len, seed);
    let id = s.store(&data).await;
    let path = blob_file(dir, &id);
    let fill = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(fill.bytes().as_ref(), &data[..]);
    wait_for_file(&path, len).await;
    let hit = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(hit.header("x-cache"), Some("hit-disk"));
    assert_eq!(hit.bytes().as_ref(), &data[..]);
    (id, data, path)
}

/// `GET path` over a fresh plain connection (the lean HTTP/1.1 server), read to EOF: the head
/// and the body bytes that arrived.
async fn raw_h1_get(s: &Scenario, path: &str, extra: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut all))
        .await
        .expect("the gateway ends the connection")
        .expect("read");
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(all[..at].to_vec()).unwrap();
    (head, all[at + 4..].to_vec())
}

/// `GET path` over HTTP/2 (h2c): the status and the body bytes that arrived before the stream
/// ended, and whether it ended cleanly.
async fn h2_get(s: &Scenario, path: &str) -> (StatusCode, Vec<u8>, bool) {
    use http_body_util::BodyExt;
    let client = s.h2_client();
    let uri: http::Uri = format!("http://{}{path}", s.addr).parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), client.get(uri))
        .await
        .expect("answer in time")
        .expect("gateway answers");
    let status = response.status();
    let mut body = response.into_body();
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("frames in time")
        {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return (status, got, false),
            None => return (status, got, true),
        }
    }
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Flip one byte of the file at `offset`, in place (the open handle sees it).
fn flip(path: &Path, offset: usize) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset as u64).unwrap();
    file.write_all_at(&[byte[0] ^ 0x08], offset as u64).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http1_a_corrupt_chunk_mid_body_ends_the_connection_before_its_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(twenty_shards(), disk_only(dir.path())).await;
    let len = 3 * CHUNK + CHUNK / 2;
    let (id, data, path) = on_disk(&s, dir.path(), len, 21).await;

    // Ranges through the same open file are exact, whatever chunk they start and end in.
    for (start, end) in [(CHUNK - 7, 2 * CHUNK + 9), (5, 6), (3 * CHUNK + 1, len - 1)] {
        let (head, body) = raw_h1_get(
            &s,
            &format!("/v1/blobs/{id}"),
            &format!("Range: bytes={start}-{end}\r\n"),
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert_eq!(header_of(&head, "x-cache"), Some("hit-disk"));
        assert_eq!(body, &data[start..=end]);
    }

    // A byte of chunk 2 goes bad under the open file: chunks 0 and 1 are sent, then the
    // connection ends; not one byte of chunk 2 leaves.
    flip(&path, HEADER + 2 * CHUNK + 4321);
    let (head, body) = raw_h1_get(&s, &format!("/v1/blobs/{id}"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header_of(&head, "content-length"), Some(&*len.to_string()));
    assert_eq!(
        body.len(),
        2 * CHUNK,
        "sent up to the bad chunk, and no further"
    );
    assert_eq!(body, &data[..2 * CHUNK]);
    assert!(!path.exists(), "corrupt file still in place");
    assert_eq!(
        s.metric("gateway_disk_cache_integrity_failures_total")
            .await,
        Some(1.0)
    );
    // Refilled from the nodes, whole and right.
    let reply = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(reply.header("x-cache"), Some("miss"));
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    s.stop().await;
}

/// A flipped byte mid-body, a torn final chunk and a file cut short, each under an open file,
/// over HTTP/1.1 (the lean server's direct path) and HTTP/2 (a body hyper polls): no byte
/// of a bad chunk is served, the file is quarantined, and the next read refills the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_torn_and_truncated_files_are_never_served_over_http1_or_http2() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(twenty_shards(), disk_only(dir.path())).await;
    let len = 2 * CHUNK + 5000;
    let mut failures = 0.0;
    let mut seed = 30;
    for http2 in [false, true] {
        for case in ["flipped", "torn", "truncated"] {
            seed += 1;
            let (id, data, path) = on_disk(&s, dir.path(), len, seed).await;
            // Where the first bad byte is: the chunk before it is the last one served.
            let good = match case {
                "flipped" => {
                    flip(&path, HEADER + CHUNK + 10);
                    CHUNK
                }
                "torn" => {
                    use std::os::unix::fs::FileExt;
                    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    file.write_all_at(&[0u8; 4096], (HEADER + len - 4096) as u64)
                        .unwrap();
                    2 * CHUNK
                }
                _ => {
                    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    file.set_len((HEADER + CHUNK + 100) as u64).unwrap();
                    // Caught by the size check before the response starts: a refill.
                    0
                }
            };
            let url = format!("/v1/blobs/{id}");
            if case == "truncated" {
                let (status, body, clean) = if http2 {
                    h2_get(&s, &url).await
                } else {
                    let (head, body) = raw_h1_get(&s, &url, "").await;
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    assert_eq!(header_of(&head, "x-cache"), Some("miss"), "{head}");
                    (StatusCode::OK, body, true)
                };
                assert_eq!(status, StatusCode::OK);
                assert!(clean, "{case}, http2 {http2}: refill aborted");
                assert_eq!(body, data, "{case}, http2 {http2}");
            } else if http2 {
                let (status, body, clean) = h2_get(&s, &url).await;
                assert_eq!(status, StatusCode::OK);
                assert!(!clean, "{case}: a bad body ended cleanly over HTTP/2");
                assert!(
                    body.len() <= good,
                    "{case}: {} bytes sent over HTTP/2",
                    body.len()
                );
                assert_eq!(body, &data[..body.len()]);
            } else {
                let (head, body) = raw_h1_get(&s, &url, "").await;
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert_eq!(body.len(), good, "{case}: sent up to the bad chunk only");
                assert_eq!(body, &data[..good]);
            }
            failures += 1.0;
            assert_eq!(
                s.metric("gateway_disk_cache_integrity_failures_total")
                    .await,
                Some(failures),
                "{case}, http2 {http2}"
            );
            assert!(
                !path.exists() || case == "truncated",
                "{case}: still in place"
            );
            if case != "truncated" {
                let reply = s.get(&url).await;
                assert_eq!(reply.header("x-cache"), Some("miss"), "{case}");
                assert_eq!(reply.bytes().as_ref(), &data[..]);
            }
        }
    }
    s.stop().await;
}

/// A bad first chunk under an open file, of a streamed blob and of a small one: the lanes read
/// and check the first chunk before they answer, so neither HTTP/1.1 nor HTTP/2 ever gets a
/// `200` head with a short body. The file is quarantined and the general path answers: the blob
/// refilled and served whole, or 503 while the nodes are down (then a refill once they are back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_first_chunk_is_a_refill_or_503_never_a_short_200() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(twenty_shards(), disk_only(dir.path())).await;
    let mut failures = 0.0;
    let mut seed = 40;
    for len in [2 * CHUNK + 5000, 4096] {
        for http2 in [false, true] {
            for nodes_up in [true, false] {
                seed += 1;
                let (id, data, path) = on_disk(&s, dir.path(), len, seed).await;
                flip(&path, HEADER + 77);
                if !nodes_up {
                    all_nodes(&s, true).await;
                }
                let case = format!("{len} bytes, http2 {http2}, nodes up {nodes_up}");
                let url = format!("/v1/blobs/{id}");
                let (status, body, clean) = if http2 {
                    h2_get(&s, &url).await
                } else {
                    let (head, body) = raw_h1_get(&s, &url, "").await;
                    let status: u16 = head[9..12].parse().unwrap();
                    if status == 200 {
                        assert_eq!(header_of(&head, "x-cache"), Some("miss"), "{case}: {head}");
                    }
                    (StatusCode::from_u16(status).unwrap(), body, true)
                };
                if nodes_up {
                    assert_eq!(status, StatusCode::OK, "{case}");
                    assert!(clean, "{case}: the refill aborted");
                    assert_eq!(body.len(), len, "{case}");
                    assert_eq!(body, data, "{case}");
                } else {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
                }
                failures += 1.0;
                assert_eq!(
                    s.metric("gateway_disk_cache_integrity_failures_total")
                        .await,
                    Some(failures),
                    "{case}"
                );
                if !nodes_up {
                    assert!(!path.exists(), "{case}: still in place");
                    all_nodes(&s, false).await;
                    let reply = s.get(&url).await;
                    assert_eq!(reply.header("x-cache"), Some("miss"), "{case}");
                    assert_eq!(reply.bytes().as_ref(), &data[..], "{case}");
                }
            }
        }
    }
    s.stop().await;
}

/// The general path checks a range's first chunk the same way before it answers, when that
/// chunk is in the page cache: a bad one is a 503 (the file quarantined), never a `206` cut
/// short, and the next request for the range is served from the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_whose_first_chunk_is_corrupt_is_a_503_then_a_refill() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(twenty_shards(), disk_only(dir.path())).await;
    let len = 2 * CHUNK + 5000;
    let (id, data, path) = on_disk(&s, dir.path(), len, 61).await;
    // Chunk 1 goes bad; a range starting in it is read through the general path.
    flip(&path, HEADER + CHUNK + 99);
    let url = format!("/v1/blobs/{id}");
    let range = format!("Range: bytes={}-{}\r\n", CHUNK + 10, CHUNK + 20);
    let (head, body) = raw_h1_get(&s, &url, &range).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(!body.is_empty(), "the 503 carries its error envelope");
    assert!(!path.exists(), "corrupt file still in place");
    assert_eq!(
        s.metric("gateway_disk_cache_integrity_failures_total")
            .await,
        Some(1.0)
    );
    let (head, body) = raw_h1_get(&s, &url, &range).await;
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, &data[CHUNK + 10..=CHUNK + 20]);
    s.stop().await;
}
