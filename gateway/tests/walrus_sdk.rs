//! The official Walrus TypeScript SDK (`@mysten/walrus` 1.2.13 with `@mysten/sui` 2.33.1, as
//! pinned in `tests/peers/walrus-sdk/package.json`) as an independent client of walrus-sim: its
//! `WalrusClient.readBlob` finds the committee on the simulated Sui full node (gRPC-Web) and
//! reads slivers from the TLS nodes (their certificates trusted for that process only, through
//! `NODE_EXTRA_CA_CERTS`). It must return the same bytes as the gateway, before and after an
//! epoch change: proof that the simulated chain objects and node API are the ones the real
//! client reads. `.ci/run` installs the SDK and sets `WALRUS_SDK_DIR`; without it the test is
//! skipped, unless `WALRUS_REQUIRE_PEERS=1`.

mod harness;

use chain::committee::RefreshPolicy;
use codec::BlobId;
use gateway::chain_reader::ChainReader;
use gateway::committee::NodeScheme;
use gateway::server::CommitteeSource;
use gateway::Gateway;
use harness::{blob, config, send};
use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage_sim::sui::SuiSim;
use storage_sim::{SimConfig, SimNetwork};

fn sdk_dir() -> Option<PathBuf> {
    match std::env::var_os("WALRUS_SDK_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var("WALRUS_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("WALRUS_SDK_DIR is not set, and peers are required (.ci/run installs the SDK)")
        }
        None => {
            eprintln!("skipped: WALRUS_SDK_DIR is not set (.ci/run installs the Walrus TS SDK)");
            None
        }
    }
}

/// `readBlob` through the SDK; the bytes it returned.
async fn sdk_read(dir: &Path, sui: &SuiSim, certs: &Path, id: &BlobId) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let run = tokio::process::Command::new("node")
        .arg(dir.join("read-blob.mjs"))
        .env("SUI_URL", sui.url())
        .env("SYSTEM_OBJECT", sui.system_object().to_string())
        .env("STAKING_OBJECT", sui.staking_object().to_string())
        .env("BLOB_ID", id.to_string())
        .env("OUT", out.path())
        .env("NODE_EXTRA_CA_CERTS", certs)
        .env("TIMEOUT_MS", "60000")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK finishes within 90 s")
        .expect("node runs");
    assert!(
        output.status.success(),
        "the SDK failed to read {id}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_reads_what_the_gateway_serves() {
    let Some(dir) = sdk_dir() else { return };
    let net = Arc::new(
        SimNetwork::start(SimConfig {
            n_shards: 10,
            nodes: 4,
            tls: true,
            epoch_sync_ms: 300,
            ..SimConfig::default()
        })
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sui = SuiSim::start(listener, net.chain_control()).await.unwrap();
    let certs = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(certs.path(), net.certificates_pem()).unwrap();
    let yaml = storage_sim::sui::walrus_client_config(
        &sui.url(),
        &sui.system_object(),
        &sui.staking_object(),
    );
    let source = CommitteeSource::Chain {
        reader: Box::new(ChainReader::new(
            chain::network::parse_client_config(&yaml, None).unwrap(),
            Duration::from_secs(5),
        )),
        scheme: NodeScheme::Https,
        policy: RefreshPolicy {
            normal: Duration::from_millis(200),
            near: Duration::from_millis(200),
            near_window: Duration::ZERO,
            sync: Duration::from_millis(100),
        },
    };
    let gateway = Gateway::bind_source(config(), source)
        .await
        .unwrap()
        .spawn();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let store = |data: Vec<u8>| {
        let net = net.clone();
        async move {
            tokio::task::spawn_blocking(move || net.store(&data))
                .await
                .unwrap()
                .unwrap()
        }
    };

    let first = blob(100_000, 7);
    let first_id = store(first.clone()).await;
    let from_sdk = sdk_read(&dir, &sui, certs.path(), &first_id).await;
    let from_gateway = send(
        &client,
        gateway.addr(),
        Method::GET,
        &format!("/v1/blobs/{first_id}"),
        &[],
    )
    .await;
    assert_eq!(from_gateway.status, 200);
    assert_eq!(from_sdk, first);
    assert_eq!(from_gateway.bytes(), &from_sdk[..]);

    net.advance_epoch().await.unwrap();
    // Let the shards finish moving, so both clients read the new committee.
    for _ in 0..200 {
        if !net.chain_view().state.is_transitioning() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!net.chain_view().state.is_transitioning());
    let second = blob(60_000, 8);
    let second_id = store(second.clone()).await;
    for (id, data) in [(first_id, &first), (second_id, &second)] {
        let from_sdk = sdk_read(&dir, &sui, certs.path(), &id).await;
        assert_eq!(&from_sdk, data, "the SDK's bytes after the epoch change");
        let from_gateway = send(
            &client,
            gateway.addr(),
            Method::GET,
            &format!("/v1/blobs/{id}"),
            &[],
        )
        .await;
        assert_eq!(from_gateway.status, 200);
        assert_eq!(from_gateway.bytes(), &from_sdk[..]);
    }
    gateway.shutdown().await.unwrap();
    sui.shutdown().await;
    if let Ok(net) = Arc::try_unwrap(net) {
        net.shutdown().await;
    }
}
