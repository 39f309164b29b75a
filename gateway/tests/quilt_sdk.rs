//! Quilt vectors from the official Walrus TypeScript SDK (`@mysten/walrus` 1.2.13, pinned in
//! `tests/peers/walrus-sdk/package.json`): `quilt-vectors.mjs` encodes quilts with the SDK's
//! `encodeQuilt` for committees of 10, 100 and 1000 shards (up to 666 patches, with and without
//! tags, identifiers of 1 to a few hundred bytes, patches of 0 bytes to 4 MB), and names their
//! Blob IDs (the SDK's WASM encoder) and patch IDs. The codec must produce byte-identical quilts,
//! the same Blob IDs and patch IDs, and decode the SDK's quilts back to the same patches.
//!
//! `.ci/run` installs the SDK and sets `WALRUS_SDK_DIR`; without it the test is skipped loudly,
//! unless `WALRUS_REQUIRE_PEERS=1`, when it fails.

use codec::quilt::{decode_index, decode_patch, encode_quilt, PatchInput, QuiltPatchId, QuiltView};
use codec::{BlobId, EncodingConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sdk_dir() -> Option<PathBuf> {
    match std::env::var_os("WALRUS_SDK_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var("WALRUS_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("WALRUS_SDK_DIR is not set, and peers are required (.ci/run installs the SDK)")
        }
        None => {
            eprintln!(
                "skipped: WALRUS_SDK_DIR is not set (.ci/run installs the Walrus TS SDK); \
                 the quilt vectors were NOT checked"
            );
            None
        }
    }
}

fn generate(sdk: &Path, out: &Path) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/walrus-sdk/quilt-vectors.mjs");
    let output = Command::new("node")
        .arg(script)
        .env("SDK_DIR", sdk)
        .env("OUT_DIR", out)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "quilt-vectors.mjs failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tags(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn the_codec_encodes_and_decodes_quilts_as_the_official_sdk() {
    let Some(sdk) = sdk_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    generate(&sdk, out.path());
    let manifest: Vec<Value> =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.len(), 6, "every case of quilt-vectors.mjs");
    let mut shard_counts = std::collections::BTreeSet::new();
    for case in &manifest {
        let name = case["name"].as_str().unwrap();
        let n_shards = case["nShards"].as_u64().unwrap() as u16;
        shard_counts.insert(n_shards);
        let config = EncodingConfig::new(n_shards).unwrap();
        let contents = std::fs::read(out.path().join(format!("{name}.patches.bin"))).unwrap();
        let sdk_quilt = std::fs::read(out.path().join(format!("{name}.quilt.bin"))).unwrap();

        let mut at = 0;
        let mut inputs = Vec::new();
        for p in case["patches"].as_array().unwrap() {
            let size = p["size"].as_u64().unwrap() as usize;
            inputs.push(PatchInput {
                identifier: p["identifier"].as_str().unwrap().to_string(),
                tags: tags(&p["tags"]),
                data: &contents[at..at + size],
            });
            at += size;
        }
        assert_eq!(at, contents.len());

        // Encoding: the same bytes, Blob ID and patch IDs.
        let quilt = encode_quilt(&config, &inputs).unwrap();
        assert!(
            quilt.data == sdk_quilt,
            "{name}: quilt bytes differ from the SDK's"
        );
        let blob_id = codec::blob_id(n_shards, &quilt.data).unwrap();
        let sdk_blob_id: BlobId = case["blobId"].as_str().unwrap().parse().unwrap();
        assert_eq!(blob_id, sdk_blob_id, "{name}: Blob ID");
        let sdk_index = case["index"].as_array().unwrap();
        let ours = quilt.patch_ids(blob_id);
        assert_eq!(ours.len(), sdk_index.len());
        for ((identifier, id), sdk) in ours.iter().zip(sdk_index) {
            assert_eq!(
                identifier,
                sdk["identifier"].as_str().unwrap(),
                "{name}: patch order"
            );
            assert_eq!(
                id.to_string(),
                sdk["patchId"].as_str().unwrap(),
                "{name}: patch ID"
            );
            let parsed: QuiltPatchId = sdk["patchId"].as_str().unwrap().parse().unwrap();
            assert_eq!(&parsed, id);
        }

        // Decoding the SDK's quilt: the index, then every patch by its start column.
        let view = QuiltView::new(&config, &sdk_quilt).unwrap();
        let index = decode_index(&view).unwrap();
        assert_eq!(index, quilt.index, "{name}: decoded index");
        for (patch, sdk) in index.patches.iter().zip(sdk_index) {
            assert_eq!(
                u64::from(patch.start_index),
                sdk["startIndex"].as_u64().unwrap()
            );
            let got = decode_patch(&view, usize::from(patch.start_index)).unwrap();
            let want = inputs
                .iter()
                .find(|p| p.identifier == patch.identifier)
                .unwrap();
            assert_eq!(got.identifier, want.identifier);
            assert_eq!(got.tags, want.tags, "{name}: tags of {}", want.identifier);
            assert!(got.data == want.data, "{name}: data of {}", want.identifier);
        }
    }
    assert_eq!(
        shard_counts.into_iter().collect::<Vec<_>>(),
        [10, 100, 1000]
    );
}
