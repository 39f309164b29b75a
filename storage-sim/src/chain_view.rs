//! The simulated committee as the chain would describe it, for a stand-in Sui full node: node
//! IDs, addresses, keys, the epoch and its state, the current and previous committees; and the
//! controls that change it (epoch changes, node address moves).
//!
//! [`ChainView`] is a consistent snapshot (the epoch, state and committees are read together).
//! [`ChainControl`] is an object-safe handle (`Arc<dyn ChainControl>`) so the Sui stand-in can
//! drive the network from its own handlers without depending on [`crate::SimNetwork`]'s
//! lifetime; [`ChainControl::changed`] ticks whenever the view changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use crate::epoch::EpochChange;
use crate::network::Shared;
use crate::SimError;

/// One node as the chain describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainNode {
    pub name: String,
    pub node_id: [u8; 32],
    /// `"127.0.0.1:PORT"`.
    pub address: String,
    pub network_public_key: [u8; 33],
    /// 96 arbitrary-but-stable bytes.
    pub bls_public_key: Vec<u8>,
}

/// The staking state of the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainView {
    pub epoch: u32,
    pub state: chain::EpochState,
    pub n_shards: u16,
    /// From `--epoch-secs` (the epoch timer), else 86_400_000.
    pub epoch_duration_ms: u64,
    /// Unix ms when the network (first) started.
    pub first_epoch_start_ms: u64,
    /// Every node ever in a committee, index = node index.
    pub nodes: Vec<ChainNode>,
    /// Shards per node index in the current committee.
    pub current: Vec<Vec<u16>>,
    /// Shards per node index in the previous committee.
    pub previous: Vec<Vec<u16>>,
}

/// A boxed future borrowing the control.
type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SimError>> + Send + 'a>>;

/// Read and drive the simulated chain state.
pub trait ChainControl: Send + Sync + 'static {
    fn view(&self) -> ChainView;
    fn advance_epoch(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<EpochChange, SimError>> + Send + '_>>;
    fn move_node(
        &self,
        node: &str,
    ) -> Pin<Box<dyn Future<Output = Result<String, SimError>> + Send + '_>>;
    /// Resolves whenever the view changes (epoch, state, addresses), for long-polls/tests.
    fn changed(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// The [`ChainControl`] of a running network.
pub(crate) struct Control(pub(crate) Arc<Shared>);

impl ChainControl for Control {
    fn view(&self) -> ChainView {
        self.0.chain_view()
    }

    fn advance_epoch(&self) -> ControlFuture<'_, EpochChange> {
        Box::pin(self.0.advance_epoch())
    }

    fn move_node(&self, node: &str) -> ControlFuture<'_, String> {
        let node = node.to_owned();
        Box::pin(async move { self.0.move_node(&node).await })
    }

    fn changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changed.subscribe()
    }
}
