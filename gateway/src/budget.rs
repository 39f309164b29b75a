//! Admission by bytes: a fixed budget that requests reserve a share of before they read their
//! bodies, so the memory that uploads and inference requests can make the gateway hold is
//! bounded by configuration, not by how many clients connect.
//!
//! A [`Reservation`] is taken without waiting ([`Budget::try_reserve`]): a request that does not
//! fit is refused at once (503 with `Retry-After`), it never queues holding a connection. A
//! reservation can grow while a body of unknown length arrives ([`Reservation::try_grow`]),
//! shrink once the real size is known, and be split so that work outliving the request (a
//! publish's background retries) keeps holding only its own part. Whatever is reserved is given
//! back when the reservation is dropped, however the request ends.
//!
//! No single request can be refused forever because it is large: a share above the whole budget
//! is capped at the whole budget, so such a request runs when it is alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A byte budget shared by the requests of one kind.
#[derive(Debug)]
pub struct Budget {
    total: u64,
    used: AtomicU64,
}

impl Budget {
    pub fn new(total: u64) -> Arc<Self> {
        Arc::new(Self {
            total,
            used: AtomicU64::new(0),
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Reserve `bytes` (capped at the whole budget), or `None` if they do not fit now.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let bytes = bytes.min(self.total);
        self.take(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.total)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes held from a [`Budget`] until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hold `to` bytes in all (capped at the whole budget); `false` if the extra bytes do not
    /// fit now (the reservation is then unchanged).
    pub fn try_grow(&mut self, to: u64) -> bool {
        let to = to.min(self.budget.total);
        if to <= self.bytes {
            return true;
        }
        if !self.budget.take(to - self.bytes) {
            return false;
        }
        self.bytes = to;
        true
    }

    /// Hold at most `to` bytes, giving the rest back.
    pub fn shrink_to(&mut self, to: u64) {
        if to < self.bytes {
            self.budget.give_back(self.bytes - to);
            self.bytes = to;
        }
    }

    /// Move up to `bytes` of this reservation into a new one.
    pub fn split(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            budget: self.budget.clone(),
            bytes,
        }
    }
}

/// How much of a body of undeclared length its [`Reservation`] covers: doubled each time the
/// bytes received pass it (up to `limit`), so a body of `n` bytes grows its reservation
/// `O(log n)` times and never holds more than twice what arrived.
#[derive(Debug)]
pub struct Cover {
    bytes: u64,
    limit: u64,
}

impl Cover {
    /// Covering `first` bytes (what the reservation was taken for) of at most `limit`.
    pub fn new(first: u64, limit: u64) -> Self {
        Self {
            bytes: first.min(limit),
            limit,
        }
    }

    /// `received` bytes have arrived: grow `reservation` to `cost` of the new cover when they
    /// pass the old one; `false` if the budget cannot hold it (the body must then be refused).
    pub fn received(
        &mut self,
        received: u64,
        reservation: &mut Reservation,
        cost: impl FnOnce(u64) -> u64,
    ) -> bool {
        if received <= self.bytes {
            return true;
        }
        self.bytes = received.max(self.bytes.saturating_mul(2)).min(self.limit);
        reservation.try_grow(cost(self.bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_budget_and_come_back_when_dropped() {
        let budget = Budget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(50).is_none());
        let b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(budget.try_reserve(1).is_none());
        drop(a);
        assert_eq!(budget.used(), 40);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_share_larger_than_the_budget_is_capped_so_it_can_run_alone() {
        let budget = Budget::new(100);
        let big = budget.try_reserve(1_000).unwrap();
        assert_eq!(big.bytes(), 100);
        assert!(budget.try_reserve(1).is_none());
        drop(big);
        assert!(budget.try_reserve(1_000).is_some());
    }

    #[test]
    fn grow_shrink_and_split_keep_the_count_true() {
        let budget = Budget::new(100);
        let mut r = budget.try_reserve(10).unwrap();
        let other = budget.try_reserve(50).unwrap();
        assert!(r.try_grow(50));
        assert!(!r.try_grow(51), "only 50 were left");
        assert_eq!(r.bytes(), 50);
        assert_eq!(budget.used(), 100);
        r.shrink_to(20);
        assert_eq!(budget.used(), 70);
        let part = r.split(15);
        assert_eq!((r.bytes(), part.bytes()), (5, 15));
        drop(r);
        assert_eq!(budget.used(), 65);
        drop(part);
        drop(other);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_cover_doubles_as_bytes_arrive_and_fails_when_the_budget_is_out() {
        let budget = Budget::new(100);
        let mut r = budget.try_reserve(4).unwrap();
        let mut cover = Cover::new(4, 60);
        assert!(cover.received(4, &mut r, |b| b));
        assert_eq!(r.bytes(), 4, "nothing past the first cover yet");
        assert!(cover.received(5, &mut r, |b| b));
        assert_eq!(r.bytes(), 8, "doubled, not grown to the byte");
        assert!(cover.received(40, &mut r, |b| b));
        assert_eq!(r.bytes(), 40);
        assert!(cover.received(41, &mut r, |b| b));
        assert_eq!(r.bytes(), 60, "capped at the limit");
        let _rest = budget.try_reserve(40).unwrap();
        let mut other = budget.try_reserve(0).unwrap();
        assert!(!Cover::new(0, 100).received(1, &mut other, |b| b));
    }
}
