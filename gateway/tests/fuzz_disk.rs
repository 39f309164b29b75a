//! Fuzz-style property test of the disk tier's reading of its own files (`disk.rs`), through its
//! public API only: a cached file damaged on disk (truncated, extended, bytes flipped in the
//! header, the chunk table or the content, a length field forged up to 2^64-1) must, after a
//! restart or on a probe, read back as the original bytes or not at all: an error or a miss,
//! never a panic, never a wrong byte, never an allocation the damaged header asks for.

use bytes::Bytes;
use codec::BlobId;
use gateway::disk::{DiskCache, DiskMetrics};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
    /// Flip bits of a byte in the 128-byte header.
    FlipHeader(usize, u8),
    /// Flip bits anywhere in the file.
    Flip(prop::sample::Index, u8),
    /// Overwrite the content length (offset 40) with this value.
    Length(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (0usize..128, 1u8..=255).prop_map(|(i, m)| Mutation::FlipHeader(i, m)),
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 60),
            Just(u64::MAX - 127),
            any::<u64>(),
            0u64..5000
        ]
        .prop_map(Mutation::Length),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Truncate(i) => {
            let cut = i.index(bytes.len().max(1));
            bytes.truncate(cut);
        }
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::FlipHeader(i, mask) => {
            if let Some(b) = bytes.get_mut(*i) {
                *b ^= mask;
            }
        }
        Mutation::Flip(i, mask) => {
            if !bytes.is_empty() {
                let p = i.index(bytes.len());
                bytes[p] ^= mask;
            }
        }
        Mutation::Length(len) => {
            if bytes.len() >= 48 {
                bytes[40..48].copy_from_slice(&len.to_le_bytes());
            }
        }
    }
}

/// The one file the cache keeps for `id`, wherever its layout puts it under `blobs/`.
fn file_of(root: &Path, id: &BlobId) -> PathBuf {
    let name = id.to_string();
    for shard in std::fs::read_dir(root.join("blobs")).unwrap().flatten() {
        let candidate = shard.path().join(&name);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("no file for {name}");
}

fn open(root: &Path) -> Arc<DiskCache> {
    let cache = DiskCache::open(root, 64 << 20, DiskMetrics::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.index_ready() {
        assert!(
            Instant::now() < deadline,
            "the index rebuild did not finish"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    cache
}

/// Everything a reader can get for `id` is `blob` or nothing.
fn check_reads(cache: &Arc<DiskCache>, id: &BlobId, blob: &[u8]) -> Result<(), TestCaseError> {
    if let Some(len) = cache.probe(id) {
        prop_assert_eq!(len, blob.len() as u64);
    }
    if let Some(Ok(bytes)) = cache.read_small_now(id) {
        prop_assert_eq!(&bytes[..], blob);
    }
    let len = blob.len() as u64;
    for range in [0..len, len / 3..len, 0..len / 2] {
        if let Ok(Some(reader)) = cache.reader(id, range.clone()) {
            if let Ok(bytes) = reader.read_all() {
                prop_assert_eq!(&bytes[..], &blob[range.start as usize..range.end as usize]);
            }
        }
    }
    Ok(())
}

proptest! {
    // Each case writes a file and opens the cache twice (a thread each): few cases.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn damaged_cache_files_read_back_right_or_not_at_all(
        id in any::<[u8; 32]>(),
        blob in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 64..3000),
        ],
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let id = BlobId(id);
        {
            let cache = open(dir.path());
            cache.insert(id, &[Bytes::from(blob.clone())]).unwrap();
            check_reads(&cache, &id, &blob)?;
        }
        let path = file_of(dir.path(), &id);
        let mut bytes = std::fs::read(&path).unwrap();
        let original = bytes.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        std::fs::write(&path, &bytes).unwrap();

        // After a restart (the rebuild reads every header)...
        let cache = open(dir.path());
        check_reads(&cache, &id, &blob)?;
        // ...and when a probe meets the damaged file first.
        if path.exists() {
            std::fs::write(&path, &bytes).unwrap();
        }
        drop(cache);
        let cache = DiskCache::open(dir.path(), 64 << 20, DiskMetrics::default()).unwrap();
        check_reads(&cache, &id, &blob)?;
        if bytes == original {
            prop_assert_eq!(cache.probe(&id), Some(blob.len() as u64));
        }
    }
}
