//! Quilts through the gateway against the simulated network (issue 16): `PUT /v1/quilts` as the
//! Walrus publisher takes it, and the aggregator's three read routes, with their statuses,
//! headers and error envelopes; Range, HEAD, ETag and 304 as for blobs; a cold quilt read with
//! a faulty node; and a second gateway with an empty cache reading what the first published.

mod harness;

use codec::quilt::{encode_quilt, PatchInput};
use codec::EncodingConfig;
use gateway::Gateway;
use harness::{blob, config, send, Scenario};
use http::{Method, StatusCode};
use std::collections::BTreeMap;
use storage_sim::NodeFaults;

const BOUNDARY: &str = "quilt-test-boundary-7d1";

/// A `multipart/form-data` body as curl's `-F name=@file` makes it.
fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        out.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// Percent-encode an identifier for a path segment.
fn encode(identifier: &str) -> String {
    identifier
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_quilt_patches_read_back_by_every_route() {
    let s = Scenario::start(10, 4).await;
    let a = blob(3_000, 1);
    let b = blob(70_000, 2);
    let empty: &[u8] = &[];
    let metadata = br#"[{"identifier": "b file.txt", "tags": {"content-type": "text/plain", "creator": "walrus", "n": 1}}]"#;
    let body = form(&[
        ("a", &a),
        ("b file.txt", &b),
        ("zero", empty),
        ("_metadata", metadata),
    ]);
    let reply = s
        .send_body(
            Method::PUT,
            "/v1/quilts?epochs=5&quilt_version=V1",
            &[("content-type", &content_type())],
            body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let json = reply.json();
    let quilt_id = json["blobStoreResult"]["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let stored = json["storedQuiltBlobs"].as_array().unwrap();
    let ids: Vec<&str> = stored
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b file.txt", "zero"]);

    // The same quilt the codec builds for these files: same Blob ID and patch IDs.
    let encoding = EncodingConfig::new(10).unwrap();
    let mut tags = BTreeMap::new();
    tags.insert("content-type".to_string(), "text/plain".to_string());
    tags.insert("creator".to_string(), "walrus".to_string());
    tags.insert("n".to_string(), "1".to_string());
    let inputs = [
        PatchInput {
            identifier: "a".into(),
            tags: BTreeMap::new(),
            data: &a,
        },
        PatchInput {
            identifier: "b file.txt".into(),
            tags,
            data: &b,
        },
        PatchInput {
            identifier: "zero".into(),
            tags: BTreeMap::new(),
            data: empty,
        },
    ];
    let quilt = encode_quilt(&encoding, &inputs).unwrap();
    let expected_id = codec::blob_id(10, &quilt.data).unwrap();
    assert_eq!(quilt_id, expected_id.to_string());
    let patch_ids: Vec<String> = stored
        .iter()
        .map(|p| p["quiltPatchId"].as_str().unwrap().to_owned())
        .collect();
    for ((_, id), got) in quilt.patch_ids(expected_id).iter().zip(&patch_ids) {
        assert_eq!(&id.to_string(), got);
    }
    assert_eq!(s.metric("gateway_quilts_published_total").await, Some(1.0));

    // By patch ID: the bytes, the identifier header, the quoted patch ID as ETag.
    let r = s
        .get(&format!("/v1/blobs/by-quilt-patch-id/{}", patch_ids[1]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes().as_ref(), &b[..]);
    assert_eq!(r.header("x-quilt-patch-identifier"), Some("b file.txt"));
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", patch_ids[1]).as_str())
    );
    // Tags named in the aggregator's allowed headers become headers; others do not.
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("creator"), None);
    assert_eq!(r.header("x-cache"), Some("hit-memory"));
    // The empty patch.
    let r = s
        .get(&format!("/v1/blobs/by-quilt-patch-id/{}", patch_ids[2]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.bytes().is_empty());

    // By quilt ID and identifier (percent-encoded).
    let by_name = format!("/v1/blobs/by-quilt-id/{quilt_id}/{}", encode("b file.txt"));
    let r = s.get(&by_name).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes().as_ref(), &b[..]);
    let r = s.get(&format!("/v1/blobs/by-quilt-id/{quilt_id}/a")).await;
    assert_eq!(r.bytes().as_ref(), &a[..]);
    assert_eq!(r.header("x-quilt-patch-identifier"), Some("a"));

    // Range, HEAD, If-None-Match.
    let r = s
        .request(Method::GET, &by_name, &[("range", "bytes=10-19")])
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().as_ref(), &b[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{}", b.len()).as_str())
    );
    let r = s.request(Method::HEAD, &by_name, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-length"),
        Some(b.len().to_string().as_str())
    );
    assert!(r.bytes().is_empty());
    let etag = format!("\"{}\"", patch_ids[1]);
    let r = s
        .request(
            Method::GET,
            &format!("/v1/blobs/by-quilt-patch-id/{}", patch_ids[1]),
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = s
        .request(Method::GET, &by_name, &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    // The patch list, as the aggregator answers it.
    let r = s.get(&format!("/v1/quilts/{quilt_id}/patches")).await;
    assert_eq!(r.status, StatusCode::OK);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["identifier"], "b file.txt");
    assert_eq!(list[1]["patch_id"], patch_ids[1]);
    assert_eq!(list[1]["tags"]["creator"], "walrus");
    assert_eq!(list[1]["tags"]["n"], "1");

    // Unknown identifier and patch: 404 with the aggregator's reason.
    let r = s
        .get(&format!("/v1/blobs/by-quilt-id/{quilt_id}/nope"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.reason(), "QUILT_PATCH_NOT_FOUND");
    let mut wrong = quilt.index.patches[0].patch_id(expected_id);
    wrong.end_index += 1;
    let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{wrong}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.reason(), "QUILT_PATCH_NOT_FOUND");
    // A malformed patch ID: 400; an unknown quilt: the blob's 404.
    let r = s.get("/v1/blobs/by-quilt-patch-id/AAAA").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.reason(), "INVALID_QUILT_PATCH_ID");
    let unknown = codec::quilt::QuiltPatchId {
        quilt_id: codec::BlobId([9; 32]),
        start_index: 1,
        end_index: 2,
    };
    let r = s
        .get(&format!("/v1/blobs/by-quilt-patch-id/{unknown}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.reason(), "BLOB_NOT_FOUND");
    // A blob that is not a quilt.
    let plain = s.store(&blob(5_000, 3)).await;
    let r = s.get(&format!("/v1/quilts/{plain}/patches")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.reason(), "INVALID_QUILT");

    // A second gateway with an empty cache reads the patches from the nodes, with a node down.
    s.faults(
        1,
        NodeFaults {
            offline: true,
            ..NodeFaults::default()
        },
    )
    .await;
    let second = Gateway::bind(config(), s.net.committee().clone())
        .await
        .unwrap()
        .spawn();
    let client = s.h2_client();
    let r = send(
        &client,
        second.addr(),
        Method::GET,
        &format!("/v1/blobs/by-quilt-patch-id/{}", patch_ids[0]),
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes().as_ref(), &a[..]);
    assert_eq!(r.header("x-cache"), Some("miss"));
    // The other patch: its own columns (rebuilt from recovery symbols where node 1 holds
    // them), then cached by its ID.
    for x_cache in ["miss", "hit-memory"] {
        let r = send(&client, second.addr(), Method::GET, &by_name, &[]).await;
        assert_eq!(r.bytes().as_ref(), &b[..]);
        assert_eq!(r.header("x-cache"), Some(x_cache));
    }
    second.shutdown().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_quilt_uploads_are_refused_with_reasons() {
    let s = Scenario::start(10, 4).await;
    let ct = content_type();
    let cases: Vec<(Vec<u8>, String, &str)> = vec![
        (
            b"hello".to_vec(),
            "application/octet-stream".into(),
            "multipart",
        ),
        (form(&[("_metadata", b"[]")]), ct.clone(), "no files"),
        (form(&[("a", b"1"), ("a", b"2")]), ct.clone(), "a"),
        (form(&[("bad ", b"1")]), ct.clone(), "identifier"),
        (
            form(&[("a", b"1"), ("_metadata", b"{")]),
            ct.clone(),
            "_metadata",
        ),
        (
            b"--quilt-test-boundary-7d1\r\nno headers".to_vec(),
            ct.clone(),
            "multipart",
        ),
    ];
    for (body, content_type, word) in cases {
        let reply = s
            .send_body(
                Method::PUT,
                "/v1/quilts",
                &[("content-type", &content_type)],
                body,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{word}: {:?}",
            reply.body
        );
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(word), "{word}: {message}");
    }
    // More patches than the committee's columns (n = 10: 6).
    let many: Vec<(String, Vec<u8>)> = (0..7).map(|i| (format!("p{i}"), vec![i as u8])).collect();
    let parts: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let reply = s
        .send_body(
            Method::PUT,
            "/v1/quilts",
            &[("content-type", &ct)],
            form(&parts),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("too many patches"));
    let reply = s.get("/v1/quilts").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.metric("gateway_quilts_published_total").await, None);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stores_files_as_one_quilt_and_prints_their_patch_ids() {
    let s = Scenario::start(10, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, Vec<u8>)> =
        [("one.bin", 10_000), ("two \"x\".txt", 5), ("three", 0)]
            .iter()
            .enumerate()
            .map(|(i, (name, len))| {
                let path = dir.path().join(name);
                let data = blob(*len, 40 + i as u64);
                std::fs::write(&path, &data).unwrap();
                (path, data)
            })
            .collect();
    let gateway = format!("http://{}", s.addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["put", "--quilt", "--gateway", &gateway])
        .args(files.iter().map(|(p, _)| p))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (path, data) in &files {
        let label = path.display().to_string();
        let line = lines
            .iter()
            .find(|l| l.ends_with(&format!("  {label}")))
            .unwrap_or_else(|| panic!("no line for {label}: {stdout}"));
        let (id, _) = line.split_once("  ").unwrap();
        let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{id}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.bytes().as_ref(), &data[..]);
        assert_eq!(
            r.header("x-quilt-patch-identifier"),
            path.file_name().unwrap().to_str()
        );
    }
    s.stop().await;
}

/// Publish `n` patches `p00`, `p01`, ... (patch `big` of `big_len` bytes, the others 1500) to
/// `s`; their bytes and patch IDs, in identifier order.
async fn publish_patches(
    s: &Scenario,
    n: usize,
    big: usize,
    big_len: usize,
) -> (codec::BlobId, Vec<(Vec<u8>, codec::quilt::QuiltPatchId)>) {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let len = if i == big { big_len } else { 1500 };
            (format!("p{i:02}"), blob(len, 100 + i as u64))
        })
        .collect();
    let parts: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let reply = s
        .send_body(
            Method::PUT,
            "/v1/quilts",
            &[("content-type", &content_type())],
            form(&parts),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let json = reply.json();
    let quilt_id = json["blobStoreResult"]["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ids = json["storedQuiltBlobs"].as_array().unwrap();
    let out = files
        .into_iter()
        .zip(ids)
        .map(|((_, data), p)| (data, p["quiltPatchId"].as_str().unwrap().parse().unwrap()))
        .collect();
    (quilt_id, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_patch_read_fetches_only_its_columns() {
    let mut s = Scenario::start(100, 4).await;
    let (quilt_id, patches) = publish_patches(&s, 60, 30, 400_000).await;
    let index_columns = u64::from(patches[0].1.start_index);

    // Cold: the index columns and the patch's own, as secondary slivers; no primary sliver.
    s.restart_gateway(config()).await;
    let (data, id) = &patches[5];
    let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes().as_ref(), &data[..]);
    assert_eq!(r.header("x-cache"), Some("miss"));
    let own = u64::from(id.end_index - id.start_index);
    assert_eq!(
        s.metric("gateway_quilt_patch_reads_total{source=\"cold\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        s.metric("gateway_quilt_cold_patch_slivers_total").await,
        Some((index_columns + own) as f64)
    );
    assert_eq!(
        s.metric("gateway_sliver_requests_total{kind=\"secondary\"}")
            .await,
        Some((index_columns + own) as f64)
    );
    assert_eq!(
        s.metric("gateway_sliver_requests_total{kind=\"primary\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );

    // Again: the patch is cached by its ID, nothing is fetched.
    let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{id}")).await;
    assert_eq!(r.bytes().as_ref(), &data[..]);
    assert_eq!(r.header("x-cache"), Some("hit-memory"));
    // Another patch of the same quilt: its own columns only (the index is cached).
    let (data, other) = &patches[40];
    let r = s.get(&format!("/v1/blobs/by-quilt-patch-id/{other}")).await;
    assert_eq!(r.bytes().as_ref(), &data[..]);
    let other_own = u64::from(other.end_index - other.start_index);
    assert_eq!(
        s.metric("gateway_sliver_requests_total{kind=\"secondary\"}")
            .await,
        Some((index_columns + own + other_own) as f64)
    );

    // Eight concurrent cold reads of one patch: one fetch of the index and of the patch.
    s.restart_gateway(config()).await;
    let (data, id) = &patches[12];
    let path = format!("/v1/blobs/by-quilt-patch-id/{id}");
    let reads: Vec<_> = (0..8).map(|_| s.get(&path)).collect();
    for r in harness::join_all(reads).await {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.bytes().as_ref(), &data[..]);
    }
    let own = u64::from(id.end_index - id.start_index);
    assert_eq!(
        s.metric("gateway_sliver_requests_total{kind=\"secondary\"}")
            .await,
        Some((index_columns + own) as f64)
    );

    // By identifier, cold: the same columns.
    s.restart_gateway(config()).await;
    let r = s
        .get(&format!("/v1/blobs/by-quilt-id/{quilt_id}/p07"))
        .await;
    assert_eq!(r.bytes().as_ref(), &patches[7].0[..]);
    assert_eq!(
        s.metric("gateway_quilt_patch_reads_total{source=\"cold\"}")
            .await,
        Some(1.0)
    );

    // A patch column whose owner is offline or lies: `quilt_recovery.rs`.
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quilt_padded_past_the_upload_limit_is_refused_before_it_is_built() {
    let s = Scenario::with(
        storage_sim::SimConfig {
            n_shards: 10,
            nodes: 4,
            ..storage_sim::SimConfig::default()
        },
        gateway::GatewayConfig {
            max_upload: 300_000,
            ..config()
        },
    )
    .await;
    // n = 10: 7 columns. One 100 KB patch beside five empty ones gets a single column, so
    // every column is 100 KB and the quilt 700 KB: more than the limit, though the body is not.
    let big = blob(100_000, 5);
    let mut parts: Vec<(&str, &[u8])> = vec![("big", &big)];
    let names = ["e1", "e2", "e3", "e4", "e5"];
    parts.extend(names.iter().map(|n| (*n, &[][..])));
    let reply = s
        .send_body(
            Method::PUT,
            "/v1/quilts",
            &[("content-type", &content_type())],
            form(&parts),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        reply.body
    );
    // The same files in a quilt that fits: stored.
    let reply = s
        .send_body(
            Method::PUT,
            "/v1/quilts",
            &[("content-type", &content_type())],
            form(&parts[..2]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    s.stop().await;
}
