//! Flipping storage-sim faults mid-run (the `faults` scenario): `POST /sim/faults?node=K` with a
//! JSON [`NodeFaults`] body on any simulated node's loopback admin endpoint. The plan says when
//! to break the node and when to heal it; the run always heals what it broke before it ends.
//!
//! A node taken `offline` closes its listener, admin endpoint included, so it cannot be healed
//! through itself. Before the run, [`choose_admin`] finds out which of the given admin URLs is
//! the faulted node (by marking that node and reading the mark back) and uses another one; if
//! the only one is the faulted node, the run is refused before anything is broken.

use crate::client::{Target, Transport};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Duration;
pub use storage_sim::faults::NodeFaults;

/// Timeout of one admin call (the sim answers once the change took effect).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// When and how to break a simulated node.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Nodes of the simulated committee (each one's admin endpoint reaches every node), in
    /// order of preference; the run breaks and heals through one that is not the faulted node
    /// when the fault takes it offline.
    pub admins: Vec<Target>,
    /// Node index or name.
    pub node: String,
    pub faults: NodeFaults,
    /// Since the start of measurement.
    pub at: Duration,
    /// Since the start of measurement; `None`: heal only at the end.
    pub clear_at: Option<Duration>,
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("invalid faults: {0}")]
    Invalid(String),
    #[error("the storage-sim admin endpoint {url} failed: {reason}")]
    Admin { url: String, reason: String },
}

/// Parse a faults description: inline JSON (`{"offline":true}`) or a path to a JSON file.
pub fn parse_faults(text: &str) -> Result<NodeFaults, FaultError> {
    let json = if text.trim_start().starts_with('{') {
        text.to_owned()
    } else {
        std::fs::read_to_string(text)
            .map_err(|e| FaultError::Invalid(format!("cannot read {text}: {e}")))?
    };
    let faults: NodeFaults =
        serde_json::from_str(&json).map_err(|e| FaultError::Invalid(e.to_string()))?;
    faults
        .validate()
        .map_err(|e| FaultError::Invalid(e.to_string()))?;
    Ok(faults)
}

/// Keep only the characters a node index or name can have.
fn node_key(node: &str) -> String {
    node.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// One admin call: `method` on `path` of `admin`, the answer's body on success.
async fn call(
    transport: &Arc<dyn Transport>,
    admin: &Target,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Bytes, FaultError> {
    let uri = admin.uri(path);
    let url = uri.to_string();
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| FaultError::Invalid(e.to_string()))?;
    let fail = |reason: String| FaultError::Admin {
        url: url.clone(),
        reason,
    };
    let exchange = async {
        let response = transport.send(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("{status}: {text}"));
        }
        Ok(body)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {ADMIN_TIMEOUT:?}")))?
        .map_err(fail)
}

/// Set `faults` on `node` through the admin endpoint at `admin`.
pub async fn apply(
    transport: &Arc<dyn Transport>,
    admin: &Target,
    node: &str,
    faults: &NodeFaults,
) -> Result<(), FaultError> {
    let body = serde_json::to_vec(faults).map_err(|e| FaultError::Invalid(e.to_string()))?;
    let path = format!("/sim/faults?node={}", node_key(node));
    call(transport, admin, Method::POST, &path, Some(body)).await?;
    Ok(())
}

/// The faults set on `node` (`None`: the admin node itself).
pub async fn current(
    transport: &Arc<dyn Transport>,
    admin: &Target,
    node: Option<&str>,
) -> Result<NodeFaults, FaultError> {
    let path = match node {
        Some(node) => format!("/sim/faults?node={}", node_key(node)),
        None => "/sim/faults".to_owned(),
    };
    let body = call(transport, admin, Method::GET, &path, None).await?;
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FaultError::Invalid(format!("the admin endpoint's answer: {e}")))?;
    serde_json::from_value(value["success"]["data"].clone())
        .map_err(|e| FaultError::Invalid(format!("the admin endpoint's faults: {e}")))
}

/// Whether the admin endpoint at `admin` is `node` itself: `node` gets a marker (1 ms more
/// latency) for a moment, and `admin`'s own faults are compared with it; `node`'s faults are
/// then put back as they were.
pub async fn admin_is_node(
    transport: &Arc<dyn Transport>,
    admin: &Target,
    node: &str,
) -> Result<bool, FaultError> {
    let before = current(transport, admin, Some(node)).await?;
    let marked = NodeFaults {
        latency_ms: before.latency_ms.wrapping_add(1),
        ..before.clone()
    };
    apply(transport, admin, node, &marked).await?;
    let own = current(transport, admin, None).await;
    apply(transport, admin, node, &before).await?;
    Ok(own? == marked)
}

/// The admin endpoint (index into `admins`) to break and heal `node` through: the first one, or
/// when `faults` takes the node offline, the first that is not `node` itself.
pub async fn choose_admin(
    transports: &[Arc<dyn Transport>],
    admins: &[Target],
    node: &str,
    faults: &NodeFaults,
) -> Result<usize, FaultError> {
    if admins.is_empty() {
        return Err(FaultError::Invalid("no storage-sim admin URL".into()));
    }
    if !faults.offline {
        return Ok(0);
    }
    for (index, (transport, admin)) in transports.iter().zip(admins).enumerate() {
        if !admin_is_node(transport, admin, node).await? {
            return Ok(index);
        }
    }
    Err(FaultError::Invalid(format!(
        "every --sim-admin URL is node {node} itself, which the fault takes offline (admin endpoint included): nothing could heal it afterwards. Give another node's URL as well (--sim-admin is repeatable)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_inline_and_validate() {
        let f = parse_faults(r#"{"offline":true}"#).unwrap();
        assert!(f.offline);
        let f = parse_faults(r#"{"error_rate":0.5,"error_status":500}"#).unwrap();
        assert_eq!(f.error_status, Some(500));
        assert!(matches!(
            parse_faults(r#"{"error_rate":2.0}"#),
            Err(FaultError::Invalid(_))
        ));
        assert!(matches!(
            parse_faults(r#"{"no_such_fault":true}"#),
            Err(FaultError::Invalid(_))
        ));
        assert!(matches!(
            parse_faults("/nonexistent/faults.json"),
            Err(FaultError::Invalid(_))
        ));
    }
}
