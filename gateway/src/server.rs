//! Accepting connections: one TCP port speaking HTTP/1.1 and h2c (HTTP/2 with prior knowledge),
//! at most `max_connections` at a time, with header-read timeouts, and a graceful shutdown that
//! stops accepting, lets in-flight responses finish for `shutdown_grace`, then closes the rest.

use crate::api::Api;
use crate::cache::BlobCache;
use crate::config::GatewayConfig;
use crate::disk::DiskCache;
use crate::fill::{FillConfig, Filler};
use crate::nodes::{Topology, TopologyError};
use crate::telemetry::Telemetry;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::committee::Committee;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

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
    #[error("cannot open the disk cache: {0}")]
    DiskCache(#[from] crate::disk::DiskError),
    #[error("the server task failed: {0}")]
    Task(String),
}

/// Time allowed for a client to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound, not yet serving gateway.
pub struct Gateway {
    api: Arc<Api>,
    listener: TcpListener,
    addr: SocketAddr,
    telemetry: Arc<Telemetry>,
    config: GatewayConfig,
}

impl Gateway {
    /// Check the committee, build the cache and fill machinery, and bind the listener.
    pub async fn bind(config: GatewayConfig, committee: Committee) -> Result<Self, ServerError> {
        let topology = Topology::new(committee)?;
        let telemetry = Telemetry::new();
        let mut cache = BlobCache::new(config.memory_cache_bytes, config.memory_max_object);
        if let Some(dir) = &config.cache_dir {
            let disk = DiskCache::open(dir, config.disk_cache_bytes, telemetry.disk_metrics())?;
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
        };
        let filler = Filler::new(topology, fill_config, cache, telemetry.clone());
        let api = Arc::new(Api::new(filler, telemetry.clone(), &config));
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        Ok(Self {
            api,
            listener,
            addr,
            telemetry,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Serve until `shutdown` completes, then drain.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Gateway {
            api,
            listener,
            addr,
            telemetry,
            config,
        } = self;
        let upkeep = tokio::spawn({
            let telemetry = telemetry.clone();
            async move {
                let mut tick = tokio::time::interval(Telemetry::UPKEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    telemetry.upkeep();
                }
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let graceful = GracefulShutdown::new();
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        tracing::info!(%addr, "gateway listening (HTTP/1.1 and h2c)");
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                slot = connections.clone().acquire_owned() => slot,
                () = &mut shutdown => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
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
            let api = api.clone();
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { api.handle(request).await }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => tracing::info!("all connections closed"),
            () = tokio::time::sleep(config.shutdown_grace) => {
                tracing::warn!(grace = ?config.shutdown_grace, "grace period over; closing remaining connections");
            }
        }
        upkeep.abort();
    }

    /// Serve in a background task until [`RunningGateway::shutdown`].
    pub fn spawn(self) -> RunningGateway {
        let addr = self.addr;
        let api = self.api.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        RunningGateway {
            addr,
            api,
            shutdown: Some(tx),
            task,
        }
    }
}

/// A gateway serving in the background.
pub struct RunningGateway {
    addr: SocketAddr,
    api: Arc<Api>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
