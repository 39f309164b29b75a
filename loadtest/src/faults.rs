//! Flipping storage-sim faults mid-run (the `faults` scenario): `POST /sim/faults?node=K` with a
//! JSON [`NodeFaults`] body on any simulated node's loopback admin endpoint. The plan says when
//! to break the node and when to heal it; the run always heals what it broke before it ends.

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
    /// Any node of the simulated committee (its admin endpoint reaches every node).
    pub admin: Target,
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

/// Set `faults` on `node` through the admin endpoint at `admin`.
pub async fn apply(
    transport: &Arc<dyn Transport>,
    admin: &Target,
    node: &str,
    faults: &NodeFaults,
) -> Result<(), FaultError> {
    let node: String = node
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let uri = admin.uri(&format!("/sim/faults?node={node}"));
    let url = uri.to_string();
    let body = serde_json::to_vec(faults).map_err(|e| FaultError::Invalid(e.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
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
        Ok(())
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {ADMIN_TIMEOUT:?}")))?
        .map_err(fail)
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
