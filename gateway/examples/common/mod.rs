//! Helpers shared by the benchmarks in `examples/`: reproducible blob bytes, medians, and a
//! gateway configuration with room for large blobs in memory.

#![allow(dead_code)]

use gateway::GatewayConfig;
use std::net::SocketAddr;

/// `len` reproducible bytes (xorshift64 from `seed`) that do not compress or repeat.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort();
    values[values.len() / 2]
}

/// Port 0, and a memory tier that holds blobs up to 1 GiB (2 GiB in all).
pub fn large_blob_config() -> GatewayConfig {
    GatewayConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        memory_cache_bytes: 2 << 30,
        memory_max_object: 1 << 30,
        ..GatewayConfig::default()
    }
}
