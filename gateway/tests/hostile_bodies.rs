//! Request bodies that stop half way (issue 21, item 2: ten PUTs that declared 100 MiB and
//! stopped at 50 MiB held 500 MB of RSS indefinitely), scaled: a `walrus-gateway serve` process
//! with `--body-timeout-ms 500` cuts them, answers 400, and later waves reuse the memory of the
//! first instead of adding to it. RSS is read from the process's /proc status; the process
//! is killed by its PID when the test ends.

mod harness;

use harness::Served;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DECLARED: usize = 48 << 20;
const SENT: usize = 24 << 20;
const UPLOADS: usize = 4;
const WAVES: usize = 4;

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

/// One wave: `UPLOADS` PUTs that send half their declared body and stop. Returns the highest
/// RSS seen while they were held; asserts each is answered 400 and closed in time.
async fn wave(addr: &str, pid: u32) -> u64 {
    let payload = bytes::Bytes::from(vec![0x5a; SENT]);
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        let addr = addr.to_owned();
        let payload = payload.clone();
        uploads.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "PUT /v1/blobs HTTP/1.1\r\nHost: gateway\r\nContent-Length: {DECLARED}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&payload).await.unwrap();
            // Then nothing: read the answer, which must come once the body timeout passes.
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
                    .await;
            assert!(read.is_ok(), "a half-sent upload was held past 10 s");
            answer
        }));
    }
    let mut peak = 0;
    let started = Instant::now();
    while uploads.iter().any(|u| !u.is_finished()) && started.elapsed() < Duration::from_secs(15) {
        peak = peak.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for upload in uploads {
        let answer = upload.await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_stop_half_way_are_cut_and_hold_no_memory() {
    let mut served = Served::start(&[
        "--listen",
        "127.0.0.1:0",
        "--body-timeout-ms",
        "500",
        // Large enough a committee that 48 MiB is a valid blob size.
        "--sim-shards",
        "100",
    ]);
    let addr = served.line_after("listening on http://");
    let pid = served.pid();
    let base = rss(pid);
    let attack = (UPLOADS * SENT) as u64;
    let mut peaks = Vec::new();
    for _ in 0..WAVES {
        peaks.push(wave(&addr, pid).await);
    }
    // The attack does take memory while it lasts (the bodies are buffered)...
    assert!(
        peaks[0] > base + attack / 2,
        "RSS {peaks:?} never rose from {base}: nothing measured"
    );
    // ...but only until the bodies are cut: later waves reuse it (less the allocator's
    // retention) instead of adding to it, as holding them would (WAVES times the bytes).
    let bound = base + 3 * attack;
    assert!(
        peaks.iter().all(|&peak| peak < bound),
        "RSS peaks {peaks:?} exceed {bound} (base {base})"
    );
    let settled = rss(pid);
    assert!(
        settled < base + 2 * attack,
        "RSS {settled} after {WAVES} waves (base {base})"
    );
    // And the gateway still serves.
    let mut status = TcpStream::connect(&addr).await.unwrap();
    status
        .write_all(b"GET /status HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), status.read_to_end(&mut answer))
        .await
        .expect("served")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}
