//! Codec throughput on a 64 MiB blob at n = 1000 and n = 100 (issue 2's targets, on 2 cores):
//! Blob ID (metadata only), a verified read from the kp systematic primary slivers, and a
//! verified read from non-systematic primary slivers (Default and Strict checks).
//!
//! Run: `cargo bench -p walrus-codec --bench codec`. Set `CODEC_BENCH_MIB` to change the size.
//! Reads include verifying every sliver (re-expansion + Merkle root), as a gateway fill does.

use codec::{compute_metadata, decode, encode, ConsistencyCheck, EncodingConfig, Sliver};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn blob(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mib: usize = std::env::var("CODEC_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let data = blob(mib << 20);
    let mut group = c.benchmark_group("codec");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(data.len() as u64));
    for n in [1000u16, 100] {
        let config = EncodingConfig::new(n).unwrap();
        let kp = usize::from(config.n_primary_source_symbols());
        group.bench_with_input(BenchmarkId::new("blob_id", n), &data, |b, d| {
            b.iter(|| compute_metadata(&config, d).unwrap().blob_id())
        });
        let encoded = encode(&config, &data).unwrap();
        let meta = encoded.metadata.clone();
        let systematic: Vec<Sliver> = encoded.primary[..kp]
            .iter()
            .map(|s| (**s).clone())
            .collect();
        let recovery: Vec<Sliver> = encoded.primary[usize::from(n) - kp..]
            .iter()
            .map(|s| (**s).clone())
            .collect();
        drop(encoded);
        let read = |slivers: &Vec<Sliver>, check| {
            let verified = meta
                .verify_slivers(slivers.clone())
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            decode(&meta, verified, check).unwrap()
        };
        group.bench_function(BenchmarkId::new("read_systematic", n), |b| {
            b.iter(|| read(&systematic, ConsistencyCheck::Default).len())
        });
        group.bench_function(BenchmarkId::new("read_recovery_default", n), |b| {
            b.iter(|| read(&recovery, ConsistencyCheck::Default).len())
        });
        group.bench_function(BenchmarkId::new("read_recovery_strict", n), |b| {
            b.iter(|| read(&recovery, ConsistencyCheck::Strict).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
