//! Accepting connections on every listener the configuration enables, all answered by the same
//! [`Api`]: the plain TCP port (HTTP/1.1 and h2c, HTTP/2 with prior knowledge), the HTTPS port
//! (HTTP/1.1 and HTTP/2 over TLS, chosen by ALPN) and the HTTP/3 port (QUIC, in [`crate::h3`]).
//! At most `max_connections` connections are open at once across all of them; when HTTP/3 is on,
//! TCP responses advertise it with `Alt-Svc`. Shutdown stops accepting everywhere, lets
//! in-flight responses finish for `shutdown_grace`, then closes the rest.
//!
//! Against hostile clients, each connection gets a share of the request slots
//! ([`crate::fairness`]); every request body it sends is bounded in time
//! ([`crate::deadline::TimedBody`]); every response body hyper sends on it is watched for
//! progress ([`crate::stall::Responses`]) by a periodic sweep that also closes the connection
//! when it sent no first request within the header timeout, sat idle past the idle timeout (a
//! graceful close: GOAWAY on HTTP/2), or has nothing but stalled responses. TLS handshakes have
//! their own timeout; HTTP/2 connections are PINGed. With `metrics_listen`, `/metrics` is
//! served on a listener of its own and the public listeners answer 404 there.

use crate::access_log::{Exchange, ObservedBody};
use crate::api::error::ApiError;
use crate::api::Api;
use crate::cache::BlobCache;
use crate::config::GatewayConfig;
use crate::deadline::{Activity, BodyDeadlines, Idle, TimedBody};
use crate::fairness::{Clients, Share};
use crate::fill::{FillConfig, Filler};
use crate::h1;
use crate::h3::{H3Error, H3Limits, H3Listener};
use crate::nodes::{Topology, TopologyError};
use crate::stall::{Responses, StallGuard, WatchedBody};
use crate::telemetry::Telemetry;
use crate::tls::TlsError;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::committee::Committee;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("unusable committee: {0}")]
    Committee(#[from] TopologyError),
    #[error("cannot read the committee from the chain: {0}")]
    Chain(#[from] crate::committee::CommitteeError),
    #[error("cannot open the disk cache: {0}")]
    DiskCache(#[from] crate::disk::DiskError),
    #[error("HTTPS and HTTP/3 need a TLS certificate (--tls-cert/--tls-key or --tls-self-signed)")]
    NoCertificate,
    #[error("no listener: the plain listener is off and neither HTTPS nor HTTP/3 is on")]
    NoListener,
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("HTTP/3: {0}")]
    H3(#[from] H3Error),
    #[error("the server task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Blocklist(#[from] crate::blocklist::BlocklistError),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
}

/// The HTTPS listener: a TCP port whose connections start with a TLS handshake.
struct HttpsListener {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
}

/// Where the committee comes from.
pub enum CommitteeSource {
    /// A fixed committee (a committee file, the embedded simulator).
    Static(Committee),
    /// Read from Sui and kept current (`--network`, `--walrus-config`).
    Chain {
        reader: Box<crate::chain_reader::ChainReader>,
        scheme: crate::committee::NodeScheme,
        policy: chain::committee::RefreshPolicy,
    },
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    api: Arc<Api>,
    /// Keeps a chain-backed committee current while serving.
    watcher: Option<crate::committee::CommitteeWatcher>,
    /// The plain HTTP/1.1 + h2c listener, unless it is off.
    plain: Option<(TcpListener, SocketAddr)>,
    https: Option<HttpsListener>,
    h3: Option<H3Listener>,
    /// The `/metrics`-only listener (`--metrics-listen`), when on.
    metrics: Option<(TcpListener, SocketAddr)>,
    telemetry: Arc<Telemetry>,
    config: GatewayConfig,
}

async fn bind_tcp(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok((listener, local))
}

impl Gateway {
    /// Check the committee, build the cache and fill machinery, and bind the listeners.
    pub async fn bind(config: GatewayConfig, committee: Committee) -> Result<Self, ServerError> {
        Self::bind_source(config, CommitteeSource::Static(committee)).await
    }

    /// [`Gateway::bind`] with the committee from a file, the simulator or the chain.
    pub async fn bind_source(
        config: GatewayConfig,
        source: CommitteeSource,
    ) -> Result<Self, ServerError> {
        let telemetry = Telemetry::new();
        if let Some(log) = &config.access_log {
            let log = crate::access_log::AccessLog::open(log, telemetry.access_log_dropped())
                .map_err(ServerError::AccessLog)?;
            telemetry.set_access_log(log);
        }
        let (committees, watcher) = match source {
            CommitteeSource::Static(committee) => (
                crate::committee::CommitteeHandle::fixed(Topology::new(committee)?),
                None,
            ),
            CommitteeSource::Chain {
                reader,
                scheme,
                policy,
            } => {
                let (handle, watcher) = crate::committee::CommitteeWatcher::start(
                    *reader,
                    scheme,
                    policy,
                    telemetry.clone(),
                )
                .await?;
                (handle, Some(watcher))
            }
        };
        let mut cache = BlobCache::new(config.memory_cache_bytes, config.memory_max_object);
        if let Some(disk) = crate::cache::open_disk_tier(&config, telemetry.disk_metrics())? {
            cache = cache.with_disk(disk);
        }
        let fill_config = FillConfig {
            consistency: config.consistency,
            metadata_fanout: config.metadata_fanout,
            metadata_timeout: config.metadata_timeout,
            sliver_timeout: config.sliver_timeout,
            hedge_after: config.hedge_after,
            max_slivers_in_flight: config.max_slivers_in_flight,
            max_concurrent_fills: config.max_concurrent_fills,
            max_blob_size: config.max_blob_size,
            prefetch_slivers: config.prefetch_slivers,
            stream_from_bytes: config.stream_from_bytes,
            upstream_hedge: config.upstream_hedge,
            upstream_timeout: config.upstream_timeout,
            negative_cache_ttl: config.negative_cache_ttl,
            revalidate_deletable: config.revalidate_deletable,
        };
        let filler = Filler::new(
            committees,
            config.upstreams.clone(),
            fill_config,
            cache,
            telemetry.clone(),
        );
        // The denylist is in force before the first request (the Api watches it from now on).
        if let Some(path) = &config.blocklist {
            filler.blocklist().open(path)?;
            telemetry.blocklist_loaded(filler.blocklist().len(), true);
        }
        {
            let topology = filler.topology();
            telemetry.register_failure_series(
                (0..topology.node_count()).map(|i| topology.node(i).name.as_str()),
                config.upstreams.iter().map(|u| u.name.as_str()),
            );
        }
        // Open the connections to HTTPS nodes before serving (bounded), with the fills' own
        // client, so the first fills do not each make a handshake; later committees are warmed
        // in the background.
        let current = filler.topology();
        let _ = tokio::time::timeout(
            crate::committee::STARTUP_WARM_LIMIT,
            filler.node_client().warm(&current),
        )
        .await;
        tokio::spawn(crate::committee::keep_warm(
            filler.node_client().clone(),
            filler.committees().clone(),
            vec![current],
        ));
        let api = Arc::new(Api::new(filler, telemetry.clone(), &config));
        if let Some(disk) = api.filler().cache().disk() {
            let source: Arc<dyn crate::disk::MetadataSource> = api.clone();
            crate::disk::scrub::spawn(disk, Arc::downgrade(&source), config.scrub_rate);
        }
        let needs_tls = config.https_listen.is_some() || config.h3_listen.is_some();
        let identity = match (&config.tls, needs_tls) {
            (Some(identity), true) => Some(identity),
            (None, true) => return Err(ServerError::NoCertificate),
            (_, false) => None,
        };
        if !config.plain_listener && !needs_tls {
            return Err(ServerError::NoListener);
        }
        let plain = if config.plain_listener {
            Some(bind_tcp(config.bind).await?)
        } else {
            None
        };
        let https = match (config.https_listen, identity) {
            (Some(https_addr), Some(identity)) => {
                let (listener, addr) = bind_tcp(https_addr).await?;
                let acceptor = TlsAcceptor::from(identity.https_config()?);
                Some(HttpsListener {
                    listener,
                    addr,
                    acceptor,
                })
            }
            _ => None,
        };
        let h3 = match (config.h3_listen, identity) {
            (Some(h3_addr), Some(identity)) => Some(H3Listener::bind(
                h3_addr,
                identity,
                H3Limits {
                    max_streams_per_connection: config.max_streams_per_connection,
                    idle_timeout: config.idle_timeout,
                    header_read_timeout: config.header_read_timeout,
                    write_stall_timeout: config.write_stall_timeout,
                    max_udp_payload: config.h3_max_udp_payload,
                    max_requests_per_connection: config.max_requests_per_connection,
                    body: BodyDeadlines {
                        idle: config.body_timeout,
                        total: config.body_total_timeout,
                    },
                },
            )?),
            _ => None,
        };
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        Ok(Self {
            api,
            watcher,
            plain,
            https,
            h3,
            metrics,
            telemetry,
            config,
        })
    }

    /// The plain HTTP/1.1 + h2c address, when that listener is on.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain.as_ref().map(|(_, addr)| *addr)
    }

    /// The first listener's address: plain if on, else HTTPS, else HTTP/3 (UDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.plain_addr()
            .or_else(|| self.https_addr())
            .or_else(|| self.h3_addr())
            .expect("bind refuses a gateway without listeners")
    }

    /// The HTTPS address, when that listener is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|https| https.addr)
    }

    /// The HTTP/3 (UDP) address, when that listener is on.
    pub fn h3_addr(&self) -> Option<SocketAddr> {
        self.h3.as_ref().map(H3Listener::local_addr)
    }

    /// The `/metrics` listener's address (`--metrics-listen`), when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            api,
            watcher,
            plain,
            https,
            h3,
            metrics,
            telemetry,
            config,
        } = self;
        let (watcher_stop, watcher_stopped) = oneshot::channel::<()>();
        let watcher = watcher.map(|w| {
            tokio::spawn(w.run(async {
                let _ = watcher_stopped.await;
            }))
        });
        let upkeep = tokio::spawn({
            let telemetry = telemetry.clone();
            // The memory tier's size gauges: moka's counts, once its pending writes are applied.
            let cache = api.filler().cache().clone();
            async move {
                let mut tick = tokio::time::interval(Telemetry::UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    telemetry.upkeep();
                    cache.run_pending_tasks().await;
                    telemetry.memory_tier(cache.weighted_size(), cache.entry_count());
                }
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_streams_per_connection)
            .keep_alive_interval(config.h2_keepalive_interval)
            .keep_alive_timeout(config.h2_keepalive_timeout);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let (stop, stopped) = watch::channel(false);
        let alt_svc = h3.as_ref().and_then(|h3| {
            HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", h3.local_addr().port())).ok()
        });
        // One set of per-client shares for every listener: a client's bound covers its TCP and
        // QUIC connections together.
        let clients = Arc::new(Clients::new(
            config.max_requests_per_client,
            !config.client_share_loopback,
        ));
        let h3_task = h3.map(|h3| {
            tokio::spawn(h3.serve(
                api.clone(),
                connections.clone(),
                clients.clone(),
                telemetry.clone(),
                stopped.clone(),
                config.shutdown_grace,
            ))
        });
        let tcp = TcpServing {
            api: &api,
            builder: &builder,
            graceful: &graceful,
            connections: &connections,
            telemetry: &telemetry,
            clients: &clients,
            alt_svc,
            limits: ConnLimits {
                write_stall_timeout: config.write_stall_timeout,
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                tls_handshake_timeout: config.tls_handshake_timeout,
                per_connection: config.max_requests_per_connection,
                body: BodyDeadlines {
                    idle: config.body_timeout,
                    total: config.body_total_timeout,
                },
            },
            lean_http1: config.lean_http1,
        };
        let metrics_task = metrics.map(|(listener, addr)| {
            tracing::info!(%addr, "metrics listening (GET /metrics only)");
            tokio::spawn(serve_metrics(
                listener,
                telemetry.clone(),
                config.header_read_timeout,
                stopped.clone(),
            ))
        });
        let plain = async {
            if let Some((listener, addr)) = plain {
                tracing::info!(%addr, "gateway listening (HTTP/1.1 and h2c)");
                tcp.accept_loop(listener, None, stopped.clone()).await;
            }
        };
        let secure = async {
            if let Some(https) = https {
                tracing::info!(addr = %https.addr, "gateway listening (HTTPS: HTTP/1.1 and HTTP/2)");
                tcp.accept_loop(https.listener, Some(https.acceptor), stopped.clone())
                    .await;
            }
        };
        let signal = async {
            shutdown.await;
            stop.send_replace(true);
        };
        tokio::join!(plain, secure, signal);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all TCP connections closed"),
            () = tokio::time::sleep(config.shutdown_grace) => {
                tracing::warn!(grace = ?config.shutdown_grace, "grace period over; closing remaining connections");
            }
        }
        if let Some(task) = h3_task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the HTTP/3 task failed");
            }
        }
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        upkeep.abort();
        let _ = watcher_stop.send(());
        if let Some(task) = watcher {
            let _ = task.await;
        }
    }

    /// Serve in a background task until [`RunningGateway::shutdown`].
    pub fn spawn(self) -> RunningGateway {
        let addr = self.local_addr();
        let https_addr = self.https_addr();
        let h3_addr = self.h3_addr();
        let metrics_addr = self.metrics_addr();
        let api = self.api.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        RunningGateway {
            addr,
            https_addr,
            h3_addr,
            metrics_addr,
            api,
            shutdown: Some(tx),
            task,
        }
    }
}

/// A gateway serving in the background.
pub struct RunningGateway {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    h3_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    api: Arc<Api>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// The first listener's address: plain if on, else HTTPS, else HTTP/3 (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    pub fn h3_addr(&self) -> Option<SocketAddr> {
        self.h3_addr
    }

    /// The `/metrics` listener's address (`--metrics-listen`), when it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Stop accepting, drain, and wait for the server task.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| ServerError::Task(e.to_string()))
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What the TCP accept loops share.
struct TcpServing<'a> {
    api: &'a Arc<Api>,
    builder: &'a auto::Builder<TokioExecutor>,
    graceful: &'a GracefulShutdown,
    connections: &'a Arc<Semaphore>,
    telemetry: &'a Arc<Telemetry>,
    /// Per-client-address shares of the request slots.
    clients: &'a Arc<Clients>,
    /// `Alt-Svc` advertising HTTP/3, when it is on.
    alt_svc: Option<HeaderValue>,
    limits: ConnLimits,
    /// Plain HTTP/1.1 GET and HEAD go to [`h1`] (with `sendfile`) before hyper.
    lean_http1: bool,
}

/// The deadlines and shares of one TCP connection.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    write_stall_timeout: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    tls_handshake_timeout: Duration,
    per_connection: usize,
    body: BodyDeadlines,
}

impl ConnLimits {
    /// How often a connection checks its responses and idle time: a fraction of the shortest
    /// bound, so each fires at most a quarter late, and at most once a second.
    fn sweep_period(&self) -> Duration {
        (self
            .write_stall_timeout
            .min(self.idle_timeout)
            .min(self.header_read_timeout)
            / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// One hyper connection's state, shared by its requests.
struct Conn {
    api: Arc<Api>,
    telemetry: Arc<Telemetry>,
    /// The client, for the access log.
    peer: SocketAddr,
    share: Share,
    activity: Arc<Activity>,
    responses: Responses,
    alt_svc: Option<HeaderValue>,
    limits: ConnLimits,
}

/// What every hyper connection starts from.
#[derive(Clone)]
struct ConnTemplate {
    api: Arc<Api>,
    telemetry: Arc<Telemetry>,
    alt_svc: Option<HeaderValue>,
    limits: ConnLimits,
}

impl ConnTemplate {
    /// A connection hyper starts serving now (its first-request deadline counts from here).
    fn open(&self, share: Share, peer: SocketAddr) -> Arc<Conn> {
        Arc::new(Conn {
            api: self.api.clone(),
            telemetry: self.telemetry.clone(),
            peer,
            share,
            activity: Activity::new(),
            responses: Responses::new(self.limits.write_stall_timeout),
            alt_svc: self.alt_svc.clone(),
            limits: self.limits,
        })
    }
}

impl Conn {
    /// Answer one request: the connection's share goes into its extensions, its body gets the
    /// body deadlines, and the response body is watched for send progress and observed until
    /// it is done (request duration, access log).
    async fn answer(&self, request: Request<Incoming>) -> Response<ObservedBody<WatchedBody>> {
        let in_flight = self.activity.begin();
        let (mut parts, body) = request.into_parts();
        let mut exchange = Exchange::start(
            &self.telemetry,
            std::time::Instant::now(),
            Some(self.peer.ip()),
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
        );
        parts.extensions.insert(self.share.clone());
        let body = TimedBody::new(body, self.limits.body, Some(self.telemetry.clone()));
        let request = Request::from_parts(parts, body);
        let Ok(mut response) = self.api.handle(request).await;
        if let Some(alt_svc) = &self.alt_svc {
            response
                .headers_mut()
                .insert(header::ALT_SVC, alt_svc.clone());
        }
        exchange.respond(response.status().as_u16(), response.headers());
        response
            .map(|body| ObservedBody::new(self.responses.watch(body, Some(in_flight)), exchange))
    }

    /// Serve `io` with hyper until the connection ends, a deadline closes it, or shutdown
    /// drains it.
    async fn serve<I>(
        self: Arc<Self>,
        builder: &auto::Builder<TokioExecutor>,
        io: I,
        mut stop: watch::Receiver<bool>,
        peer: SocketAddr,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let conn = self.clone();
        let service = service_fn(move |request| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.answer(request).await) }
        });
        let connection = builder.serve_connection(io, service).into_owned();
        self.drive(connection, &mut stop, peer).await;
    }

    /// Poll `connection`, checking its responses and idle time every sweep period.
    async fn drive<C>(&self, connection: C, stop: &mut watch::Receiver<bool>, peer: SocketAddr)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display + 'static,
    {
        let limits = self.limits;
        let mut connection = std::pin::pin!(connection);
        let mut tick = tokio::time::interval(limits.sweep_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        // When an idle connection was asked to close (a GOAWAY, or the end of keep-alive).
        let mut closing: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        if is_head_timeout(&e) {
                            self.telemetry.deadline("request_head");
                        }
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = stopped(stop), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
                now = tick.tick() => {
                    let sweep = self.responses.sweep(now);
                    if sweep.revoked > 0 {
                        tracing::debug!(%peer, revoked = sweep.revoked,
                            "responses made no progress for the write-stall bound; slots freed");
                        for _ in 0..sweep.revoked {
                            self.telemetry.deadline("response_stall");
                        }
                    }
                    if sweep.stalled > 0
                        && sweep.live == 0
                        && self.activity.in_flight() <= sweep.stalled
                    {
                        tracing::debug!(%peer, stalled = sweep.stalled,
                            "every response of the connection is stalled; closing it");
                        self.telemetry.deadline("stalled_connection");
                        return;
                    }
                    if let Some(since) = closing {
                        // A client that ignores the GOAWAY gets the head timeout to finish.
                        if now.duration_since(since) >= limits.header_read_timeout {
                            return;
                        }
                        continue;
                    }
                    match self.activity.idle(now) {
                        Idle::NoRequestYet(open) if open >= limits.header_read_timeout => {
                            tracing::debug!(%peer, "no request within the header timeout; closing");
                            self.telemetry.deadline("first_request");
                            return;
                        }
                        Idle::Since(idle) if idle >= limits.idle_timeout => {
                            tracing::debug!(%peer, "connection idle; closing it");
                            self.telemetry.deadline("idle");
                            connection.as_mut().graceful_shutdown();
                            closing = Some(now);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Whether a connection ended because a request head did not arrive in time (hyper's
/// HTTP/1.1 header timeout).
fn is_head_timeout<E: std::fmt::Display + 'static>(e: &E) -> bool {
    let any: &dyn std::any::Any = e;
    any.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>()
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_timeout)
}

impl TcpServing<'_> {
    fn template(&self) -> ConnTemplate {
        ConnTemplate {
            api: self.api.clone(),
            telemetry: self.telemetry.clone(),
            alt_svc: self.alt_svc.clone(),
            limits: self.limits,
        }
    }

    /// Accept on `listener` (TLS first when `tls` is set) until `stop` turns true.
    async fn accept_loop(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let slot = tokio::select! {
                slot = self.connections.clone().acquire_owned() => slot,
                () = stopped(&mut stop) => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut stop) => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let limits = self.limits;
            let stall = limits.write_stall_timeout;
            let share = self.clients.share(peer.ip(), limits.per_connection);
            let builder = self.builder.clone();
            // Held for the connection's life, so the graceful shutdown waits for it whichever
            // server answers it (each connection drains itself on `stop`).
            let watcher = self.graceful.watcher();
            let stop = stop.clone();
            match tls.clone() {
                None if self.lean_http1 => {
                    let api = self.api.clone();
                    let settings = h1::Settings {
                        peer,
                        header_read_timeout: limits.header_read_timeout,
                        write_stall_timeout: stall,
                        alt_svc: self.alt_svc.clone(),
                        telemetry: self.telemetry.clone(),
                    };
                    let template = self.template();
                    tokio::spawn(async move {
                        if let h1::Outcome::HandOff(rewind) =
                            h1::serve(stream, &api, &settings, &stop, &share).await
                        {
                            // After a request the connection stays HTTP/1.1: the HTTP/2 preface
                            // is only honoured as a connection's first bytes (as hyper does).
                            let builder = if rewind.after_request() {
                                builder.http1_only()
                            } else {
                                builder
                            };
                            let io = TokioIo::new(StallGuard::new(rewind, stall));
                            let conn = template.open(share, peer);
                            conn.serve(&builder, io, stop, peer).await;
                        }
                        drop(watcher);
                        drop(slot);
                    });
                }
                None => {
                    let conn = self.template().open(share, peer);
                    let io = TokioIo::new(StallGuard::new(stream, stall));
                    tokio::spawn(async move {
                        conn.serve(&builder, io, stop, peer).await;
                        drop(watcher);
                        drop(slot);
                    });
                }
                Some(acceptor) => {
                    let stream = StallGuard::new(stream, stall);
                    let template = self.template();
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(
                            limits.tls_handshake_timeout,
                            acceptor.accept(stream),
                        );
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                template.telemetry.deadline("tls_handshake");
                                return;
                            }
                        };
                        // The first request's deadline counts from the end of the handshake.
                        let conn = template.open(share, peer);
                        conn.serve(&builder, TokioIo::new(stream), stop, peer).await;
                        drop(watcher);
                        drop(slot);
                    });
                }
            }
        }
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Connections the `/metrics` listener serves at once (scrapers); more wait in the backlog.
const METRICS_CONNECTIONS: usize = 16;

/// Serve `GET /metrics` (and nothing else) on `listener` until `stop`, with HTTP/1.1.
async fn serve_metrics(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = stopped(&mut stop) => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let telemetry = telemetry.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let telemetry = telemetry.clone();
            async move {
                let get = matches!(*request.method(), Method::GET | Method::HEAD);
                let response = if request.uri().path() == "/metrics" && get {
                    crate::api::metrics_response(&telemetry)
                } else if request.uri().path() == "/metrics" {
                    ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response(0)
                } else {
                    ApiError::RouteNotFound.into_response(0)
                };
                Ok::<_, Infallible>(response)
            }
        });
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A scrape is one small response: a connection still open after a few header
            // timeouts is a client that does not read.
            let _ = tokio::time::timeout(header_read_timeout * 4, connection).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}
