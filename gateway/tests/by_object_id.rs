//! `GET /v1/blobs/by-object-id/{object_id}` against the simulated chain: walrus-sim's storage
//! nodes and its Sui full node, with `Blob` objects (and their `Metadata` attributes) placed in
//! it as `walrus store` and `walrus set-blob-attribute` would leave them. The gateway reads the
//! object, serves the blob through its cache (ranges included), passes allowed attributes as
//! headers and drops the rest; malformed IDs, missing objects, objects of another type and
//! undecodable bytes each get their own answer, and nothing is served for the last two.

mod harness;

use chain::blob_object::{self, BlobObject, SharedBlob, StorageResource};
use chain::committee::RefreshPolicy;
use chain::move_types::MoveValue;
use chain::ObjectId;
use codec::BlobId;
use harness::chain_scene::ChainScene;
use harness::{blob, config, Scenario};
use http::{Method, StatusCode};
use std::time::Duration;
use storage_sim::sui::PACKAGE_ID;
use storage_sim::SimConfig;

/// walrus-sim's TLS nodes and Sui full node, and a gateway reading the chain.
async fn start(gateway_config: gateway::GatewayConfig) -> ChainScene {
    let sim = SimConfig {
        n_shards: 10,
        nodes: 4,
        tls: true,
        ..SimConfig::default()
    };
    ChainScene::start(sim, gateway_config, RefreshPolicy::default()).await
}

fn blob_object(object: u8, id: BlobId, len: usize) -> BlobObject {
    BlobObject {
        id: ObjectId([object; 32]),
        registered_epoch: 1,
        blob_id: id.0,
        size: len as u64,
        encoding_type: 1,
        certified_epoch: Some(1),
        storage: StorageResource {
            id: ObjectId([object ^ 0xff; 32]),
            start_epoch: 1,
            end_epoch: 54,
            storage_size: 1 << 20,
        },
        deletable: false,
    }
}

fn attributes(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn path(object: &ObjectId) -> String {
    format!("/v1/blobs/by-object-id/{object}")
}

#[tokio::test]
async fn a_blob_object_is_served_with_its_allowed_attributes_only() {
    let s = start(config()).await;
    let data = blob(5_000, 17);
    let id = s.store(&data).await;
    let object = blob_object(0x11, id, data.len());
    s.sui.put_blob(
        &object,
        ObjectId([0xee; 32]),
        attributes(&[
            ("content-type", "image/png"),
            ("Content-Disposition", "attachment; filename=\"a.png\""),
            ("x-not-allowed", "dropped"),
            ("etag", "\"forged\""),
        ]),
    );

    let reply = s.get(&path(&object.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"a.png\"")
    );
    assert_eq!(
        reply.header("x-not-allowed"),
        None,
        "not in --allowed-headers"
    );
    assert_eq!(reply.header("etag"), Some(format!("\"{id}\"").as_str()));
    assert_eq!(
        reply.header("cache-control"),
        Some(gateway::api::object::OBJECT_CACHE_CONTROL)
    );
    // The same blob by its ID: the cache answers, without the attributes.
    let direct = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(direct.status, StatusCode::OK);
    assert_eq!(direct.header("x-cache"), Some("hit-memory"));
    assert_eq!(direct.header("content-disposition"), None);

    // Range on by-object-id: 206 with exactly those bytes, attributes included.
    let range = s
        .request(
            Method::GET,
            &path(&object.id),
            &[("range", "bytes=100-1099")],
        )
        .await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(range.bytes().as_ref(), &data[100..1100]);
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes 100-1099/{}", data.len()).as_str())
    );
    assert_eq!(range.header("content-type"), Some("image/png"));

    // HEAD: the headers, no body.
    let head = s.request(Method::HEAD, &path(&object.id), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.bytes().is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(head.header("content-type"), Some("image/png"));

    // If-None-Match with the blob's ETag: 304, no attributes (success answers only).
    let etag = format!("\"{id}\"");
    let not_modified = s
        .request(Method::GET, &path(&object.id), &[("if-none-match", &etag)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.header("content-type"), None);

    // The short ID form (no 0x) is the same object; read options are the blob read's.
    let bare = object.id.to_string()[2..].to_owned();
    let reply = s
        .get(&format!(
            "/v1/blobs/by-object-id/{bare}?skip_consistency_check=true"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    let both = s
        .get(&format!(
            "{}?skip_consistency_check=true&strict_consistency_check=true",
            path(&object.id)
        ))
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.reason(), "INVALID_CONSISTENCY_CHECK");
    let unknown = s.get(&format!("{}?foo=1", path(&object.id))).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);

    // A blob without attributes: served, no attribute headers.
    let bare_object = blob_object(0x12, id, data.len());
    s.sui.put_blob(&bare_object, ObjectId([0xee; 32]), None);
    let reply = s.get(&path(&bare_object.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), None);

    // Six lookups of two objects: each object was read from the chain once; the other four
    // requests reused the lookup (`--object-cache-ttl`, 10 s by default).
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"found\"}")
            .await,
        2.0
    );
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"cached\"}")
            .await,
        4.0
    );
    s.stop().await;
}

/// Concurrent lookups of one object make one full-node read; an attribute edit and a deletion
/// are seen once the lookup's TTL has run out, and with a zero TTL every request reads the chain.
#[tokio::test]
async fn object_lookups_are_reused_for_their_ttl_and_shared_in_flight() {
    let mut gateway_config = config();
    gateway_config.object_cache_ttl = Duration::from_millis(300);
    let s = start(gateway_config).await;
    let data = blob(2_000, 31);
    let id = s.store(&data).await;
    let object = blob_object(0x81, id, data.len());
    s.sui.put_blob(
        &object,
        ObjectId([0xee; 32]),
        attributes(&[("content-type", "text/plain")]),
    );
    let rpcs = s.metric("gateway_object_lookup_rpcs_total").await;
    let route = path(&object.id);
    let replies = harness::join_all((0..16).map(|_| s.get(&route)).collect()).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type"), Some("text/plain"));
    }
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"found\"}")
            .await,
        1.0,
        "16 concurrent requests, one chain lookup"
    );
    let per_lookup = s.metric("gateway_object_lookup_rpcs_total").await - rpcs;
    assert!(per_lookup >= 1.0);

    // The owner edits the attributes: seen within the TTL (bounded wait, no timing asserted).
    s.sui.put_blob(
        &object,
        ObjectId([0xee; 32]),
        attributes(&[("content-type", "image/png")]),
    );
    let mut seen = None;
    for _ in 0..100 {
        let reply = s.get(&path(&object.id)).await;
        seen = reply.header("content-type").map(str::to_owned);
        if seen.as_deref() == Some("image/png") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.as_deref(), Some("image/png"));
    // Deleted from the chain: 404 once the lookup has expired.
    assert!(s.sui.remove_object(&object.id));
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = s.get(&path(&object.id)).await.status;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;

    // TTL zero: every request reads the chain.
    let mut gateway_config = config();
    gateway_config.object_cache_ttl = Duration::ZERO;
    let s = start(gateway_config).await;
    let id = s.store(&data).await;
    let object = blob_object(0x82, id, data.len());
    s.sui.put_blob(&object, ObjectId([0xee; 32]), None);
    for _ in 0..3 {
        assert_eq!(s.get(&path(&object.id)).await.status, StatusCode::OK);
    }
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"found\"}")
            .await,
        3.0
    );
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"cached\"}")
            .await,
        0.0
    );
    s.stop().await;
}

#[tokio::test]
async fn a_shared_blob_is_served_with_the_wrapped_blobs_attributes() {
    let s = start(config()).await;
    let data = blob(3_000, 5);
    let id = s.store(&data).await;
    let inner = blob_object(0x21, id, data.len());
    // The wrapped blob's attributes field, and the SharedBlob object around it.
    s.sui
        .put_blob(&inner, ObjectId([0xee; 32]), attributes(&[("link", "<x>")]));
    s.sui.remove_object(&inner.id);
    let shared = SharedBlob {
        id: ObjectId([0x22; 32]),
        blob: inner,
        funds: 10,
    };
    s.sui.put_raw_object(
        shared.id,
        &blob_object::type_of::shared_blob(&PACKAGE_ID),
        shared.to_bcs(),
    );
    let reply = s.get(&path(&shared.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes().as_ref(), &data[..]);
    assert_eq!(reply.header("link"), Some("<x>"));
    s.stop().await;
}

#[tokio::test]
async fn bad_ids_missing_objects_and_lying_chain_answers_are_refused() {
    let mut gateway_config = config();
    // Only `x-custom` is allowed here: the defaults no longer apply.
    gateway_config.allowed_headers = vec![http::HeaderName::from_static("x-custom")];
    // Every request reads the chain, so a deletion is seen at once.
    gateway_config.object_cache_ttl = Duration::ZERO;
    let s = start(gateway_config).await;
    let data = blob(2_000, 9);
    let id = s.store(&data).await;

    for bad in ["0xzz", "12", "0x", &format!("0x{}", "a".repeat(65))] {
        let reply = s.get(&format!("/v1/blobs/by-object-id/{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.reason(), "INVALID_OBJECT_ID", "{bad}");
    }

    let unknown = s.get(&path(&ObjectId([0x33; 32]))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.reason(), "BLOB_NOT_FOUND");

    // An object of another type (a coin): 502, nothing served.
    let coin = ObjectId([0x44; 32]);
    s.sui.put_raw_object(
        coin,
        "0x2::coin::Coin<0x2::sui::SUI>",
        [coin.0.as_slice(), &7u64.to_le_bytes()].concat(),
    );
    let reply = s.get(&path(&coin)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.reason(), "NOT_A_BLOB_OBJECT");
    // A `Blob` of another package (not the Walrus package the committee came from).
    let fake = blob_object(0x45, id, data.len());
    s.sui.put_raw_object(
        fake.id,
        &blob_object::type_of::blob(&ObjectId([0x99; 32])),
        fake.to_bcs(),
    );
    assert_eq!(s.get(&path(&fake.id)).await.status, StatusCode::BAD_GATEWAY);
    // The right type, bytes that do not decode as it (cut short).
    let cut = blob_object(0x46, id, data.len());
    s.sui.put_raw_object(
        cut.id,
        &blob_object::type_of::blob(&PACKAGE_ID),
        cut.to_bcs()[..100].to_vec(),
    );
    let reply = s.get(&path(&cut.id)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.reason(), "INVALID_CHAIN_OBJECT");
    // A Blob whose UID is another object's.
    let mut other = blob_object(0x47, id, data.len());
    other.id = ObjectId([0x48; 32]);
    s.sui.put_raw_object(
        ObjectId([0x47; 32]),
        &blob_object::type_of::blob(&PACKAGE_ID),
        other.to_bcs(),
    );
    let reply = s.get(&path(&ObjectId([0x47; 32]))).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.reason(), "INVALID_CHAIN_OBJECT");

    // A good blob with the configured list: only `x-custom` passes.
    let good = blob_object(0x49, id, data.len());
    s.sui.put_blob(
        &good,
        ObjectId([0xee; 32]),
        attributes(&[("x-custom", "yes"), ("content-type", "text/html")]),
    );
    let reply = s.get(&path(&good.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-custom"), Some("yes"));
    assert_eq!(reply.header("content-type"), None);

    // A Blob object naming a Blob ID the nodes do not have: the blob read's 404.
    let absent = blob_object(0x4a, BlobId([3; 32]), 10);
    s.sui.put_blob(&absent, ObjectId([0xee; 32]), None);
    let reply = s.get(&path(&absent.id)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.reason(), "BLOB_NOT_FOUND");

    // Deleted from the chain: 404 from then on.
    assert!(s.sui.remove_object(&good.id));
    assert_eq!(s.get(&path(&good.id)).await.status, StatusCode::NOT_FOUND);

    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"invalid_id\"}")
            .await,
        4.0
    );
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"not_a_blob\"}")
            .await,
        2.0
    );
    assert_eq!(
        s.metric("gateway_object_lookups_total{result=\"malformed\"}")
            .await,
        2.0
    );
    s.stop().await;
}

#[tokio::test]
async fn a_blocked_blob_is_refused_by_object_id_too() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("blocklist.yaml");
    std::fs::write(&list, "[]\n").unwrap();
    let mut gateway_config = config();
    gateway_config.blocklist = Some(list.clone());
    let s = start(gateway_config).await;
    let data = blob(1_000, 3);
    let id = s.store(&data).await;
    let object = blob_object(0x51, id, data.len());
    s.sui.put_blob(&object, ObjectId([0xee; 32]), None);
    assert_eq!(s.get(&path(&object.id)).await.status, StatusCode::OK);
    std::fs::write(&list, format!("- {id}\n")).unwrap();
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = s.get(&path(&object.id)).await.status;
        if status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let reply = s.get(&path(&object.id)).await;
    assert_eq!(reply.reason(), "FORBIDDEN_BLOB");
    s.stop().await;
}

#[tokio::test]
async fn without_a_chain_the_route_says_so() {
    let s = Scenario::start(10, 4).await;
    let object = ObjectId([0x61; 32]);
    let reply = s.get(&path(&object)).await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(reply.reason(), "NO_CHAIN");
    // A malformed ID is still the client's error first.
    let reply = s.get("/v1/blobs/by-object-id/nothex").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    s.stop().await;
}

/// Clients written for the aggregator's by-object-id (Node's `fetch`, Python `requests`, curl)
/// get the same answer from the gateway: each asks for a range and prints the status, the
/// attribute header and the body in hex. A client that is not installed is reported (and fails
/// the test under `WALRUS_REQUIRE_PEERS=1`, as in `aggregator_parity`).
#[tokio::test]
async fn aggregator_clients_read_by_object_id_unchanged() {
    let s = start(config()).await;
    let data = blob(4_000, 23);
    let id = s.store(&data).await;
    let object = blob_object(0x71, id, data.len());
    s.sui.put_blob(
        &object,
        ObjectId([0xee; 32]),
        attributes(&[("content-type", "text/plain"), ("x-hidden", "1")]),
    );
    let url = format!("http://{}{}", s.addr, path(&object.id));
    let want = format!("206 text/plain - {}", to_hex(&data[10..20]));
    let clients: [(&str, Vec<String>); 3] = [
        (
            "node",
            vec![
                "--input-type=module".into(),
                "-e".into(),
                "const r = await fetch(process.argv[1], {headers: {Range: 'bytes=10-19'}}); \
                 const b = Buffer.from(await r.arrayBuffer()); \
                 console.log(`${r.status} ${r.headers.get('content-type')} \
                 ${r.headers.get('x-hidden') ?? '-'} ${b.toString('hex')}`);"
                    .into(),
                url.clone(),
            ],
        ),
        (
            "python3",
            vec![
                "-c".into(),
                "import sys, requests\n\
                 r = requests.get(sys.argv[1], headers={'Range': 'bytes=10-19'}, timeout=30)\n\
                 print(r.status_code, r.headers.get('content-type'), \
                 r.headers.get('x-hidden', '-'), r.content.hex())"
                    .into(),
                url.clone(),
            ],
        ),
        (
            "curl",
            vec![
                "-s".into(),
                "-r".into(),
                "10-19".into(),
                "-o".into(),
                "/dev/stdout".into(),
                "-w".into(),
                "\n%{http_code} %{content_type}".into(),
                url.clone(),
            ],
        ),
    ];
    let mut ran = 0;
    for (program, args) in clients {
        let output = tokio::task::spawn_blocking({
            let program = program.to_owned();
            move || std::process::Command::new(program).args(args).output()
        })
        .await
        .unwrap();
        let output = match output {
            Ok(o) if o.status.success() => o,
            other => {
                let why = format!("{program} did not run: {other:?}");
                assert_ne!(
                    std::env::var("WALRUS_REQUIRE_PEERS").as_deref(),
                    Ok("1"),
                    "{why}"
                );
                eprintln!("NOTE: the {program} by-object-id client did NOT run: {why}");
                continue;
            }
        };
        let seen = if program == "curl" {
            // Body, then "\n<status> <content type>"; curl shows headers it was not asked for
            // only with -i, so the dropped attribute is checked by the other two.
            let text = output.stdout;
            let split = text.iter().rposition(|&b| b == b'\n').unwrap();
            let tail = String::from_utf8_lossy(&text[split + 1..]).to_string();
            let (status, content_type) = tail.split_once(' ').unwrap();
            format!("{status} {content_type} - {}", to_hex(&text[..split]))
        } else {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        assert_eq!(seen, want, "{program}");
        ran += 1;
    }
    assert!(ran > 0 || std::env::var("WALRUS_REQUIRE_PEERS").is_err());
    s.stop().await;
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
