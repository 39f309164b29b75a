//! The `walrus-gateway blob-id` subcommand: the Blob ID alone on stdout, or a one-line reason on
//! stderr and a non-zero exit.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // A command that fails before reading stdin closes it early: a broken pipe is expected.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn prints_the_blob_id_of_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    for n in [10u16, 1000] {
        let expected = format!("{}\n", codec::blob_id(n, &data).unwrap());
        let n_arg = n.to_string();
        let from_file = run(
            &["blob-id", "--n-shards", &n_arg, path.to_str().unwrap()],
            b"",
        );
        assert!(from_file.status.success());
        assert_eq!(String::from_utf8(from_file.stdout).unwrap(), expected);
        let from_stdin = run(&["blob-id", "--n-shards", &n_arg, "-"], &data);
        assert!(from_stdin.status.success());
        assert_eq!(String::from_utf8(from_stdin.stdout).unwrap(), expected);
    }
    let default = run(&["blob-id", path.to_str().unwrap()], b"");
    assert_eq!(
        String::from_utf8(default.stdout).unwrap(),
        format!("{}\n", codec::blob_id(1000, &data).unwrap())
    );
}

fn fails_with_one_line(args: &[&str], stdin: &[u8], needle: &str) {
    let out = run(args, stdin);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn errors_are_one_line_reasons() {
    fails_with_one_line(
        &["blob-id", "/no/such/file"],
        b"",
        "cannot open /no/such/file",
    );
    fails_with_one_line(&["blob-id", "--n-shards", "3", "-"], b"x", "at least 4");
    // n = 4: kp = 2, ks = 3, at most 2 * 3 * 65534 bytes.
    let too_big = vec![0u8; 2 * 3 * 65534 + 1];
    fails_with_one_line(
        &["blob-id", "--n-shards", "4", "-"],
        &too_big,
        "larger than",
    );
}

/// `walrus-gateway committee`: the chain's committee as `serve` reads it, and a committee file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committee_prints_what_the_chain_says() {
    let net = storage_sim::SimNetwork::start(storage_sim::SimConfig {
        n_shards: 10,
        nodes: 4,
        tls: true,
        ..storage_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sui = storage_sim::sui::SuiSim::start(listener, net.chain_control())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client_config.yaml");
    std::fs::write(&config, sui.client_config()).unwrap();
    let committee_file = dir.path().join("committee.json");
    net.committee().save(&committee_file).unwrap();
    let (config, committee_file) = (config.to_str().unwrap().to_owned(), committee_file);
    let outputs = tokio::task::spawn_blocking(move || {
        (
            run(&["committee", "--walrus-config", &config, "--json"], b""),
            run(&["committee", "--walrus-config", &config], b""),
            run(
                &["committee", "--committee", committee_file.to_str().unwrap()],
                b"",
            ),
            run(&["committee"], b""),
        )
    })
    .await
    .unwrap();
    let (json, table, file, none) = outputs;
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(view["epoch"], 1);
    assert_eq!(view["epoch_state"], "EpochChangeDone");
    assert_eq!(view["n_shards"], 10);
    // Staking, its inner field, one batch of pools (no chain id to check for a config file).
    assert_eq!(view["rpcs"], 3);
    let committee = net.committee();
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), committee.nodes.len());
    for node in &committee.nodes {
        let shown = nodes
            .iter()
            .find(|n| n["name"] == node.name.as_str())
            .unwrap_or_else(|| panic!("{} missing from {view}", node.name));
        assert_eq!(shown["url"], node.url.as_str());
        assert_eq!(shown["shards"], node.shards.len());
        assert_eq!(
            shown["network_public_key"].as_str(),
            node.network_public_key.as_deref()
        );
    }
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.starts_with("epoch 1 (EpochChangeDone), 10 shards, 4 nodes"),
        "{table}"
    );
    assert!(file.status.success());
    assert!(String::from_utf8(file.stdout)
        .unwrap()
        .starts_with("static committee file: 10 shards, 4 nodes"));
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("--network, --walrus-config or --committee")
    );
    sui.shutdown().await;
    net.shutdown().await;
}
