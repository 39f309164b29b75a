//! Where the disk tier lives (issues 19 and 20): `serve` without `--cache-dir` uses the
//! platform cache directory and says so; a directory is used by one gateway at a time (an
//! explicit one that is locked refuses to start, naming the directory and the holder's pid;
//! the default one falls back to memory only); `--no-disk-cache` says which sizes are never
//! cached. Every process here gets its own `XDG_CACHE_HOME`, never the real home.

mod harness;

use bytes::Bytes;
use harness::Served;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `serve ARGS` with `XDG_CACHE_HOME` at `cache_home`, expected to exit on its own: its exit
/// success and stderr (killed, and the test failed, if it is still running after 30 s).
fn serve_expecting_exit(cache_home: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(args)
        .env("XDG_CACHE_HOME", cache_home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get(url: &str) -> (u16, Option<String>, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, cache, body)
}

#[test]
fn a_locked_cache_dir_refuses_a_second_gateway_naming_the_dir_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = cache_dir.to_str().unwrap();
    let mut first = Served::start(&["--bind", "127.0.0.1:0", "--cache-dir", cache]);
    first.line_after("listening on ");
    let (ok, stderr) = serve_expecting_exit(first.cache_home.path(), &["--cache-dir", cache]);
    assert!(!ok, "a second gateway started on a locked directory");
    assert!(stderr.contains(cache), "{stderr}");
    assert!(stderr.contains("in use by another gateway"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    // Once the holder is gone, the directory is usable again (the kernel dropped the lock).
    drop(first);
    let mut again = Served::start(&["--bind", "127.0.0.1:0", "--cache-dir", cache]);
    assert_eq!(
        again.line_after("disk tier "),
        format!("{cache}, up to {} bytes", 50u64 << 30)
    );
}

#[test]
fn serve_without_cache_dir_uses_the_default_directory_and_a_second_run_is_a_disk_hit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.bin");
    let data = harness::blob(3 << 19, 21);
    std::fs::write(&file, &data).unwrap();
    // A 1 MiB memory limit per object stands in for the 256 MiB default: the 1.5 MiB blob (near
    // the embedded 10-shard network's maximum) is "too large for memory" as a 300 MB one is by
    // default, and the test stays light.
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--memory-max-object",
        "1MiB",
        "--seed",
        file.to_str().unwrap(),
    ];
    let mut served = Served::start(&args);
    let id = served.line();
    let base = served.line_after("listening on ");
    let default_dir = served.cache_home.path().join("walrus-gateway");
    let line = served.line_after("disk tier ");
    assert!(
        line.starts_with(&format!("{}, up to ", default_dir.display())),
        "{line}"
    );
    assert!(
        line.ends_with("(the default directory; --cache-dir to choose, --no-disk-cache for none)"),
        "{line}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("{base}/v1/blobs/{id}");
    let (status, cache, body) = runtime.block_on(get(&url));
    assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    assert_eq!(body.as_ref(), &data[..]);
    let file = default_dir.join("blobs").join(&id[..2]).join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "the blob never reached the default disk tier"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, cache, body) = runtime.block_on(get(&url));
    assert_eq!((status, cache.as_deref()), (200, Some("hit-disk")));
    assert_eq!(body.as_ref(), &data[..]);

    // A second gateway on the machine finds the default directory locked: memory only, said.
    let mut second = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("XDG_CACHE_HOME", served.cache_home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(second.stdout.take().unwrap());
    let line = loop {
        use std::io::BufRead;
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the second gateway exited");
        if line.contains("disk tier") {
            break line.trim().to_owned();
        }
    };
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(
        line,
        format!(
            "no disk tier ({} is in use by another gateway): blobs over {} bytes are never cached",
            default_dir.display(),
            256u64 << 20
        )
    );
}

#[test]
fn no_disk_cache_says_which_sizes_are_never_cached_and_writes_nothing() {
    let mut served = Served::start(&["--bind", "127.0.0.1:0", "--no-disk-cache"]);
    assert_eq!(
        served.line_after("no disk tier "),
        format!(
            "(--no-disk-cache): blobs over {} bytes are never cached",
            256u64 << 20
        )
    );
    assert_eq!(
        std::fs::read_dir(served.cache_home.path()).unwrap().count(),
        0
    );
}
