//! The disk tier under hostile clients and a hostile host (issue 21, items 3, 7, 12 and 13):
//! clients that stop reading a disk-streamed blob hold no blocking thread and little memory,
//! concurrent pin calls all persist, a deleted cache directory and a truncated file recover,
//! and pin or purge on a device that refuses the write changes nothing.

mod harness;

use gateway::GatewayConfig;
use harness::{blob, blob_file, config, Scenario};
use http::{Method, StatusCode};
use std::path::Path;
use std::time::{Duration, Instant};
use storage_sim::SimConfig;
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "hostile-disk-admin";

/// The tests here run one at a time: the memory bound reads this process's resident set, which
/// another test's fills would inflate.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// 16 shards: blobs of up to 4.3 MB, so several disk chunks (1 MiB) each.
fn sim() -> SimConfig {
    SimConfig {
        n_shards: 16,
        nodes: 4,
        ..SimConfig::default()
    }
}

/// A disk tier under `dir`, and a memory tier that keeps nothing over 64 KiB: blobs longer than
/// a disk chunk (1 MiB) are then streamed from their file on every hit.
fn disk_streaming(dir: &Path) -> GatewayConfig {
    GatewayConfig {
        cache_dir: Some(dir.to_path_buf()),
        admin_token: Some(TOKEN.into()),
        memory_max_object: 64 << 10,
        memory_cache_bytes: 1 << 20,
        stream_from_bytes: 256 << 10,
        ..config()
    }
}

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

/// Wait (boundedly) until the write-through of a blob of `len` bytes has landed.
async fn wait_for_file(path: &Path, len: u64) {
    // Format 2: a 128-byte header, the content, a 4-byte CRC32C per 1 MiB chunk.
    let size = 128 + len + 4 * len.div_ceil(1 << 20);
    for _ in 0..1000 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

/// This process's resident set, in bytes (the gateway runs in it).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// A client that sends `GET path` and never reads a byte of the answer (a small receive
/// buffer, so the gateway's writes stall at once).
async fn non_reading_client(addr: std::net::SocketAddr, path: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream
}

/// How the attackers in [`non_reading_clients_leave_the_blocking_pool_free`] stop reading.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// 64 HTTP/1.1 connections with a tiny receive buffer, on the lean server or hyper.
    Http1 { lean: bool },
    /// 3 h2c connections of 30 streams each, all with a zero stream window.
    H2ZeroWindow,
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// Held open until dropped: the connections (and, for h2c, the unread responses).
struct Attackers {
    _tcp: Vec<tokio::net::TcpStream>,
    _h2: Vec<(H2Sender, Vec<http::Response<hyper::body::Incoming>>)>,
    connections: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Attackers {
    fn drop(&mut self) {
        for connection in &self.connections {
            connection.abort();
        }
    }
}

impl Stall {
    /// Streams this attack stalls.
    fn streams(self) -> u64 {
        match self {
            Stall::Http1 { .. } => 64,
            Stall::H2ZeroWindow => 90,
        }
    }

    async fn attack(self, addr: std::net::SocketAddr, path: &str) -> Attackers {
        let mut attackers = Attackers {
            _tcp: Vec::new(),
            _h2: Vec::new(),
            connections: Vec::new(),
        };
        match self {
            Stall::Http1 { .. } => {
                for _ in 0..self.streams() {
                    attackers._tcp.push(non_reading_client(addr, path).await);
                }
            }
            Stall::H2ZeroWindow => {
                for _ in 0..3 {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .initial_stream_window_size(0)
                    .handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
                    attackers.connections.push(tokio::spawn(async move {
                        let _ = connection.await;
                    }));
                    let mut responses = Vec::new();
                    for _ in 0..30 {
                        let request = http::Request::get(format!("http://{addr}{path}"))
                            .body(http_body_util::Empty::new())
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        assert_eq!(response.status(), StatusCode::OK);
                        responses.push(response);
                    }
                    attackers._h2.push((sender, responses));
                }
            }
        }
        attackers
    }
}

/// Clients that stop reading a disk-streamed blob must not take the blocking pool (item 3).
/// The runtime here has 8 blocking threads and 64 or 90 such streams: when each parked a thread
/// (the old feeder), a cold miss, which verifies slivers on the blocking pool, never got one.
fn non_reading_clients_leave_the_blocking_pool_free(stall: Stall) {
    let _serial = SERIAL.blocking_lock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // 28 shards: blobs of up to 12.4 MB. The blob must be well longer than what a stalled
        // stream may buffer, in the gateway and the kernel's send buffer, or even the old
        // feeder (which buffered 6 chunks, then parked its thread) would finish every stream.
        let s = Scenario::with(
            SimConfig {
                n_shards: 28,
                ..sim()
            },
            GatewayConfig {
                lean_http1: matches!(stall, Stall::Http1 { lean: true }),
                ..disk_streaming(dir.path())
            },
        )
        .await;
        let big_len = 11 << 20;
        let big = blob(big_len, 1);
        let cold = blob(3 << 20, 2);
        let big_id = s.store(&big).await;
        let cold_id = s.store(&cold).await;
        let path = format!("/v1/blobs/{big_id}");
        assert_eq!(s.get(&path).await.bytes().as_ref(), &big[..]);
        wait_for_file(&blob_file(dir.path(), &big_id), big_len as u64).await;
        let hit = s.get(&path).await;
        assert_eq!(hit.header("x-cache"), Some("hit-disk"));
        assert_eq!(hit.bytes().as_ref(), &big[..]);

        let before = rss();
        let attackers = stall.attack(s.addr, &path).await;
        // Let every stream start and stall.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // A cold miss needs the blocking pool: it is served, and in good time.
        let started = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(15),
            s.get(&format!("/v1/blobs/{cold_id}")),
        )
        .await
        .expect("a cold miss is served within 15 s while disk streams stall");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.bytes().as_ref(), &cold[..]);
        // So is a reader of the same disk-streamed blob.
        let reply = tokio::time::timeout(Duration::from_secs(15), s.get(&path))
            .await
            .expect("a disk hit is served within 15 s");
        assert_eq!(reply.header("x-cache"), Some("hit-disk"));
        assert_eq!(reply.bytes().as_ref(), &big[..]);
        let took = started.elapsed();

        // Each stalled stream holds at most the chunk its connection is writing and the next
        // one (1 MiB each); allow 3 MiB a stream for what the HTTP stack and the allocator add,
        // plus a margin for the two fills above. (The old feeder held 6 chunks and a thread.)
        let grown = rss().saturating_sub(before);
        assert!(
            grown < stall.streams() * (3 << 20) + (128 << 20),
            "{} stalled disk streams grew the resident set by {} MiB",
            stall.streams(),
            grown >> 20
        );
        drop(attackers);
        s.stop().await;
        eprintln!(
            "{stall:?}: legitimate requests took {took:?}, RSS grew {} MiB",
            grown >> 20
        );
    });
}

#[test]
fn non_reading_clients_leave_the_blocking_pool_free_lean_http1() {
    non_reading_clients_leave_the_blocking_pool_free(Stall::Http1 { lean: true });
}

#[test]
fn non_reading_clients_leave_the_blocking_pool_free_hyper_http1() {
    non_reading_clients_leave_the_blocking_pool_free(Stall::Http1 { lean: false });
}

#[test]
fn zero_window_h2_streams_leave_the_blocking_pool_free() {
    non_reading_clients_leave_the_blocking_pool_free(Stall::H2ZeroWindow);
}

/// A cached file cut short under the gateway's kept handle is a clean miss and a refill with
/// the right bytes, never a 200 with an aborted body (item 13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_a_miss_and_a_refill() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(sim(), disk_streaming(dir.path())).await;
    let len = 3 << 20;
    let data = blob(len, 7);
    let id = s.store(&data).await;
    let path = format!("/v1/blobs/{id}");
    let file = blob_file(dir.path(), &id);
    assert_eq!(s.get(&path).await.bytes().as_ref(), &data[..]);
    wait_for_file(&file, len as u64).await;
    // A disk hit: the gateway now keeps the file open.
    let hit = s.get(&path).await;
    assert_eq!(hit.header("x-cache"), Some("hit-disk"));
    assert_eq!(hit.bytes().as_ref(), &data[..]);

    for cut in [0u64, 128 + (1 << 20) + 5] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let reply = s.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-cache"), Some("miss"), "cut to {cut}");
        assert_eq!(reply.bytes().as_ref(), &data[..], "cut to {cut}");
        wait_for_file(&file, len as u64).await;
        let hit = s.get(&path).await;
        assert_eq!(hit.header("x-cache"), Some("hit-disk"));
        assert_eq!(hit.bytes().as_ref(), &data[..]);
    }
    assert_eq!(
        s.metric("gateway_disk_cache_integrity_failures_total")
            .await,
        Some(2.0)
    );
    s.stop().await;
}

/// 100 concurrent pin calls all succeed, leave a valid `pins.json`, and every pin survives a
/// restart (item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pin_calls_all_persist_across_a_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Scenario::with(sim(), disk_streaming(dir.path())).await;
    let ids: Vec<codec::BlobId> = (0..100u8)
        .map(|n| {
            let mut bytes = [n; 32];
            bytes[31] = 0xA5;
            codec::BlobId(bytes)
        })
        .collect();
    let auth = auth();
    let mut calls = tokio::task::JoinSet::new();
    for id in &ids {
        let (addr, auth) = (s.addr, auth.clone());
        let path = format!("/admin/pins/{id}");
        calls.spawn(async move {
            harness::send_body(
                addr,
                Method::PUT,
                &path,
                &[("authorization", &auth)],
                Vec::new(),
            )
            .await
        });
    }
    while let Some(reply) = calls.join_next().await {
        let reply = reply.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(reply.json()["changed"], true);
    }
    let file: Vec<String> =
        serde_json::from_slice(&std::fs::read(dir.path().join("pins.json")).unwrap())
            .expect("pins.json is valid JSON");
    assert_eq!(file.len(), 100);

    s.restart_gateway(disk_streaming(dir.path())).await;
    let stats = s
        .request(Method::GET, "/admin/cache", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(stats["disk"]["pinned"], 100, "{stats}");
    // Each is still pinned: pinning again changes nothing.
    for id in ids.iter().step_by(10) {
        let reply = s
            .request(
                Method::PUT,
                &format!("/admin/pins/{id}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(reply.json()["changed"], false);
    }
    s.stop().await;
}

/// The cache directory deleted under a running gateway: the next fill writes again (item 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cache_directory_recovers_without_a_restart() {
    let _serial = SERIAL.lock().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cache");
    let s = Scenario::with(sim(), disk_streaming(&dir)).await;
    let (a, b) = (blob(2 << 20, 11), blob(2 << 20, 12));
    let (a_id, b_id) = (s.store(&a).await, s.store(&b).await);
    assert_eq!(
        s.get(&format!("/v1/blobs/{a_id}")).await.bytes().as_ref(),
        &a[..]
    );
    wait_for_file(&blob_file(&dir, &a_id), 2 << 20).await;
    std::fs::remove_dir_all(&dir).unwrap();

    // Blob A's file is gone: refilled, not an error.
    let reply = s.get(&format!("/v1/blobs/{a_id}")).await;
    assert_eq!(reply.bytes().as_ref(), &a[..]);
    assert_eq!(
        s.get(&format!("/v1/blobs/{b_id}")).await.bytes().as_ref(),
        &b[..]
    );
    wait_for_file(&blob_file(&dir, &b_id), 2 << 20).await;
    let hit = s.get(&format!("/v1/blobs/{b_id}")).await;
    assert_eq!(hit.header("x-cache"), Some("hit-disk"));
    assert_eq!(hit.bytes().as_ref(), &b[..]);
    assert!(
        s.metric("gateway_disk_cache_dirs_recreated_total")
            .await
            .unwrap()
            >= 1.0
    );
    // Pins persist again too.
    let reply = s
        .request(
            Method::PUT,
            &format!("/admin/pins/{b_id}"),
            &[("authorization", &auth())],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(dir.join("pins.json").exists());
    s.stop().await;
}

/// Pin and purge on a device that refuses writes answer 507 and change nothing (item 12). The
/// refusal is staged without root privileges: `tmp/` replaced by a file (pins), and the blob's
/// path replaced by a directory (purge: unlink fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_purge_that_cannot_be_persisted_change_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::with(sim(), disk_streaming(dir.path())).await;
    let auth = auth();
    let data = blob(2 << 20, 21);
    let id = s.store(&data).await;
    assert_eq!(
        s.get(&format!("/v1/blobs/{id}")).await.bytes().as_ref(),
        &data[..]
    );
    let file = blob_file(dir.path(), &id);
    wait_for_file(&file, 2 << 20).await;

    std::fs::remove_dir(dir.path().join("tmp")).unwrap();
    std::fs::write(dir.path().join("tmp"), b"not a directory").unwrap();
    let pin = s
        .request(
            Method::PUT,
            &format!("/admin/pins/{id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(pin.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(pin.reason(), "DISK_TIER_UNWRITABLE");
    let stats = s
        .request(Method::GET, "/admin/cache", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(stats["disk"]["pinned"], 0, "{stats}");

    let saved = dir.path().join("saved");
    std::fs::rename(&file, &saved).unwrap();
    std::fs::create_dir(&file).unwrap();
    let purge = s
        .request(
            Method::DELETE,
            &format!("/admin/cache/{id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(purge.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(purge.reason(), "DISK_TIER_UNWRITABLE");
    let stats = s
        .request(Method::GET, "/admin/cache", &[("authorization", &auth)])
        .await
        .json();
    assert_eq!(
        stats["disk"]["entries"], 1,
        "a refused purge keeps the entry"
    );

    // The device is writable again: both work.
    std::fs::remove_dir(&file).unwrap();
    std::fs::rename(&saved, &file).unwrap();
    std::fs::remove_file(dir.path().join("tmp")).unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    let pin = s
        .request(
            Method::PUT,
            &format!("/admin/pins/{id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(pin.status, StatusCode::OK);
    let purge = s
        .request(
            Method::DELETE,
            &format!("/admin/cache/{id}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(purge.status, StatusCode::OK);
    assert_eq!(purge.json()["purged"], true);
    assert!(!file.exists());
    s.stop().await;
}
