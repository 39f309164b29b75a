//! BLAKE2b-256 Merkle trees exactly as Walrus builds them (SPEC §5).
//!
//! `leaf(x) = H(0x00 || x)`, `inner(a, b) = H(0x01 || a || b)`; an odd level gets an all-zero
//! "empty" node appended; one leaf is its own root; zero leaves give the zero node.
//! Many independent leaves and inner nodes are hashed together with multi-lane SIMD
//! (`blake2b_simd::many`), which gives the same digests as one-at-a-time hashing.

use blake2b_simd::many::{hash_many, HashManyJob};
use blake2b_simd::Params;
use std::sync::OnceLock;

/// A Merkle node: a 32-byte BLAKE2b-256 digest.
pub type Node = [u8; 32];

/// The padding node used for odd levels.
pub const EMPTY_NODE: Node = [0u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const INNER_PREFIX: u8 = 0x01;

/// Leaves hashed per `hash_many` batch: enough to fill every SIMD lane, small enough for L1/L2.
const BATCH: usize = 64;

pub(crate) fn hash_params() -> &'static Params {
    static PARAMS: OnceLock<Params> = OnceLock::new();
    PARAMS.get_or_init(|| {
        let mut p = Params::new();
        p.hash_length(32);
        p
    })
}

fn to_node(hash: blake2b_simd::Hash) -> Node {
    let mut node = [0u8; 32];
    node.copy_from_slice(hash.as_bytes());
    node
}

/// The leaf hash of one symbol.
pub fn leaf_hash(data: &[u8]) -> Node {
    let mut state = hash_params().to_state();
    state.update(&[LEAF_PREFIX]);
    state.update(data);
    to_node(state.finalize())
}

/// The hash of an inner node.
pub fn inner_hash(left: &Node, right: &Node) -> Node {
    let mut input = [0u8; 65];
    input[0] = INNER_PREFIX;
    input[1..33].copy_from_slice(left);
    input[33..].copy_from_slice(right);
    to_node(hash_params().hash(&input))
}

/// Hash many inputs of one length that share a one-byte prefix, all lanes at once.
fn hash_prefixed(prefix: u8, inputs: &[u8], item_len: usize, out: &mut [Node]) {
    debug_assert_eq!(inputs.len(), item_len * out.len());
    let stride = item_len + 1;
    let mut scratch = vec![0u8; stride * BATCH.min(out.len())];
    for (chunk_in, chunk_out) in inputs.chunks(item_len * BATCH).zip(out.chunks_mut(BATCH)) {
        let count = chunk_out.len();
        for (i, item) in chunk_in.chunks_exact(item_len).enumerate() {
            scratch[i * stride] = prefix;
            scratch[i * stride + 1..(i + 1) * stride].copy_from_slice(item);
        }
        let params = hash_params();
        let mut jobs: Vec<HashManyJob<'_>> = scratch[..count * stride]
            .chunks_exact(stride)
            .map(|input| HashManyJob::new(params, input))
            .collect();
        hash_many(jobs.iter_mut());
        for (job, node) in jobs.iter().zip(chunk_out.iter_mut()) {
            *node = to_node(job.to_hash());
        }
    }
}

/// Leaf hashes of consecutive `symbol_size`-byte symbols (`symbols.len()` must be a multiple).
pub fn leaf_hashes(symbols: &[u8], symbol_size: usize, out: &mut [Node]) {
    hash_prefixed(LEAF_PREFIX, symbols, symbol_size, out);
}

/// The parent level of a level of nodes (appending the empty node to an odd level).
fn parent_level(level: &[Node]) -> Vec<Node> {
    let pairs = level.len().div_ceil(2);
    let mut input = Vec::with_capacity(pairs * 64);
    for pair in level.chunks(2) {
        input.extend_from_slice(&pair[0]);
        input.extend_from_slice(pair.get(1).unwrap_or(&EMPTY_NODE));
    }
    let mut out = vec![EMPTY_NODE; pairs];
    hash_prefixed(INNER_PREFIX, &input, 64, &mut out);
    out
}

/// The Merkle root over already-hashed leaves.
pub fn root_from_leaf_hashes(leaves: &[Node]) -> Node {
    match leaves.len() {
        0 => EMPTY_NODE,
        1 => leaves[0],
        _ => {
            let mut level = parent_level(leaves);
            while level.len() > 1 {
                level = parent_level(&level);
            }
            level[0]
        }
    }
}

/// The Merkle root over consecutive symbols.
pub fn root_of_symbols(symbols: &[u8], symbol_size: usize) -> Node {
    let mut leaves = vec![EMPTY_NODE; symbols.len() / symbol_size.max(1)];
    leaf_hashes(symbols, symbol_size, &mut leaves);
    root_from_leaf_hashes(&leaves)
}

/// An authentication path from a leaf to the root: the sibling at each level, bottom up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleProof {
    pub path: Vec<Node>,
}

impl MerkleProof {
    /// The proof for leaf `index` of a tree over `leaves`; `None` when `index` is out of range.
    pub fn new(leaves: &[Node], index: usize) -> Option<Self> {
        if index >= leaves.len() {
            return None;
        }
        let mut path = Vec::new();
        let mut level = leaves.to_vec();
        let mut i = index;
        while level.len() > 1 {
            path.push(*level.get(i ^ 1).unwrap_or(&EMPTY_NODE));
            level = parent_level(&level);
            i /= 2;
        }
        Some(Self { path })
    }

    /// Whether `leaf` (a leaf hash) at `index` authenticates against `root`.
    pub fn verify(&self, root: &Node, leaf: &Node, index: usize) -> bool {
        // A path longer than 64 levels cannot come from a real tree; its index would overflow.
        if self.path.len() > 64 || (self.path.len() < 64 && index >> self.path.len() != 0) {
            return false;
        }
        let mut node = *leaf;
        let mut i = index;
        for sibling in &self.path {
            node = if i.is_multiple_of(2) {
                inner_hash(&node, sibling)
            } else {
                inner_hash(sibling, &node)
            };
            i /= 2;
        }
        &node == root
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blake2::{digest::consts::U32, Blake2b, Digest};

    fn reference(prefix: u8, data: &[u8]) -> Node {
        let mut h = Blake2b::<U32>::new();
        h.update([prefix]);
        h.update(data);
        h.finalize().into()
    }

    #[test]
    fn simd_hashing_matches_the_blake2_crate() {
        let data: Vec<u8> = (0..302u32 * 200).map(|i| (i * 7 + 3) as u8).collect();
        for ss in [2usize, 36, 302, 1000] {
            let count = data.len() / ss;
            let mut out = vec![EMPTY_NODE; count];
            leaf_hashes(&data[..count * ss], ss, &mut out);
            for (i, node) in out.iter().enumerate() {
                assert_eq!(*node, reference(0, &data[i * ss..(i + 1) * ss]));
            }
        }
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(inner_hash(&a, &b), reference(1, &[a, b].concat()));
    }

    #[test]
    fn roots_pad_odd_levels_with_the_empty_node() {
        let leaves: Vec<Node> = (0..3u8).map(|i| leaf_hash(&[i])).collect();
        let expected = inner_hash(
            &inner_hash(&leaves[0], &leaves[1]),
            &inner_hash(&leaves[2], &EMPTY_NODE),
        );
        assert_eq!(root_from_leaf_hashes(&leaves), expected);
        assert_eq!(root_from_leaf_hashes(&leaves[..1]), leaves[0]);
        assert_eq!(root_from_leaf_hashes(&[]), EMPTY_NODE);
    }

    #[test]
    fn proofs_verify_every_leaf_and_reject_others() {
        for n in [1usize, 2, 5, 10, 33] {
            let leaves: Vec<Node> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            let root = root_from_leaf_hashes(&leaves);
            for i in 0..n {
                let proof = MerkleProof::new(&leaves, i).unwrap();
                assert!(proof.verify(&root, &leaves[i], i));
                assert!(!proof.verify(&root, &leaves[(i + 1) % n], i) || n == 1);
                assert!(!proof.verify(&root, &leaves[i], i + (1 << proof.path.len())));
            }
            assert!(MerkleProof::new(&leaves, n).is_none());
        }
    }
}
