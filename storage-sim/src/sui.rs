//! A simulated Sui full node serving the Walrus objects a committee reader needs, in the real
//! contracts' BCS and with IDs and types formed as on chain (NETWORK.md §2–§4), so that both
//! the gateway's chain reader and the official TypeScript SDK find the simulated committee.
//!
//! # Objects
//!
//! Built from [`ChainControl::view`] on every request, so an epoch change or a moved node shows
//! at once:
//!
//! | object | ID | type | owner |
//! |---|---|---|---|
//! | `System` `{id, version: 1, package_id, None}` | [`SYSTEM_OBJECT_ID`] | `<pkg>::system::System` | shared (initial version 1) |
//! | `Staking` (same shape) | [`STAKING_OBJECT_ID`] | `<pkg>::staking::Staking` | shared |
//! | `Field<u64, SystemStateInnerV1>` | `SYSTEM_OBJECT_ID.versioned_field_id(1)` | `0x2::dynamic_field::Field<u64, <pkg>::system_state_inner::SystemStateInnerV1>` | object-owned by `System` |
//! | `Field<u64, StakingInnerV1>` | `STAKING_OBJECT_ID.versioned_field_id(1)` | `…Field<u64, <pkg>::staking_inner::StakingInnerV1>` | object-owned by `Staking` |
//! | one `StakingPool` per node | the node ID | `<pkg>::staking_pool::StakingPool` | shared |
//!
//! | a `Blob` and its `Field<vector<u8>, Metadata>` | placed by [`SuiSim::put_blob`] | `<pkg>::blob::Blob`, `…Field<vector<u8>, <pkg>::metadata::Metadata>` | an address; the blob |
//! | anything | placed by [`SuiSim::put_raw_object`] (type and bytes as given) | as given | shared |
//!
//! `<pkg>` is [`PACKAGE_ID`]. Every constant ID is Blake2b-256 of `walrus-sim/<label>` (labels
//! `package`, `system`, `staking`), hence stable across restarts and unlikely to collide with a
//! node ID. `StakingInnerV1` carries the view's `n_shards`, epoch duration, first epoch start,
//! epoch, epoch state, and the current and previous committees as VecMaps sorted by node ID
//! (members are the nodes with a non-empty shard list); `next_committee` is `None`.
//! `SystemStateInnerV1` carries a `BlsCommittee` of the current members (weight = shard count)
//! with the nodes' BLS keys; its aggregate key, prices and capacities are placeholders. Pools are
//! `StakingPool::new_active` with the node's name, ID, address, BLS key and 33-byte network key.
//! (On chain, pools live in an `ObjectTable` and are not shared; readers do not look.)
//!
//! Object versions are Lamport-like: an object first seen gets `1 + ChainControl::changed()`'s
//! counter, and each time its BCS changes it gets `max(previous + 1, 1 + counter)`. Digests are
//! base58 Blake2b-256 over ID, version and contents.
//!
//! # Wire
//!
//! One port, HTTP/1.1 and HTTP/2 cleartext (prior knowledge), `sui.rpc.v2.LedgerService`
//! methods `GetServiceInfo`, `GetObject` and `BatchGetObjects` (others: `UNIMPLEMENTED`), in
//! three forms chosen by the request's content type:
//! * native gRPC (`application/grpc`, `application/grpc+proto`), meant for HTTP/2: answer
//!   `200`, `content-type: application/grpc`, one framed message, then HTTP/2 trailers
//!   `grpc-status: 0`; errors are trailers-only (`grpc-status`, `grpc-message` headers);
//! * gRPC-Web binary (`application/grpc-web`, `application/grpc-web+proto`) and text
//!   (`application/grpc-web-text`, `application/grpc-web-text+proto`, base64): answer `200`
//!   with the request's content type (no parameters), body = data frame ‖ trailer frame
//!   (base64 as one string for text); errors carry `grpc-status`/`grpc-message` headers and a
//!   trailer frame. CORS: `OPTIONS` preflights get `204`, answers allow any origin.
//!
//! `GetServiceInfo` answers [`CHAIN_ID`], [`CHAIN_NAME`], `epoch` = the Walrus epoch (the sim
//! has no separate Sui epoch), `checkpoint_height` = gRPC calls served so far, and the time.
//! Native gRPC over HTTP/1.1 gets its trailers only if the client sent `te: trailers`.
//!
//! Request bodies over [`MAX_REQUEST_BYTES`] get `RESOURCE_EXHAUSTED`; malformed framing,
//! base64 or protobuf `INVALID_ARGUMENT`. The read mask is honoured (`FieldMask::selects`;
//! default `object_id,version,digest`; unknown paths are ignored); `BatchGetObjects` uses the
//! batch-level mask, answers one result per request in order (unknown objects: a per-entry
//! `google.rpc.Status` with code 5, unparseable IDs code 3) and refuses more than
//! [`MAX_BATCH`] requests. A `GetObject` for a version other than the current one is
//! `NOT_FOUND` (only the latest version is kept).
//!
//! Control routes, loopback peers only (others get `403`), JSON answers:
//! * `POST /sim/epoch` → [`ChainControl::advance_epoch`] → `{"epoch":E,"moved_shards":K}`;
//! * `POST /sim/nodes/{name}/address` → [`ChainControl::move_node`] →
//!   `{"node":name,"address":"127.0.0.1:PORT"}`;
//! * errors: `{"error":{"code":C,"message":"…"}}` with 404 (unknown node or route), 405, 409
//!   (the control refused: `SimError::InvalidConfig`), 503 (shut down) or 500.
//!
//! # Wiring into `walrus-sim` (done at merge)
//!
//! ```ignore
//! // --sui-listen 127.0.0.1:9000 (port 0 = any), --walrus-config-out client_config.yaml
//! let control: Arc<dyn ChainControl> = network.chain_control();  // from the epoch-aware sim
//! let listener = tokio::net::TcpListener::bind(args.sui_listen).await?;
//! let sui = SuiSim::start(listener, control).await?;
//! if let Some(path) = &args.walrus_config_out {
//!     std::fs::write(path, sui.client_config())?;   // = walrus_client_config(&sui.url(), …)
//! }
//! // print `sui <url> system <id> staking <id>` before `ready`; on exit:
//! sui.shutdown().await;
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use chain::blob_object::{self, metadata_field_id, BlobObject, MetadataField, METADATA_FIELD_NAME};
use chain::grpc::{self as framing, code};
use chain::move_types::{
    type_of, BlsCommittee, BlsCommitteeMember, CommitteeMap, Field, FutureAccounting, MoveValue,
    StakingInnerV1, StakingPool, StorageNodeInfo, SystemStateInnerV1, TableRef, VersionedObject,
};
use chain::proto::{self, FieldMask};
use chain::ObjectId;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::chain_view::{ChainControl, ChainView};
use crate::SimError;

/// The simulated Walrus package's original ID (Blake2b-256 of `walrus-sim/package`): the
/// address in every Walrus type string the node serves.
pub const PACKAGE_ID: ObjectId =
    id_hex("5c2ffdca838b21a8ae64644ee102736c770bf4d1b606378c82faca7823144269");
/// The `System` object (Blake2b-256 of `walrus-sim/system`).
pub const SYSTEM_OBJECT_ID: ObjectId =
    id_hex("9b435afbd23324a2ef902a03bb3f80fefbd3002319f99a8399a6f1af1b0058d6");
/// The `Staking` object (Blake2b-256 of `walrus-sim/staking`).
pub const STAKING_OBJECT_ID: ObjectId =
    id_hex("7781636d651e3c36e6ce27398506138ac30aa151601a6f6f5a95a6405f018abd");
/// `GetServiceInfo.chain_id`: base58 of Blake2b-256 of `walrus-sim/genesis` (a fake genesis
/// checkpoint digest, in the same form as mainnet's).
pub const CHAIN_ID: &str = "443eqtKBiGoGLy6umjKqGHZdmb6T2wx7nJ8BkiUSikBx";
/// `GetServiceInfo.chain`.
pub const CHAIN_NAME: &str = "walrus-sim";
/// The `version` field of `System` and `Staking`: the key of their inner dynamic fields.
pub const INNER_VERSION: u64 = 1;
/// Most requests in one `BatchGetObjects` (the TS SDK sends 50, the Rust SDK 100).
pub const MAX_BATCH: usize = 100;
/// Largest request body accepted (base64 included).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// `epochs ahead` of the future-accounting ring buffer, as on mainnet and testnet.
const MAX_EPOCHS_AHEAD: u32 = 53;
const MAX_CONNECTIONS: usize = 1024;
const DRAIN_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_MASK: [&str; 3] = ["object_id", "version", "digest"];

const fn id_hex(text: &str) -> ObjectId {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        }
    }
    let hex = text.as_bytes();
    assert!(hex.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = digit(hex[2 * i]) << 4 | digit(hex[2 * i + 1]);
        i += 1;
    }
    ObjectId(out)
}

fn blake2b(parts: &[&[u8]]) -> [u8; 32] {
    let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
    for part in parts {
        state.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

/// A fixed ID for a handle the readers never fetch (tables, extended fields).
fn label_id(label: &str) -> ObjectId {
    ObjectId(blake2b(&[b"walrus-sim/", label.as_bytes()]))
}

/// Walrus's `client_config.yaml` (single-context form) for a simulated network.
pub fn walrus_client_config(sui_url: &str, system: &ObjectId, staking: &ObjectId) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    let url = serde_json::Value::from(sui_url).to_string();
    format!(
        "# Walrus client configuration for the simulated network (walrus-sim).\n\
         system_object: {system}\n\
         staking_object: {staking}\n\
         rpc_urls:\n  - {url}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Shared since version 1.
    Shared,
    /// A dynamic field of this parent.
    Object(ObjectId),
    /// Owned by this address (a `Blob` its owner keeps).
    Address(ObjectId),
}

/// One object as of one view, before versioning.
#[derive(Debug, Clone)]
struct SimObject {
    id: ObjectId,
    /// `type_of::*`.
    type_name: String,
    contents: Vec<u8>,
    owner: Owner,
    has_public_transfer: bool,
}

fn committee_map(view: &ChainView, shards: &[Vec<u16>]) -> CommitteeMap {
    let mut map: CommitteeMap = view
        .nodes
        .iter()
        .zip(shards)
        .filter(|(_, s)| !s.is_empty())
        .map(|(n, s)| (ObjectId(n.node_id), s.clone()))
        .collect();
    map.sort_by_key(|a| a.0);
    map
}

fn staking_inner(view: &ChainView) -> StakingInnerV1 {
    StakingInnerV1 {
        n_shards: view.n_shards,
        epoch_duration: view.epoch_duration_ms,
        first_epoch_start: view.first_epoch_start_ms,
        pools: TableRef {
            id: label_id("staking/pools"),
            size: view.nodes.len() as u64,
        },
        epoch: view.epoch,
        active_set: label_id("staking/active_set"),
        next_committee: None,
        committee: committee_map(view, &view.current),
        previous_committee: committee_map(view, &view.previous),
        next_epoch_params: None,
        epoch_state: view.state,
        next_epoch_public_keys: label_id("staking/next_epoch_public_keys"),
    }
}

fn system_inner(view: &ChainView) -> SystemStateInnerV1 {
    let mut members: Vec<BlsCommitteeMember> = view
        .nodes
        .iter()
        .zip(&view.current)
        .filter(|(_, s)| !s.is_empty())
        .map(|(n, s)| BlsCommitteeMember {
            public_key: n.bls_public_key.clone(),
            weight: u16::try_from(s.len()).unwrap_or(u16::MAX),
            node_id: ObjectId(n.node_id),
        })
        .collect();
    members.sort_by_key(|m| m.node_id);
    // Not a real BLS aggregate (no pairing library here); no reader checks it.
    let keys: Vec<&[u8]> = members.iter().map(|m| m.public_key.as_slice()).collect();
    let mut total_aggregated_key = blake2b(&keys).to_vec();
    total_aggregated_key.extend_from_slice(&blake2b(&[&total_aggregated_key])[..16]);
    SystemStateInnerV1 {
        committee: BlsCommittee {
            members,
            n_shards: view.n_shards,
            epoch: view.epoch,
            total_aggregated_key,
        },
        total_capacity_size: 1 << 40,
        used_capacity_size: 0,
        storage_price_per_unit_size: 100,
        write_price_per_unit_size: 20_000,
        future_accounting_current_index: 0,
        future_accounting_length: MAX_EPOCHS_AHEAD,
        future_accounting: (0..MAX_EPOCHS_AHEAD)
            .map(|i| FutureAccounting {
                epoch: view.epoch.saturating_add(i),
                used_capacity: 0,
                rewards_to_distribute: 0,
            })
            .collect(),
        latest_certified_event_blob: None,
        aggregate_weight_per_blob: Vec::new(),
        deny_list_sizes: label_id("system/deny_list_sizes"),
    }
}

fn outer(id: ObjectId, type_name: String) -> SimObject {
    let contents = VersionedObject {
        id,
        version: INNER_VERSION,
        package_id: PACKAGE_ID,
        new_package_id: None,
    }
    .to_bcs();
    SimObject {
        id,
        type_name,
        contents,
        owner: Owner::Shared,
        has_public_transfer: false,
    }
}

/// The object `id` as of `view`, if the simulated chain has it.
fn find_object(view: &ChainView, id: &ObjectId) -> Option<SimObject> {
    if *id == SYSTEM_OBJECT_ID {
        return Some(outer(*id, type_of::system(&PACKAGE_ID)));
    }
    if *id == STAKING_OBJECT_ID {
        return Some(outer(*id, type_of::staking(&PACKAGE_ID)));
    }
    if *id == SYSTEM_OBJECT_ID.versioned_field_id(INNER_VERSION) {
        let field = Field {
            id: *id,
            name: INNER_VERSION,
            value: system_inner(view),
        };
        return Some(SimObject {
            id: *id,
            type_name: type_of::system_inner_field(&PACKAGE_ID),
            contents: field.to_bcs(),
            owner: Owner::Object(SYSTEM_OBJECT_ID),
            has_public_transfer: false,
        });
    }
    if *id == STAKING_OBJECT_ID.versioned_field_id(INNER_VERSION) {
        let field = Field {
            id: *id,
            name: INNER_VERSION,
            value: staking_inner(view),
        };
        return Some(SimObject {
            id: *id,
            type_name: type_of::staking_inner_field(&PACKAGE_ID),
            contents: field.to_bcs(),
            owner: Owner::Object(STAKING_OBJECT_ID),
            has_public_transfer: false,
        });
    }
    let node = view.nodes.iter().find(|n| n.node_id == id.0)?;
    let info = StorageNodeInfo {
        name: node.name.clone(),
        node_id: *id,
        network_address: node.address.clone(),
        public_key: node.bls_public_key.clone(),
        next_epoch_public_key: None,
        network_public_key: node.network_public_key.to_vec(),
        metadata: ObjectId(blake2b(&[b"walrus-sim/node-metadata/", &id.0])),
    };
    let mut pool = StakingPool::new_active(info, 0);
    pool.latest_epoch = view.epoch;
    pool.exchange_rates.id = ObjectId(blake2b(&[b"walrus-sim/exchange-rates/", &id.0]));
    pool.extra_fields.id = ObjectId(blake2b(&[b"walrus-sim/extra-fields/", &id.0]));
    Some(SimObject {
        id: *id,
        type_name: type_of::staking_pool(&PACKAGE_ID),
        contents: pool.to_bcs(),
        owner: Owner::Shared,
        has_public_transfer: true,
    })
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// A running simulated Sui full node. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct SuiSim {
    addr: SocketAddr,
    /// The `Blob` objects (and anything else a test places) beside the staking objects.
    placed: Placed,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SuiSim {
    /// Serve the chain `control` describes on `listener`, which must be bound on loopback.
    pub async fn start(
        listener: TcpListener,
        control: Arc<dyn ChainControl>,
    ) -> Result<SuiSim, SimError> {
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { port: 0, source })?;
        if !addr.ip().is_loopback() {
            return Err(SimError::InvalidConfig(format!(
                "the simulated Sui node listens on loopback only, not on {addr}"
            )));
        }
        let state = Arc::new(State::new(control));
        let placed = state.placed.clone();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, state, rx));
        Ok(SuiSim {
            addr,
            placed,
            shutdown,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`: the full-node URL for `rpc_urls` and `SuiGrpcClient.baseUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn system_object(&self) -> ObjectId {
        SYSTEM_OBJECT_ID
    }

    pub fn staking_object(&self) -> ObjectId {
        STAKING_OBJECT_ID
    }

    pub fn package_id(&self) -> ObjectId {
        PACKAGE_ID
    }

    /// [`walrus_client_config`] for this node.
    pub fn client_config(&self) -> String {
        walrus_client_config(&self.url(), &SYSTEM_OBJECT_ID, &STAKING_OBJECT_ID)
    }

    /// Place a `Blob` object (owned by `owner`) and, with `attributes`, its `Metadata` field at
    /// the ID the blob module derives, as `walrus store` and `walrus set-blob-attribute` leave
    /// them; `None` removes a field placed before.
    pub fn put_blob(
        &self,
        blob: &BlobObject,
        owner: ObjectId,
        attributes: Option<Vec<(String, String)>>,
    ) {
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        placed.insert(
            blob.id,
            SimObject {
                id: blob.id,
                type_name: blob_object::type_of::blob(&PACKAGE_ID),
                contents: blob.to_bcs(),
                owner: Owner::Address(owner),
                has_public_transfer: true,
            },
        );
        let field_id = metadata_field_id(&blob.id);
        match attributes {
            Some(attributes) => {
                let field = MetadataField {
                    id: field_id,
                    name: METADATA_FIELD_NAME.to_vec(),
                    attributes,
                };
                placed.insert(
                    field_id,
                    SimObject {
                        id: field_id,
                        type_name: blob_object::type_of::metadata_field(&PACKAGE_ID),
                        contents: field.to_bcs(),
                        owner: Owner::Object(blob.id),
                        has_public_transfer: false,
                    },
                );
            }
            None => {
                placed.remove(&field_id);
            }
        }
    }

    /// Place any object as given, type and bytes unchecked: what a lying or buggy full node
    /// would serve (or a non-Walrus object such as a coin).
    pub fn put_raw_object(&self, id: ObjectId, type_name: &str, contents: Vec<u8>) {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id,
                SimObject {
                    id,
                    type_name: type_name.to_owned(),
                    contents,
                    owner: Owner::Shared,
                    has_public_transfer: true,
                },
            );
    }

    /// Remove a placed object (a deleted blob); `true` if it was there.
    pub fn remove_object(&self, id: &ObjectId) -> bool {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some()
    }

    /// Stop accepting, let open connections finish their requests (up to 5 s), and wait.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SuiSim {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Objects placed through [`SuiSim::put_blob`] and [`SuiSim::put_raw_object`].
type Placed = Arc<Mutex<HashMap<ObjectId, SimObject>>>;

struct State {
    control: Arc<dyn ChainControl>,
    placed: Placed,
    changes: watch::Receiver<u64>,
    /// Per object: hash of its last contents, and its version.
    versions: Mutex<HashMap<ObjectId, ([u8; 32], u64)>>,
    /// Bumped on every gRPC call: `GetServiceInfo.checkpoint_height`.
    checkpoint: AtomicU64,
}

impl State {
    fn new(control: Arc<dyn ChainControl>) -> Self {
        let changes = control.changed();
        Self {
            control,
            placed: Placed::default(),
            changes,
            versions: Mutex::new(HashMap::new()),
            checkpoint: AtomicU64::new(0),
        }
    }

    fn version_of(&self, object: &SimObject) -> u64 {
        let hash = blake2b(&[object.type_name.as_bytes(), &object.contents]);
        let lamport = 1 + *self.changes.borrow();
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let entry = versions.entry(object.id).or_insert((hash, lamport));
        if entry.0 != hash {
            *entry = (hash, (entry.1 + 1).max(lamport));
        }
        entry.1
    }

    /// The object as the mask asks for it.
    fn render(&self, object: SimObject, mask: &FieldMask) -> (u64, proto::Object) {
        let version = self.version_of(&object);
        let digest = blake2b(&[&object.id.0, &version.to_le_bytes(), &object.contents]);
        let previous_transaction = blake2b(&[b"walrus-sim/tx/", &version.to_le_bytes()]);
        let want = |field: &str| mask.selects(field);
        let rendered = proto::Object {
            // The full `sui_sdk_types::Object` envelope is not served: no reader needs it, and
            // bytes nobody checks against the real chain would only mislead one that did.
            bcs: None,
            object_id: want("object_id").then(|| object.id.to_string()),
            version: want("version").then_some(version),
            digest: want("digest").then(|| chain::base58::encode(&digest)),
            owner: want("owner").then(|| match object.owner {
                Owner::Shared => proto::Owner {
                    kind: Some(proto::owner_kind::SHARED),
                    address: None,
                    version: Some(1),
                },
                Owner::Object(parent) => proto::Owner {
                    kind: Some(proto::owner_kind::OBJECT),
                    address: Some(parent.to_string()),
                    version: None,
                },
                Owner::Address(owner) => proto::Owner {
                    kind: Some(proto::owner_kind::ADDRESS),
                    address: Some(owner.to_string()),
                    version: None,
                },
            }),
            object_type: want("object_type").then(|| object.type_name.clone()),
            has_public_transfer: want("has_public_transfer").then_some(object.has_public_transfer),
            contents: want("contents").then(|| proto::Bcs {
                name: Some(object.type_name.clone()),
                value: Some(object.contents.clone()),
            }),
            previous_transaction: want("previous_transaction")
                .then(|| chain::base58::encode(&previous_transaction)),
            storage_rebate: want("storage_rebate").then_some(0),
        };
        (version, rendered)
    }

    fn get(
        &self,
        view: &ChainView,
        request: &proto::GetObjectRequest,
        mask: &FieldMask,
    ) -> Result<proto::Object, Status> {
        let text = request
            .object_id
            .as_deref()
            .ok_or_else(|| Status::new(code::INVALID_ARGUMENT, "object_id is missing"))?;
        let id: ObjectId = text
            .parse()
            .map_err(|e: chain::object_id::ParseObjectIdError| {
                Status::new(code::INVALID_ARGUMENT, e.to_string())
            })?;
        let placed = self
            .placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        let object = placed
            .or_else(|| find_object(view, &id))
            .ok_or_else(|| Status::new(code::NOT_FOUND, format!("object {id} not found")))?;
        let (version, rendered) = self.render(object, mask);
        match request.version {
            Some(wanted) if wanted != version => Err(Status::new(
                code::NOT_FOUND,
                format!("object {id} version {wanted} not found (the latest is {version})"),
            )),
            _ => Ok(rendered),
        }
    }

    fn call(&self, method: RpcMethod, message: Bytes) -> Result<Vec<u8>, Status> {
        self.checkpoint.fetch_add(1, Ordering::Relaxed);
        let bad = |e: prost::DecodeError| {
            Status::new(code::INVALID_ARGUMENT, format!("malformed request: {e}"))
        };
        match method {
            RpcMethod::GetServiceInfo => {
                proto::GetServiceInfoRequest::decode(message).map_err(bad)?;
                let view = self.control.view();
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Ok(proto::GetServiceInfoResponse {
                    chain_id: Some(CHAIN_ID.into()),
                    chain: Some(CHAIN_NAME.into()),
                    epoch: Some(u64::from(view.epoch)),
                    checkpoint_height: Some(self.checkpoint.load(Ordering::Relaxed)),
                    timestamp: Some(proto::Timestamp {
                        seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                        nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
                    }),
                    lowest_available_checkpoint: Some(0),
                    lowest_available_checkpoint_objects: Some(0),
                    server: Some(format!("walrus-sim/{}", env!("CARGO_PKG_VERSION"))),
                }
                .encode_to_vec())
            }
            RpcMethod::GetObject => {
                let request = proto::GetObjectRequest::decode(message).map_err(bad)?;
                let mask = request
                    .read_mask
                    .clone()
                    .unwrap_or_else(|| FieldMask::of(&DEFAULT_MASK));
                let object = self.get(&self.control.view(), &request, &mask)?;
                Ok(proto::GetObjectResponse {
                    object: Some(object),
                }
                .encode_to_vec())
            }
            RpcMethod::BatchGetObjects => {
                let request = proto::BatchGetObjectsRequest::decode(message).map_err(bad)?;
                if request.requests.len() > MAX_BATCH {
                    return Err(Status::new(
                        code::INVALID_ARGUMENT,
                        format!(
                            "{} requests in one batch; at most {MAX_BATCH} are allowed",
                            request.requests.len()
                        ),
                    ));
                }
                let mask = request
                    .read_mask
                    .unwrap_or_else(|| FieldMask::of(&DEFAULT_MASK));
                let view = self.control.view();
                let objects = request
                    .requests
                    .iter()
                    .map(|r| proto::GetObjectResult {
                        result: Some(match self.get(&view, r, &mask) {
                            Ok(object) => proto::get_object_result::Result::Object(object),
                            Err(status) => proto::get_object_result::Result::Error(proto::Status {
                                code: status.code as i32,
                                message: status.message,
                                details: Vec::new(),
                            }),
                        }),
                    })
                    .collect();
                Ok(proto::BatchGetObjectsResponse { objects }.encode_to_vec())
            }
        }
    }
}

/// A gRPC status other than OK.
#[derive(Debug)]
struct Status {
    code: u32,
    message: String,
}

impl Status {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RpcMethod {
    GetServiceInfo,
    GetObject,
    BatchGetObjects,
}

impl RpcMethod {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            proto::path::GET_SERVICE_INFO => Some(Self::GetServiceInfo),
            proto::path::GET_OBJECT => Some(Self::GetObject),
            proto::path::BATCH_GET_OBJECTS => Some(Self::BatchGetObjects),
            _ => None,
        }
    }
}

/// The protocol a request speaks, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Native,
    /// gRPC-Web; the content type to answer with (the request's, without parameters).
    Web {
        text: bool,
        content_type: &'static str,
    },
}

impl Wire {
    fn of(headers: &HeaderMap) -> Option<Wire> {
        let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = value.split(';').next()?.trim().to_ascii_lowercase();
        let web = |text, content_type| Some(Wire::Web { text, content_type });
        match media.as_str() {
            "application/grpc" | "application/grpc+proto" => Some(Wire::Native),
            "application/grpc-web" => web(false, "application/grpc-web"),
            "application/grpc-web+proto" => web(false, "application/grpc-web+proto"),
            "application/grpc-web-text" => web(true, "application/grpc-web-text"),
            "application/grpc-web-text+proto" => web(true, "application/grpc-web-text+proto"),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Wire::Native => "application/grpc",
            Wire::Web { content_type, .. } => content_type,
        }
    }

    fn is_grpc_path(path: &str) -> bool {
        path.starts_with("/sui.") || RpcMethod::from_path(path).is_some()
    }
}

/// A response body: at most one data chunk, then (HTTP/2 native gRPC) trailers.
struct SuiBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl SuiBody {
    fn empty() -> Self {
        Self {
            data: None,
            trailers: None,
        }
    }

    fn full(data: impl Into<Bytes>) -> Self {
        Self {
            data: Some(data.into()),
            trailers: None,
        }
    }
}

impl Body for SuiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.data, &self.trailers) {
            (Some(d), None) => SizeHint::with_exact(d.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

type Reply = Response<SuiBody>;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

fn status_headers(headers: &mut HeaderMap, code: u32, message: &str) {
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&framing::percent_encode(message)) {
            headers.insert(GRPC_MESSAGE, v);
        }
    }
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
    );
}

fn grpc_reply(wire: Wire, result: Result<Vec<u8>, Status>) -> Reply {
    let mut response = Response::new(SuiBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire.content_type()),
    );
    match (wire, result) {
        (Wire::Native, Ok(message)) => {
            let mut trailers = HeaderMap::new();
            status_headers(&mut trailers, code::OK, "");
            *response.body_mut() = SuiBody {
                data: Some(framing::encode_message(&message)),
                trailers: Some(trailers),
            };
        }
        // Trailers-only.
        (Wire::Native, Err(status)) => status_headers(headers, status.code, &status.message),
        (Wire::Web { text, .. }, result) => {
            cors(headers);
            let mut body = BytesMut::new();
            match result {
                Ok(message) => {
                    body.extend_from_slice(&framing::encode_message(&message));
                    body.extend_from_slice(&framing::encode_trailers(code::OK, ""));
                }
                Err(status) => {
                    status_headers(headers, status.code, &status.message);
                    body.extend_from_slice(&framing::encode_trailers(status.code, &status.message));
                }
            }
            let body = body.freeze();
            *response.body_mut() = SuiBody::full(if text {
                framing::encode_text(&body)
            } else {
                body
            });
        }
    }
    response
}

/// Read a whole body of at most `limit` bytes.
async fn read_body<B>(body: B, headers: &HeaderMap, limit: usize) -> Result<Bytes, Status>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        Status::new(
            code::RESOURCE_EXHAUSTED,
            format!("the request body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Status::new(
            code::INVALID_ARGUMENT,
            format!("reading the request body failed: {e}"),
        )),
    }
}

/// The one message of a unary request body.
fn unframe(wire: Wire, body: Bytes) -> Result<Bytes, Status> {
    let frame_error = |e: framing::FrameError| match e {
        framing::FrameError::TooLarge { .. } => {
            Status::new(code::RESOURCE_EXHAUSTED, e.to_string())
        }
        e => Status::new(code::INVALID_ARGUMENT, e.to_string()),
    };
    let body = match wire {
        Wire::Web { text: true, .. } => framing::decode_text(&body).map_err(frame_error)?,
        _ => body,
    };
    let mut frames = framing::decode_frames(body, MAX_REQUEST_BYTES).map_err(frame_error)?;
    match (frames.pop(), frames.is_empty()) {
        (Some(framing::Frame::Message(message)), true) => Ok(message),
        (None, _) => Err(Status::new(
            code::INVALID_ARGUMENT,
            "the request body holds no message",
        )),
        _ => Err(Status::new(
            code::INVALID_ARGUMENT,
            "a unary request body must hold exactly one message frame",
        )),
    }
}

async fn grpc<B>(state: &State, wire: Wire, request: Request<B>) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if request.method() != Method::POST {
        return grpc_reply(
            wire,
            Err(Status::new(code::UNIMPLEMENTED, "gRPC calls are POSTs")),
        );
    }
    let Some(method) = RpcMethod::from_path(request.uri().path()) else {
        let path: String = request.uri().path().chars().take(200).collect();
        return grpc_reply(
            wire,
            Err(Status::new(
                code::UNIMPLEMENTED,
                format!("method {path} is not implemented by the simulated full node"),
            )),
        );
    };
    let (parts, body) = request.into_parts();
    let result = async {
        let body = read_body(body, &parts.headers, MAX_REQUEST_BYTES).await?;
        let message = unframe(wire, body)?;
        state.call(method, message)
    }
    .await;
    if let Err(status) = &result {
        tracing::debug!(?method, code = status.code, message = %status.message, "gRPC error");
    }
    grpc_reply(wire, result)
}

fn json(status: StatusCode, value: serde_json::Value) -> Reply {
    let mut response = Response::new(SuiBody::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(
        status,
        serde_json::json!({"error": {"code": status.as_u16(), "message": message.into()}}),
    )
}

fn sim_error(e: &SimError) -> Reply {
    let status = match e {
        SimError::NoSuchNode { .. } => StatusCode::NOT_FOUND,
        SimError::InvalidConfig(_) => StatusCode::CONFLICT,
        SimError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, e.to_string())
}

/// `/sim/...`, loopback only.
async fn control(state: &State, peer: SocketAddr, method: &Method, path: &str) -> Reply {
    if !peer.ip().is_loopback() {
        return json_error(
            StatusCode::FORBIDDEN,
            "the simulator's control routes answer loopback clients only",
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let route = match segments.as_slice() {
        ["sim", "epoch"] => None,
        ["sim", "nodes", name, "address"] if !name.is_empty() => {
            Some(framing::percent_decode(name))
        }
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "unknown route: POST /sim/epoch or POST /sim/nodes/{name}/address",
            )
        }
    };
    if *method != Method::POST {
        let mut reply = json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        reply
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return reply;
    }
    match route {
        None => match state.control.advance_epoch().await {
            Ok(change) => json(
                StatusCode::OK,
                serde_json::to_value(change).unwrap_or_default(),
            ),
            Err(e) => sim_error(&e),
        },
        Some(name) => {
            if !state.control.view().nodes.iter().any(|n| n.name == name) {
                return json_error(StatusCode::NOT_FOUND, format!("no node named {name:?}"));
            }
            match state.control.move_node(&name).await {
                Ok(address) => json(
                    StatusCode::OK,
                    serde_json::json!({"node": name, "address": address}),
                ),
                Err(e) => sim_error(&e),
            }
        }
    }
}

fn preflight(request_headers: &HeaderMap) -> Reply {
    let mut response = Response::new(SuiBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    cors(headers);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    let allow = request_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(
            "content-type, x-grpc-web, x-user-agent, x-sui-client-protocol-version, grpc-timeout",
        ));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow);
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

async fn handle<B>(state: &State, peer: SocketAddr, request: Request<B>) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_owned();
    if path == "/sim" || path.starts_with("/sim/") {
        return control(state, peer, request.method(), &path).await;
    }
    if request.method() == Method::OPTIONS {
        return preflight(request.headers());
    }
    match Wire::of(request.headers()) {
        Some(wire) => grpc(state, wire, request).await,
        None if Wire::is_grpc_path(&path) => json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/grpc[+proto], application/grpc-web[+proto] \
             or application/grpc-web-text[+proto]",
        ),
        None => json_error(StatusCode::NOT_FOUND, "no such route"),
    }
}

async fn serve(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let state = state.clone();
                        let shutdown = shutdown.clone();
                        connections.spawn(async move {
                            serve_connection(state, stream, peer, shutdown).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "sui sim: too many connections; closing");
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "sui sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
}

async fn serve_connection(
    state: Arc<State>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, peer, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if *shutdown.borrow_and_update() {
        connection.as_mut().graceful_shutdown();
    } else {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shutdown.changed() => connection.as_mut().graceful_shutdown(),
        }
    }
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_view::{ChainNode, EpochChange};
    use chain::EpochState;
    use http_body_util::Full;

    #[test]
    fn constants_are_the_documented_derivations() {
        assert_eq!(PACKAGE_ID, label_id("package"));
        assert_eq!(SYSTEM_OBJECT_ID, label_id("system"));
        assert_eq!(STAKING_OBJECT_ID, label_id("staking"));
        assert_eq!(
            CHAIN_ID,
            chain::base58::encode(&blake2b(&[b"walrus-sim/genesis"]))
        );
    }

    fn view() -> ChainView {
        let node = |i: u8| ChainNode {
            name: format!("node-{i}"),
            node_id: [0x30 - 0x10 * i; 32],
            address: format!("127.0.0.1:{}", 9000 + u16::from(i)),
            network_public_key: [2; 33],
            bls_public_key: vec![i; 96],
        };
        ChainView {
            epoch: 3,
            state: EpochState::ChangeDone { at_ms: 5 },
            n_shards: 4,
            epoch_duration_ms: 60_000,
            first_epoch_start_ms: 1_000,
            nodes: vec![node(0), node(1), node(2)],
            current: vec![vec![0, 1], vec![], vec![2, 3]],
            previous: vec![vec![0], vec![1, 2, 3], vec![]],
        }
    }

    #[test]
    fn objects_start_with_their_own_id() {
        let view = view();
        let ids = [
            SYSTEM_OBJECT_ID,
            STAKING_OBJECT_ID,
            SYSTEM_OBJECT_ID.versioned_field_id(1),
            STAKING_OBJECT_ID.versioned_field_id(1),
            ObjectId([0x20; 32]),
        ];
        for id in ids {
            let object = find_object(&view, &id).unwrap();
            assert_eq!(object.contents[..32], id.0);
        }
        assert!(find_object(&view, &ObjectId([0x21; 32])).is_none());
        // Committees: sorted by node ID, non-members left out.
        let inner = staking_inner(&view);
        assert_eq!(
            inner.committee,
            vec![
                (ObjectId([0x10; 32]), vec![2, 3]),
                (ObjectId([0x30; 32]), vec![0, 1])
            ]
        );
        assert_eq!(
            inner.previous_committee,
            vec![
                (ObjectId([0x20; 32]), vec![1, 2, 3]),
                (ObjectId([0x30; 32]), vec![0])
            ]
        );
        let system = system_inner(&view);
        assert_eq!(system.committee.members.len(), 2);
        assert_eq!(system.committee.members[0].node_id, ObjectId([0x10; 32]));
        assert_eq!(system.committee.members[0].weight, 2);
        assert_eq!(system.committee.members[0].public_key, vec![2; 96]);
    }

    struct Still(ChainView, watch::Sender<u64>);

    impl ChainControl for Still {
        fn view(&self) -> ChainView {
            self.0.clone()
        }
        fn advance_epoch(
            &self,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<EpochChange, SimError>> + Send + '_>>
        {
            Box::pin(async { Err(SimError::InvalidConfig("not now".into())) })
        }
        fn move_node(
            &self,
            _node: &str,
        ) -> Pin<Box<dyn std::future::Future<Output = Result<String, SimError>> + Send + '_>>
        {
            Box::pin(async { Err(SimError::ShutDown) })
        }
        fn changed(&self) -> watch::Receiver<u64> {
            self.1.subscribe()
        }
    }

    #[tokio::test]
    async fn control_routes_refuse_remote_peers_and_map_errors() {
        let state = State::new(Arc::new(Still(view(), watch::Sender::new(0))));
        let post = |path: &str| Request::post(path).body(Full::new(Bytes::new())).unwrap();
        let remote: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let reply = handle(&state, remote, post("/sim/epoch")).await;
        assert_eq!(reply.status(), StatusCode::FORBIDDEN);
        let reply = handle(&state, local, post("/sim/epoch")).await;
        assert_eq!(reply.status(), StatusCode::CONFLICT);
        let reply = handle(&state, local, post("/sim/nodes/node-1/address")).await;
        assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
        let reply = handle(&state, local, post("/sim/nodes/node-9/address")).await;
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
        let reply = handle(&state, local, post("/sim/whatever")).await;
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn versions_grow_only_when_contents_change() {
        let changes = watch::Sender::new(4);
        let mut v = view();
        let state = State::new(Arc::new(Still(v.clone(), changes.clone())));
        let id = STAKING_OBJECT_ID.versioned_field_id(1);
        let version = |v: &ChainView| state.version_of(&find_object(v, &id).unwrap());
        assert_eq!(version(&v), 5);
        assert_eq!(version(&v), 5);
        v.epoch += 1;
        assert_eq!(version(&v), 6);
        changes.send_replace(10);
        assert_eq!(version(&v), 6);
        v.epoch += 1;
        assert_eq!(version(&v), 11);
    }
}
