//! The `walrus-sim` binary: seeding, the committee file, the `ready` line, CLI faults and
//! assignments, and a `--data-dir` that survives the process being killed.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use http::Method;
use storage_sim::Committee;

/// A running `walrus-sim`, killed (by its own handle) when dropped.
struct Sim {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary and read stdout up to and including `ready`.
async fn start(args: Vec<String>) -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-sim"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line == "ready";
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let mut sim = Sim {
        child,
        lines: Vec::new(),
    };
    sim.lines = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("walrus-sim did not print ready")
        .unwrap();
    assert_eq!(
        sim.lines.last().map(String::as_str),
        Some("ready"),
        "{:?}",
        sim.lines
    );
    sim
}

fn arg(s: impl AsRef<std::ffi::OsStr>) -> String {
    s.as_ref().to_string_lossy().into_owned()
}

fn write_vectors_blob(dir: &Path, v: &Vectors) -> String {
    let path = dir.join("blob.bin");
    std::fs::write(&path, v.blob()).unwrap();
    arg(&path)
}

#[tokio::test]
async fn seeds_writes_the_committee_then_prints_ready() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let seed = write_vectors_blob(dir.path(), &v);
    let committee_path = dir.path().join("committee.json");
    let sim = start(vec![
        "--seed".into(),
        seed.clone(),
        "--committee-out".into(),
        arg(&committee_path),
    ])
    .await;
    assert_eq!(
        sim.lines,
        vec![format!("seeded {} {seed}", v.blob_id()), "ready".into()]
    );

    let committee = Committee::load(&committee_path).unwrap();
    assert_eq!(committee.n_shards, 10);
    assert_eq!(committee.nodes.len(), 4);
    for node in &committee.nodes {
        assert_eq!(
            get(&node.url, &metadata_path(&v.blob_id()))
                .await
                .body
                .as_ref(),
            v.metadata_with_id().as_slice()
        );
    }
    let owner = &committee.nodes[committee.node_for_shard(v.shard(7)).unwrap()];
    assert_eq!(
        get(&owner.url, &sliver_path(&v.blob_id(), 7, "primary"))
            .await
            .body
            .as_ref(),
        v.sliver_bcs(7, "primary").as_slice()
    );
}

#[tokio::test]
async fn cli_faults_apply_to_the_named_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let seed = write_vectors_blob(dir.path(), &v);
    let faults = dir.path().join("faults.toml");
    std::fs::write(&faults, "[node.node-3]\nlie_not_found = true\n").unwrap();
    let assignment = dir.path().join("assignment.json");
    std::fs::write(&assignment, "[[0,1,2,3,4,5,6],[7],[8],[9]]").unwrap();
    let committee_path = dir.path().join("committee.json");
    let _sim = start(vec![
        "--seed".into(),
        seed,
        "--committee-out".into(),
        arg(&committee_path),
        "--faults".into(),
        arg(&faults),
        "--offline-nodes".into(),
        "1".into(),
        "--corrupt-nodes".into(),
        "1".into(),
        "--assignment".into(),
        arg(&assignment),
    ])
    .await;
    let c = Committee::load(&committee_path).unwrap();
    assert_eq!(c.nodes[0].shards.len(), 7);
    assert_eq!(c.nodes[1].shards, vec![7]);
    let id = v.blob_id();
    // node-0: offline.
    let err = call(Method::GET, &c.nodes[0].url, "/v1/health", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // node-1: corrupt slivers (pair whose shard it owns).
    let pair = (0..10u16)
        .find(|&p| c.node_for_shard(v.shard(p)) == Some(1))
        .unwrap();
    let reply = get(&c.nodes[1].url, &sliver_path(&id, pair, "primary")).await;
    assert_eq!(reply.status, 200);
    assert_ne!(
        reply.body.as_ref(),
        v.sliver_bcs(pair, "primary").as_slice()
    );
    // node-2: honest.
    assert_eq!(get(&c.nodes[2].url, &metadata_path(&id)).await.status, 200);
    // node-3: lies.
    get(&c.nodes[3].url, &metadata_path(&id))
        .await
        .assert_error(404, "NOT_FOUND", "METADATA_NOT_FOUND");
}

#[tokio::test]
async fn data_dir_survives_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let v = Vectors::load();
    let seed = write_vectors_blob(dir.path(), &v);
    let data = dir.path().join("data");
    let committee_path = dir.path().join("committee.json");
    let first = start(vec![
        "--seed".into(),
        seed,
        "--data-dir".into(),
        arg(&data),
        "--committee-out".into(),
        arg(&committee_path),
    ])
    .await;
    drop(first); // SIGKILL: no graceful shutdown.

    let second = start(vec![
        "--data-dir".into(),
        arg(&data),
        "--committee-out".into(),
        arg(&committee_path),
    ])
    .await;
    assert_eq!(second.lines, vec!["ready".to_string()]);
    let c = Committee::load(&committee_path).unwrap();
    for pair in [0u16, 9] {
        let owner = &c.nodes[c.node_for_shard(v.shard(pair)).unwrap()];
        assert_eq!(
            get(&owner.url, &sliver_path(&v.blob_id(), pair, "secondary"))
                .await
                .body
                .as_ref(),
            v.sliver_bcs(pair, "secondary").as_slice()
        );
    }
}

#[tokio::test]
async fn bad_arguments_fail_before_ready() {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus-sim"))
        .args([
            "--nodes",
            "4",
            "--offline-nodes",
            "3",
            "--corrupt-nodes",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("ready"));
    let output = Command::new(env!("CARGO_BIN_EXE_walrus-sim"))
        .args(["--n-shards", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn tls_writes_https_committee_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let committee_path = dir.path().join("committee.json");
    let certs_path = dir.path().join("certs.pem");
    let _sim = start(vec![
        "--tls".into(),
        "--nodes".into(),
        "3".into(),
        "--committee-out".into(),
        arg(&committee_path),
        "--certs-out".into(),
        arg(&certs_path),
    ])
    .await;
    let c = Committee::load(&committee_path).unwrap();
    assert_eq!(c.nodes.len(), 3);
    let pem = std::fs::read_to_string(&certs_path).unwrap();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    for node in &c.nodes {
        assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
        let key = node.network_public_key.as_deref().unwrap();
        assert!(storage_sim::committee::parse_network_key(key).is_some());
    }
}

#[tokio::test]
async fn epoch_timer_rewrites_the_committee_file() {
    let dir = tempfile::tempdir().unwrap();
    let committee_path = dir.path().join("committee.json");
    let _sim = start(vec![
        "--epoch-secs".into(),
        "1".into(),
        "--epoch-sync-ms".into(),
        "100".into(),
        "--committee-out".into(),
        arg(&committee_path),
    ])
    .await;
    let first = Committee::load(&committee_path).unwrap();
    let url = first.nodes[0].url.clone();
    // Bounded wait for the first timed epoch change to reach the node and the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health = get(&url, "/v1/health").await.success_data(200);
        let now = Committee::load(&committee_path).unwrap();
        if health["epoch"].as_u64().unwrap() >= 2 && now != first {
            assert_eq!(now.nodes.len(), first.nodes.len());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no epoch change within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The admin endpoint advances on request too.
    let reply = call(Method::POST, &url, "/sim/advance-epoch", None)
        .await
        .unwrap();
    assert!(reply.success_data(200)["epoch"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn sui_listen_prints_its_objects_and_writes_a_client_config() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("client_config.yaml");
    let sim = start(vec![
        "--tls".into(),
        "--sui-listen".into(),
        "127.0.0.1:0".into(),
        "--walrus-config-out".into(),
        arg(&config_path),
    ])
    .await;
    // `sui <url> system <id> staking <id>`, before `ready`.
    let line = sim
        .lines
        .iter()
        .find(|l| l.starts_with("sui "))
        .expect("a sui line");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 6, "{line}");
    assert_eq!((words[2], words[4]), ("system", "staking"));
    let url = words[1];
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let network = chain::network::parse_client_config(&text, None).unwrap();
    assert_eq!(network.rpc_urls, [url]);
    assert_eq!(network.system_object.to_string(), words[3]);
    assert_eq!(network.staking_object.to_string(), words[5]);
    // The control route on the Sui address starts an epoch change.
    let reply = call(Method::POST, url, "/sim/epoch", None).await.unwrap();
    assert_eq!(reply.status, 200);
    let change = reply.json();
    assert_eq!(change["epoch"], 2);
    assert!(change["moved_shards"].as_u64().unwrap() >= 1, "{change}");
}

#[tokio::test]
async fn sui_listen_refuses_a_non_loopback_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_walrus-sim"))
        .args(["--sui-listen", "0.0.0.0:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
