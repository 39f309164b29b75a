//! What the simulated chain knows about the storage nodes, and how to change it.
//!
//! STAND-IN: this file only exists on the `sui` branch so that `sui.rs` can be written against
//! the epoch-aware simulator's API. At merge it is replaced by that branch's version; add
//! nothing here.

#[derive(Debug, Clone, PartialEq)]
pub struct ChainNode {
    pub name: String,
    pub node_id: [u8; 32],
    /// "127.0.0.1:PORT"
    pub address: String,
    pub network_public_key: [u8; 33],
    pub bls_public_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainView {
    pub epoch: u32,
    pub state: chain::EpochState,
    pub n_shards: u16,
    pub epoch_duration_ms: u64,
    pub first_epoch_start_ms: u64,
    pub nodes: Vec<ChainNode>,
    /// Shards of node i in the current committee; empty = not a member.
    pub current: Vec<Vec<u16>>,
    /// Shards of node i in the previous committee; empty = not a member.
    pub previous: Vec<Vec<u16>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EpochChange {
    pub epoch: u32,
    pub moved_shards: usize,
}

pub trait ChainControl: Send + Sync + 'static {
    fn view(&self) -> ChainView;
    fn advance_epoch(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<EpochChange, crate::SimError>> + Send + '_>,
    >;
    fn move_node(
        &self,
        node: &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, crate::SimError>> + Send + '_>,
    >;
    fn changed(&self) -> tokio::sync::watch::Receiver<u64>;
}
