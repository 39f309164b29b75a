//! Walrus's own vectors (`tests/data/`, copied from walrus-core's output): every Blob ID, root,
//! symbol size, rotation, pair hash, metadata BCS, and for n = 10, L = 1000 every sliver byte.

use bytes::Bytes;
use codec::{
    bcs, decode, encode, BlobId, ConsistencyCheck, EncodingConfig, SliverKind, VerifiedMetadata,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

fn hex32(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn check_case(case: &Value) {
    let n = num(&case["n_shards"]) as u16;
    let len = num(&case["length"]) as usize;
    let ctx = format!("n={n} len={len}");
    let config = EncodingConfig::new(n).unwrap();
    assert_eq!(u64::from(config.f()), num(&case["f"]), "{ctx}");
    assert_eq!(
        u64::from(config.n_primary_source_symbols()),
        num(&case["n_primary_source_symbols"])
    );
    assert_eq!(
        u64::from(config.n_secondary_source_symbols()),
        num(&case["n_secondary_source_symbols"])
    );
    let blob = content(len);
    let encoded = encode(&config, &blob).unwrap();
    let meta = &encoded.metadata;
    let id = meta.blob_id();
    assert_eq!(
        id.to_string(),
        case["blob_id_base64url"].as_str().unwrap(),
        "{ctx}"
    );
    assert_eq!(id.0, hex32(&case["blob_id_hex"]), "{ctx}");
    assert_eq!(
        meta.metadata().root_hash(),
        hex32(&case["root_hash_hex"]),
        "{ctx}"
    );
    assert_eq!(
        u64::from(meta.symbol_size()),
        num(&case["symbol_size"]),
        "{ctx}"
    );
    assert_eq!(
        encoded.primary[0].data.len() as u64,
        num(&case["primary_sliver_len_bytes"])
    );
    assert_eq!(
        encoded.secondary[0].data.len() as u64,
        num(&case["secondary_sliver_len_bytes"])
    );
    assert_eq!(
        u64::from(id.rotation_offset(n)),
        num(&case["rotation_offset"]),
        "{ctx}"
    );
    assert_eq!(
        u64::from(id.shard_for_pair(0, n)),
        num(&case["shard_of_pair_0"]),
        "{ctx}"
    );
    for pair in case["sliver_pairs"].as_array().unwrap() {
        let p = num(&pair["pair_index"]) as usize;
        let hashes = meta.metadata().hashes[p];
        assert_eq!(
            hashes.primary,
            hex32(&pair["primary_hash"]),
            "{ctx} pair {p}"
        );
        assert_eq!(
            hashes.secondary,
            hex32(&pair["secondary_hash"]),
            "{ctx} pair {p}"
        );
        assert_eq!(
            num(&pair["secondary_sliver_index"]) as u16,
            SliverKind::Secondary.sliver_index(p as u16, n)
        );
    }
    let meta_bcs = bcs::encode_metadata_with_id(&id, meta.metadata());
    assert_eq!(
        meta_bcs.len() as u64,
        num(&case["metadata_bcs_len"]),
        "{ctx}"
    );
    if let Some(hexed) = case.get("metadata_bcs_hex") {
        assert_eq!(hex::encode(&meta_bcs), hexed.as_str().unwrap(), "{ctx}");
    }
    // The metadata-only fast path agrees with the full encoder.
    assert_eq!(codec::compute_metadata(&config, &blob).unwrap(), *meta);
    // Every sliver verifies, and the blob decodes from the last kp primary slivers and from
    // the first ks secondary slivers with the Strict check, as Walrus's own check did.
    let kp = usize::from(config.n_primary_source_symbols());
    let ks = usize::from(config.n_secondary_source_symbols());
    let primaries: Vec<_> = encoded
        .primary
        .iter()
        .map(|s| meta.verify_sliver(s.clone().into_inner()).unwrap())
        .collect();
    let secondaries: Vec<_> = encoded
        .secondary
        .iter()
        .map(|s| meta.verify_sliver(s.clone().into_inner()).unwrap())
        .collect();
    let last_primaries = primaries[usize::from(n) - kp..].to_vec();
    assert_eq!(
        decode(meta, last_primaries, ConsistencyCheck::Strict)
            .unwrap()
            .to_vec(),
        blob,
        "{ctx}"
    );
    assert_eq!(
        decode(meta, secondaries[..ks].to_vec(), ConsistencyCheck::Strict)
            .unwrap()
            .to_vec(),
        blob,
        "{ctx}"
    );
}

#[test]
fn all_cases_match_walrus() {
    let v = load("vectors.json");
    let cases: Vec<&Value> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["extra_cases_small_committees"].as_array().unwrap())
        .collect();
    assert_eq!(cases.len(), 19);
    for case in cases {
        check_case(case);
    }
}

#[test]
fn doc_checks_reproduce_a_real_upload() {
    let v = load("vectors.json");
    for check in v["doc_checks"].as_array().unwrap() {
        let n = num(&check["n_shards"]) as u16;
        let id = codec::blob_id(n, check["content_utf8"].as_str().unwrap().as_bytes()).unwrap();
        assert_eq!(id.to_string(), check["blob_id_base64url"].as_str().unwrap());
    }
}

#[test]
fn every_sliver_of_n10_matches_byte_for_byte() {
    let v = load("vectors_n10_len1000_all_pairs.json");
    let config = EncodingConfig::new(10).unwrap();
    let blob = content(1000);
    let encoded = encode(&config, &blob).unwrap();
    let meta = &encoded.metadata;
    assert_eq!(
        hex::encode(bcs::encode_metadata_with_id(
            &meta.blob_id(),
            meta.metadata()
        )),
        v["metadata_bcs_hex"].as_str().unwrap()
    );
    let pairs = v["all_sliver_pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 10);
    for pair in pairs {
        let p = num(&pair["pair_index"]) as u16;
        let (primary, secondary) = encoded.pair(p).unwrap();
        assert_eq!(
            hex::encode(&primary.data),
            pair["primary_sliver_hex"].as_str().unwrap(),
            "pair {p}"
        );
        assert_eq!(
            hex::encode(&secondary.data),
            pair["secondary_sliver_hex"].as_str().unwrap(),
            "pair {p}"
        );
        let primary_bcs = bcs::encode_sliver(primary);
        let secondary_bcs = bcs::encode_sliver(secondary);
        assert_eq!(
            hex::encode(&primary_bcs),
            pair["primary_sliver_bcs_hex"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(&secondary_bcs),
            pair["secondary_sliver_bcs_hex"].as_str().unwrap()
        );
        assert_eq!(
            u64::from(meta.blob_id().shard_for_pair(p, 10)),
            num(&pair["shard_index"])
        );
        // BCS decodes back to the same sliver, which verifies.
        let back = bcs::decode_sliver(&Bytes::from(primary_bcs), SliverKind::Primary).unwrap();
        assert_eq!(back, **primary);
        meta.verify_sliver(back).unwrap();
        let back = bcs::decode_sliver(&Bytes::from(secondary_bcs), SliverKind::Secondary).unwrap();
        meta.verify_sliver(back).unwrap();
    }
    // The full expanded matrix: primary sliver r is row r's first ks symbols.
    // Secondary sliver c is column c of rows 0..kp.
    let matrix: Vec<Vec<u8>> = v["full_expanded_matrix_hex_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .flat_map(|s| hex::decode(s.as_str().unwrap()).unwrap())
                .collect()
        })
        .collect();
    for (r, row) in matrix.iter().enumerate() {
        assert_eq!(row.len(), 10 * 36);
        assert_eq!(&row[..252], &encoded.primary[r].data[..], "row {r}");
    }
    for c in 0..10 {
        let column: Vec<u8> = matrix[..4]
            .iter()
            .flat_map(|row| row[c * 36..(c + 1) * 36].to_vec())
            .collect();
        assert_eq!(column, encoded.secondary[c].data.to_vec(), "column {c}");
    }
    // Metadata BCS decodes and verifies against the ID.
    let bytes = hex::decode(v["metadata_bcs_hex"].as_str().unwrap()).unwrap();
    let (id, m) = bcs::decode_metadata_with_id(&bytes).unwrap();
    assert_eq!(
        id,
        "RV5Io9fgU7sWMkNXE7IUo8QbTxJS4Gs9aaJU6xabCsw"
            .parse::<BlobId>()
            .unwrap()
    );
    VerifiedMetadata::verify(id, m, config).unwrap();
}
