//! The committee file: which node (name, URL) owns which shards.
//!
//! This is the contract between the simulator and its clients (the gateway reads it with
//! [`Committee::load`]). The JSON shape is
//! `{"n_shards": N, "nodes": [{"name": "...", "url": "http://127.0.0.1:PORT", "shards": [..]}]}`;
//! a TLS network lists `"url": "https://127.0.0.1:PORT"` and each node's
//! `"network_public_key"` (hex of the 33-byte compressed P-256 key its certificate carries).
//! A simulated network's committee is a snapshot: it changes with epochs and node moves.
//!
//! Guarantee: a [`Committee`] that passed [`Committee::validate`] (which [`Committee::load`] and
//! [`Committee::save`] both run) assigns every shard `0..n_shards` to exactly one node, and node
//! names are unique and non-empty.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A committee of storage nodes and their shard assignment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Committee {
    /// Number of shards of the system (the `n` of the encoding).
    pub n_shards: u16,
    /// The storage nodes, each owning a disjoint set of shards.
    pub nodes: Vec<CommitteeNode>,
}

/// One storage node of a [`Committee`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CommitteeNode {
    /// A unique, human-readable name (`node-0`, `node-1`, … for simulated nodes).
    pub name: String,
    /// Base URL of the node's REST API, without a trailing slash, e.g. `http://127.0.0.1:9185`.
    pub url: String,
    /// Shard indices owned by the node.
    pub shards: Vec<u16>,
    /// The node's TLS key as on chain: the 33-byte SEC1-compressed P-256 `network_public_key`,
    /// hex. Required for an `https://` URL (the certificate must carry this key); absent for
    /// plain `http://` nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_public_key: Option<String>,
}

/// Why a committee file or value is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CommitteeError {
    #[error("cannot read committee file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write committee file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("committee file {path} is not valid committee JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the committee has no shards")]
    NoShards,
    #[error("the committee has no nodes")]
    NoNodes,
    #[error("node #{index} has an empty name")]
    EmptyName { index: usize },
    #[error("node name {0:?} is used by more than one node")]
    DuplicateName(String),
    #[error(
        "node {node:?} has URL {url:?}, expected http://, or https:// with a network_public_key"
    )]
    BadUrl { node: String, url: String },
    #[error("node {node:?} has network_public_key {key:?}: expected 66 hex digits of a compressed P-256 point (02 or 03 first)")]
    BadKey { node: String, key: String },
    #[error("node {node:?} lists shard {shard}, but there are only {n_shards} shards")]
    ShardOutOfRange {
        node: String,
        shard: u16,
        n_shards: u16,
    },
    #[error("shard {shard} is assigned to both {first:?} and {second:?}")]
    DuplicateShard {
        shard: u16,
        first: String,
        second: String,
    },
    #[error("shard {0} is not assigned to any node")]
    MissingShard(u16),
    #[error("node {0:?} owns no shards")]
    NodeWithoutShards(String),
}

impl Committee {
    /// Read and validate a committee JSON file.
    pub fn load(path: &Path) -> Result<Committee, CommitteeError> {
        let text = std::fs::read(path).map_err(|source| CommitteeError::Read {
            path: path.to_owned(),
            source,
        })?;
        let committee: Committee =
            serde_json::from_slice(&text).map_err(|source| CommitteeError::Parse {
                path: path.to_owned(),
                source,
            })?;
        committee.validate()?;
        Ok(committee)
    }

    /// Validate, then write the committee as pretty JSON, atomically: readers see either the
    /// old file or the complete new one, never a partial write.
    pub fn save(&self, path: &Path) -> Result<(), CommitteeError> {
        self.validate()?;
        let mut json = serde_json::to_vec_pretty(self).expect("a committee always serializes");
        json.push(b'\n');
        crate::persist::write_atomic(path, &json).map_err(|source| CommitteeError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Check that every shard `0..n_shards` is owned by exactly one node, that every node owns
    /// at least one shard, and that names are unique and URLs are `http://`.
    pub fn validate(&self) -> Result<(), CommitteeError> {
        if self.n_shards == 0 {
            return Err(CommitteeError::NoShards);
        }
        if self.nodes.is_empty() {
            return Err(CommitteeError::NoNodes);
        }
        let mut names = HashSet::new();
        let mut owner: Vec<Option<usize>> = vec![None; usize::from(self.n_shards)];
        for (index, node) in self.nodes.iter().enumerate() {
            if node.name.is_empty() {
                return Err(CommitteeError::EmptyName { index });
            }
            if !names.insert(node.name.as_str()) {
                return Err(CommitteeError::DuplicateName(node.name.clone()));
            }
            if let Some(key) = &node.network_public_key {
                if parse_network_key(key).is_none() {
                    return Err(CommitteeError::BadKey {
                        node: node.name.clone(),
                        key: key.clone(),
                    });
                }
            }
            let https_with_key =
                node.url.starts_with("https://") && node.network_public_key.is_some();
            if !node.url.starts_with("http://") && !https_with_key {
                return Err(CommitteeError::BadUrl {
                    node: node.name.clone(),
                    url: node.url.clone(),
                });
            }
            if node.shards.is_empty() {
                return Err(CommitteeError::NodeWithoutShards(node.name.clone()));
            }
            for &shard in &node.shards {
                let slot =
                    owner
                        .get_mut(usize::from(shard))
                        .ok_or(CommitteeError::ShardOutOfRange {
                            node: node.name.clone(),
                            shard,
                            n_shards: self.n_shards,
                        })?;
                if let Some(first) = *slot {
                    return Err(CommitteeError::DuplicateShard {
                        shard,
                        first: self.nodes[first].name.clone(),
                        second: node.name.clone(),
                    });
                }
                *slot = Some(index);
            }
        }
        match owner.iter().position(Option::is_none) {
            Some(missing) => Err(CommitteeError::MissingShard(missing as u16)),
            None => Ok(()),
        }
    }

    /// Index into [`Committee::nodes`] of the node owning `shard`, if any.
    pub fn node_for_shard(&self, shard: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.shards.contains(&shard))
    }
}

/// The 33 bytes of a hex `network_public_key` (see [`chain::network_key::parse_hex`]).
pub use chain::network_key::parse_hex as parse_network_key;

#[cfg(test)]
mod tests {
    use super::*;

    fn committee() -> Committee {
        Committee {
            n_shards: 4,
            nodes: vec![
                CommitteeNode {
                    name: "a".into(),
                    url: "http://127.0.0.1:1".into(),
                    shards: vec![0, 2],
                    network_public_key: None,
                },
                CommitteeNode {
                    name: "b".into(),
                    url: "http://127.0.0.1:2".into(),
                    shards: vec![1, 3],
                    network_public_key: None,
                },
            ],
        }
    }

    #[test]
    fn valid_committee_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("committee.json");
        let c = committee();
        c.save(&path).unwrap();
        assert_eq!(Committee::load(&path).unwrap(), c);
        assert_eq!(c.node_for_shard(2), Some(0));
        assert_eq!(c.node_for_shard(3), Some(1));
        assert_eq!(c.node_for_shard(4), None);
        // Only the final file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("committee.json")]);
    }

    #[test]
    fn invalid_assignments_are_rejected() {
        let mut c = committee();
        c.nodes[1].shards = vec![1, 2, 3];
        assert!(matches!(
            c.validate(),
            Err(CommitteeError::DuplicateShard { shard: 2, .. })
        ));
        let mut c = committee();
        c.nodes[1].shards = vec![1];
        assert!(matches!(c.validate(), Err(CommitteeError::MissingShard(3))));
        let mut c = committee();
        c.nodes[1].shards.push(4);
        assert!(matches!(
            c.validate(),
            Err(CommitteeError::ShardOutOfRange { shard: 4, .. })
        ));
        let mut c = committee();
        c.nodes[1].name = "a".into();
        assert!(matches!(
            c.validate(),
            Err(CommitteeError::DuplicateName(_))
        ));
        let mut c = committee();
        c.nodes[0].url = "https://x".into();
        assert!(matches!(c.validate(), Err(CommitteeError::BadUrl { .. })));
        c.nodes[0].network_public_key = Some(format!("02{}", "ab".repeat(32)));
        c.validate().unwrap();
        c.nodes[0].network_public_key = Some(format!("04{}", "ab".repeat(32)));
        assert!(matches!(c.validate(), Err(CommitteeError::BadKey { .. })));
        c.nodes[0].network_public_key = Some("02ab".into());
        assert!(matches!(c.validate(), Err(CommitteeError::BadKey { .. })));
    }

    #[test]
    fn load_reports_malformed_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, b"{\"n_shards\": 4}").unwrap();
        assert!(matches!(
            Committee::load(&path),
            Err(CommitteeError::Parse { .. })
        ));
    }
}
