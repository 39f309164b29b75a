//! What the fuzz-style property tests of every untrusted-bytes parser share (ARCHITECTURE.md,
//! "Untrusted input"): a global-allocator probe that records the largest single allocation and
//! the total allocated on the current thread, so a test can assert that a parser never reserved
//! more than its input could justify; and edits of valid encodings (truncate, extend, flip,
//! insert, remove, forge a huge ULEB128 length), each test choosing which edits fit its format.
//!
//! A test binary installs the probe with
//! `#[global_allocator] static ALLOCATOR: fuzzkit::AllocationProbe = fuzzkit::AllocationProbe;`
//! (without it the probe reads zero, which each test's own probe check catches).

use proptest::prelude::*;
use proptest::sample::Index;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, noting each allocation's size for the current thread.
pub struct AllocationProbe;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are noted.
unsafe impl GlobalAlloc for AllocationProbe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// Run `f`, returning its result and the largest single allocation it made on this thread.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Run `f`, returning its result and the bytes it allocated in all on this thread.
pub fn total_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    TOTAL.with(|t| t.set(0));
    let out = f();
    (out, TOTAL.with(Cell::get))
}

/// One edit of a valid encoding.
#[derive(Debug, Clone)]
pub enum Mutation {
    Truncate(Index),
    Extend(Vec<u8>),
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Overwrite at a position with the ULEB128 of a huge length (a forged length prefix).
    HugeLength(Index, u64),
}

/// Which edits a format's test draws, and from what.
#[derive(Debug, Clone)]
pub struct Edits {
    /// Append up to 15 random bytes.
    pub extend: bool,
    /// Bytes inserted are random or drawn from these tokens of the format (half each).
    pub tokens: &'static [u8],
    /// Longest insertion and removal.
    pub max_run: usize,
    pub remove: bool,
    /// Lengths forged as ULEB128 prefixes (besides a random one); empty: none.
    pub huge_lengths: &'static [u64],
}

impl Default for Edits {
    fn default() -> Self {
        Self {
            extend: true,
            tokens: &[],
            max_run: 8,
            remove: true,
            huge_lengths: &[],
        }
    }
}

impl Edits {
    /// A strategy drawing one edit.
    pub fn strategy(self) -> BoxedStrategy<Mutation> {
        let max_run = self.max_run.max(2);
        let byte = if self.tokens.is_empty() {
            any::<u8>().boxed()
        } else {
            prop_oneof![any::<u8>(), prop::sample::select(self.tokens.to_vec())].boxed()
        };
        let mut edits: Vec<BoxedStrategy<Mutation>> = vec![
            any::<Index>().prop_map(Mutation::Truncate).boxed(),
            (any::<Index>(), 1u8..=255)
                .prop_map(|(i, m)| Mutation::Flip(i, m))
                .boxed(),
            (any::<Index>(), prop::collection::vec(byte, 1..max_run))
                .prop_map(|(i, b)| Mutation::Insert(i, b))
                .boxed(),
        ];
        if self.extend {
            edits.push(
                prop::collection::vec(any::<u8>(), 1..16)
                    .prop_map(Mutation::Extend)
                    .boxed(),
            );
        }
        if self.remove {
            edits.push(
                (any::<Index>(), 1usize..max_run)
                    .prop_map(|(i, n)| Mutation::Remove(i, n))
                    .boxed(),
            );
        }
        if !self.huge_lengths.is_empty() {
            let lengths = prop_oneof![
                prop::sample::select(self.huge_lengths.to_vec()),
                any::<u64>()
            ];
            edits.push(
                (any::<Index>(), lengths)
                    .prop_map(|(i, v)| Mutation::HugeLength(i, v))
                    .boxed(),
            );
        }
        prop::strategy::Union::new(edits).boxed()
    }
}

/// `v` as ULEB128 (BCS's length prefix).
pub fn uleb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Apply one edit.
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::Truncate(i) => {
            let cut = at(i, bytes.len());
            bytes.truncate(cut);
        }
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::Flip(i, mask) => {
            if !bytes.is_empty() {
                let p = at(i, bytes.len());
                bytes[p] ^= mask;
            }
        }
        Mutation::Insert(i, b) => {
            let p = at(i, bytes.len() + 1);
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::HugeLength(i, v) => {
            let p = at(i, bytes.len());
            let forged = uleb128(*v);
            let end = (p + forged.len()).min(bytes.len());
            bytes.splice(p..end, forged);
        }
    }
}

/// `bytes` after every edit in turn.
pub fn mutated(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        apply(&mut bytes, m);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uleb128_matches_bcs() {
        assert_eq!(uleb128(0), [0]);
        assert_eq!(uleb128(127), [0x7f]);
        assert_eq!(uleb128(128), [0x80, 0x01]);
        assert_eq!(uleb128(u64::MAX).len(), 10);
    }

    proptest! {
        #[test]
        fn edits_grow_an_input_by_at_most_their_own_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            edits in prop::collection::vec(
                Edits { tokens: b"{}", huge_lengths: &[1 << 60], ..Edits::default() }.strategy(),
                0..4,
            ),
        ) {
            let out = mutated(bytes.clone(), &edits);
            prop_assert!(out.len() <= bytes.len() + 16 * edits.len());
            if edits.is_empty() {
                prop_assert_eq!(out, bytes);
            }
        }
    }

    #[test]
    fn the_probe_is_zero_without_the_global_allocator() {
        // This crate's own test binary does not install the probe: a test that forgets to
        // install it sees nothing, which its own probe check must catch.
        let (_, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
        assert_eq!(largest, 0);
    }
}
