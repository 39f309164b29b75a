//! The CLI subcommands as a user runs them: `blob-id` (the Blob ID alone on stdout, or a
//! one-line reason on stderr and a non-zero exit), `committee`, `put` and `get` (streaming with
//! bounded memory, verified rows only, the gateway's own refusals) and `serve`'s argument checks.

mod harness;

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

/// Blob IDs are base64url, so one in 64 starts with `-`: `get` and `verify-proof` take it as the
/// ID, not as an unknown option (a stored proof's ID once did exactly that).
#[test]
fn blob_ids_starting_with_a_dash_are_ids() {
    let id = "-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for args in [
        vec![
            "get",
            "--gateway",
            "http://127.0.0.1:9",
            "--n-shards",
            "10",
            id,
        ],
        vec![
            "verify-proof",
            "--gateway",
            "http://127.0.0.1:9",
            "--n-shards",
            "10",
            "--inputs",
            "/no/such/inputs.json",
            id,
        ],
    ] {
        let out = run(&args, b"");
        assert!(!out.status.success(), "{args:?}: nothing listens on port 9");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
        assert!(!stderr.contains("Usage:"), "{stderr}");
    }
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

/// A fake gateway serving one blob: `/status` (the committee size), the blob's metadata, and
/// the blob, with byte `corrupt_at` flipped if set (a gateway or path that corrupts midway).
struct FakeGateway {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGateway {
    async fn start(
        n_shards: u16,
        blob: bytes::Bytes,
        corrupt_at: Option<usize>,
    ) -> (Self, codec::BlobId) {
        let config = codec::EncodingConfig::new(n_shards).unwrap();
        let check = blob.clone();
        let meta =
            tokio::task::spawn_blocking(move || codec::compute_metadata(&config, &check).unwrap())
                .await
                .unwrap();
        let id = meta.blob_id();
        let metadata =
            bytes::Bytes::from(codec::bcs::encode_metadata_with_id(&id, meta.metadata()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (blob, metadata) = (blob.clone(), metadata.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, n_shards, id, &blob, &metadata, corrupt_at).await;
                });
            }
        });
        (Self { addr, task }, id)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    n_shards: u16,
    id: codec::BlobId,
    blob: &[u8],
    metadata: &[u8],
    corrupt_at: Option<usize>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let ok = |len: usize, extra: &str| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n")
    };
    if path == "/status" {
        let head = ok(0, &format!("x-walrus-n-shards: {n_shards}\r\n"));
        stream.write_all(head.as_bytes()).await?;
    } else if path == format!("/v1/blobs/{id}/metadata") {
        stream.write_all(ok(metadata.len(), "").as_bytes()).await?;
        stream.write_all(metadata).await?;
    } else if path == format!("/v1/blobs/{id}") {
        stream.write_all(ok(blob.len(), "").as_bytes()).await?;
        let mut start = 0;
        for piece in blob.chunks(1 << 20) {
            match corrupt_at {
                Some(at) if (start..start + piece.len()).contains(&at) => {
                    let mut bad = piece.to_vec();
                    bad[at - start] ^= 0x40;
                    stream.write_all(&bad).await?;
                }
                _ => stream.write_all(piece).await?,
            }
            start += piece.len();
        }
    } else {
        let body = r#"{"error":{"code":404,"message":"no such path"}}"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize) -> bytes::Bytes {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// The peak resident set (VmHWM, KiB) of a running process, if it can be read.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run the CLI with `args`, sampling its peak RSS until it exits.
async fn run_measured(args: Vec<String>) -> (Output, u64) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
            out
        });
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            if let Some(kib) = peak_rss_kib(pid) {
                peak = peak.max(kib);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut output = child.wait_with_output().unwrap();
        output.stdout = reader.join().unwrap();
        (output, peak)
    })
    .await
    .unwrap()
}

/// `get` of a 500 MB blob (1000 shards: rows of 1.5 MB) streams it through row-by-row
/// verification into the target with a peak RSS under 64 MiB, and the bytes are the blob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_of_a_500_mb_blob_stays_under_64_mib() {
    let blob = pattern(500_000_000);
    let (gateway, id) = FakeGateway::start(1000, blob.clone(), None).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let (out, peak_kib) = run_measured(vec![
        "get".into(),
        "--gateway".into(),
        gateway.url(),
        id.to_string(),
        "-o".into(),
        target.to_str().unwrap().into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(peak_kib > 0, "VmHWM was never read");
    assert!(
        peak_kib < 64 << 10,
        "peak RSS {peak_kib} KiB for a 500 MB blob"
    );
    let written = std::fs::read(&target).unwrap();
    assert_eq!(written.len(), blob.len());
    assert!(
        written == blob[..],
        "the written bytes differ from the blob"
    );
    // Only the target is left: the temporary file was renamed, not copied.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    eprintln!("get of 500 MB: peak RSS {} MiB", peak_kib >> 10);
}

/// A gateway that corrupts one byte midway: `get -o` fails naming the row and leaves nothing at
/// the target (nor a temporary file); to stdout, only the verified rows before it are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_writes_nothing_when_a_row_fails_midway() {
    let len = 20_000_000;
    let blob = pattern(len);
    let (gateway, id) = FakeGateway::start(1000, blob.clone(), Some(len / 2)).await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("model.bin");
    let url = gateway.url();
    let (file, stdout) = tokio::task::spawn_blocking({
        let (target, url, id) = (target.clone(), url.clone(), id.to_string());
        move || {
            (
                run(
                    &[
                        "get",
                        "--gateway",
                        &url,
                        &id,
                        "-o",
                        target.to_str().unwrap(),
                    ],
                    b"",
                ),
                run(&["get", "--gateway", &url, &id], b""),
            )
        }
    })
    .await
    .unwrap();
    assert!(!file.status.success());
    let stderr = String::from_utf8(file.stderr).unwrap();
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(!target.exists(), "a file was left at the target");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "a temporary file was left behind"
    );
    assert!(!stdout.status.success());
    // A verified prefix, whole rows only, stopping before the corrupt byte.
    assert!(stdout.stdout.len() < len / 2, "{}", stdout.stdout.len());
    assert!(stdout.stdout[..] == blob[..stdout.stdout.len()]);
    // The same blob served intact verifies (so the failure above is the corruption).
    drop(gateway);
    let (good, id2) = FakeGateway::start(1000, blob.clone(), None).await;
    assert_eq!(id, id2);
    let url = good.url();
    let ok = tokio::task::spawn_blocking(move || {
        run(&["get", "--gateway", &url, &id2.to_string()], b"")
    })
    .await
    .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(ok.stdout == blob[..]);
}

/// `get … | head`: the reader closes standard output; the CLI ends with exit code 141 and says
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_into_a_closed_pipe_ends_quietly() {
    let blob = pattern(8_000_000);
    let (gateway, id) = FakeGateway::start(100, blob, None).await;
    let url = gateway.url();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
            .args(["get", "--gateway", &url, &id.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 10];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `put` through a real gateway: its refusals arrive as its status and message (413 with the
/// limit, although the gateway answers before the body is sent; 401; 403), each cause once;
/// an accepted file's ID equals `blob-id --gateway`'s, and `get` returns the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reports_the_gateway_answer_and_agrees_with_blob_id() {
    let mut config = harness::config();
    config.max_upload = 1 << 20;
    config.publish_token = Some("sekrit".into());
    let scenario = harness::Scenario::with(
        storage_sim::SimConfig {
            n_shards: 10,
            nodes: 4,
            ..storage_sim::SimConfig::default()
        },
        config,
    )
    .await;
    let url = format!("http://{}", scenario.addr);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pattern(40 << 20)).unwrap();
    let small = dir.path().join("small.bin");
    let data = pattern(300_000);
    std::fs::write(&small, &data).unwrap();
    let (too_big, no_token, stored, blob_id, fetched, closed) = tokio::task::spawn_blocking({
        let (big, small, url) = (
            big.to_str().unwrap().to_owned(),
            small.to_str().unwrap().to_owned(),
            url.clone(),
        );
        move || {
            let put = |file: &str, token: &[&str]| {
                let mut args = vec!["put", "--gateway", &url];
                args.extend_from_slice(token);
                args.push(file);
                run(&args, b"")
            };
            let stored = put(&small, &["--token", "sekrit"]);
            let id = String::from_utf8_lossy(&stored.stdout)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            (
                put(&big, &["--token", "sekrit"]),
                put(&small, &[]),
                stored,
                run(&["blob-id", "--gateway", &url, &small], b""),
                run(&["get", "--gateway", &url, &id], b""),
                run(&["put", "--gateway", "http://127.0.0.1:1", &small], b""),
            )
        }
    })
    .await
    .unwrap();
    let one_line = |out: &Output, needle: &str| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        stderr.into_owned()
    };
    one_line(
        &too_big,
        "answered 413: the request body exceeds the 1048576-byte limit",
    );
    one_line(&no_token, "answered 401");
    let refused = one_line(&closed, "cannot reach the gateway");
    // No cause twice ("X: X").
    let parts: Vec<&str> = refused.trim_end().split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(part), "{refused}");
    }
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    let id = codec::blob_id(10, &data).unwrap();
    assert_eq!(
        String::from_utf8(stored.stdout).unwrap(),
        format!("{id}  {}\n", small.display())
    );
    assert_eq!(
        String::from_utf8(blob_id.stdout).unwrap(),
        format!("{id}\n")
    );
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert!(fetched.stdout == data);
    scenario.stop().await;

    // A read-only gateway (--no-publish): 403 with its reason.
    let mut config = harness::config();
    config.publish_enabled = false;
    let read_only = harness::Scenario::with(
        storage_sim::SimConfig {
            n_shards: 10,
            nodes: 4,
            ..storage_sim::SimConfig::default()
        },
        config,
    )
    .await;
    let url = format!("http://{}", read_only.addr);
    let small = small.to_str().unwrap().to_owned();
    let refused =
        tokio::task::spawn_blocking(move || run(&["put", "--gateway", &url, &small], b""))
            .await
            .unwrap();
    one_line(&refused, "the gateway answered 403");
    read_only.stop().await;
}

/// `serve --tls-self-signed` without a TLS listener is refused before anything starts.
#[test]
fn tls_self_signed_alone_is_refused() {
    fails_with_one_line(
        &["serve", "--tls-self-signed", "--bind", "127.0.0.1:0"],
        b"",
        "--tls-self-signed makes a certificate for --https-listen or --h3-listen",
    );
}

/// A gateway that refuses an upload by resetting the connection mid-body (the kernel then
/// discards any answer it sent): `put` asks again with `Expect: 100-continue` and no body, and
/// reports the gateway's answer instead of the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_reports_a_refusal_that_came_with_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut expects = 0;
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request head");
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            if head.contains("expect: 100-continue") {
                expects += 1;
                let body = r#"{"error":{"code":413,"message":"the request body exceeds the 1024-byte limit"}}"#;
                let answer = format!(
                    "HTTP/1.1 413 Payload Too Large\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            } else {
                // Close with a reset while the body is still coming.
                rustix::net::sockopt::set_socket_linger(&stream, Some(std::time::Duration::ZERO))
                    .unwrap();
            }
            drop(stream);
        }
        expects
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, pattern(8 << 20)).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || run(&["put", "--gateway", &url, &file], b""))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the gateway answered 413: the request body exceeds the 1024-byte limit"),
        "{stderr}"
    );
    assert_eq!(
        server.await.unwrap(),
        1,
        "one request with Expect: 100-continue"
    );
}

/// `get` by quilt patch ID (issue 16): the patch's bytes to a file or stdout, after the quilt's
/// metadata checked against its Blob ID; a patch ID whose columns the quilt lacks, and an ID
/// that is neither kind, are one-line errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_a_quilt_patch_id() {
    let s = harness::Scenario::start(10, 4).await;
    let base = format!("http://{}", s.addr);
    let files = vec![
        ("a.txt".to_owned(), bytes::Bytes::from_static(b"alpha")),
        ("b.bin".to_owned(), pattern(20_000)),
    ];
    let patches = gateway::quilt::put_quilt(&base, None, &files)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (identifier, id) in &patches {
        let want = &files.iter().find(|f| &f.0 == identifier).unwrap().1;
        let out = dir.path().join(identifier);
        let args: Vec<String> = vec![
            "get".into(),
            "--gateway".into(),
            base.clone(),
            id.to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        let to_file = tokio::task::spawn_blocking(move || {
            run(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"")
        })
        .await
        .unwrap();
        assert!(
            to_file.status.success(),
            "{}",
            String::from_utf8_lossy(&to_file.stderr)
        );
        assert_eq!(&std::fs::read(&out).unwrap()[..], &want[..]);
        let args: Vec<String> = vec![
            "get".into(),
            "--gateway".into(),
            base.clone(),
            id.to_string(),
        ];
        let to_stdout = tokio::task::spawn_blocking(move || {
            run(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"")
        })
        .await
        .unwrap();
        assert!(to_stdout.status.success());
        assert_eq!(&to_stdout.stdout[..], &want[..]);
    }
    // A quilt of n = 10 has 7 columns (0..7): 9..10 are not columns of it.
    let outside = codec::quilt::QuiltPatchId {
        end_index: 10,
        start_index: 9,
        ..patches[0].1
    };
    let (base2, outside) = (base.clone(), outside.to_string());
    let out =
        tokio::task::spawn_blocking(move || run(&["get", "--gateway", &base2, &outside], b""))
            .await
            .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not have"), "{stderr}");
    assert!(out.stdout.is_empty());
    fails_with_one_line(
        &["get", "--gateway", &base, "--n-shards", "10", "not-an-id"],
        b"",
        "is neither a Blob ID",
    );
    s.stop().await;
}
