//! Which Walrus network to read: the built-in mainnet and testnet presets (NETWORK.md §1), or
//! Walrus's own `client_config.yaml` (the single-context form, and the multi-context form with
//! `contexts:` and `default_context:`), from which the read path takes `system_object`,
//! `staking_object` and `rpc_urls`.

use crate::object_id::ObjectId;
use std::collections::BTreeMap;

/// Where the committee lives on Sui.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// A name for logs and `/status`: `mainnet`, `testnet`, or the config's context.
    pub name: String,
    pub system_object: ObjectId,
    pub staking_object: ObjectId,
    /// Full-node gRPC URLs, tried in order.
    pub rpc_urls: Vec<String>,
    /// The chain the object IDs belong to, when known (presets): checked against the full
    /// node's `GetServiceInfo` so mainnet IDs are never read from a testnet URL.
    pub chain_id: Option<String>,
    /// The Walrus package's original ID, when known (presets); otherwise learnt from the
    /// `Staking` object's type and then required of every other object.
    pub package: Option<ObjectId>,
}

/// The built-in networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Mainnet,
    Testnet,
}

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mainnet" => Ok(Preset::Mainnet),
            "testnet" => Ok(Preset::Testnet),
            other => Err(format!(
                "unknown network {other:?}: expected mainnet or testnet"
            )),
        }
    }
}

fn id(text: &str) -> ObjectId {
    text.parse().expect("built-in IDs are valid")
}

impl Preset {
    pub fn config(self) -> NetworkConfig {
        match self {
            Preset::Mainnet => NetworkConfig {
                name: "mainnet".into(),
                system_object: id(
                    "0x2134d52768ea07e8c43570ef975eb3e4c27a39fa6396bef985b5abc58d03ddd2",
                ),
                staking_object: id(
                    "0x10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904",
                ),
                rpc_urls: vec!["https://fullnode.mainnet.sui.io:443".into()],
                chain_id: Some("4btiuiMPvEENsttpZC7CZ53DruC3MAgfznDbASZ7DR6S".into()),
                package: Some(id(
                    "0xfdc88f7d7cf30afab2f82e8380d11ee8f70efb90e863d1de8616fae1bb09ea77",
                )),
            },
            Preset::Testnet => NetworkConfig {
                name: "testnet".into(),
                system_object: id(
                    "0x6c2547cbbc38025cf3adac45f63cb0a8d12ecf777cdc75a4971612bf97fdf6af",
                ),
                staking_object: id(
                    "0xbe46180321c30aab2f8b3501e24048377287fa708018a5b7c2792b35fe339ee3",
                ),
                rpc_urls: vec!["https://fullnode.testnet.sui.io:443".into()],
                chain_id: Some("69WiPg3DAQiwdxfncX6wYQ2siKwAe6L9BZthQea3JNMD".into()),
                package: Some(id(
                    "0xd84704c17fc870b8764832c535aa6b11f21a95cd6f5bb38a9b07d2cf42220c66",
                )),
            },
        }
    }
}

/// Why a `client_config.yaml` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("the file lists contexts {available:?} but no default_context and none was chosen")]
    NoContext { available: Vec<String> },
    #[error("no context {wanted:?} in the file (it has {available:?})")]
    UnknownContext {
        wanted: String,
        available: Vec<String>,
    },
    #[error("a context was chosen ({0:?}), but the file has no `contexts:`")]
    NotMultiContext(String),
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[derive(serde::Deserialize)]
struct FileContext {
    system_object: Option<String>,
    staking_object: Option<String>,
    #[serde(default)]
    rpc_urls: Vec<String>,
}

#[derive(serde::Deserialize)]
struct MultiFile {
    contexts: BTreeMap<String, FileContext>,
    default_context: Option<String>,
}

/// Parse a Walrus `client_config.yaml`. `context` picks one of a multi-context file's
/// contexts (else its `default_context`). Keys the read path does not need are ignored.
pub fn parse_client_config(
    text: &str,
    context: Option<&str>,
) -> Result<NetworkConfig, ConfigError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?;
    let multi = value.get("contexts").is_some();
    let (name, ctx) = if multi {
        let file: MultiFile =
            serde_yaml::from_value(value).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        let available: Vec<String> = file.contexts.keys().cloned().collect();
        let wanted = context
            .map(str::to_owned)
            .or(file.default_context)
            .ok_or_else(|| ConfigError::NoContext {
                available: available.clone(),
            })?;
        let mut contexts = file.contexts;
        let ctx = contexts
            .remove(&wanted)
            .ok_or(ConfigError::UnknownContext {
                wanted: wanted.clone(),
                available,
            })?;
        (wanted, ctx)
    } else {
        if let Some(c) = context {
            return Err(ConfigError::NotMultiContext(c.to_owned()));
        }
        let ctx: FileContext =
            serde_yaml::from_value(value).map_err(|e| ConfigError::Yaml(e.to_string()))?;
        ("client_config".to_owned(), ctx)
    };
    let object = |field: &'static str, v: Option<String>| -> Result<ObjectId, ConfigError> {
        v.ok_or(ConfigError::Missing { field })?.parse().map_err(
            |e: crate::object_id::ParseObjectIdError| ConfigError::Invalid {
                field,
                reason: e.to_string(),
            },
        )
    };
    let system_object = object("system_object", ctx.system_object)?;
    let staking_object = object("staking_object", ctx.staking_object)?;
    if ctx.rpc_urls.is_empty() {
        return Err(ConfigError::Missing { field: "rpc_urls" });
    }
    for url in &ctx.rpc_urls {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                field: "rpc_urls",
                reason: format!("{url:?} is not an http:// or https:// URL"),
            });
        }
    }
    // The presets' chain and package are known; a file naming their objects gets the same
    // checks.
    let preset = [Preset::Mainnet, Preset::Testnet]
        .into_iter()
        .map(Preset::config)
        .find(|p| p.staking_object == staking_object);
    Ok(NetworkConfig {
        name,
        system_object,
        staking_object,
        rpc_urls: ctx.rpc_urls,
        chain_id: preset.as_ref().and_then(|p| p.chain_id.clone()),
        package: preset.and_then(|p| p.package),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `setup/client_config.yaml` of MystenLabs/walrus, as published.
    const MULTI: &str = "contexts:
  mainnet:
    system_object: 0x2134d52768ea07e8c43570ef975eb3e4c27a39fa6396bef985b5abc58d03ddd2
    staking_object: 0x10b9d30c28448939ce6c4d6c6e0ffce4a7f8a4ada8248bdad09ef8b70e4a3904
    n_shards: 1000
    wallet_config:
      # Sui environment to use.
      active_env: mainnet
    rpc_urls:
      - https://fullnode.mainnet.sui.io:443
  testnet:
    system_object: 0x6c2547cbbc38025cf3adac45f63cb0a8d12ecf777cdc75a4971612bf97fdf6af
    staking_object: 0xbe46180321c30aab2f8b3501e24048377287fa708018a5b7c2792b35fe339ee3
    exchange_objects:
      - 0xf4d164ea2def5fe07dc573992a029e010dba09b1a8dcbc44c5c2e79567f39073
    n_shards: 1000
    wallet_config:
      active_env: testnet
    rpc_urls:
      - https://fullnode.testnet.sui.io:443
default_context: testnet
";

    /// The single-context form (`setup/client_config_example.yaml`, shortened).
    const SINGLE: &str =
        "system_object: 0xa2637d13d171b278eadfa8a3fbe8379b5e471e1f3739092e5243da17fc8090eb
staking_object: 0xca7cf321e47a1fc9bfd032abc31b253f5063521fd5b4c431f2cdd3fee1b4ec00
cache_ttl_secs: 10
wallet_config: null
rpc_urls:
- http://127.0.0.1:9000
communication_config:
  max_concurrent_metadata_reads: 3
";

    #[test]
    fn multi_context_files_pick_the_default_or_the_named_context() {
        let testnet = parse_client_config(MULTI, None).unwrap();
        assert_eq!(
            testnet,
            NetworkConfig {
                name: "testnet".into(),
                ..Preset::Testnet.config()
            }
        );
        let mainnet = parse_client_config(MULTI, Some("mainnet")).unwrap();
        assert_eq!(
            mainnet.staking_object,
            Preset::Mainnet.config().staking_object
        );
        assert_eq!(mainnet.chain_id, Preset::Mainnet.config().chain_id);
        assert!(matches!(
            parse_client_config(MULTI, Some("devnet")),
            Err(ConfigError::UnknownContext { .. })
        ));
        let no_default = MULTI.replace("default_context: testnet\n", "");
        assert!(matches!(
            parse_client_config(&no_default, None),
            Err(ConfigError::NoContext { .. })
        ));
    }

    #[test]
    fn single_context_files_and_their_errors() {
        let c = parse_client_config(SINGLE, None).unwrap();
        assert_eq!(c.rpc_urls, ["http://127.0.0.1:9000"]);
        assert_eq!(c.chain_id, None);
        assert_eq!(c.package, None);
        assert!(matches!(
            parse_client_config(SINGLE, Some("x")),
            Err(ConfigError::NotMultiContext(_))
        ));
        let missing = SINGLE.replace("staking_object", "staking_objekt");
        assert!(matches!(
            parse_client_config(&missing, None),
            Err(ConfigError::Missing {
                field: "staking_object"
            })
        ));
        let bad = SINGLE.replace("0xca7c", "0xzz7c");
        assert!(matches!(
            parse_client_config(&bad, None),
            Err(ConfigError::Invalid { .. })
        ));
        let no_rpc = SINGLE.replace("- http://127.0.0.1:9000\n", "");
        assert!(parse_client_config(&no_rpc, None).is_err());
        assert!(matches!(
            parse_client_config("a: [", None),
            Err(ConfigError::Yaml(_))
        ));
    }

    #[test]
    fn presets_parse_by_name() {
        assert_eq!("mainnet".parse::<Preset>(), Ok(Preset::Mainnet));
        assert!("devnet".parse::<Preset>().is_err());
        let m = Preset::Mainnet.config();
        assert_eq!(m.rpc_urls, ["https://fullnode.mainnet.sui.io:443"]);
        assert_ne!(m.staking_object, Preset::Testnet.config().staking_object);
    }
}
