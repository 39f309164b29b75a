//! `GET /v1/blobs/{blob_id}/recoverySymbols` as a real node answers it (SPEC §10; walrus-service
//! `routes.rs` `list_recovery_symbols`, `node.rs` `retrieve_multiple_recovery_symbols` and
//! `retrieve_recovery_symbol_unchecked`, `recovery_symbol_service.rs`):
//!
//! * the query is either `id=<primary>-<secondary>` (repeatable; sorted and deduplicated) or
//!   `targetSliver=<i>&targetType=primary|secondary` (one symbol per shard the node owns in
//!   the current epoch, taken from that shard's pair), optionally with `proofAxis=`;
//! * each symbol is taken from a sliver the node holds: first the primary sliver (a symbol that
//!   rebuilds a secondary sliver, proved against `primary_hash`), else the secondary one,
//!   each expanded to `n` symbols and proved by its Merkle tree at the target's leaf;
//! * the answer is BCS `Vec<GeneralRecoverySymbol>` (`application/octet-stream`); symbols the
//!   node cannot serve are skipped, and only when none is left does it answer the last error;
//! * a blocked blob is 451 `FORBIDDEN_BLOB`, an unregistered one 404 `SLIVER_NOT_FOUND`, a
//!   sliver index `>= n` 400 `INDEX_OUT_OF_RANGE`, no symbol the node's shards hold 400
//!   `SYMBOL_NOT_PRESENT_AT_SHARDS`, an `id=` list that is empty 400 `NO_SYMBOLS_SPECIFIED`;
//! * bounds: at most [`MAX_ACTIVE_REQUESTS`] requests at once per node (the real node's default
//!   `max_active_recovery_symbols_requests`), else 503 `UNAVAILABLE`. The real node has no cap
//!   on the number of IDs; the sim refuses more than `n` distinct IDs (400 `INVALID_FILTER`),
//!   which no real client sends (a sliver is rebuilt from at most `n` symbols).
//!
//! Faults: `offline`, latency, errors, shaping apply as to every route; `forbidden` and
//! `lie_not_found` as to slivers; `corrupt_recovery_symbols` flips a byte of every symbol's data
//! (the proofs stay, so a client that checks them rejects every symbol).

use bytes::Bytes;
use codec::recovery::{self, RecoverySymbol};
use codec::{bcs, BlobId, SliverKind};

use crate::faults::NodeFaults;
use crate::network::Shared;
use crate::response::ApiError;

/// Concurrent recovery-symbol requests a node serves (walrus-service's default
/// `experimental_max_active_recovery_symbols_requests`).
pub(crate) const MAX_ACTIVE_REQUESTS: usize = 1_000;

/// Which symbols a query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `(primary sliver index, secondary sliver index)` pairs.
    Ids(Vec<(u16, u16)>),
    /// All the node holds that rebuild sliver `index` of `kind`.
    Recovers { index: u16, kind: SliverKind },
}

/// The parsed query: the filter and, with `proofAxis`, the only kind of source sliver allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub filter: Filter,
    pub proof_axis: Option<SliverKind>,
}

fn parse_id(text: &str) -> Option<(u16, u16)> {
    let (p, s) = text.split_once('-')?;
    Some((p.parse().ok()?, s.parse().ok()?))
}

/// Parse the query string as the real node's `ListRecoverySymbolsQuery` (an `id` list, else
/// `targetSliver` and `targetType`), bounded to `max_ids` distinct IDs.
pub(crate) fn parse_query(query: Option<&str>, max_ids: usize) -> Result<Query, ApiError> {
    let bad = |why: String| ApiError::InvalidQuery(why);
    let mut ids = Vec::new();
    let mut target_sliver = None;
    let mut target_type = None;
    let mut proof_axis = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "id" => {
                if ids.len() > 4 * max_ids {
                    return Err(ApiError::InvalidFilter(format!(
                        "more than {max_ids} symbol IDs"
                    )));
                }
                ids.push(parse_id(value).ok_or_else(|| {
                    bad(format!(
                        "invalid symbol ID {:?}: expected <primary>-<secondary>",
                        value.chars().take(20).collect::<String>()
                    ))
                })?);
            }
            "targetSliver" => {
                target_sliver = Some(value.parse::<u16>().map_err(|_| {
                    bad(format!(
                        "invalid targetSliver {:?}: expected a decimal u16",
                        value.chars().take(20).collect::<String>()
                    ))
                })?)
            }
            "targetType" => target_type = Some(value.parse::<SliverKind>().map_err(bad)?),
            "proofAxis" => proof_axis = Some(value.parse::<SliverKind>().map_err(bad)?),
            // Unknown parameters are ignored, as serde does without `deny_unknown_fields`.
            _ => {}
        }
    }
    let filter = if !ids.is_empty() {
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > max_ids {
            return Err(ApiError::InvalidFilter(format!(
                "{} symbol IDs, at most {max_ids}",
                ids.len()
            )));
        }
        Filter::Ids(ids)
    } else {
        match (target_sliver, target_type) {
            (Some(index), Some(kind)) => Filter::Recovers { index, kind },
            _ if query.unwrap_or("").contains("id=") => return Err(ApiError::NoSymbolsSpecified),
            _ => {
                return Err(bad(
                    "expected id=<primary>-<secondary>, or targetSliver and targetType".into(),
                ))
            }
        }
    };
    Ok(Query { filter, proof_axis })
}

/// The symbols node `index` answers for `query` on blob `id`, BCS-encoded.
pub(crate) fn answer(
    shared: &Shared,
    index: usize,
    faults: &NodeFaults,
    id: BlobId,
    query: &Query,
) -> Result<Bytes, ApiError> {
    let node = &shared.nodes[index];
    if faults.forbidden {
        return Err(ApiError::ForbiddenBlob);
    }
    if faults.lie_not_found || node.store.metadata(&id).is_none() || !shared.blob_exists_now(&id) {
        return Err(ApiError::SliverNotFound);
    }
    let config = shared.config;
    let n = config.n_shards();
    let owned: Vec<u16> = shared.epoch_info().current[index].clone();
    let ids: Vec<(u16, u16)> = match &query.filter {
        Filter::Ids(ids) => ids.clone(),
        Filter::Recovers {
            index: target,
            kind,
        } => owned
            .iter()
            .map(|&shard| {
                let pair = pair_of_shard(&id, shard, n);
                match kind {
                    SliverKind::Primary => (*target, SliverKind::Secondary.sliver_index(pair, n)),
                    SliverKind::Secondary => (pair, *target),
                }
            })
            .collect(),
    };
    // What the proof must come from: `proofAxis=primary` means a primary source sliver, so a
    // symbol that rebuilds a secondary sliver.
    let targets: Vec<SliverKind> = match query.proof_axis {
        Some(SliverKind::Primary) => vec![SliverKind::Secondary],
        Some(SliverKind::Secondary) => vec![SliverKind::Primary],
        None => vec![SliverKind::Secondary, SliverKind::Primary],
    };
    let mut out = Vec::with_capacity(ids.len());
    let mut last = ApiError::NoSymbolsSpecified;
    for (p, s) in ids {
        match symbol(shared, index, &id, &owned, (p, s), &targets) {
            Ok(symbol) => out.push(symbol),
            Err(e) => last = e,
        }
    }
    if out.is_empty() {
        return Err(last);
    }
    if faults.corrupt_recovery_symbols {
        for symbol in &mut out {
            let mut data = symbol.data.to_vec();
            let middle = data.len() / 2;
            if let Some(byte) = data.get_mut(middle) {
                *byte ^= 0xff;
            }
            symbol.data = Bytes::from(data);
        }
    }
    Ok(Bytes::from(recovery::encode_symbols(&out)))
}

/// The pair stored on `shard` for blob `id` (the rotation of SPEC §7, inverted).
fn pair_of_shard(id: &BlobId, shard: u16, n: u16) -> u16 {
    let offset = id.shard_for_pair(0, n);
    ((u32::from(shard) + u32::from(n) - u32::from(offset)) % u32::from(n)) as u16
}

/// Symbol `(p, s)` from a sliver this node holds: the primary sliver `p` if the node owns its
/// shard (and `targets` allows a secondary target), else the secondary sliver `s`.
fn symbol(
    shared: &Shared,
    index: usize,
    id: &BlobId,
    owned: &[u16],
    (p, s): (u16, u16),
    targets: &[SliverKind],
) -> Result<RecoverySymbol, ApiError> {
    let config = shared.config;
    let n = config.n_shards();
    for index_checked in [p, s] {
        if index_checked >= n {
            return Err(ApiError::IndexOutOfRange {
                index: index_checked,
                max: n,
            });
        }
    }
    let mut last = ApiError::SymbolNotPresentAtShards;
    for &target in targets {
        let (source_kind, source_index, target_index) = match target {
            SliverKind::Secondary => (SliverKind::Primary, p, s),
            SliverKind::Primary => (SliverKind::Secondary, s, p),
        };
        let pair = source_kind.pair_index(source_index, n);
        if !owned.contains(&id.shard_for_pair(pair, n)) {
            continue;
        }
        let Some(bytes) = shared.nodes[index].store.sliver(id, pair, source_kind) else {
            last = ApiError::SliverNotFound;
            continue;
        };
        // Stored slivers are canonical and verified; failing here is a bug of the simulator.
        let sliver = bcs::decode_sliver(&bytes, source_kind).map_err(|e| {
            tracing::error!(error = %e, "stored sliver does not decode");
            ApiError::Internal
        })?;
        match recovery::symbols_from(&config, &sliver, &[target_index]) {
            Ok(mut symbols) => return symbols.pop().ok_or(ApiError::Internal),
            Err(e) => {
                tracing::error!(error = %e, "a stored sliver does not expand");
                last = ApiError::Internal;
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_as_the_storage_node_client_sends_them() {
        // The encodings of walrus-storage-node-client's own tests.
        let q = parse_query(Some("targetSliver=72&targetType=primary"), 100).unwrap();
        assert_eq!(
            q.filter,
            Filter::Recovers {
                index: 72,
                kind: SliverKind::Primary
            }
        );
        assert_eq!(q.proof_axis, None);
        let q = parse_query(
            Some("proofAxis=primary&targetSliver=18&targetType=secondary"),
            100,
        )
        .unwrap();
        assert_eq!(q.proof_axis, Some(SliverKind::Primary));
        let q = parse_query(Some("proofAxis=secondary&id=3-4&id=1-2&id=3-4"), 100).unwrap();
        assert_eq!(q.filter, Filter::Ids(vec![(1, 2), (3, 4)]));

        assert!(parse_query(None, 100).is_err());
        assert!(parse_query(Some("targetSliver=x&targetType=primary"), 100).is_err());
        assert!(parse_query(Some("targetSliver=1&targetType=diagonal"), 100).is_err());
        assert!(parse_query(Some("id=1_2"), 100).is_err());
        let many: Vec<String> = (0..11).map(|i| format!("id={i}-0")).collect();
        assert!(matches!(
            parse_query(Some(&many.join("&")), 10),
            Err(ApiError::InvalidFilter(_))
        ));
        let endless = "id=1-1&".repeat(10_000);
        assert!(parse_query(Some(&endless), 10).is_err());
    }

    #[test]
    fn shards_map_back_to_their_pairs() {
        let id = BlobId([7u8; 32]);
        for n in [10u16, 100] {
            for pair in 0..n {
                assert_eq!(pair_of_shard(&id, id.shard_for_pair(pair, n), n), pair);
            }
        }
    }
}
