//! The denylist (issue 17): a blob served, then added to the `--blocklist` file, answers 451
//! `FORBIDDEN_BLOB` on HTTP/1.1, h2c and HTTP/3 within a second; its disk file is gone; a
//! restart keeps it blocked; publishing the same bytes and inference on it are refused; taking
//! it off the list makes it fillable again. The admin routes edit and persist the same list.

mod harness;

use bytes::Bytes;
use codec::BlobId;
use gateway::tls::TlsIdentity;
use gateway::GatewayConfig;
use harness::h3_client::H3Client;
use harness::{blob, blob_file, send, Reply, Scenario};
use http::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use storage_sim::SimConfig;

const TOKEN: &str = "blocklist-admin";
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened");
}

struct Setup {
    s: Scenario,
    cert: CertificateDer<'static>,
    config: GatewayConfig,
    cache_dir: tempfile::TempDir,
    list: PathBuf,
    _list_dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let cache_dir = tempfile::tempdir().unwrap();
    let list_dir = tempfile::tempdir().unwrap();
    let list = list_dir.path().join("blocklist.yaml");
    std::fs::write(&list, "# blocked blobs\n[]\n").unwrap();
    let generated =
        TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("a certificate");
    let cert = generated.identity.certificate().clone();
    let config = GatewayConfig {
        https_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        h3_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tls: Some(generated.identity),
        cache_dir: Some(cache_dir.path().to_owned()),
        admin_token: Some(TOKEN.into()),
        blocklist: Some(list.clone()),
        negative_cache_ttl: Duration::ZERO,
        ..harness::config()
    };
    let sim = SimConfig {
        n_shards: 10,
        nodes: 4,
        ..SimConfig::default()
    };
    let s = Scenario::with(sim, config.clone()).await;
    Setup {
        s,
        cert,
        config,
        cache_dir,
        list,
        _list_dir: list_dir,
    }
}

fn assert_blocked(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "{what}"
    );
    assert_eq!(reply.reason(), "FORBIDDEN_BLOB", "{what}");
    assert_eq!(
        reply.json()["error"]["status"],
        "UNAVAILABLE_FOR_LEGAL_REASONS"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_blob_is_refused_everywhere_purged_and_kept_blocked_across_a_restart() {
    let Setup {
        mut s,
        cert,
        config,
        cache_dir,
        list,
        _list_dir,
    } = setup().await;
    let data = blob(200 << 10, 17);
    let id = s.store(&data).await;
    let other = s.store(&blob(50 << 10, 18)).await;
    let path = format!("/v1/blobs/{id}");
    let h2 = s.h2_client();
    let h3 = H3Client::connect(s.h3_addr().unwrap(), &cert).await;

    // Served, and cached in memory and on disk.
    let first = s.get(&path).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.bytes().as_ref(), data.as_slice());
    let file = blob_file(cache_dir.path(), &id);
    wait_for("the disk write-through", || file.exists()).await;
    assert_eq!(s.get(&path).await.header("x-cache"), Some("hit-memory"));
    assert_eq!(h3.get(&path).await.status, StatusCode::OK);
    assert_eq!(
        send(&h2, s.addr, Method::GET, &path, &[]).await.status,
        StatusCode::OK
    );

    // Listed in the file (as an operator would edit it): 451 within a second on every transport.
    std::fs::write(&list, format!("# court order\n- {id}\n")).unwrap();
    let listed = Instant::now();
    loop {
        if s.get(&path).await.status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
            break;
        }
        assert!(
            listed.elapsed() < Duration::from_secs(1),
            "not blocked within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed.elapsed() < Duration::from_secs(1));
    assert_blocked(&s.get(&path).await, "h1 memory-hit lane");
    assert_blocked(&send(&h2, s.addr, Method::GET, &path, &[]).await, "h2c");
    assert_blocked(&h3.get(&path).await, "h3");
    for (method, p, headers) in [
        (Method::GET, path.clone(), vec![("range", "bytes=0-9")]),
        (Method::HEAD, path.clone(), vec![]),
        (
            Method::GET,
            format!("{path}/byte-range?start=0&length=5"),
            vec![],
        ),
        (Method::GET, format!("{path}/metadata"), vec![]),
        (
            Method::GET,
            format!("/v1alpha/blobs/concat?ids={other},{id}"),
            vec![],
        ),
    ] {
        let reply = s.request(method.clone(), &p, &headers).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "{method} {p}"
        );
    }
    // Purged from memory and disk at once.
    wait_for("the disk file's removal", || !file.exists()).await;
    // Inference and warming it are refused; so is publishing the same bytes.
    let auth = format!("Bearer {TOKEN}");
    let infer = s
        .send_body(
            Method::POST,
            &format!("/v1/inference/{id}"),
            &[],
            b"{}".to_vec(),
        )
        .await;
    assert_blocked(&infer, "inference");
    let warm = s
        .send_body(
            Method::POST,
            &format!("/v1/models/{id}/warm"),
            &[],
            Vec::new(),
        )
        .await;
    assert_blocked(&warm, "warm");
    let puts_before = s.counters().puts;
    let put = s
        .send_body(Method::PUT, "/v1/blobs", &[], data.clone())
        .await;
    assert_blocked(&put, "publish");
    assert_eq!(
        s.counters().puts,
        puts_before,
        "nothing was sent to the nodes"
    );
    // Prefetch cannot fill it either.
    let prefetch = s
        .send_body(
            Method::POST,
            "/admin/prefetch",
            &[("authorization", &auth)],
            format!("{{\"blob_ids\": [\"{id}\"]}}").into_bytes(),
        )
        .await;
    assert_eq!(prefetch.status, StatusCode::ACCEPTED);
    assert!(prefetch.json()["results"][id.to_string()]
        .as_str()
        .unwrap()
        .contains("blocked"));
    // Other blobs are unaffected.
    assert_eq!(
        s.get(&format!("/v1/blobs/{other}")).await.status,
        StatusCode::OK
    );
    assert!(
        s.metric("gateway_blocked_total{route=\"blob\"}")
            .await
            .unwrap()
            >= 3.0
    );
    assert_eq!(s.metric("gateway_blocklist_entries").await, Some(1.0));
    h3.close().await;

    // A restart reads the file: still blocked, and never filled.
    s.restart_gateway(config.clone()).await;
    assert_blocked(&s.get(&path).await, "after a restart");
    assert!(!file.exists());

    // Off the list: fillable again.
    std::fs::write(&list, "[]\n").unwrap();
    let mut served = None;
    for _ in 0..200 {
        let reply = s.get(&path).await;
        if reply.status == StatusCode::OK {
            served = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = served.expect("served again once unlisted");
    assert_eq!(served.bytes().as_ref(), data.as_slice());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_routes_edit_and_persist_the_list() {
    let Setup {
        mut s,
        config,
        cache_dir,
        list,
        _list_dir,
        ..
    } = setup().await;
    let data = blob(30 << 10, 5);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let auth = format!("Bearer {TOKEN}");
    let admin = |method: Method, p: String| {
        let auth = auth.clone();
        let s = &s;
        async move { s.request(method, &p, &[("authorization", &auth)]).await }
    };
    assert_eq!(s.get(&path).await.status, StatusCode::OK);
    let file = blob_file(cache_dir.path(), &id);
    wait_for("the disk write-through", || file.exists()).await;

    // Without the token: nothing.
    assert_eq!(
        s.request(Method::PUT, &format!("/admin/blocklist/{id}"), &[])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let put = admin(Method::PUT, format!("/admin/blocklist/{id}")).await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.json()["changed"], true);
    // In force at once (no poll needed), purged, and written to the file.
    assert_blocked(&s.get(&path).await, "after PUT");
    assert!(!file.exists());
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(text.contains(&id.to_string()), "{text}");
    let listed = admin(Method::GET, "/admin/blocklist".into()).await;
    assert_eq!(
        listed.json()["blobIds"],
        serde_json::json!([id.to_string()])
    );
    assert_eq!(
        admin(Method::PUT, format!("/admin/blocklist/{id}"))
            .await
            .json()["changed"],
        false
    );
    assert_eq!(
        admin(Method::PUT, "/admin/blocklist/nope".into())
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin(Method::POST, format!("/admin/blocklist/{id}"))
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    s.restart_gateway(config.clone()).await;
    assert_blocked(&s.get(&path).await, "after a restart");
    let admin = |method: Method, p: String| {
        let auth = auth.clone();
        let s = &s;
        async move { s.request(method, &p, &[("authorization", &auth)]).await }
    };
    let delete = admin(Method::DELETE, format!("/admin/blocklist/{id}")).await;
    assert_eq!(delete.status, StatusCode::OK);
    assert_eq!(delete.json()["changed"], true);
    let again = s.get(&path).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.bytes().as_ref(), data.as_slice());
    s.stop().await;
}

#[tokio::test]
async fn without_a_file_the_admin_routes_say_so_and_a_bad_file_stops_the_start() {
    let config = GatewayConfig {
        admin_token: Some(TOKEN.into()),
        ..harness::config()
    };
    let s = Scenario::with(
        SimConfig {
            n_shards: 10,
            nodes: 2,
            ..SimConfig::default()
        },
        config,
    )
    .await;
    let id = BlobId([4; 32]);
    let reply = s
        .request(
            Method::PUT,
            &format!("/admin/blocklist/{id}"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.reason(), "NO_BLOCKLIST_FILE");
    let committee = s.net.committee().clone();
    s.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- not-a-blob-id\n").unwrap();
    for file in [bad, dir.path().join("missing.yaml")] {
        let config = GatewayConfig {
            blocklist: Some(file.clone()),
            ..harness::config()
        };
        let error = match gateway::Gateway::bind(config, committee.clone()).await {
            Ok(_) => panic!("started with {}", file.display()),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("blocklist"), "{error}");
    }
}

/// `SIGHUP` re-reads the file even when nothing the poll looks at changed (same size, inode and
/// modification time: an edit in place whose time was reset), and the process lives on.
#[test]
fn sighup_rereads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.bin");
    let data = blob(5_000, 77);
    std::fs::write(&seed, &data).unwrap();
    let id = codec::blob_id(10, &data).unwrap();
    let list = dir.path().join("blocklist.yaml");
    // Another ID of the same length, so the edit below keeps the file's size.
    std::fs::write(&list, format!("- {}\n", BlobId([1; 32]))).unwrap();
    let mut served = harness::Served::start(&[
        "--bind",
        "127.0.0.1:0",
        "--seed",
        seed.to_str().unwrap(),
        "--blocklist",
        list.to_str().unwrap(),
    ]);
    assert_eq!(served.line(), id.to_string());
    let base = served.line_after("listening on ");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = |base: &str| {
        let url = format!("{base}/v1/blobs/{id}");
        runtime.block_on(async {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<Bytes>>();
            client.get(url.parse().unwrap()).await.unwrap().status()
        })
    };
    assert_eq!(status(&base), StatusCode::OK);

    let before = std::fs::metadata(&list).unwrap().modified().unwrap();
    std::fs::write(&list, format!("- {id}\n")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&list)
        .unwrap()
        .set_modified(before)
        .unwrap();
    // Several polls later the change is not seen: nothing the poll looks at changed.
    std::thread::sleep(gateway::blocklist::POLL * 3);
    assert_eq!(status(&base), StatusCode::OK);

    let hup = std::process::Command::new("kill")
        .args(["-HUP", &served.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    let sent = Instant::now();
    while status(&base) != StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
