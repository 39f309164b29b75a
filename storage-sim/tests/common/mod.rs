//! Shared test harness: a minimal HTTP/1.1 client over plain hyper, the committee vectors, and
//! helpers that read the Walrus JSON envelopes, so tests read like scenarios.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use storage_sim::{SimConfig, SimNetwork};
use tokio::net::TcpStream;

/// A completed response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// Assert the Walrus error envelope with this code, status string and reason.
    pub fn assert_error(&self, code: u16, status: &str, reason: &str) {
        assert_eq!(
            self.status.as_u16(),
            code,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.headers.get(http::header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let v = self.json();
        let e = &v["error"];
        assert_eq!(e["code"], code, "{v}");
        assert_eq!(e["status"], status, "{v}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        let info = &e["details"][0];
        assert_eq!(info["@type"], "ErrorInfo", "{v}");
        assert_eq!(info["reason"], reason, "{v}");
        assert!(info["domain"].is_string(), "{v}");
        assert!(info["metadata"].is_object(), "{v}");
    }

    /// The `data` of a `{"success":{"code","data"}}` envelope, checking the code.
    pub fn success_data(&self, code: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            code,
            "{:?}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["success"]["code"], code, "{v}");
        v["success"]["data"].clone()
    }
}

/// Send one request on a fresh connection and return the response with its body unread.
pub async fn send(
    method: Method,
    base: &str,
    path: &str,
    body: Option<(Vec<u8>, Option<&str>)>,
) -> std::io::Result<http::Response<Incoming>> {
    let authority = base.strip_prefix("http://").expect("http URL");
    let stream = TcpStream::connect(authority).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    let bytes = match body {
        Some((bytes, content_type)) => {
            if let Some(ct) = content_type {
                builder = builder.header(http::header::CONTENT_TYPE, ct);
            }
            bytes
        }
        None => Vec::new(),
    };
    let request = builder.body(Full::new(Bytes::from(bytes))).unwrap();
    sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)
}

/// Send one request and read the whole response.
pub async fn call(
    method: Method,
    base: &str,
    path: &str,
    body: Option<(Vec<u8>, Option<&str>)>,
) -> std::io::Result<Reply> {
    let response = send(method, base, path, body).await?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(base: &str, path: &str) -> Reply {
    call(Method::GET, base, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"))
}

pub async fn put(base: &str, path: &str, body: Vec<u8>) -> Reply {
    call(
        Method::PUT,
        base,
        path,
        Some((body, Some("application/octet-stream"))),
    )
    .await
    .unwrap_or_else(|e| panic!("PUT {base}{path}: {e}"))
}

pub async fn post_json(base: &str, path: &str, body: &Value) -> Reply {
    call(
        Method::POST,
        base,
        path,
        Some((serde_json::to_vec(body).unwrap(), Some("application/json"))),
    )
    .await
    .unwrap_or_else(|e| panic!("POST {base}{path}: {e}"))
}

/// The n = 10, L = 1000 vectors from the real system.
pub struct Vectors {
    pub json: Value,
}

impl Vectors {
    pub fn load() -> Self {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../codec/tests/data/vectors_n10_len1000_all_pairs.json"
        ))
        .unwrap();
        Self {
            json: serde_json::from_str(&text).unwrap(),
        }
    }

    /// The blob the vectors encode: `byte[i] = (i*31+7) mod 251`.
    pub fn blob(&self) -> Vec<u8> {
        let len = self.json["length"].as_u64().unwrap() as usize;
        (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
    }

    pub fn blob_id(&self) -> String {
        self.json["blob_id_base64url"].as_str().unwrap().to_owned()
    }

    pub fn metadata_with_id(&self) -> Vec<u8> {
        hex::decode(self.json["metadata_bcs_hex"].as_str().unwrap()).unwrap()
    }

    /// `BlobMetadata` without the leading 32-byte ID (the PUT body).
    pub fn metadata(&self) -> Vec<u8> {
        self.metadata_with_id()[32..].to_vec()
    }

    fn pair(&self, pair: u16) -> &Value {
        &self.json["all_sliver_pairs"][usize::from(pair)]
    }

    pub fn sliver_bcs(&self, pair: u16, kind: &str) -> Vec<u8> {
        hex::decode(
            self.pair(pair)[format!("{kind}_sliver_bcs_hex")]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    pub fn shard(&self, pair: u16) -> u16 {
        self.pair(pair)["shard_index"].as_u64().unwrap() as u16
    }
}

/// A default committee (10 shards, 4 nodes) holding the vectors' blob.
pub async fn network_with_vectors() -> (SimNetwork, Vectors) {
    let net = SimNetwork::start(SimConfig::default()).await.unwrap();
    let vectors = Vectors::load();
    let id = net.store(&vectors.blob()).unwrap();
    assert_eq!(id.to_string(), vectors.blob_id());
    (net, vectors)
}

/// URL of the node owning `pair`'s shard, and of one that does not.
pub fn owner_and_other(net: &SimNetwork, vectors: &Vectors, pair: u16) -> (String, String) {
    let committee = net.committee();
    let owner = committee.node_for_shard(vectors.shard(pair)).unwrap();
    let other = (owner + 1) % committee.nodes.len();
    (
        committee.nodes[owner].url.clone(),
        committee.nodes[other].url.clone(),
    )
}

pub fn metadata_path(id: &str) -> String {
    format!("/v1/blobs/{id}/metadata")
}

/// Every sliver pair of blob `id` (`kind`: `primary` or `secondary`) is served (200) by the
/// node that owns its shard in `committee`.
pub async fn assert_owners_serve(committee: &storage_sim::Committee, id: &str, kind: &str) {
    let parsed: codec::BlobId = id.parse().unwrap();
    for pair in 0..committee.n_shards {
        let owner = committee
            .node_for_shard(parsed.shard_for_pair(pair, committee.n_shards))
            .unwrap();
        let reply = get(&committee.nodes[owner].url, &sliver_path(id, pair, kind)).await;
        assert_eq!(reply.status, 200, "{id} pair {pair} from its owner");
    }
}

pub fn sliver_path(id: &str, pair: u16, kind: &str) -> String {
    format!("/v1/blobs/{id}/slivers/{pair}/{kind}")
}
