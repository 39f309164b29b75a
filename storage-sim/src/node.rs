//! One simulated storage node: its state, its listener's life cycle, and its connections.
//!
//! A node task owns the node's listener. It closes the listener when the node's faults turn
//! `offline` (clients then get "connection refused"), rebinds the *same* port when the fault is
//! cleared, and kicks open connections on both occasions: idle ones close at once, busy ones
//! after their current response, and fault-shaped bodies (stall, bandwidth) abort. The current
//! state is published as a [`ListenerState`] so callers can wait until a change took effect.
//! Connections speak HTTP/1.1 and HTTP/2 (prior knowledge) on plain TCP.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::faults::{FaultRng, NodeFaults};
use crate::network::Shared;
use crate::store::NodeStore;
use crate::NodeCounters;

/// Whether a node currently accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenerState {
    /// The node task has not run yet (the listener from start-up is bound).
    Starting,
    Open,
    Closed,
    /// Rebinding the node's port failed; retried on the next fault change.
    Failed(String),
}

/// Request counters of one node (requests that reached the handler, faulty ones included).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub metadata_gets: AtomicU64,
    pub primary_sliver_gets: AtomicU64,
    pub secondary_sliver_gets: AtomicU64,
    pub puts: AtomicU64,
    pub status_gets: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> NodeCounters {
        NodeCounters {
            metadata_gets: self.metadata_gets.load(Ordering::Relaxed),
            primary_sliver_gets: self.primary_sliver_gets.load(Ordering::Relaxed),
            secondary_sliver_gets: self.secondary_sliver_gets.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            status_gets: self.status_gets.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.metadata_gets,
            &self.primary_sliver_gets,
            &self.secondary_sliver_gets,
            &self.puts,
            &self.status_gets,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Everything about one node that handlers and the node task share.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub name: String,
    pub port: u16,
    /// Shards owned, indexed by shard.
    pub owns: Vec<bool>,
    pub store: Arc<NodeStore>,
    pub faults: watch::Sender<NodeFaults>,
    pub listener: watch::Sender<ListenerState>,
    /// Bumped whenever the node goes offline or shuts down; connections and shaped bodies
    /// watch it.
    pub kick: watch::Sender<u64>,
    pub counters: Counters,
    pub rng: FaultRng,
}

impl NodeState {
    pub(crate) fn new(
        name: String,
        port: u16,
        owns: Vec<bool>,
        store: Arc<NodeStore>,
        faults: NodeFaults,
    ) -> Self {
        Self {
            rng: FaultRng::from_entropy(u64::from(port)),
            name,
            port,
            owns,
            store,
            faults: watch::Sender::new(faults),
            listener: watch::Sender::new(ListenerState::Starting),
            kick: watch::Sender::new(0),
            counters: Counters::default(),
        }
    }

    pub(crate) fn owns_shard(&self, shard: u16) -> bool {
        self.owns.get(usize::from(shard)).copied().unwrap_or(false)
    }

    /// A fixed fake BLS public key (base64 of 96 bytes derived from the node name), only so
    /// that the health response has the real shape.
    pub(crate) fn public_key(&self) -> String {
        use base64::Engine as _;
        let seed = self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let rng = FaultRng::new(seed);
        let key: Vec<u8> = (0..12).flat_map(|_| rng.next().to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    pub(crate) fn owned_shards(&self) -> impl Iterator<Item = u16> + '_ {
        self.owns
            .iter()
            .enumerate()
            .filter(|(_, &o)| o)
            .map(|(s, _)| s as u16)
    }
}

/// Bind `127.0.0.1:port` (0 = any free port) with `SO_REUSEADDR`, so a node can come back on
/// its port right after going offline.
pub(crate) fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

enum Stop {
    Offline,
    Shutdown,
}

/// Open connections per node; further connections are closed at once (a load test should
/// see refusals it can count, not unbounded memory growth).
const MAX_CONNECTIONS: usize = 4096;

/// How long a node waits for busy connections to finish when shutting down.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The node task: serve while online, close while offline, until shutdown.
pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    mut initial: Option<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node = &shared.nodes[index];
    let mut faults = node.faults.subscribe();
    let mut connections = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        if faults.borrow_and_update().offline {
            initial = None;
            node.listener.send_replace(ListenerState::Closed);
            tokio::select! {
                changed = faults.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let listener = match initial.take() {
            Some(listener) => listener,
            None => match rebind(node.port, &mut shutdown).await {
                Some(Ok(listener)) => listener,
                Some(Err(e)) => {
                    tracing::error!(node = %node.name, port = node.port, error = %e, "cannot rebind");
                    node.listener
                        .send_replace(ListenerState::Failed(e.to_string()));
                    tokio::select! {
                        changed = faults.changed() => if changed.is_err() { break },
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
                None => break,
            },
        };
        node.listener.send_replace(ListenerState::Open);
        let stop = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let shared = shared.clone();
                            connections.spawn(async move {
                                serve_connection(shared, index, stream, peer).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(node = %node.name, %peer, "too many connections; closing");
                            drop(stream);
                        }
                    },
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!(node = %node.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                changed = faults.changed() => {
                    if changed.is_err() {
                        break Stop::Shutdown;
                    }
                    if faults.borrow_and_update().offline {
                        break Stop::Offline;
                    }
                }
                _ = shutdown.changed() => break Stop::Shutdown,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        };
        drop(listener);
        node.kick.send_modify(|k| *k += 1);
        match stop {
            Stop::Offline => {
                tracing::info!(node = %node.name, "offline");
                node.listener.send_replace(ListenerState::Closed);
            }
            Stop::Shutdown => break,
        }
    }
    node.listener.send_replace(ListenerState::Closed);
    node.kick.send_modify(|k| *k += 1);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
}

/// Rebind the node's port, retrying briefly in case the old socket is still being torn down.
/// `None` if shut down meanwhile.
async fn rebind(
    port: u16,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<std::io::Result<TcpListener>> {
    const ATTEMPTS: u32 = 50;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match bind(port) {
            Ok(listener) => return Some(Ok(listener)),
            Err(e) => last = Some(e),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shutdown.changed() => return None,
        }
    }
    last.map(Err)
}

async fn serve_connection(shared: Arc<Shared>, index: usize, stream: TcpStream, peer: SocketAddr) {
    let mut kick = shared.nodes[index].kick.subscribe();
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(crate::api::handle(shared, index, peer, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = kick.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
