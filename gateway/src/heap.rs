//! Giving memory back after large, short-lived bursts (publishes): glibc's allocator keeps
//! what a burst freed unless told otherwise, so RSS would follow the largest burst ever seen
//! rather than what is in use.
//!
//! Measured in issue 21 (24 MiB publishes at n = 100): the live heap went back to 13 MiB after
//! every publish (heaptrack), while RSS rose by 50-60 MiB a round. The freed memory sat at the
//! top of the per-thread arenas (the encoder's rayon threads, the blocking pool), which glibc
//! shrinks only past its trim threshold; that threshold grows with the largest buffer freed
//! (up to 64 MiB per arena), and `malloc_trim` does not shrink those tops. So:
//!
//! * [`configure`] fixes the thresholds ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`]) instead of
//!   letting them grow: buffers of a few MiB and more are mapped and unmapped on their own, and
//!   an arena whose free top passes the trim threshold gives it back on the next free;
//! * [`TrimWhenDone`] calls `malloc_trim` when the last holder of a large publish's memory is
//!   done, returning the free pages inside the arenas too.
//!
//! Both only touch glibc's bookkeeping of free memory; elsewhere (musl, other systems) they do
//! nothing.

use std::sync::Arc;

/// Buffers at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 4 << 20;
/// An arena whose free top reaches this much gives it back to the kernel.
pub const TRIM_THRESHOLD: usize = 8 << 20;
/// Publishes at least this long trim the heap when they are done.
const TRIM_FROM: u64 = 8 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;
    pub const M_TRIM_THRESHOLD: c_int = -1;
    pub const M_MMAP_THRESHOLD: c_int = -3;
    extern "C" {
        pub fn mallopt(param: c_int, value: c_int) -> c_int;
        pub fn malloc_trim(pad: usize) -> c_int;
    }
}

/// Fix glibc's mmap and trim thresholds (once per process; later calls do nothing).
pub fn configure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes the allocator's parameters, under its own lock.
        unsafe {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as _);
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as _);
        }
    });
}

/// Trims the heap when the last holder of one publish's memory (the request, and each node's
/// task, background retries included) drops it, if the blob was large: trimming when only the
/// request is done would miss the slivers of nodes still sending.
pub struct TrimWhenDone(u64);

impl TrimWhenDone {
    /// For a publish of `len` bytes.
    pub fn new(len: u64) -> Arc<Self> {
        Arc::new(Self(len))
    }
}

impl Drop for TrimWhenDone {
    fn drop(&mut self) {
        if self.0 < TRIM_FROM {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            // SAFETY: malloc_trim only returns free pages to the kernel, under glibc's own
            // locks; it touches no memory in use.
            let trim = || unsafe {
                glibc::malloc_trim(0);
            };
            // It walks every arena (milliseconds for a large heap): off the reactor.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(trim)),
                Err(_) => trim(),
            }
        }
    }
}
