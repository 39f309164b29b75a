//! Memory-tier blobs kept in sealed in-memory files (`memfd`), so the plain HTTP/1.1 listener
//! can hand them to the socket with `sendfile` instead of copying every byte on the CPU that
//! serves (nginx's advantage when it serves files from the page cache).
//!
//! A [`MemFile`] is written once from verified bytes, then sealed against every write, shrink
//! and grow (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): the kernel itself
//! guarantees that the bytes `sendfile` sends are the bytes that were verified. The same pages
//! are mapped read-only as a [`Bytes`], which every other transport (TLS, HTTP/2, HTTP/3) and
//! range reads use, still without copies.
//!
//! Each one holds a file descriptor. A process-wide budget ([`set_budget`], a fraction of the
//! descriptor limit) bounds how many exist at once; a blob that finds the budget spent, or a
//! kernel that refuses the `memfd`, simply stays in ordinary heap memory.

use bytes::Bytes;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many memory files may exist at once (set from the descriptor limit at start-up).
static BUDGET: AtomicUsize = AtomicUsize::new(DEFAULT_BUDGET);
static LIVE: AtomicUsize = AtomicUsize::new(0);
const DEFAULT_BUDGET: usize = 256;

/// Blobs shorter than this stay in heap memory: written with their headers in one `writev`,
/// they cost less than a `sendfile` would save.
pub const MIN_LEN: u64 = 64 * 1024;

/// Allow at most `files` memory files at once.
pub fn set_budget(files: usize) {
    BUDGET.store(files, Ordering::Relaxed);
}

/// Memory files alive now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// A sealed in-memory file holding one verified blob, and a read-only mapping of it.
pub struct MemFile {
    file: File,
    bytes: Bytes,
}

impl std::fmt::Debug for MemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemFile")
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Why a blob stayed in heap memory.
#[derive(Debug, thiserror::Error)]
pub enum MemFileError {
    #[error("the memory-file budget ({0} files) is spent")]
    Budget(usize),
    #[error("cannot create a memory file: {0}")]
    Io(#[from] io::Error),
}

/// One slot of the budget, given back when the file is dropped.
struct Slot;

impl Slot {
    fn take() -> Result<Self, MemFileError> {
        let budget = BUDGET.load(Ordering::Relaxed);
        LIVE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
            (live < budget).then_some(live + 1)
        })
        .map(|_| Slot)
        .map_err(|_| MemFileError::Budget(budget))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The mapping, owned by the [`Bytes`] that views it; the slot is released with it.
struct Mapping {
    map: memmap2::Mmap,
    _slot: Slot,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl MemFile {
    /// Copy `chunks` (in order) into a new sealed memory file.
    pub fn from_chunks(chunks: &[Bytes]) -> Result<Self, MemFileError> {
        let slot = Slot::take()?;
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let fd = rustix::fs::memfd_create(
            "walrus-blob",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .map_err(io::Error::from)?;
        let mut file = File::from(fd);
        // One allocation up front: a full tmpfs fails here, not half-way through the copy.
        file.set_len(len as u64)?;
        for chunk in chunks {
            file.write_all(chunk)?;
        }
        rustix::fs::fcntl_add_seals(
            &file,
            rustix::fs::SealFlags::WRITE
                | rustix::fs::SealFlags::SHRINK
                | rustix::fs::SealFlags::GROW
                | rustix::fs::SealFlags::SEAL,
        )
        .map_err(io::Error::from)?;
        // SAFETY: the file is sealed against writes, shrinking and growing, and nothing else
        // has its descriptor, so the mapped bytes can never change or disappear under us.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
        let bytes = Bytes::from_owner(Mapping { map, _slot: slot });
        Ok(Self { file, bytes })
    }

    /// The blob's bytes (the read-only mapping).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The sealed file, for `sendfile`.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holds_the_chunks_in_order_and_is_sealed() {
        let chunks = [
            Bytes::from_static(b"hello, "),
            Bytes::new(),
            Bytes::from(vec![7u8; 100_000]),
        ];
        let mem = MemFile::from_chunks(&chunks).unwrap();
        let mut want = b"hello, ".to_vec();
        want.extend_from_slice(&[7u8; 100_000]);
        assert_eq!(mem.len(), want.len() as u64);
        assert_eq!(&mem.bytes()[..], &want[..]);
        let mut read = Vec::new();
        let mut file = mem.file().try_clone().unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, want);
        // The seals hold: no write, no shrink, no grow.
        assert!(mem.file().write_at(b"X", 0).is_err());
        assert!(mem.file().set_len(1).is_err());
        assert!(mem.file().set_len(want.len() as u64 + 1).is_err());
        assert_eq!(&mem.bytes()[..7], b"hello, ");
    }

    #[test]
    fn the_mapping_outlives_the_file_handle() {
        let mem = MemFile::from_chunks(&[Bytes::from(vec![1u8; 70_000])]).unwrap();
        let view = mem.bytes().slice(10..20);
        drop(mem);
        assert_eq!(&view[..], &[1u8; 10]);
    }
}
