//! The Walrus edge gateway: an aggregator-compatible HTTP API (`GET /v1/blobs/{id}`) in front of
//! a committee of storage nodes, with verified fills and a bounded cache.
//!
//! A read follows the modules in order: [`api`] (routes, headers, ranges, the one error mapping)
//! → [`cache`] (verified blobs only) → [`fill`] (single-flight fills, sliver scheduling,
//! verification and decoding off the reactor) → [`nodes`] (HTTP(S) client for storage nodes, TLS
//! pinned to their network keys by [`node_tls`]) → `codec`. [`server`] accepts connections
//! (HTTP/1.1 and h2c on one port, HTTP/1.1 and HTTP/2 over TLS from [`tls`], HTTP/3 over QUIC in
//! [`h3`]) and drains them on shutdown; [`telemetry`] holds the per-gateway Prometheus metrics.
//!
//! Guarantees: no byte reaches a client or the cache before the sliver or blob it belongs to was
//! checked against the Blob ID; concurrent reads of one blob share one fill; every upstream call
//! has a timeout and every queue a bound, and hitting a bound answers 429 rather than waiting.

pub mod access_log;
pub mod api;
pub mod blocklist;
pub mod budget;
pub mod cache;
pub mod chain_reader;
pub mod client;
pub mod committee;
pub mod config;
pub mod deadline;
pub mod disk;
pub mod fairness;
pub mod fill;
pub mod h1;
pub mod h3;
pub mod heap;
pub mod memfile;
pub mod models;
pub mod node_tls;
pub mod nodes;
pub mod proof_batch;
pub mod publish;
pub mod publisher;
pub mod quilt;
pub mod server;
pub mod stall;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod verify;

pub use config::{GatewayConfig, SizeParseError};
pub use server::{Gateway, RunningGateway, ServerError};
