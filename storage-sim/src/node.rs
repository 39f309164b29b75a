//! One simulated storage node: its state, its listener's life cycle, and its connections.
//!
//! A node task owns the node's listener. It closes the listener when the node's faults turn
//! `offline` (clients then get "connection refused"), rebinds the *same* port when the fault is
//! cleared, and kicks open connections on both occasions: idle ones close at once, busy ones
//! after their current response, and fault-shaped bodies (stall, bandwidth) abort. The current
//! state is published as a [`ListenerState`] so callers can wait until a change took effect.
//! A move ([`Relocation`]) swaps in a listener on another port: the old port closes at once
//! (connection refused), open connections are kicked.
//!
//! Connections speak HTTP/1.1 and HTTP/2 (prior knowledge) on plain TCP, or with TLS (the
//! network's `tls`) HTTP/1.1 and HTTP/2 chosen by ALPN (`h2`, `http/1.1`), with the node's
//! self-signed certificate ([`crate::identity`]) chosen per connection, so the `wrong_tls_key`
//! fault applies to every connection accepted after it is set (and open ones are kicked).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::faults::{FaultRng, NodeFaults};
use crate::identity::NodeIdentity;
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
    pub recovery_symbol_gets: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> NodeCounters {
        NodeCounters {
            metadata_gets: self.metadata_gets.load(Ordering::Relaxed),
            primary_sliver_gets: self.primary_sliver_gets.load(Ordering::Relaxed),
            secondary_sliver_gets: self.secondary_sliver_gets.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            status_gets: self.status_gets.load(Ordering::Relaxed),
            recovery_symbol_gets: self.recovery_symbol_gets.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.metadata_gets,
            &self.primary_sliver_gets,
            &self.secondary_sliver_gets,
            &self.puts,
            &self.status_gets,
            &self.recovery_symbol_gets,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// A new listener for a node that moves to another port, and who to tell when it is in use.
#[derive(Debug)]
pub(crate) struct Relocation {
    pub listener: TcpListener,
    pub port: u16,
    pub done: oneshot::Sender<()>,
}

/// Everything about one node that handlers and the node task share.
#[derive(Debug)]
pub(crate) struct NodeState {
    pub name: String,
    /// The port it listens on (changes only by [`Relocation`]).
    port: AtomicU16,
    pub identity: NodeIdentity,
    pub store: Arc<NodeStore>,
    pub faults: watch::Sender<NodeFaults>,
    pub listener: watch::Sender<ListenerState>,
    /// Bumped whenever the node goes offline, moves, changes its TLS certificate or shuts
    /// down; connections and shaped bodies watch it.
    pub kick: watch::Sender<u64>,
    pub counters: Counters,
    pub rng: FaultRng,
    /// Recovery-symbol requests served at once ([`crate::recovery::MAX_ACTIVE_REQUESTS`]).
    pub recovery_permits: tokio::sync::Semaphore,
    relocate: mpsc::UnboundedSender<Relocation>,
    relocations: Mutex<Option<mpsc::UnboundedReceiver<Relocation>>>,
}

impl NodeState {
    pub(crate) fn new(
        name: String,
        port: u16,
        identity: NodeIdentity,
        store: Arc<NodeStore>,
        faults: NodeFaults,
    ) -> Self {
        let (relocate, relocations) = mpsc::unbounded_channel();
        Self {
            rng: FaultRng::from_entropy(u64::from(port)),
            name,
            port: AtomicU16::new(port),
            identity,
            store,
            faults: watch::Sender::new(faults),
            listener: watch::Sender::new(ListenerState::Starting),
            kick: watch::Sender::new(0),
            counters: Counters::default(),
            recovery_permits: tokio::sync::Semaphore::new(crate::recovery::MAX_ACTIVE_REQUESTS),
            relocate,
            relocations: Mutex::new(Some(relocations)),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    /// Hand the node task a listener on another port; `Err` if the task has ended.
    pub(crate) fn relocate(&self, relocation: Relocation) -> Result<(), Relocation> {
        self.relocate.send(relocation).map_err(|e| e.0)
    }

    /// The fake BLS public key, base64, for the health response.
    pub(crate) fn public_key(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&self.identity.bls_public_key)
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
    Relocate(Relocation),
    Shutdown,
}

/// Open connections per node; further connections are closed at once (a load test should
/// see refusals it can count, not unbounded memory growth).
const MAX_CONNECTIONS: usize = 4096;

/// How long a node waits for busy connections to finish when shutting down.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The node task: serve while online, close while offline, move when told, until shutdown.
pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    mut initial: Option<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node = &shared.nodes[index];
    let mut relocations = node
        .relocations
        .lock()
        .expect("relocation lock poisoned")
        .take()
        .expect("one task per node");
    let mut faults = node.faults.subscribe();
    let mut connections = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // While closed (offline, or rebinding failed), a relocation only changes the port the node
    // comes back on.
    let relocate_closed = |r: Relocation| {
        drop(r.listener);
        node.port.store(r.port, Ordering::Release);
        let _ = r.done.send(());
        shared.bump_changed();
    };
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        if faults.borrow_and_update().offline {
            initial = None;
            node.listener.send_replace(ListenerState::Closed);
            tokio::select! {
                changed = faults.changed() => if changed.is_err() { break },
                Some(r) = relocations.recv() => relocate_closed(r),
                _ = shutdown.changed() => break,
            }
            continue;
        }
        let listener = match initial.take() {
            Some(listener) => listener,
            None => match rebind(node.port(), &mut shutdown).await {
                Some(Ok(listener)) => listener,
                Some(Err(e)) => {
                    tracing::error!(node = %node.name, port = node.port(), error = %e, "cannot rebind");
                    node.listener
                        .send_replace(ListenerState::Failed(e.to_string()));
                    tokio::select! {
                        changed = faults.changed() => if changed.is_err() { break },
                        Some(r) = relocations.recv() => relocate_closed(r),
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
                None => break,
            },
        };
        node.listener.send_replace(ListenerState::Open);
        let mut wrong_key = faults.borrow().wrong_tls_key;
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
                    let now = faults.borrow_and_update().clone();
                    if now.offline {
                        break Stop::Offline;
                    }
                    if now.wrong_tls_key != wrong_key && shared.tls {
                        // Clients holding a connection must reconnect to see the new
                        // certificate.
                        wrong_key = now.wrong_tls_key;
                        node.kick.send_modify(|k| *k += 1);
                    }
                }
                Some(r) = relocations.recv() => break Stop::Relocate(r),
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
            Stop::Relocate(r) => {
                tracing::info!(node = %node.name, from = node.port(), to = r.port, "moved");
                node.port.store(r.port, Ordering::Release);
                initial = Some(r.listener);
                let _ = r.done.send(());
                shared.bump_changed();
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
    let node = &shared.nodes[index];
    let mut kick = node.kick.subscribe();
    let _ = stream.set_nodelay(true);
    if !shared.tls {
        return serve_http(shared, index, TokioIo::new(stream), peer, kick).await;
    }
    // The certificate is chosen per connection, so a fault change applies to the next one.
    let wrong_key = node.faults.borrow().wrong_tls_key;
    let acceptor = match node.identity.acceptor(wrong_key) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            tracing::error!(node = %node.name, error = %e, "no TLS certificate");
            return;
        }
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(node = %node.name, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
        _ = kick.changed() => return,
    };
    serve_http(shared, index, TokioIo::new(tls), peer, kick).await
}

/// HTTP/1.1 or HTTP/2 (by the client's preface, whatever ALPN said) on one connection, until
/// it ends or the node kicks it (then after the current response).
async fn serve_http<I>(
    shared: Arc<Shared>,
    index: usize,
    io: I,
    peer: SocketAddr,
    mut kick: watch::Receiver<u64>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(crate::api::handle(shared, index, peer, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = kick.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
