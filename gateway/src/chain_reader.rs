//! The chain reader: Sui gRPC (`sui.rpc.v2` LedgerService) → a checked [`ChainCommittee`].
//!
//! One job. Per read it makes at most `3 + ceil(pools / 50)` calls (NETWORK.md §3, §9): the
//! `Staking` object, its versioned inner field (`Field<u64, StakingInnerV1>`, ID derived from
//! the outer object's `version`), and the committees' `StakingPool` objects in batches of 50;
//! plus one `GetServiceInfo` per reader to check the chain (so mainnet IDs are never read from
//! a testnet URL). Every object's type is checked before its bytes are decoded: the Walrus
//! package is learnt from the `Staking` object's type (or known, for the presets) and then
//! required of every other object, and an inner type other than `StakingInnerV1` (a contract
//! migration this gateway predates) fails loudly instead of being misread.
//!
//! Beside the committee, [`ChainReader::read_blob_object`] reads one `Blob` object and its
//! attributes for `GET /v1/blobs/by-object-id/{id}`, with the same type checks.
//!
//! Transport: gRPC over HTTP/2 (hyper), TLS with the web-PKI roots for `https://` full nodes,
//! cleartext HTTP/2 with prior knowledge for `http://` ones (the simulator). Every call has a
//! timeout and every answer a byte limit; URLs are tried in order.

use bytes::Bytes;
use chain::blob_object::{
    self, blob_kind, is_metadata_field, metadata_field_id, BlobKind, BlobObject, MetadataField,
    SharedBlob, METADATA_FIELD_NAME,
};
use chain::grpc::{self, Frame};
use chain::move_types::{
    normalize_type, package_of, type_of, Field, MoveValue, StakingInnerV1, StakingPool,
    VersionedObject,
};
use chain::network::NetworkConfig;
use chain::proto::{self, get_object_result, FieldMask};
use chain::{ChainCommittee, ObjectId};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Pools per `BatchGetObjects` (the TS SDK's chunk; the server's maximum is undocumented).
pub const BATCH_SIZE: usize = 50;
/// Largest gRPC answer accepted (a batch of 50 pools is about 25 KB).
const MAX_ANSWER: usize = 8 << 20;

/// Why the committee could not be read from the chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url}: {method} answered gRPC status {code}: {message}")]
    Status {
        url: String,
        method: &'static str,
        code: u32,
        message: String,
    },
    #[error("{url}: {method}: malformed answer: {reason}")]
    Malformed {
        url: String,
        method: &'static str,
        reason: String,
    },
    #[error("{url} serves chain {got:?}, but {network} is on chain {expected:?}")]
    WrongChain {
        url: String,
        network: String,
        expected: String,
        got: String,
    },
    #[error("object {object} does not exist")]
    NotFound { object: ObjectId },
    #[error("object {object} has type {got:?}, expected {expected:?}")]
    WrongType {
        object: ObjectId,
        expected: String,
        got: String,
    },
    #[error("object {object} ({what}) does not decode: {reason}")]
    Decode {
        object: ObjectId,
        what: &'static str,
        reason: String,
    },
    #[error("the chain's committee is unusable: {0}")]
    Committee(#[from] chain::CommitteeProblem),
    /// No committee read has succeeded yet, so the Walrus package (which every `Blob` type
    /// names) is not known.
    #[error("the Walrus package is not known yet")]
    PackageUnknown,
}

impl ChainError {
    /// A fixed word for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ChainError::Timeout { .. } => "timeout",
            ChainError::Transport { .. } => "transport",
            ChainError::Status { .. } => "status",
            ChainError::Malformed { .. } => "malformed",
            ChainError::WrongChain { .. } => "wrong_chain",
            ChainError::NotFound { .. } => "not_found",
            ChainError::WrongType { .. } => "wrong_type",
            ChainError::Decode { .. } => "decode",
            ChainError::Committee(_) => "committee",
            ChainError::PackageUnknown => "package_unknown",
        }
    }

    /// Whether another full node might answer better (transport trouble), as opposed to an
    /// answer that is simply wrong.
    fn try_next_url(&self) -> bool {
        matches!(
            self,
            ChainError::Timeout { .. } | ChainError::Transport { .. } | ChainError::Status { .. }
        )
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A gRPC client for `sui.rpc.v2` on one or more full nodes.
#[derive(Clone)]
pub struct SuiClient {
    urls: Vec<String>,
    client: HttpsClient,
    timeout: Duration,
}

impl SuiClient {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Self {
        let tls = crate::tls::web_pki_client_config();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            client,
            timeout,
        }
    }

    /// One unary call, on each URL in turn until one answers.
    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &'static str,
        path: &'static str,
        request: &Req,
    ) -> Result<(String, Resp), ChainError> {
        let body = grpc::encode_message(&request.encode_to_vec());
        let mut last = None;
        for url in &self.urls {
            let call = self.call_one::<Resp>(url, method, path, body.clone());
            let result = match tokio::time::timeout(self.timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(ChainError::Timeout {
                    url: url.clone(),
                    timeout: self.timeout,
                }),
            };
            match result {
                Ok(resp) => return Ok((url.clone(), resp)),
                Err(e) if e.try_next_url() => {
                    tracing::debug!(url = %url, error = %e, "full node failed; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ChainError::Transport {
            url: String::new(),
            reason: "no full-node URL configured".into(),
        }))
    }

    async fn call_one<Resp: Message + Default>(
        &self,
        url: &str,
        method: &'static str,
        path: &'static str,
        body: Bytes,
    ) -> Result<Resp, ChainError> {
        let transport = |reason: String| ChainError::Transport {
            url: url.to_owned(),
            reason,
        };
        let malformed = |reason: String| ChainError::Malformed {
            url: url.to_owned(),
            method,
            reason,
        };
        let request = Request::post(format!("{url}{path}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(Full::new(body))
            .map_err(|e| transport(format!("bad URL: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| transport(crate::nodes::error_chain(&e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(transport(format!("HTTP status {status}")));
        }
        let headers = response.headers().clone();
        let collected = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        let trailers = collected.trailers().cloned();
        let grpc_status = |map: &http::HeaderMap| {
            map.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .map(|code| {
                    let message = map
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(grpc::percent_decode)
                        .unwrap_or_default();
                    (code, message)
                })
        };
        // A trailers-only answer carries the status in the headers.
        let (code, message) = trailers
            .as_ref()
            .and_then(grpc_status)
            .or_else(|| grpc_status(&headers))
            .ok_or_else(|| malformed("no grpc-status".into()))?;
        if code != grpc::code::OK {
            return Err(ChainError::Status {
                url: url.to_owned(),
                method,
                code,
                message: message.chars().take(300).collect(),
            });
        }
        let frames = grpc::decode_frames(collected.to_bytes(), MAX_ANSWER)
            .map_err(|e| malformed(e.to_string()))?;
        let message = match frames.as_slice() {
            [Frame::Message(m)] => m.clone(),
            other => {
                return Err(malformed(format!(
                    "{} frames, expected one message",
                    other.len()
                )))
            }
        };
        Resp::decode(message).map_err(|e| malformed(e.to_string()))
    }

    pub async fn service_info(
        &self,
    ) -> Result<(String, proto::GetServiceInfoResponse), ChainError> {
        self.call(
            "GetServiceInfo",
            proto::path::GET_SERVICE_INFO,
            &proto::GetServiceInfoRequest {},
        )
        .await
    }

    pub async fn get_object(&self, id: &ObjectId) -> Result<proto::Object, ChainError> {
        let request = proto::GetObjectRequest {
            object_id: Some(id.to_string()),
            version: None,
            read_mask: Some(FieldMask::of(&proto::READ_MASK)),
        };
        match self
            .call::<_, proto::GetObjectResponse>("GetObject", proto::path::GET_OBJECT, &request)
            .await
        {
            Ok((url, response)) => response.object.ok_or_else(|| ChainError::Malformed {
                url,
                method: "GetObject",
                reason: "no object in the answer".into(),
            }),
            Err(ChainError::Status {
                code: grpc::code::NOT_FOUND,
                ..
            }) => Err(ChainError::NotFound { object: *id }),
            Err(e) => Err(e),
        }
    }

    /// `ids` in one call (at most [`BATCH_SIZE`]); a missing object is `None`.
    pub async fn batch_get_objects(
        &self,
        ids: &[ObjectId],
    ) -> Result<Vec<Option<proto::Object>>, ChainError> {
        let request = proto::BatchGetObjectsRequest {
            requests: ids
                .iter()
                .map(|id| proto::GetObjectRequest {
                    object_id: Some(id.to_string()),
                    ..Default::default()
                })
                .collect(),
            read_mask: Some(FieldMask::of(&proto::READ_MASK)),
        };
        let (url, response) = self
            .call::<_, proto::BatchGetObjectsResponse>(
                "BatchGetObjects",
                proto::path::BATCH_GET_OBJECTS,
                &request,
            )
            .await?;
        if response.objects.len() != ids.len() {
            return Err(ChainError::Malformed {
                url,
                method: "BatchGetObjects",
                reason: format!(
                    "{} results for {} objects",
                    response.objects.len(),
                    ids.len()
                ),
            });
        }
        response
            .objects
            .into_iter()
            .map(|r| match r.result {
                Some(get_object_result::Result::Object(o)) => Ok(Some(o)),
                Some(get_object_result::Result::Error(s))
                    if s.code as u32 == grpc::code::NOT_FOUND =>
                {
                    Ok(None)
                }
                Some(get_object_result::Result::Error(s)) => Err(ChainError::Status {
                    url: url.clone(),
                    method: "BatchGetObjects",
                    code: s.code as u32,
                    message: s.message.chars().take(300).collect(),
                }),
                None => Err(ChainError::Malformed {
                    url: url.clone(),
                    method: "BatchGetObjects",
                    reason: "an empty result".into(),
                }),
            })
            .collect()
    }
}

/// Reads the committee of one Walrus network.
pub struct ChainReader {
    network: NetworkConfig,
    client: SuiClient,
    /// The Walrus package (original ID), once known.
    package: Mutex<Option<ObjectId>>,
    /// Set once `GetServiceInfo` confirmed the chain (or there is nothing to confirm).
    chain_checked: tokio::sync::OnceCell<()>,
}

/// A `Blob` object read for `by-object-id`: the blob (the one wrapped, for a `SharedBlob`) and
/// its attributes (`None`: the blob has no `Metadata` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobObjectRead {
    pub blob: BlobObject,
    pub attributes: Option<Vec<(String, String)>>,
    /// gRPC calls made (1, or 2 for a `SharedBlob`).
    pub rpcs: u32,
}

/// What one read cost, for metrics and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCost {
    pub rpcs: u32,
}

impl ChainReader {
    pub fn new(network: NetworkConfig, timeout: Duration) -> Self {
        let client = SuiClient::new(network.rpc_urls.clone(), timeout);
        let package = Mutex::new(network.package);
        Self {
            network,
            client,
            package,
            chain_checked: tokio::sync::OnceCell::new(),
        }
    }

    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    /// Read and check the current committee.
    pub async fn read(&self) -> Result<(ChainCommittee, ReadCost), ChainError> {
        let mut cost = ReadCost::default();
        if self.chain_checked.get().is_none() {
            cost.rpcs += self.check_chain().await?;
        }
        let staking_id = self.network.staking_object;
        let outer = self.client.get_object(&staking_id).await?;
        cost.rpcs += 1;
        let package = self.package_from(&staking_id, &outer)?;
        let staking: VersionedObject = decode(&staking_id, &outer, "Staking")?;
        if staking.id != staking_id {
            return Err(ChainError::Decode {
                object: staking_id,
                what: "Staking",
                reason: format!("its UID is {}", staking.id),
            });
        }
        let field_id = staking_id.versioned_field_id(staking.version);
        let field = match self.client.get_object(&field_id).await {
            // A migration moves the field between our two reads; the next refresh sees it.
            Err(ChainError::NotFound { .. }) => {
                return Err(ChainError::NotFound { object: field_id })
            }
            other => other?,
        };
        cost.rpcs += 1;
        expect_type(&field_id, &field, &type_of::staking_inner_field(&package))?;
        let inner: Field<StakingInnerV1> = decode(&field_id, &field, "Field<u64, StakingInnerV1>")?;
        if inner.id != field_id || inner.name != staking.version {
            return Err(ChainError::Decode {
                object: field_id,
                what: "Field<u64, StakingInnerV1>",
                reason: format!("it is field {} of version {}", inner.id, inner.name),
            });
        }
        let inner = inner.value;
        let ids = ChainCommittee::pool_ids(&inner);
        let mut pools = HashMap::with_capacity(ids.len());
        let pool_type = type_of::staking_pool(&package);
        for chunk in ids.chunks(BATCH_SIZE) {
            let objects = self.client.batch_get_objects(chunk).await?;
            cost.rpcs += 1;
            for (id, object) in chunk.iter().zip(objects) {
                let object = object.ok_or(ChainError::NotFound { object: *id })?;
                expect_type(id, &object, &pool_type)?;
                let pool: StakingPool = decode(id, &object, "StakingPool")?;
                pools.insert(*id, pool);
            }
        }
        Ok((ChainCommittee::assemble(&inner, &pools)?, cost))
    }

    /// Read the `Blob` (or `SharedBlob`) object `id` and its attributes field, checked: the
    /// object's type must be the Walrus package's (learnt from the committee reads), its
    /// bytes must decode as that type with its own ID, and the attributes field must be a
    /// `Field<vector<u8>, Metadata>` named `b"metadata"` at the ID derived from the blob. The
    /// object and the field of a plain `Blob` come in one `BatchGetObjects`.
    pub async fn read_blob_object(&self, id: &ObjectId) -> Result<BlobObjectRead, ChainError> {
        let package = self
            .package
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or(ChainError::PackageUnknown)?;
        let field_id = metadata_field_id(id);
        let mut objects = self
            .client
            .batch_get_objects(&[*id, field_id])
            .await?
            .into_iter();
        let (object, field) = (objects.next().flatten(), objects.next().flatten());
        let mut rpcs = 1;
        let object = object.ok_or(ChainError::NotFound { object: *id })?;
        let got = object.object_type.as_deref().unwrap_or("");
        let kind = blob_kind(got, &package).ok_or_else(|| ChainError::WrongType {
            object: *id,
            expected: blob_object::type_of::blob(&package),
            got: got.chars().take(300).collect(),
        })?;
        let wrong_id = |what, inner: ObjectId| ChainError::Decode {
            object: *id,
            what,
            reason: format!("its UID is {inner}"),
        };
        let (blob, field_id, field) = match kind {
            BlobKind::Blob => {
                let blob: BlobObject = decode(id, &object, "Blob")?;
                if blob.id != *id {
                    return Err(wrong_id("Blob", blob.id));
                }
                (blob, field_id, field)
            }
            // The attributes hang off the wrapped blob, whose ID only the object tells.
            BlobKind::Shared => {
                let shared: SharedBlob = decode(id, &object, "SharedBlob")?;
                if shared.id != *id {
                    return Err(wrong_id("SharedBlob", shared.id));
                }
                let field_id = metadata_field_id(&shared.blob.id);
                rpcs += 1;
                let field = match self.client.get_object(&field_id).await {
                    Ok(field) => Some(field),
                    Err(ChainError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                (shared.blob, field_id, field)
            }
        };
        let attributes = match field {
            None => None,
            Some(field) => {
                let got = field.object_type.as_deref().unwrap_or("");
                if !is_metadata_field(got) {
                    return Err(ChainError::WrongType {
                        object: field_id,
                        expected: blob_object::type_of::metadata_field(&package),
                        got: got.chars().take(300).collect(),
                    });
                }
                let field: MetadataField =
                    decode(&field_id, &field, "Field<vector<u8>, Metadata>")?;
                if field.id != field_id || field.name != METADATA_FIELD_NAME {
                    return Err(ChainError::Decode {
                        object: field_id,
                        what: "Field<vector<u8>, Metadata>",
                        reason: format!("it is field {} named {:?}", field.id, field.name),
                    });
                }
                Some(field.attributes)
            }
        };
        Ok(BlobObjectRead {
            blob,
            attributes,
            rpcs,
        })
    }

    /// Check the full node's chain against the network's (when it is known); the gRPC calls
    /// made (0 or 1).
    async fn check_chain(&self) -> Result<u32, ChainError> {
        let Some(expected) = &self.network.chain_id else {
            let _ = self.chain_checked.set(());
            return Ok(0);
        };
        let (url, info) = self.client.service_info().await?;
        let got = info.chain_id.unwrap_or_default();
        if &got != expected {
            return Err(ChainError::WrongChain {
                url,
                network: self.network.name.clone(),
                expected: expected.clone(),
                got,
            });
        }
        let _ = self.chain_checked.set(());
        Ok(1)
    }

    /// The Walrus package: known, or learnt from the `Staking` object's own type.
    fn package_from(&self, id: &ObjectId, object: &proto::Object) -> Result<ObjectId, ChainError> {
        let got = object.object_type.clone().unwrap_or_default();
        let mut known = self.package.lock().unwrap_or_else(|p| p.into_inner());
        match *known {
            Some(package) => {
                expect_type(id, object, &type_of::staking(&package))?;
                Ok(package)
            }
            None => {
                let package = package_of(&got, "staking", "Staking").ok_or_else(|| {
                    ChainError::WrongType {
                        object: *id,
                        expected: "<walrus package>::staking::Staking".into(),
                        got,
                    }
                })?;
                *known = Some(package);
                Ok(package)
            }
        }
    }
}

fn expect_type(id: &ObjectId, object: &proto::Object, expected: &str) -> Result<(), ChainError> {
    let got = object.object_type.as_deref().unwrap_or("");
    if normalize_type(got) != normalize_type(expected) {
        return Err(ChainError::WrongType {
            object: *id,
            expected: expected.to_owned(),
            got: got.chars().take(300).collect(),
        });
    }
    Ok(())
}

fn decode<T: MoveValue>(
    id: &ObjectId,
    object: &proto::Object,
    what: &'static str,
) -> Result<T, ChainError> {
    let bytes = object
        .contents
        .as_ref()
        .and_then(|c| c.value.as_deref())
        .ok_or_else(|| ChainError::Decode {
            object: *id,
            what,
            reason: "the answer has no contents".into(),
        })?;
    T::from_bcs(bytes).map_err(|e| ChainError::Decode {
        object: *id,
        what,
        reason: e.to_string(),
    })
}
