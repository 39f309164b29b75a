//! HTTP/3 interoperability with an independent implementation (issue 8): the `aioquic` Python
//! package's HTTP/3 client (`tests/peers/h3_get.py`) downloads blobs from `walrus-gateway serve
//! --h3-listen … --tls-self-signed`, trusting the certificate the gateway wrote, and the bytes
//! must hash to their Blob ID.
//!
//! The interpreter is `$WALRUS_H3_PEER_PYTHON` (`.ci/run` installs a pinned aioquic into a
//! virtualenv under `target/peers/` and sets it), else `python3` if it can import aioquic.
//! Without either, the test prints a loud note and passes, so a plain `cargo test` works on a
//! machine without aioquic; with `WALRUS_REQUIRE_PEERS=1` (as `.ci/run` sets) it fails instead.

mod harness;

use harness::{blob, Served};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PEER_ENV: &str = "WALRUS_H3_PEER_PYTHON";
const REQUIRE_ENV: &str = "WALRUS_REQUIRE_PEERS";

/// A Python that can import aioquic, or `None` (after a note) when there is none and peers are
/// not required.
fn peer_python() -> Option<PathBuf> {
    let configured = std::env::var_os(PEER_ENV).map(PathBuf::from);
    let python = configured
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let probe = Command::new(&python)
        .args(["-c", "import aioquic; print(aioquic.__version__)"])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            println!("aioquic {} via {}", version.trim(), python.display());
            return Some(python);
        }
        Ok(out) => format!(
            "{} cannot import aioquic ({})",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("{} does not run ({e})", python.display()),
    };
    let why = if configured.is_none() {
        format!("{PEER_ENV} is not set and {why}")
    } else {
        why
    };
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!(
            "{REQUIRE_ENV}=1 but {why}. `.ci/run` installs aioquic into target/peers/ and sets \
             {PEER_ENV}; see its output for why that failed."
        );
    }
    let banner = "*".repeat(78);
    let note = format!(
        "\n{banner}\n* NOTE: the aioquic HTTP/3 interop test did NOT run: {why}.\n* Run .ci/run, or \
         `python3 -m venv v && v/bin/pip install aioquic` and set {PEER_ENV}=v/bin/python.\n{banner}\n"
    );
    println!("{note}");
    eprintln!("{note}");
    None
}

/// Run the aioquic client: GET `url` trusting `cacert`, body to `output`.
fn h3_get(python: &Path, url: &str, cacert: &Path, output: &Path, headers: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/h3_get.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(url)
        .arg("--cacert")
        .arg(cacert)
        .arg("--output")
        .arg(output)
        .args(["--timeout", "60"]);
    for header in headers {
        command.args(["--header", header]);
    }
    command.output().expect("python runs")
}

/// The JSON line the client prints: status, headers, length, ALPN.
fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "aioquic client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[test]
fn aioquic_downloads_blobs_that_verify() {
    let Some(python) = peer_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let big = blob(1_500_000, 11);
    let small = blob(20_000, 12);
    let (big_file, small_file) = (dir.path().join("big.bin"), dir.path().join("small.bin"));
    std::fs::write(&big_file, &big).unwrap();
    std::fs::write(&small_file, &small).unwrap();
    let cacert = dir.path().join("gateway.pem");
    let mut served = Served::start(&[
        "--listen",
        "127.0.0.1:0",
        "--h3-listen",
        "127.0.0.1:0",
        "--tls-self-signed",
        "--tls-self-signed-out",
        cacert.to_str().unwrap(),
        "--seed",
        big_file.to_str().unwrap(),
        "--seed",
        small_file.to_str().unwrap(),
    ]);
    let addr = served.line_after("listening on HTTP/3 (UDP) ");
    // The embedded network has 10 shards.
    let big_id = codec::blob_id(10, &big).unwrap();
    let small_id = codec::blob_id(10, &small).unwrap();

    for (id, data) in [(&big_id, &big), (&small_id, &small)] {
        // Twice: a cold read (filled from the nodes while streaming) and a cache hit.
        for attempt in ["cold", "hit"] {
            let output = dir.path().join(format!("{id}-{attempt}"));
            let url = format!("https://{addr}/v1/blobs/{id}");
            let reply = summary(&h3_get(&python, &url, &cacert, &output, &[]));
            assert_eq!(reply["status"], 200, "{reply}");
            assert_eq!(reply["alpn"], "h3");
            assert_eq!(reply["length"], data.len());
            assert_eq!(reply["headers"]["content-length"], data.len().to_string());
            let got = std::fs::read(&output).unwrap();
            assert_eq!(
                codec::blob_id(10, &got).unwrap(),
                *id,
                "{attempt} read: the bytes aioquic received hash to another Blob ID"
            );
            assert!(got == *data, "{attempt} read: bytes differ");
        }
    }

    // A range, as aioquic asks for it.
    let output = dir.path().join("range");
    let url = format!("https://{addr}/v1/blobs/{big_id}");
    let reply = summary(&h3_get(
        &python,
        &url,
        &cacert,
        &output,
        &["range: bytes=1000000-1099999"],
    ));
    assert_eq!(reply["status"], 206, "{reply}");
    assert_eq!(
        reply["headers"]["content-range"],
        format!("bytes 1000000-1099999/{}", big.len())
    );
    assert_eq!(std::fs::read(&output).unwrap(), &big[1_000_000..1_100_000]);

    // aioquic really verifies: a certificate the gateway does not serve is refused.
    let other = gateway::tls::TlsIdentity::self_signed(&["127.0.0.1".into()]).unwrap();
    let wrong = dir.path().join("other.pem");
    std::fs::write(&wrong, other.cert_pem).unwrap();
    let output = dir.path().join("refused");
    let refused = h3_get(&python, &url, &wrong, &output, &[]);
    assert!(!refused.status.success(), "an untrusted certificate passed");
    assert!(!output.exists(), "nothing written for a refused connection");
    drop(served);
}
