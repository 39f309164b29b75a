//! The per-byte cost of a disk-tier hit on one core, against the check it cannot skip: BLAKE3
//! (format 1) and CRC32C (format 2) of a warm 1 MiB buffer, then a whole 64 MiB cached blob read
//! chunk by chunk (each 1 MiB chunk read from the page cache into a private buffer and checked
//! against its CRC32C), as every disk hit does before its bytes may leave.
//!
//! Run: `taskset -c 0 cargo bench -p walrus-gateway --bench disk`.

use bytes::Bytes;
use codec::BlobId;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway::disk::{DiskCache, DiskMetrics};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("disk_hit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 + 7) as u8).collect();
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("blake3_1MiB", |b| b.iter(|| blake3::hash(&chunk)));
    // What a format-2 read checks per chunk instead (the same crate and call as `disk::format`).
    group.bench_function("crc32c_1MiB", |b| {
        b.iter(|| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &chunk))
    });

    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = DiskCache::open(dir.path(), 1 << 30, DiskMetrics::default()).expect("cache opens");
    while !cache.index_ready() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let len = 64u64 << 20;
    let content: Vec<u8> = (0..len).map(|i| (i * 131 + 3) as u8).collect();
    let id = BlobId([9; 32]);
    cache
        .insert(id, &[Bytes::from(content)])
        .expect("blob cached");
    group.throughput(Throughput::Bytes(len));
    group.bench_function("read_checked_64MiB", |b| {
        b.iter(|| {
            let mut reader = cache.reader(&id, 0..len).unwrap().expect("cached");
            let mut total = 0;
            while let Some(chunk) = reader.next_chunk().unwrap() {
                total += chunk.len();
            }
            assert_eq!(total as u64, len);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
