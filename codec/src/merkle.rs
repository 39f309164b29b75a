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

// ---------------------------------------------------------------------------------------------
// Checking a sliver without expanding it again (issue 18: the disk scrub).
//
// A sliver's hash in the metadata is the root over its full expansion: its own `k` symbols
// (leaves `[0, k)`, the code is systematic) followed by the recovery symbols (leaves `[k, n)`).
// The recovery leaves are a contiguous suffix, so the tree above them is summed up by at most
// one node per level, the *suffix cover*: the sibling, where there is one, of the rightmost node
// that still has a leaf of the prefix below it. Given the `k` source leaves and the cover, the
// root is recomputed exactly as `root_from_leaf_hashes` computes it (same pairing, same
// empty-node padding of odd levels).
//
// The cover is taken from an expansion whose root matched the metadata, and kept; a later check
// hashes only the sliver's own bytes. Against changed bytes this is as strong as the full check:
// the root commits to every source leaf, so changed bytes, or a forged cover node, give another
// root unless BLAKE2b-256 collides. A forged cover can only make an intact sliver fail, never a
// changed one pass.

/// The suffix cover of leaves `[start, leaves.len())`, bottom up (see above): what
/// [`root_from_prefix_and_cover`] needs besides the first `start` leaves. With `start == 0` it
/// is the root alone; with `start == leaves.len()` it is empty. `None` if `start` is past the
/// end.
pub fn suffix_cover(leaves: &[Node], start: usize) -> Option<Vec<Node>> {
    if start > leaves.len() {
        return None;
    }
    if start == 0 {
        return Some(vec![root_from_leaf_hashes(leaves)]);
    }
    let mut cover = Vec::new();
    let mut level = leaves.to_vec();
    // Nodes `[0, known)` of this level have a prefix leaf below them; the others do not.
    let mut known = start;
    while level.len() > 1 {
        if known % 2 == 1 && known < level.len() {
            cover.push(level[known]);
        }
        level = parent_level(&level);
        known = known.div_ceil(2);
    }
    Some(cover)
}

/// How many nodes [`suffix_cover`] returns for a tree of `count` leaves and a prefix of `start`
/// (the shape alone decides it; `None` if `start > count`).
pub fn suffix_cover_len(count: usize, start: usize) -> Option<usize> {
    if start > count {
        return None;
    }
    if start == 0 {
        return Some(1);
    }
    let (mut len, mut known, mut nodes) = (count, start, 0);
    while len > 1 {
        if known % 2 == 1 && known < len {
            nodes += 1;
        }
        len = len.div_ceil(2);
        known = known.div_ceil(2);
    }
    Some(nodes)
}

/// The root of a tree over `count` leaves whose first `prefix.len()` leaves are `prefix` and
/// whose other leaves `cover` sums up (from [`suffix_cover`]). `None` if `prefix` is longer than
/// `count` or `cover` does not have the number of nodes this shape needs.
pub fn root_from_prefix_and_cover(prefix: &[Node], count: usize, cover: &[Node]) -> Option<Node> {
    if prefix.len() > count {
        return None;
    }
    if prefix.is_empty() {
        return (cover.len() == 1).then(|| cover[0]);
    }
    let mut covers = cover.iter();
    let mut level = prefix.to_vec();
    let mut len = count;
    while len > 1 {
        if level.len() % 2 == 1 {
            // The last known node's sibling: a suffix node, or the padding of an odd level.
            let sibling = if level.len() < len {
                *covers.next()?
            } else {
                EMPTY_NODE
            };
            level.push(sibling);
        }
        level = parent_level(&level);
        len = len.div_ceil(2);
    }
    if covers.next().is_some() {
        return None;
    }
    Some(level[0])
}

/// Check `sliver` in full against `meta` (expansion and root, as
/// [`VerifiedMetadata::verify_sliver`] does) and return the suffix cover of its recovery
/// symbols' leaves, for [`verify_sliver_with_cover`] to check the same sliver later without
/// expanding it.
pub fn verify_sliver_and_cover(
    meta: &crate::VerifiedMetadata,
    sliver: &crate::Sliver,
) -> Result<Vec<Node>, crate::CodecError> {
    let (pair, expected, k, ss) = crate::sliver::check_shape(meta, sliver)?;
    let n = usize::from(meta.config().n_shards());
    let mut full = Vec::with_capacity(n * ss);
    full.extend_from_slice(&sliver.data);
    crate::rs::expand_into(
        meta.config(),
        sliver.kind.expanding_axis(),
        &sliver.data,
        ss,
        &mut full,
    )?;
    let mut leaves = vec![EMPTY_NODE; n];
    leaf_hashes(&full, ss, &mut leaves);
    if root_from_leaf_hashes(&leaves) != expected {
        return Err(crate::SliverError::MerkleMismatch { pair }.into());
    }
    Ok(suffix_cover(&leaves, k).expect("k <= n for every committee"))
}

/// Check `sliver` against `meta` with the suffix cover kept from an earlier full check
/// ([`verify_sliver_and_cover`]): only the sliver's own symbols are hashed. A cover that is not
/// the one of this sliver's expansion (wrong length, forged node) fails the check, like changed
/// bytes do.
pub fn verify_sliver_with_cover(
    meta: &crate::VerifiedMetadata,
    sliver: &crate::Sliver,
    cover: &[Node],
) -> Result<(), crate::CodecError> {
    let (pair, expected, k, ss) = crate::sliver::check_shape(meta, sliver)?;
    let n = usize::from(meta.config().n_shards());
    let mut leaves = vec![EMPTY_NODE; k];
    leaf_hashes(&sliver.data, ss, &mut leaves);
    match root_from_prefix_and_cover(&leaves, n, cover) {
        Some(root) if root == expected => Ok(()),
        _ => Err(crate::SliverError::MerkleMismatch { pair }.into()),
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
