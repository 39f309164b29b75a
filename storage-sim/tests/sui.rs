//! The simulated Sui full node, read the way both real clients read it: native gRPC over h2c
//! (the gateway's chain reader) and gRPC-Web text over HTTP/1.1 byte for byte as the TS SDK
//! sends it (/work/tsprobe/capture.log), against a fake `ChainControl`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chain::grpc::{self as framing, code, Frame};
use chain::move_types::{
    type_of, Field, MoveValue, StakingInnerV1, StakingPool, SystemStateInnerV1, VersionedObject,
};
use chain::proto::{self, get_object_result, FieldMask};
use chain::{EpochState, ObjectId};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use storage_sim::chain_view::{ChainControl, ChainNode, ChainView, EpochChange};
use storage_sim::sui::{self, SuiSim};
use storage_sim::SimError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(30);

/// A chain of three nodes whose IDs sort opposite to their order; `advance_epoch` rotates the
/// shards by one node, `move_node` adds 1000 to the port.
struct Fake {
    view: Mutex<ChainView>,
    changes: watch::Sender<u64>,
    epoch_calls: AtomicUsize,
    moves: Mutex<Vec<String>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        let node = |i: u8| ChainNode {
            name: format!("node-{i}"),
            node_id: [0x30 - 0x10 * i; 32],
            address: format!("127.0.0.1:{}", 9100 + u16::from(i)),
            network_public_key: [[2, 3][usize::from(i % 2)]; 33],
            bls_public_key: vec![0xb0 + i; 96],
        };
        Arc::new(Fake {
            view: Mutex::new(ChainView {
                epoch: 5,
                state: EpochState::ChangeDone {
                    at_ms: 1_700_000_000_000,
                },
                n_shards: 10,
                epoch_duration_ms: 600_000,
                first_epoch_start_ms: 1_699_000_000_000,
                nodes: vec![node(0), node(1), node(2)],
                current: vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]],
                previous: vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9], vec![]],
            }),
            changes: watch::Sender::new(0),
            epoch_calls: AtomicUsize::new(0),
            moves: Mutex::new(Vec::new()),
        })
    }
}

type Boxed<'a, T> = Pin<Box<dyn std::future::Future<Output = Result<T, SimError>> + Send + 'a>>;

impl ChainControl for Fake {
    fn view(&self) -> ChainView {
        self.view.lock().unwrap().clone()
    }

    fn advance_epoch(&self) -> Boxed<'_, EpochChange> {
        Box::pin(async move {
            self.epoch_calls.fetch_add(1, Ordering::SeqCst);
            let change = {
                let mut v = self.view.lock().unwrap();
                v.epoch += 1;
                v.previous = v.current.clone();
                v.current.rotate_right(1);
                v.state = EpochState::ChangeSync { weight: 0 };
                EpochChange {
                    epoch: v.epoch,
                    moved_shards: usize::from(v.n_shards),
                }
            };
            self.changes.send_modify(|c| *c += 1);
            Ok(change)
        })
    }

    fn move_node(&self, node: &str) -> Boxed<'_, String> {
        let node = node.to_owned();
        Box::pin(async move {
            self.moves.lock().unwrap().push(node.clone());
            let address = {
                let mut v = self.view.lock().unwrap();
                let n = v
                    .nodes
                    .iter_mut()
                    .find(|n| n.name == node)
                    .ok_or_else(|| SimError::InvalidConfig(format!("no node {node}")))?;
                let port: u16 = n.address.rsplit(':').next().unwrap().parse().unwrap();
                n.address = format!("127.0.0.1:{}", port + 1000);
                n.address.clone()
            };
            self.changes.send_modify(|c| *c += 1);
            Ok(address)
        })
    }

    fn changed(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

async fn start(fake: &Arc<Fake>) -> SuiSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    SuiSim::start(listener, fake.clone()).await.unwrap()
}

fn addr(sim: &SuiSim) -> SocketAddr {
    sim.local_addr()
}

// --- native gRPC over h2c ---------------------------------------------------------------------

type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2(addr: SocketAddr) -> H2 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A finished gRPC exchange: the HTTP status, headers, body and trailers.
struct Exchange {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Exchange {
    /// `grpc-status` and `grpc-message` from the trailers, else from the headers.
    fn grpc_status(&self) -> (u32, String) {
        let from = |h: &HeaderMap| {
            let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
            let message = h
                .get("grpc-message")
                .map(|m| framing::percent_decode(m.to_str().unwrap()))
                .unwrap_or_default();
            Some((code, message))
        };
        self.trailers
            .as_ref()
            .and_then(from)
            .or_else(|| from(&self.headers))
            .expect("a grpc-status")
    }
}

async fn exchange(sender: &mut H2, request: Request<Full<Bytes>>) -> Exchange {
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Exchange {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

async fn native_raw(sender: &mut H2, path: &str, body: Bytes) -> Exchange {
    let request = Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body))
        .unwrap();
    exchange(sender, request).await
}

async fn native<Q: prost::Message, A: prost::Message + Default>(
    sender: &mut H2,
    path: &str,
    request: &Q,
) -> Result<A, (u32, String)> {
    let reply = native_raw(
        sender,
        path,
        framing::encode_message(&request.encode_to_vec()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/grpc");
    let (status, message) = reply.grpc_status();
    if status != code::OK {
        assert!(reply.body.is_empty(), "errors are trailers-only");
        return Err((status, message));
    }
    let frames = framing::decode_frames(reply.body, 1 << 20).unwrap();
    let [Frame::Message(message)] = frames.as_slice() else {
        panic!("{frames:?}")
    };
    Ok(A::decode(message.clone()).unwrap())
}

fn get(id: &str, mask: Option<&[&str]>) -> proto::GetObjectRequest {
    proto::GetObjectRequest {
        object_id: Some(id.to_owned()),
        version: None,
        read_mask: mask.map(FieldMask::of),
    }
}

const MASK: [&str; 6] = [
    "owner",
    "object_type",
    "digest",
    "version",
    "object_id",
    "contents",
];

async fn get_object(sender: &mut H2, id: &ObjectId) -> proto::Object {
    let reply: proto::GetObjectResponse = native(
        sender,
        proto::path::GET_OBJECT,
        &get(&id.to_string(), Some(&MASK)),
    )
    .await
    .unwrap();
    reply.object.unwrap()
}

fn contents(object: &proto::Object) -> &[u8] {
    object.contents.as_ref().unwrap().value.as_deref().unwrap()
}

#[tokio::test]
async fn native_grpc_over_h2c_reads_the_committee() {
    tokio::time::timeout(LIMIT, async {
        let fake = Fake::new();
        let sim = start(&fake).await;
        let mut h2 = h2(addr(&sim)).await;
        let package = sim.package_id();

        let info: proto::GetServiceInfoResponse = native(
            &mut h2,
            proto::path::GET_SERVICE_INFO,
            &proto::GetServiceInfoRequest {},
        )
        .await
        .unwrap();
        assert_eq!(info.chain_id.as_deref(), Some(sui::CHAIN_ID));
        assert_eq!(info.chain.as_deref(), Some("walrus-sim"));
        assert_eq!(info.epoch, Some(5));
        assert!(info.checkpoint_height.unwrap() >= 1);
        assert!(info.timestamp.unwrap().seconds > 1_700_000_000);

        // Staking → version → its inner field.
        let staking = get_object(&mut h2, &sim.staking_object()).await;
        assert_eq!(
            staking.object_type.as_deref(),
            Some(type_of::staking(&package).as_str())
        );
        assert_eq!(staking.object_id, Some(sim.staking_object().to_string()));
        let owner = staking.owner.clone().unwrap();
        assert_eq!((owner.kind, owner.version), (Some(3), Some(1)));
        let outer = VersionedObject::from_bcs(contents(&staking)).unwrap();
        assert_eq!(outer.id, sim.staking_object());
        assert_eq!(outer.version, 1);
        assert_eq!(outer.package_id, package);
        assert!(staking.version.unwrap() >= 1);
        assert!(!staking.digest.unwrap().is_empty());
        assert!(staking.bcs.is_none(), "not asked for");

        let field_id = outer.id.versioned_field_id(outer.version);
        let field = get_object(&mut h2, &field_id).await;
        assert_eq!(
            field.object_type.as_deref(),
            Some(type_of::staking_inner_field(&package).as_str())
        );
        let owner = field.owner.as_ref().unwrap();
        assert_eq!(owner.kind, Some(2));
        assert_eq!(owner.address, Some(sim.staking_object().to_string()));
        let inner = Field::<StakingInnerV1>::from_bcs(contents(&field)).unwrap();
        assert_eq!((inner.id, inner.name), (field_id, 1));
        let inner = inner.value;
        assert_eq!(inner.n_shards, 10);
        assert_eq!(inner.epoch, 5);
        assert_eq!(inner.epoch_duration, 600_000);
        assert_eq!(inner.first_epoch_start, 1_699_000_000_000);
        assert_eq!(
            inner.epoch_state,
            EpochState::ChangeDone {
                at_ms: 1_700_000_000_000
            }
        );
        assert_eq!(inner.next_committee, None);
        // Sorted by node ID: node-2 (0x10…), node-1 (0x20…), node-0 (0x30…).
        assert_eq!(
            inner.committee,
            vec![
                (ObjectId([0x10; 32]), vec![7, 8, 9]),
                (ObjectId([0x20; 32]), vec![4, 5, 6]),
                (ObjectId([0x30; 32]), vec![0, 1, 2, 3]),
            ]
        );
        assert_eq!(
            inner.previous_committee,
            vec![
                (ObjectId([0x20; 32]), vec![5, 6, 7, 8, 9]),
                (ObjectId([0x30; 32]), vec![0, 1, 2, 3, 4]),
            ]
        );

        // System → its inner field.
        let system = get_object(&mut h2, &sim.system_object()).await;
        assert_eq!(
            system.object_type.as_deref(),
            Some(type_of::system(&package).as_str())
        );
        let outer = VersionedObject::from_bcs(contents(&system)).unwrap();
        let field = get_object(&mut h2, &outer.id.versioned_field_id(outer.version)).await;
        assert_eq!(
            field.object_type.as_deref(),
            Some(type_of::system_inner_field(&package).as_str())
        );
        let state = Field::<SystemStateInnerV1>::from_bcs(contents(&field))
            .unwrap()
            .value;
        assert_eq!(state.committee.n_shards, 10);
        assert_eq!(state.committee.epoch, 5);
        let weights: Vec<_> = state
            .committee
            .members
            .iter()
            .map(|m| (m.node_id, m.weight, m.public_key[0]))
            .collect();
        assert_eq!(
            weights,
            [
                (ObjectId([0x10; 32]), 3, 0xb2),
                (ObjectId([0x20; 32]), 3, 0xb1),
                (ObjectId([0x30; 32]), 4, 0xb0),
            ]
        );

        // The pools, and one unknown ID, in one batch.
        let mut ids: Vec<String> = inner
            .committee
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        ids.push(format!("0x{}", "99".repeat(32)));
        let batch: proto::BatchGetObjectsResponse = native(
            &mut h2,
            proto::path::BATCH_GET_OBJECTS,
            &proto::BatchGetObjectsRequest {
                requests: ids.iter().map(|id| get(id, None)).collect(),
                read_mask: Some(FieldMask::of(&MASK)),
            },
        )
        .await
        .unwrap();
        assert_eq!(batch.objects.len(), 4);
        for (result, (node_id, _)) in batch.objects.iter().zip(&inner.committee) {
            let Some(get_object_result::Result::Object(object)) = &result.result else {
                panic!("{result:?}")
            };
            assert_eq!(
                object.object_type.as_deref(),
                Some(type_of::staking_pool(&package).as_str())
            );
            let pool = StakingPool::from_bcs(contents(object)).unwrap();
            assert_eq!(pool.id, *node_id);
            assert_eq!(pool.node_info.node_id, *node_id);
            let i = usize::from(0x30 - node_id.0[0]) / 0x10;
            assert_eq!(pool.node_info.name, format!("node-{i}"));
            assert_eq!(
                pool.node_info.network_address,
                format!("127.0.0.1:{}", 9100 + i)
            );
            assert_eq!(pool.node_info.network_public_key.len(), 33);
            assert_eq!(pool.node_info.public_key, vec![0xb0 + i as u8; 96]);
            assert_eq!(pool.latest_epoch, 5);
        }
        let Some(get_object_result::Result::Error(status)) = &batch.objects[3].result else {
            panic!("{:?}", batch.objects[3])
        };
        assert_eq!(status.code, 5);
        assert!(status.message.contains("not found"), "{}", status.message);

        // The default mask.
        let reply: proto::GetObjectResponse = native(
            &mut h2,
            proto::path::GET_OBJECT,
            &get(&sim.staking_object().to_string(), None),
        )
        .await
        .unwrap();
        let object = reply.object.unwrap();
        assert!(object.object_id.is_some() && object.version.is_some() && object.digest.is_some());
        assert!(
            object.contents.is_none() && object.object_type.is_none() && object.owner.is_none()
        );
        // The full object envelope is not served, even when asked for.
        let reply: proto::GetObjectResponse = native(
            &mut h2,
            proto::path::GET_OBJECT,
            &get(
                &sim.staking_object().to_string(),
                Some(&["bcs", "contents"]),
            ),
        )
        .await
        .unwrap();
        let object = reply.object.unwrap();
        assert!(object.bcs.is_none() && object.contents.is_some());

        // Errors.
        let err = native::<_, proto::GetObjectResponse>(
            &mut h2,
            proto::path::GET_OBJECT,
            &get(&format!("0x{}", "99".repeat(32)), None),
        )
        .await
        .unwrap_err();
        assert_eq!(err.0, code::NOT_FOUND);
        for bad in ["0xzz", "12", ""] {
            let err = native::<_, proto::GetObjectResponse>(
                &mut h2,
                proto::path::GET_OBJECT,
                &get(bad, None),
            )
            .await
            .unwrap_err();
            assert_eq!(err.0, code::INVALID_ARGUMENT, "{bad:?}: {err:?}");
        }
        let mut versioned = get(&sim.staking_object().to_string(), None);
        versioned.version = Some(987_654);
        let err =
            native::<_, proto::GetObjectResponse>(&mut h2, proto::path::GET_OBJECT, &versioned)
                .await
                .unwrap_err();
        assert_eq!(err.0, code::NOT_FOUND);
        sim.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn chain_changes_show_at_once_and_bump_versions() {
    tokio::time::timeout(LIMIT, async {
        let fake = Fake::new();
        let sim = start(&fake).await;
        let mut h2 = h2(addr(&sim)).await;
        let field_id = sim.staking_object().versioned_field_id(1);
        let before = get_object(&mut h2, &field_id).await;
        let staking_before = get_object(&mut h2, &sim.staking_object()).await;

        // Through the control route, as a test script would.
        let reply = http1(addr(&sim), Method::POST, "/sim/epoch").await;
        assert_eq!(reply.0, 200);
        assert_eq!(reply.1, serde_json::json!({"epoch": 6, "moved_shards": 10}));
        assert_eq!(fake.epoch_calls.load(Ordering::SeqCst), 1);

        let after = get_object(&mut h2, &field_id).await;
        let inner = Field::<StakingInnerV1>::from_bcs(contents(&after))
            .unwrap()
            .value;
        assert_eq!(inner.epoch, 6);
        assert_eq!(inner.epoch_state, EpochState::ChangeSync { weight: 0 });
        assert_eq!(
            inner.previous_committee,
            vec![
                (ObjectId([0x10; 32]), vec![7, 8, 9]),
                (ObjectId([0x20; 32]), vec![4, 5, 6]),
                (ObjectId([0x30; 32]), vec![0, 1, 2, 3]),
            ]
        );
        assert_eq!(
            inner.committee,
            vec![
                (ObjectId([0x10; 32]), vec![4, 5, 6]),
                (ObjectId([0x20; 32]), vec![0, 1, 2, 3]),
                (ObjectId([0x30; 32]), vec![7, 8, 9]),
            ]
        );
        assert!(after.version.unwrap() > before.version.unwrap());
        assert_ne!(after.digest, before.digest);
        // The outer object did not change.
        let staking_after = get_object(&mut h2, &sim.staking_object()).await;
        assert_eq!(staking_after.version, staking_before.version);
        assert_eq!(staking_after.digest, staking_before.digest);

        // Moving a node changes its pool's address.
        let pool_id = ObjectId([0x20; 32]);
        let pool_before = get_object(&mut h2, &pool_id).await;
        let reply = http1(addr(&sim), Method::POST, "/sim/nodes/node-1/address").await;
        assert_eq!(reply.0, 200);
        assert_eq!(
            reply.1,
            serde_json::json!({"node": "node-1", "address": "127.0.0.1:10101"})
        );
        assert_eq!(*fake.moves.lock().unwrap(), ["node-1"]);
        let pool_after = get_object(&mut h2, &pool_id).await;
        let pool = StakingPool::from_bcs(contents(&pool_after)).unwrap();
        assert_eq!(pool.node_info.network_address, "127.0.0.1:10101");
        assert!(pool_after.version.unwrap() > pool_before.version.unwrap());

        // Control errors.
        let reply = http1(addr(&sim), Method::POST, "/sim/nodes/node-7/address").await;
        assert_eq!(reply.0, 404);
        assert!(reply.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node-7"));
        assert!(
            fake.moves.lock().unwrap().len() == 1,
            "unknown nodes never reach the control"
        );
        let reply = http1(addr(&sim), Method::GET, "/sim/epoch").await;
        assert_eq!(reply.0, 405);
        let reply = http1(addr(&sim), Method::POST, "/sim/nope").await;
        assert_eq!(reply.0, 404);
        assert_eq!(fake.epoch_calls.load(Ordering::SeqCst), 1);
        sim.shutdown().await;
    })
    .await
    .unwrap();
}

/// One HTTP/1.1 request; the status and JSON body.
async fn http1(addr: SocketAddr, method: Method, path: &str) -> (u16, serde_json::Value) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

// --- gRPC-Web text over HTTP/1.1, as the TS SDK sends it --------------------------------------

/// The TS SDK's first `readBlob` request (`BatchGetObjects` for the mainnet System object),
/// from /work/tsprobe/capture.log.
const CAPTURED_BODY: &str = "AAAAAIIKRApCMHgyMTM0ZDUyNzY4ZWEwN2U4YzQzNTcwZWY5NzVlYjNlNGMyN2EzOWZhNjM5NmJlZjk4NWI1YWJjNThkMDNkZGQyEjoKBW93bmVyCgtvYmplY3RfdHlwZQoGZGlnZXN0Cgd2ZXJzaW9uCglvYmplY3RfaWQKCGNvbnRlbnRz";

/// A raw HTTP/1.1 response with a `Content-Length`.
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send `head` + `body` on `stream` exactly as given and read one response.
async fn raw_exchange(stream: &mut TcpStream, head: &str, body: &[u8]) -> RawReply {
    let mut request = head.replace('\n', "\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let header_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8(buf[..header_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    // A 204 has no body and no Content-Length.
    let len: usize = match reply.header("content-length") {
        Some(len) => len.parse().unwrap(),
        None if reply.status == 204 => 0,
        None => panic!("no content-length"),
    };
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed early");
        body.extend_from_slice(&chunk[..n]);
    }
    RawReply { body, ..reply }
}

fn ts_head(addr: SocketAddr, content_type: &str, len: usize) -> String {
    let accept = if content_type == "application/grpc-web-text" {
        "Accept: application/grpc-web-text"
    } else {
        "accept: */*"
    };
    format!(
        "POST /sui.rpc.v2.LedgerService/BatchGetObjects HTTP/1.1
host: {addr}
connection: keep-alive
x-sui-client-protocol-version: 138
Content-Type: {content_type}
{accept}
X-Grpc-Web: 1
accept-language: *
sec-fetch-mode: cors
user-agent: node
accept-encoding: gzip, deflate
content-length: {len}

"
    )
}

/// Decode a gRPC-Web answer the way `@protobuf-ts/grpcweb-transport` does: exact content type,
/// optional data frame, mandatory final trailer frame.
fn web_answer(reply: &RawReply, text: bool) -> (Option<Bytes>, u32, String) {
    assert_eq!(reply.status, 200);
    let want = if text {
        "application/grpc-web-text"
    } else {
        "application/grpc-web+proto"
    };
    assert_eq!(reply.header("content-type"), Some(want));
    let bytes = if text {
        framing::decode_text(&reply.body).unwrap()
    } else {
        Bytes::from(reply.body.clone())
    };
    let mut frames = framing::decode_frames(bytes, 1 << 20).unwrap();
    let Some(Frame::Trailers(trailers)) = frames.pop() else {
        panic!("the last frame must be trailers")
    };
    let status = trailers
        .iter()
        .find(|(k, _)| k == "grpc-status")
        .unwrap()
        .1
        .parse()
        .unwrap();
    let message = trailers
        .iter()
        .find(|(k, _)| k == "grpc-message")
        .map(|(_, v)| framing::percent_decode(v))
        .unwrap_or_default();
    let data = match frames.as_slice() {
        [] => None,
        [Frame::Message(m)] => Some(m.clone()),
        other => panic!("{other:?}"),
    };
    (data, status, message)
}

fn ts_batch(ids: &[ObjectId]) -> proto::BatchGetObjectsRequest {
    proto::BatchGetObjectsRequest {
        requests: ids.iter().map(|id| get(&id.to_string(), None)).collect(),
        read_mask: Some(FieldMask::of(&MASK)),
    }
}

/// One `BatchGetObjects` as the TS SDK sends it; the objects, each required to exist.
async fn ts_call(
    stream: &mut TcpStream,
    addr: SocketAddr,
    text: bool,
    ids: &[ObjectId],
) -> Vec<proto::Object> {
    let framed = framing::encode_message(&ts_batch(ids).encode_to_vec());
    let (content_type, body) = if text {
        ("application/grpc-web-text", framing::encode_text(&framed))
    } else {
        ("application/grpc-web+proto", framed)
    };
    let reply = raw_exchange(stream, &ts_head(addr, content_type, body.len()), &body).await;
    let (data, status, _) = web_answer(&reply, text);
    assert_eq!(status, 0);
    let response = proto::BatchGetObjectsResponse::decode(data.unwrap()).unwrap();
    assert_eq!(response.objects.len(), ids.len());
    response
        .objects
        .into_iter()
        .map(|r| match r.result {
            Some(get_object_result::Result::Object(o)) => {
                // What `@mysten/sui` checks: a known owner kind, a parseable type.
                assert!((1..=5).contains(&o.owner.as_ref().unwrap().kind.unwrap()));
                assert!(o.object_type.as_ref().unwrap().contains("::"));
                o
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn ts_sdk_requests_over_http1_get_grpc_web_answers() {
    tokio::time::timeout(LIMIT, async {
        let fake = Fake::new();
        let sim = start(&fake).await;
        let addr = addr(&sim);
        let mut stream = TcpStream::connect(addr).await.unwrap();

        // The captured request, byte for byte: the mainnet System object is not on this chain.
        let reply = raw_exchange(
            &mut stream,
            &ts_head(addr, "application/grpc-web-text", CAPTURED_BODY.len()),
            CAPTURED_BODY.as_bytes(),
        )
        .await;
        let (data, status, _) = web_answer(&reply, true);
        assert_eq!(status, 0);
        let response = proto::BatchGetObjectsResponse::decode(data.unwrap()).unwrap();
        let [result] = response.objects.as_slice() else {
            panic!("{response:?}")
        };
        let Some(get_object_result::Result::Error(e)) = &result.result else {
            panic!("{result:?}")
        };
        assert_eq!(e.code, 5);
        // The same request for this chain's System object, as its bytes differ only in the ID.
        let captured = base64::engine::general_purpose::STANDARD
            .decode(CAPTURED_BODY)
            .unwrap();
        let ours = framing::encode_message(&ts_batch(&[sim.system_object()]).encode_to_vec());
        assert_eq!(ours.len(), captured.len());
        assert_eq!(ours[..9], captured[..9]);
        assert_eq!(ours[75..], captured[75..]);

        // readBlob's five calls, on one keep-alive connection, alternating text and binary.
        let system = ts_call(&mut stream, addr, true, &[sim.system_object()]).await;
        let system = VersionedObject::from_bcs(contents(&system[0])).unwrap();
        let field = ts_call(
            &mut stream,
            addr,
            false,
            &[system.id.versioned_field_id(system.version)],
        )
        .await;
        let state = Field::<SystemStateInnerV1>::from_bcs(contents(&field[0])).unwrap();
        assert_eq!(state.value.committee.n_shards, 10);
        let staking = ts_call(&mut stream, addr, true, &[sim.staking_object()]).await;
        let staking = VersionedObject::from_bcs(contents(&staking[0])).unwrap();
        let field = ts_call(
            &mut stream,
            addr,
            true,
            &[staking.id.versioned_field_id(staking.version)],
        )
        .await;
        let inner = Field::<StakingInnerV1>::from_bcs(contents(&field[0]))
            .unwrap()
            .value;
        let keys: Vec<ObjectId> = inner.committee.iter().map(|(id, _)| *id).collect();
        let pools = ts_call(&mut stream, addr, true, &keys).await;
        for (pool, key) in pools.iter().zip(&keys) {
            let pool = StakingPool::from_bcs(contents(pool)).unwrap();
            assert_eq!(pool.node_info.node_id, *key);
            assert!(pool.node_info.network_address.starts_with("127.0.0.1:"));
        }
        // 50 IDs in one call, as the SDK chunks them.
        let fifty: Vec<ObjectId> = (0..50).map(|i| keys[i % keys.len()]).collect();
        assert_eq!(ts_call(&mut stream, addr, true, &fifty).await.len(), 50);
        sim.shutdown().await;
    })
    .await
    .unwrap();
}

// --- malformed and refused requests ----------------------------------------------------------

async fn web_error(addr: SocketAddr, content_type: &str, body: &[u8]) -> (u32, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let reply = raw_exchange(&mut stream, &ts_head(addr, content_type, body.len()), body).await;
    let text = content_type == "application/grpc-web-text";
    let (data, status, message) = web_answer(&reply, text);
    assert!(data.is_none());
    assert_eq!(
        reply.header("grpc-status"),
        Some(status.to_string().as_str()),
        "errors carry the status in the headers too"
    );
    (status, message)
}

#[tokio::test]
async fn malformed_and_refused_requests_get_grpc_errors() {
    tokio::time::timeout(LIMIT, async {
        let fake = Fake::new();
        let sim = start(&fake).await;
        let mut h2 = h2(addr(&sim)).await;
        let batch = proto::path::BATCH_GET_OBJECTS;
        let status = |e: Exchange| {
            assert_eq!(e.status, StatusCode::OK);
            assert!(e.body.is_empty());
            e.grpc_status().0
        };

        let cases: Vec<(&str, Bytes, u32)> = vec![
            (
                "truncated frame",
                Bytes::from_static(&[0, 0, 0, 0, 5, 1]),
                3,
            ),
            ("short header", Bytes::from_static(&[0, 0]), 3),
            ("no frame", Bytes::new(), 3),
            ("compressed", Bytes::from_static(&[1, 0, 0, 0, 0]), 3),
            ("bad flag", Bytes::from_static(&[0x42, 0, 0, 0, 0]), 3),
            (
                "not protobuf",
                framing::encode_message(&[0xff, 0xff, 0xff]),
                3,
            ),
            (
                "two messages",
                [framing::encode_message(&[]), framing::encode_message(&[])]
                    .concat()
                    .into(),
                3,
            ),
            (
                "too large",
                framing::encode_message(&vec![0u8; sui::MAX_REQUEST_BYTES]),
                8,
            ),
        ];
        for (what, body, want) in cases {
            let got = status(native_raw(&mut h2, batch, body).await);
            assert_eq!(got, want, "{what}");
        }
        let got = native_raw(
            &mut h2,
            "/sui.rpc.v2.LedgerService/GetCheckpoint",
            framing::encode_message(&[]),
        )
        .await;
        assert_eq!(status(got), code::UNIMPLEMENTED);

        // Batch size: 100 answered, 101 refused.
        let id = sim.staking_object();
        let hundred: Vec<ObjectId> = vec![id; 100];
        let reply: proto::BatchGetObjectsResponse =
            native(&mut h2, batch, &ts_batch(&hundred)).await.unwrap();
        assert_eq!(reply.objects.len(), 100);
        let err = native::<_, proto::BatchGetObjectsResponse>(
            &mut h2,
            batch,
            &ts_batch(&[hundred.as_slice(), &[id]].concat()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.0, code::INVALID_ARGUMENT);
        assert!(err.1.contains("100"), "{}", err.1);

        // gRPC-Web errors: headers and a trailer frame.
        let addr = addr(&sim);
        let (got, message) = web_error(addr, "application/grpc-web-text", b"!!!!").await;
        assert_eq!(got, code::INVALID_ARGUMENT);
        assert!(message.contains("base64"), "{message}");
        let got = web_error(addr, "application/grpc-web+proto", &[0, 0, 0, 0, 9]).await;
        assert_eq!(got.0, code::INVALID_ARGUMENT);
        let big = vec![b'A'; sui::MAX_REQUEST_BYTES + 4];
        let got = web_error(addr, "application/grpc-web-text", &big).await;
        assert_eq!(got.0, code::RESOURCE_EXHAUSTED);

        // Not gRPC at all.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = ts_head(addr, "application/json", 2);
        let reply = raw_exchange(&mut stream, &head, b"{}").await;
        assert_eq!(reply.status, 415);
        sim.shutdown().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cors_preflight_config_file_and_shutdown() {
    tokio::time::timeout(LIMIT, async {
        let fake = Fake::new();
        let sim = start(&fake).await;
        let addr = addr(&sim);

        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "OPTIONS /sui.rpc.v2.LedgerService/BatchGetObjects HTTP/1.1
host: {addr}
origin: http://example.test
access-control-request-method: POST
access-control-request-headers: content-type,x-grpc-web
content-length: 0

"
        );
        let reply = raw_exchange(&mut stream, &head, b"").await;
        assert_eq!(reply.status, 204);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("content-type,x-grpc-web")
        );
        assert!(reply
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST"));

        let yaml = sim.client_config();
        assert_eq!(
            yaml,
            sui::walrus_client_config(&sim.url(), &sim.system_object(), &sim.staking_object())
        );
        let config = chain::network::parse_client_config(&yaml, None).unwrap();
        assert_eq!(config.system_object, sim.system_object());
        assert_eq!(config.staking_object, sim.staking_object());
        assert_eq!(config.rpc_urls, [sim.url()]);
        assert_eq!(sim.url(), format!("http://{addr}"));

        // Shutdown closes the listener; an idle keep-alive connection does not hold it up.
        let mut idle = h2(addr).await;
        let _: proto::GetServiceInfoResponse = native(
            &mut idle,
            proto::path::GET_SERVICE_INFO,
            &proto::GetServiceInfoRequest {},
        )
        .await
        .unwrap();
        sim.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn start_refuses_a_non_loopback_listener() {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = SuiSim::start(listener, Fake::new()).await.unwrap_err();
    assert!(matches!(err, SimError::InvalidConfig(_)), "{err}");
}
