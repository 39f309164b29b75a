//! A chain-backed scene: walrus-sim's TLS storage nodes, its simulated Sui full node serving the
//! staking objects, and a gateway that finds the committee on that chain (from the same client
//! config `walrus-sim --walrus-config-out` writes) and reads over HTTPS pinned to the on-chain
//! keys. Tests of the real-network read path, of blob lifecycles and of by-object-id reads
//! start it with their own sim, gateway settings and refresh policy. Everything started here is
//! stopped by [`ChainScene::stop`].

use super::{send, Reply};
use bytes::Bytes;
use chain::committee::RefreshPolicy;
use codec::BlobId;
use gateway::chain_reader::ChainReader;
use gateway::committee::NodeScheme;
use gateway::server::CommitteeSource;
use gateway::{Gateway, GatewayConfig, RunningGateway};
use http::Method;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage_sim::sui::SuiSim;
use storage_sim::{SimConfig, SimNetwork};

/// Refresh fast, so epoch changes and moves are seen within a test's patience.
pub fn fast_policy() -> RefreshPolicy {
    RefreshPolicy {
        normal: Duration::from_millis(100),
        near: Duration::from_millis(100),
        near_window: Duration::ZERO,
        sync: Duration::from_millis(100),
    }
}

pub struct ChainScene {
    pub net: Arc<SimNetwork>,
    pub sui: SuiSim,
    gateway: Option<RunningGateway>,
    pub addr: SocketAddr,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl ChainScene {
    pub async fn start(sim: SimConfig, config: GatewayConfig, policy: RefreshPolicy) -> Self {
        let net = Arc::new(SimNetwork::start(sim).await.expect("sim network starts"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sui = SuiSim::start(listener, net.chain_control())
            .await
            .expect("the simulated full node starts");
        // The same file `walrus-sim --walrus-config-out` writes, parsed as `serve` parses it.
        let yaml = storage_sim::sui::walrus_client_config(
            &sui.url(),
            &sui.system_object(),
            &sui.staking_object(),
        );
        let network = chain::network::parse_client_config(&yaml, None).unwrap();
        let source = CommitteeSource::Chain {
            reader: Box::new(ChainReader::new(network, Duration::from_secs(5))),
            scheme: NodeScheme::Https,
            policy,
        };
        let gateway = Gateway::bind_source(config, source)
            .await
            .expect("gateway binds")
            .spawn();
        let addr = gateway.addr();
        Self {
            net,
            sui,
            gateway: Some(gateway),
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Store `data` on the simulated network (registered and certified on its chain).
    pub async fn store(&self, data: &[u8]) -> BlobId {
        super::store_on(&self.net, data).await
    }

    pub async fn request(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, self.addr, method, path, headers).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[]).await
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.bytes().to_vec()).unwrap()
    }

    /// The value of one metric series (`name{labels}` as exposed), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Wait (boundedly) until the gateway's /status reports `epoch` in `state`.
    pub async fn wait_for_epoch(&self, epoch: u32, state: &str) {
        for _ in 0..500 {
            let status = self.get("/status").await;
            if status.header("x-walrus-epoch") == Some(&epoch.to_string())
                && status.header("x-walrus-epoch-state") == Some(state)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the gateway never saw epoch {epoch} in {state}");
    }

    pub async fn stop(mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await.expect("gateway stops");
        }
        self.sui.shutdown().await;
        if let Ok(net) = Arc::try_unwrap(self.net) {
            net.shutdown().await;
        }
    }
}
