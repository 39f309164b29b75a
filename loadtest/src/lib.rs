//! `walrus-loadtest`: a Walrus-aware load generator for the gateway, or any
//! aggregator-compatible URL.
//!
//! A run follows the modules in order: [`cli`] (arguments → [`config::RunConfig`], presets in
//! [`config`]) → [`population`] (publish blobs or read a list) → [`runner`] (closed loop, open
//! loop without coordinated omission, stampede rounds; [`workload`] picks each request,
//! [`client`] sends it over HTTP/1.1 or h2c, [`faults`] flips storage-sim faults on schedule)
//! → [`report`] (HDR histograms, errors by kind; [`scrape`] adds the target's `/metrics`
//! deltas) → the summary table, `--json` and [`html`].
//!
//! Guarantees: every response is checked (status, length, `Content-Range`; full reads are
//! hashed against their Blob ID — each blob's first read and a sample of the rest — and ranges
//! of blobs this run published are compared byte for byte), and a wrong byte is a
//! `wrong_bytes` error in the report. A run refuses non-loopback targets unless allowed,
//! admits no request after its deadline or request count, and keeps at most four full bodies
//! in memory for checking.

pub mod cli;
pub mod client;
pub mod config;
pub mod faults;
pub mod html;
pub mod parse;
pub mod population;
pub mod report;
pub mod runner;
pub mod scrape;
pub mod workload;

pub use config::{Load, PopulationSpec, Preset, RunConfig, Scenario};
pub use report::Report;
pub use runner::{run, RunError};
