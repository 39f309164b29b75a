//! HTTP/3 and TLS listeners (issue 8): a Rust h3 client (quinn, trusting the gateway's
//! self-signed certificate) gets the same statuses, headers and bytes as HTTP/1.1 for whole
//! reads, ranges, HEAD, 304, publishing and inference; the TCP listeners advertise HTTP/3 with `Alt-Svc`;
//! curl reads over HTTPS with HTTP/1.1 and HTTP/2 (`--cacert`); shutdown drains QUIC.

mod harness;

use gateway::tls::TlsIdentity;
use gateway::GatewayConfig;
use harness::h3_client::H3Client;
use harness::{blob, Reply, Scenario};
use http::{HeaderMap, Method, StatusCode};
use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::SimConfig;

/// No exchange here should take anywhere near this long.
const DEADLINE: Duration = Duration::from_secs(60);

/// A gateway with all three listeners on port 0 and a fresh self-signed certificate.
async fn scenario(
    tweak: impl FnOnce(&mut GatewayConfig),
) -> (Scenario, CertificateDer<'static>, String) {
    let generated =
        TlsIdentity::self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("a certificate");
    let cert = generated.identity.certificate().clone();
    let pem = generated.cert_pem;
    let mut config = GatewayConfig {
        https_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        h3_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tls: Some(generated.identity),
        ..harness::config()
    };
    tweak(&mut config);
    let sim = SimConfig {
        n_shards: 10,
        nodes: 4,
        ..SimConfig::default()
    };
    (Scenario::with(sim, config).await, cert, pem)
}

/// Headers whose values must not depend on the protocol.
const COMPARED: &[&str] = &[
    "content-length",
    "content-range",
    "content-type",
    "etag",
    "cache-control",
    "accept-ranges",
    "x-walrus-n-shards",
];

fn same_headers(h1: &HeaderMap, h3: &HeaderMap, what: &str) {
    for name in COMPARED {
        assert_eq!(h1.get(*name), h3.get(*name), "{name} of {what}");
    }
}

fn assert_same(h1: &Reply, h3: &Reply, what: &str) {
    assert_eq!(h1.status, h3.status, "status of {what}");
    same_headers(&h1.headers, &h3.headers, what);
    assert_eq!(
        h1.body.as_ref().ok(),
        h3.body.as_ref().ok(),
        "body of {what}"
    );
}

/// A request: method, path and headers.
type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>);

#[tokio::test]
async fn http3_reads_are_identical_to_http1() {
    // 1.5 MB streams (from 512 KiB on), 100 KiB is answered whole: both body kinds go over QUIC.
    let (s, cert, _) = scenario(|c| c.stream_from_bytes = 512 << 10).await;
    let big = blob(1_500_000, 1);
    let small = blob(100 << 10, 2);
    let big_id = s.store(&big).await;
    let small_id = s.store(&small).await;
    let client = H3Client::connect(s.h3_addr().expect("HTTP/3 is on"), &cert).await;

    // Cold over HTTP/3 first: the fill's streamed body crosses QUIC flow control.
    let cold = client.get(&format!("/v1/blobs/{big_id}")).await;
    assert_eq!(cold.status, StatusCode::OK);
    assert_eq!(cold.bytes().as_ref(), big.as_slice());

    let etag = format!("\"{big_id}\"");
    let cases: Vec<Case> = vec![
        (Method::GET, format!("/v1/blobs/{big_id}"), vec![]),
        (Method::GET, format!("/v1/blobs/{small_id}"), vec![]),
        (Method::HEAD, format!("/v1/blobs/{big_id}"), vec![]),
        (
            Method::GET,
            format!("/v1/blobs/{big_id}"),
            vec![("range", "bytes=500000-1200000")],
        ),
        (
            Method::GET,
            format!("/v1/blobs/{small_id}"),
            vec![("range", "bytes=-777")],
        ),
        (
            Method::GET,
            format!("/v1/blobs/{big_id}"),
            vec![("range", "bytes=999999999-")],
        ),
        (
            Method::GET,
            format!("/v1/blobs/{small_id}/byte-range?start=5&length=5000"),
            vec![],
        ),
        (
            Method::GET,
            format!("/v1/blobs/{big_id}"),
            vec![("if-none-match", etag.as_str())],
        ),
        (Method::GET, "/v1/blobs/not-a-blob-id".into(), vec![]),
        (Method::DELETE, format!("/v1/blobs/{small_id}"), vec![]),
        (Method::GET, "/status".into(), vec![]),
    ];
    for (method, path, headers) in &cases {
        let what = format!("{method} {path} {headers:?}");
        let h1 = s.request(method.clone(), path, headers).await;
        let h3 = client.request(method.clone(), path, headers, None).await;
        assert_same(&h1, &h3, &what);
        if *method == Method::HEAD {
            assert!(h3.bytes().is_empty(), "a HEAD has no body");
            assert_eq!(
                h3.header("content-length"),
                Some(&*big.len().to_string()),
                "HEAD tells the length"
            );
        }
    }
    let ranged = client
        .request(
            Method::GET,
            &format!("/v1/blobs/{big_id}"),
            &[("range", "bytes=500000-1200000")],
            None,
        )
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().as_ref(), &big[500_000..=1_200_000]);

    // Several requests at once on the one connection.
    let paths: Vec<String> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                format!("/v1/blobs/{big_id}")
            } else {
                format!("/v1/blobs/{small_id}")
            }
        })
        .collect();
    let replies = harness::join_all(paths.iter().map(|p| client.get(p)).collect::<Vec<_>>()).await;
    for (i, reply) in replies.iter().enumerate() {
        let want = if i % 2 == 0 { &big } else { &small };
        assert_eq!(reply.bytes().as_ref(), want.as_slice());
    }

    // The TCP listeners advertise HTTP/3 on its port.
    let h1 = s.get("/status").await;
    let port = s.h3_addr().unwrap().port();
    assert_eq!(
        h1.header("alt-svc"),
        Some(&*format!("h3=\":{port}\"; ma=86400"))
    );
    client.close().await;
    s.stop().await;
}

/// The access log (issue 20) records HTTP/3 requests as the TCP ones: protocol, client, tier,
/// bytes, and a miss's fill wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_requests_get_access_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.json");
    let (s, cert, _) = scenario(|c| {
        c.access_log = Some(gateway::access_log::AccessLogConfig::new(
            log.to_str().unwrap(),
            gateway::access_log::Format::Json,
        ))
    })
    .await;
    let data = blob(70_000, 4);
    let id = s.store(&data).await;
    let client = H3Client::connect(s.h3_addr().expect("HTTP/3 is on"), &cert).await;
    for tier in ["miss", "hit-memory"] {
        let reply = client.get(&format!("/v1/blobs/{id}")).await;
        assert_eq!(reply.header("x-cache"), Some(tier));
    }
    let mut lines = Vec::new();
    for _ in 0..500 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, tier) in lines.iter().zip(["miss", "hit-memory"]) {
        assert_eq!(line["protocol"], "HTTP/3.0", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert_eq!(line["path"], format!("/v1/blobs/{id}"), "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["bytes"], data.len(), "{line}");
        assert_eq!(line["cache"], tier, "{line}");
        assert_eq!(line["fill_seconds"].is_f64(), tier == "miss", "{line}");
        assert_eq!(line["complete"], true, "{line}");
    }
    client.close().await;
    s.stop().await;
}

#[tokio::test]
async fn http3_publishes_and_the_blob_reads_back_over_http1() {
    let (s, cert, _) = scenario(|_| {}).await;
    let client = H3Client::connect(s.h3_addr().unwrap(), &cert).await;
    let data = blob(300_000, 7);
    let put = client
        .request(Method::PUT, "/v1/blobs", &[], Some(&data))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let json = put.json();
    let id = json["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .expect("a blob ID")
        .to_owned();
    assert_eq!(id, codec::blob_id(10, &data).unwrap().to_string());
    assert_eq!(json["newlyCreated"]["blobObject"]["size"], 300_000);

    let back = s.get(&format!("/v1/blobs/{id}")).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.bytes().as_ref(), data.as_slice());
    let again = client.get(&format!("/v1/blobs/{id}")).await;
    assert_same(&back, &again, "read-back");

    // A declared length over the limit is refused the same way on both protocols.
    let too_big = (1u64 << 40).to_string();
    let h3 = client
        .request(
            Method::PUT,
            "/v1/blobs",
            &[("content-length", &too_big)],
            None,
        )
        .await;
    assert_eq!(h3.status, StatusCode::PAYLOAD_TOO_LARGE);
    client.close().await;
    s.stop().await;
}

/// An inference answer without what differs between two runs of the same request: the
/// proof's signing time and (since it signs that time) its signature.
fn without_time_and_signature(answer: &[u8]) -> String {
    let mut value: serde_json::Value = serde_json::from_slice(answer).expect("a JSON answer");
    let proof = value["proof"].as_object_mut().expect("a proof");
    assert!(proof.remove("signature").is_some(), "a signed proof");
    let record = proof["record"].as_object_mut().expect("a proof record");
    assert!(record.remove("created_at_ms").is_some(), "a signing time");
    serde_json::to_string(&value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_inference_answers_as_http1_does() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("identity.key");
    let (s, cert, _) = scenario(|c| {
        c.identity_key = Some(key);
        c.inference_concurrency = Some(2);
    })
    .await;
    let client = H3Client::connect(s.h3_addr().unwrap(), &cert).await;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../inference/tests/models");
    let model = std::fs::read(models.join("mlp.onnx")).expect("the committed model");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("mlp.json")).unwrap()).unwrap();

    // The model is published over HTTP/3, then run by its Blob ID over both protocols.
    let put = client
        .request(Method::PUT, "/v1/blobs", &[], Some(&model))
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let id = put.json()["newlyCreated"]["blobObject"]["blobId"]
        .as_str()
        .expect("a blob ID")
        .to_owned();
    let path = format!("/v1/inference/{id}");
    let json = [("content-type", "application/json")];
    let cases = reference["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let body = serde_json::json!({ "inputs": case["inputs"] })
            .to_string()
            .into_bytes();
        // HTTP/3 first on the first case: the model's fill and plan build happen over QUIC.
        let h3 = client
            .request(Method::POST, &path, &json, Some(&body))
            .await;
        let h1 = s.send_body(Method::POST, &path, &json, body.clone()).await;
        assert_eq!(h3.status, StatusCode::OK, "case {i}: {:?}", h3.body);
        assert_eq!(h1.status, h3.status, "case {i}");
        same_headers(&h1.headers, &h3.headers, &format!("inference case {i}"));
        assert_eq!(
            without_time_and_signature(h1.bytes()),
            without_time_and_signature(h3.bytes()),
            "case {i}: answers differ beyond the proof's time and signature"
        );
        // The outputs themselves, as sent, are byte-identical.
        let outputs = |reply: &Reply| serde_json::to_string(&reply.json()["outputs"]).unwrap();
        assert_eq!(outputs(&h1), outputs(&h3), "case {i}");
        // And they are onnxruntime's (shape and dtype exactly, values within float error).
        let answer = h3.json();
        for (name, want) in case["outputs"].as_object().unwrap() {
            let got = &answer["outputs"][name];
            assert_eq!(got["shape"], want["shape"], "case {i} {name}");
            assert_eq!(got["dtype"], want["dtype"], "case {i} {name}");
            let (got, want) = (
                got["data"].as_array().unwrap(),
                want["data"].as_array().unwrap(),
            );
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() <= 1e-6 + 1e-4 * w.abs(), "{g} vs {w}");
            }
        }
    }

    // Refusals are the same too, envelope and all.
    let bad = br#"{"inputs": {"x": {"shape": [1, 3], "dtype": "f32", "data": [1, 2, 3]}}}"#;
    let not_json = b"not json";
    for body in [&bad[..], &not_json[..]] {
        let h3 = client.request(Method::POST, &path, &json, Some(body)).await;
        let h1 = s.send_body(Method::POST, &path, &json, body.to_vec()).await;
        assert!(h3.status.is_client_error(), "{}: {:?}", h3.status, h3.body);
        assert_same(
            &h1,
            &h3,
            &format!("refused inference {:?}", String::from_utf8_lossy(body)),
        );
    }
    client.close().await;
    s.stop().await;
}

#[tokio::test]
async fn shutdown_drains_http3_and_refuses_new_connections() {
    let (mut s, cert, _) = scenario(|c| c.max_streams_per_connection = 4).await;
    let data = blob(1_500_000, 3);
    let id = s.store(&data).await;
    let addr = s.h3_addr().unwrap();
    let client = H3Client::connect(addr, &cert).await;
    assert_eq!(
        client.get(&format!("/v1/blobs/{id}")).await.bytes().len(),
        data.len()
    );
    // More requests than the stream limit still complete: the client queues for stream credit.
    let paths: Vec<String> = (0..10).map(|_| format!("/v1/blobs/{id}")).collect();
    let replies = harness::join_all(paths.iter().map(|p| client.get(p)).collect::<Vec<_>>()).await;
    assert!(replies
        .iter()
        .all(|r| r.bytes().as_ref() == data.as_slice()));

    tokio::time::timeout(DEADLINE, s.stop_gateway())
        .await
        .expect("shutdown drains the QUIC connection well within the deadline");
    client.close().await;

    // The endpoint is closed: a new handshake fails (bounded by a short client timeout).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(1).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let attempt = endpoint.connect_with(config, addr, "localhost").unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), attempt).await;
    assert!(
        matches!(refused, Ok(Err(_)) | Err(_)),
        "no handshake after shutdown"
    );
    s.stop().await;
}

#[tokio::test]
async fn curl_reads_over_https_with_http1_and_http2() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("note: curl is not installed; skipping the HTTPS curl check");
        return;
    }
    let (s, _, pem_text) = scenario(|_| {}).await;
    let data = blob(500_000, 9);
    let id = s.store(&data).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("gateway.pem");
    std::fs::write(&pem, pem_text).unwrap();
    let https = s.https_addr().expect("HTTPS is on");
    let h3_port = s.h3_addr().unwrap().port();
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let out = dir.path().join(format!("out{version}"));
        let headers = dir.path().join(format!("headers{version}"));
        let url = format!("https://127.0.0.1:{}/v1/blobs/{id}", https.port());
        let run = tokio::task::spawn_blocking({
            let (pem, out, headers) = (pem.clone(), out.clone(), headers.clone());
            move || {
                std::process::Command::new("curl")
                    .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
                    .arg(flag)
                    .arg("--cacert")
                    .arg(&pem)
                    .arg("--output")
                    .arg(&out)
                    .arg("--dump-header")
                    .arg(&headers)
                    .args(["--write-out", "%{http_version}"])
                    .arg(&url)
                    .output()
                    .expect("curl runs")
            }
        })
        .await
        .unwrap();
        assert!(
            run.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&run.stdout), version, "ALPN chose");
        assert_eq!(std::fs::read(&out).unwrap(), data, "bytes over {flag}");
        let headers = std::fs::read_to_string(&headers).unwrap().to_lowercase();
        assert!(
            headers.contains(&format!("alt-svc: h3=\":{h3_port}\"; ma=86400")),
            "{headers}"
        );
    }
    // A client that does not trust the certificate is refused.
    let untrusted = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{}/status", https.port()))
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    s.stop().await;
}
