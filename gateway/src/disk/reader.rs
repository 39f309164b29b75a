//! Reading a cached blob: opening and checking its file, then one checked chunk at a time, each
//! read into a private buffer and matched against its checksum before any of its bytes leave.

use super::format::{corrupt, read_header, CHUNK_SIZE, HEADER_LEN};
use super::index::OpenBlob;
use super::{DiskCache, DiskError, SMALL_READ};
use bytes::Bytes;
use codec::BlobId;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

impl DiskCache {
    /// Open `range` of a cached blob for reading: `Ok(None)` when it is not indexed. The header,
    /// the file size and the chunk table are checked here; every chunk is checked as it is read.
    /// Blocking (opens the file unless it is kept open).
    pub fn reader(
        self: &Arc<Self>,
        id: &BlobId,
        range: Range<u64>,
    ) -> Result<Option<DiskReader>, DiskError> {
        let (len, handle) = {
            let mut index = self.lock();
            let Some(entry) = index.entries.get(id) else {
                return Ok(None);
            };
            let len = entry.len;
            index.touch(id);
            (len, index.handles.get(id).cloned())
        };
        let opened = (|| -> Result<DiskReader, DiskError> {
            let handle = match handle {
                Some(handle) => handle,
                None => {
                    let (header, _) = read_header(&self.path_of(id), id)?;
                    // Hits stream files front to back: ask for a larger read-ahead (advice
                    // only; a failure changes nothing).
                    let _ =
                        rustix::fs::fadvise(&header.file, 0, None, rustix::fs::Advice::Sequential);
                    let handle = Arc::new(OpenBlob {
                        file: header.file,
                        format: header.format,
                        len: header.len,
                        table: header.table.into(),
                    });
                    self.lock().keep_handle(*id, handle.clone());
                    handle
                }
            };
            self.open_checked(id, len, handle, range)
        })();
        self.settle(id, opened)
    }

    /// [`DiskCache::reader`] without blocking, for a blob whose file is kept open from an earlier
    /// read (no open, no header read: one `fstat`). `None`: not indexed or not open, use
    /// [`DiskCache::reader`] on a blocking thread.
    pub fn reader_now(
        self: &Arc<Self>,
        id: &BlobId,
        range: Range<u64>,
    ) -> Option<Result<DiskReader, DiskError>> {
        let (len, handle) = {
            let mut index = self.lock();
            let len = index.entries.get(id)?.len;
            let handle = index.handles.get(id)?.clone();
            index.touch(id);
            (len, handle)
        };
        let opened = self.open_checked(id, len, handle, range);
        self.settle(id, opened).transpose()
    }

    /// A reader of `range` through an open file, once its length and size still match.
    fn open_checked(
        self: &Arc<Self>,
        id: &BlobId,
        len: u64,
        handle: Arc<OpenBlob>,
        range: Range<u64>,
    ) -> Result<DiskReader, DiskError> {
        if handle.len != len {
            return Err(corrupt(id, "length differs from the index"));
        }
        // The file may have been cut short since it was opened and checked (the handle is
        // kept between reads): check its size now, so a short file is a miss and a refill
        // before any response starts, not a body that aborts.
        let on_disk = handle.file.metadata()?.len();
        let expected = handle.format.file_size(len);
        if on_disk != expected {
            return Err(corrupt(
                id,
                &format!("file is {on_disk} bytes, its header implies {expected}"),
            ));
        }
        if range.start > range.end || range.end > len {
            return Err(DiskError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the blob",
            )));
        }
        Ok(DiskReader::new(Arc::clone(self), *id, handle, range))
    }

    /// A corrupt file is quarantined, a vanished one forgotten (a miss).
    fn settle(
        &self,
        id: &BlobId,
        opened: Result<DiskReader, DiskError>,
    ) -> Result<Option<DiskReader>, DiskError> {
        match opened {
            Ok(reader) => Ok(Some(reader)),
            Err(DiskError::Corrupt { blob_id, reason }) => {
                self.quarantine(&blob_id, &reason);
                Err(DiskError::Corrupt { blob_id, reason })
            }
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted behind our back: forget it.
                self.lock().remove(id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A whole small blob (up to [`SMALL_READ`] bytes), read and checked on the calling thread,
    /// but only when that cannot wait for the disk: its file is already open and its bytes are
    /// in the page cache (`preadv2` with `RWF_NOWAIT`). `None`: not possible now, read it with
    /// [`DiskCache::reader`] on a blocking thread. A chunk that fails its checksum quarantines
    /// the file, as on every other read.
    pub fn read_small_now(&self, id: &BlobId) -> Option<Result<Bytes, DiskError>> {
        let handle = {
            let mut index = self.lock();
            let len = index.entries.get(id)?.len;
            if len > SMALL_READ || len == 0 {
                return None;
            }
            let handle = index.handles.get(id)?.clone();
            index.touch(id);
            handle
        };
        let mut buf = vec![0u8; handle.len as usize];
        let mut done = 0;
        while done < buf.len() {
            let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
            match rustix::io::preadv2(
                &handle.file,
                &mut slices,
                HEADER_LEN + done as u64,
                rustix::io::ReadWriteFlags::NOWAIT,
            ) {
                Ok(0) => break,
                Ok(n) => done += n,
                // Not in the page cache (or no RWF_NOWAIT here): leave it to a blocking read.
                Err(_) => return None,
            }
        }
        let read = if done == buf.len() {
            Ok(&buf[..])
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ))
        };
        if let Err(e) = self.check_chunk(id, &handle, 0, read) {
            return Some(Err(e));
        }
        Some(Ok(Bytes::from(buf)))
    }

    /// Check chunk `chunk` of an open blob, as read (`read`), against its checksum (CRC32C, or
    /// BLAKE3 in a format-1 file) in the checked table; a chunk that could not be read whole or fails the check quarantines the
    /// file and is `Corrupt`, so its bytes are never handed out.
    fn check_chunk(
        &self,
        id: &BlobId,
        blob: &OpenBlob,
        chunk: u64,
        read: io::Result<&[u8]>,
    ) -> Result<(), DiskError> {
        let reason = match read {
            Err(e) => format!("chunk {chunk} unreadable: {e}"),
            Ok(bytes) => {
                let entry = blob.format.entry_len();
                let at = chunk as usize * entry;
                if blob
                    .format
                    .chunk_matches(bytes, &blob.table[at..at + entry])
                {
                    return Ok(());
                }
                format!("chunk {chunk} fails its checksum")
            }
        };
        self.quarantine(id, &reason);
        Err(corrupt(id, &reason))
    }
}

/// Reads a byte range of a cached blob, one checked chunk at a time, into a chunk buffer of its
/// own (taken from a small pool, so a stream allocates and faults in no memory per chunk).
///
/// Two ways to use it: [`DiskReader::next_chunk`] hands each checked chunk out as [`Bytes`]
/// (blocking); or [`DiskReader::fill`] reads the next chunk into the reader's buffer, without
/// waiting for the device if asked (`preadv2(RWF_NOWAIT)`: only pages already in the page cache),
/// [`DiskReader::ready`] lends its checked bytes (to be written straight to a socket), and
/// [`DiskReader::consume`] moves on. Either way, no byte is handed out before its whole chunk,
/// read from the file into this private buffer, matched its checksum.
pub struct DiskReader {
    cache: Arc<DiskCache>,
    id: BlobId,
    blob: Arc<OpenBlob>,
    /// Blob length, from the checked header.
    len: u64,
    next: u64,
    end: u64,
    /// The chunk holding `next` is being read into here; `None` until the first read (or after
    /// its buffer was handed out as [`Bytes`]).
    buf: Option<ChunkBuf>,
    /// Bytes of that chunk read so far (a read the page cache could answer only in part
    /// continues from here).
    filled: usize,
    /// The chunk in `buf` is whole and matched its checksum.
    checked: bool,
    /// Read-ahead advised up to this file offset; only once a read found the file not resident.
    advised: u64,
    cold: bool,
}

/// What [`DiskReader::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The next checked bytes are in [`DiskReader::ready`].
    Ready,
    /// Not in the page cache: call again with `wait` (on a blocking thread).
    WouldBlock,
    /// The range is done.
    End,
}

/// Bytes advised `WILLNEED` ahead of a reader once its file is found not in the page cache, so
/// the device keeps several reads in flight instead of one chunk at a time.
const READ_AHEAD: u64 = 32 << 20;

/// Chunk reads on the blocking pool at once, across all disk streams: each is short (one
/// `pread` of a chunk and its checksum), and bounding them keeps the pool free for fills and
/// writes however many disk streams run.
static DISK_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

impl DiskReader {
    fn new(cache: Arc<DiskCache>, id: BlobId, blob: Arc<OpenBlob>, range: Range<u64>) -> Self {
        Self {
            cache,
            id,
            len: blob.len,
            blob,
            next: range.start,
            end: range.end,
            buf: None,
            filled: 0,
            checked: false,
            advised: 0,
            cold: false,
        }
    }

    /// Bytes of the range not handed out yet.
    pub fn remaining(&self) -> u64 {
        self.end - self.next
    }

    /// The next verified piece of the range, `Ok(None)` at the end. A chunk whose checksum does
    /// not match quarantines the file and returns `Corrupt` before any of its bytes are returned.
    /// Blocking.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, DiskError> {
        match self.fill(true)? {
            Fill::End => Ok(None),
            Fill::Ready => Ok(Some(self.take_ready())),
            Fill::WouldBlock => unreachable!("a waiting read does not return WouldBlock"),
        }
    }

    /// Read the chunk holding the next byte into the reader's buffer and check it, unless it is
    /// there already. With `wait` false, reads only what is in the page cache (`RWF_NOWAIT`) and
    /// returns [`Fill::WouldBlock`] at the first byte that is not (what was read is kept). A
    /// chunk that cannot be read whole or fails its checksum quarantines the file: `Corrupt`,
    /// and none of its bytes are ever lent out.
    pub fn fill(&mut self, wait: bool) -> Result<Fill, DiskError> {
        if self.checked {
            return Ok(Fill::Ready);
        }
        if self.next >= self.end {
            return Ok(Fill::End);
        }
        let chunk_size = u64::from(CHUNK_SIZE);
        let chunk = self.next / chunk_size;
        let chunk_start = chunk * chunk_size;
        let chunk_len = ((chunk_start + chunk_size).min(self.len) - chunk_start) as usize;
        if self.cold {
            self.read_ahead();
        }
        let buf = self.buf.get_or_insert_with(ChunkBuf::take);
        let at = HEADER_LEN + chunk_start;
        let flags = match wait {
            true => rustix::io::ReadWriteFlags::empty(),
            false => rustix::io::ReadWriteFlags::NOWAIT,
        };
        let mut failed = None;
        while self.filled < chunk_len {
            let mut slices = [io::IoSliceMut::new(
                &mut buf.bytes_mut()[self.filled..chunk_len],
            )];
            match rustix::io::preadv2(&self.blob.file, &mut slices, at + self.filled as u64, flags)
            {
                Ok(0) => {
                    failed = Some(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended early",
                    ));
                    break;
                }
                Ok(n) => self.filled += n,
                Err(rustix::io::Errno::INTR) => {}
                // Not in the page cache (or no RWF_NOWAIT on this file system): the caller
                // reads it on a blocking thread, from where this read stopped.
                Err(_) if !wait => {
                    if !self.cold {
                        self.cold = true;
                        self.advised = at;
                        self.read_ahead();
                    }
                    return Ok(Fill::WouldBlock);
                }
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            }
        }
        let read = match failed {
            Some(e) => Err(e),
            None => Ok(&buf.bytes()[..chunk_len]),
        };
        let checked = self.cache.check_chunk(&self.id, &self.blob, chunk, read);
        self.filled = 0;
        checked?;
        self.checked = true;
        Ok(Fill::Ready)
    }

    /// [`DiskReader::fill`] that waits for the device, on the blocking pool (at most
    /// [`DISK_READS`] at once); the reader comes back with the result. `Err`: the blocking task
    /// failed (the reader is gone with it).
    pub async fn fill_blocking(mut self) -> Result<(Self, Result<Fill, DiskError>), String> {
        let Ok(_permit) = DISK_READS.acquire().await else {
            return Err("the disk read bound is closed".into());
        };
        tokio::task::spawn_blocking(move || {
            let fill = self.fill(true);
            (self, fill)
        })
        .await
        .map_err(|e| format!("disk read task failed: {e}"))
    }

    /// Keep [`READ_AHEAD`] bytes beyond the next read advised `WILLNEED` (advice: a failure
    /// changes nothing), topped up every half window.
    fn read_ahead(&mut self) {
        let end = HEADER_LEN + self.end;
        let want = (HEADER_LEN + self.next + READ_AHEAD).min(end);
        if self.advised >= end || want < self.advised + READ_AHEAD / 2 && want < end {
            return;
        }
        let from = self.advised.max(HEADER_LEN + self.next);
        if let Some(len) = std::num::NonZeroU64::new(want.saturating_sub(from)) {
            let _ = rustix::fs::fadvise(
                &self.blob.file,
                from,
                Some(len),
                rustix::fs::Advice::WillNeed,
            );
        }
        self.advised = want;
    }

    /// The checked bytes of the range in the filled chunk, after [`DiskReader::fill`] returned
    /// [`Fill::Ready`] (empty otherwise).
    pub fn ready(&self) -> &[u8] {
        match (&self.buf, self.checked) {
            (Some(buf), true) => {
                let (from, to) = self.ready_span();
                &buf.bytes()[from..to]
            }
            _ => &[],
        }
    }

    /// Offsets in the chunk buffer of the bytes [`DiskReader::ready`] lends.
    fn ready_span(&self) -> (usize, usize) {
        let chunk_size = u64::from(CHUNK_SIZE);
        let chunk_start = self.next / chunk_size * chunk_size;
        let chunk_end = (chunk_start + chunk_size).min(self.len);
        (
            (self.next - chunk_start) as usize,
            (self.end.min(chunk_end) - chunk_start) as usize,
        )
    }

    /// The bytes [`DiskReader::ready`] lent were sent: move on to the next chunk.
    pub fn consume(&mut self) {
        if self.checked {
            let (from, to) = self.ready_span();
            self.next += (to - from) as u64;
            self.checked = false;
        }
    }

    /// The ready bytes (after [`Fill::Ready`]) as [`Bytes`] that own the chunk buffer (it
    /// returns to the pool when they are dropped); the reader takes a new buffer for the next
    /// chunk.
    pub fn take_ready(&mut self) -> Bytes {
        if !self.checked {
            return Bytes::new();
        }
        let (from, to) = self.ready_span();
        self.consume();
        match self.buf.take() {
            Some(buf) => Bytes::from_owner(buf).slice(from..to),
            None => Bytes::new(),
        }
    }

    /// The same open file, narrowed to `[start, end)` of the blob.
    pub fn restrict(mut self, start: u64, end: u64) -> Result<Self, DiskError> {
        if start > end || end > self.len {
            return Err(DiskError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the blob",
            )));
        }
        self.next = start;
        self.end = end;
        self.filled = 0;
        self.checked = false;
        Ok(self)
    }

    /// Read the whole range into one buffer of its own (for promotion to memory): the chunks it
    /// touches are read straight into it and checked there, and the range is cut out of it.
    pub fn read_all(mut self) -> Result<Bytes, DiskError> {
        if self.next >= self.end {
            return Ok(Bytes::new());
        }
        let chunk_size = u64::from(CHUNK_SIZE);
        let first = self.next / chunk_size;
        let span_start = first * chunk_size;
        let span_end = self
            .end
            .div_ceil(chunk_size)
            .saturating_mul(chunk_size)
            .min(self.len);
        let mut out = Vec::with_capacity((span_end - span_start) as usize);
        let want = (span_end - span_start) as usize;
        let read = read_exact_uninit(&self.blob.file, &mut out, want, HEADER_LEN + span_start);
        if let Err(e) = read {
            let chunk = first + out.len() as u64 / chunk_size;
            self.cache
                .check_chunk(&self.id, &self.blob, chunk, Err(e))?;
        }
        for (i, bytes) in out.chunks(CHUNK_SIZE as usize).enumerate() {
            self.cache
                .check_chunk(&self.id, &self.blob, first + i as u64, Ok(bytes))?;
        }
        let from = (self.next - span_start) as usize;
        let to = (self.end - span_start) as usize;
        self.next = self.end;
        let out = Bytes::from(out);
        Ok(match (from, to) == (0, out.len()) {
            true => out,
            false => out.slice(from..to),
        })
    }
}

/// A 1 MiB chunk buffer, zeroed once and reused: at most [`POOL_KEEP`] idle ones are kept
/// (64 MiB); one is in use per disk response being written (two for a stream handing chunks
/// to hyper).
struct ChunkBuf(Box<[u8]>);

/// Idle chunk buffers kept for reuse.
const POOL_KEEP: usize = 64;
static POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

impl ChunkBuf {
    /// A full-size buffer: a pooled one, else a new one (a short final chunk uses a full one
    /// too; the buffer is lent only while a response sends it).
    fn take() -> Self {
        let pooled = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Self(pooled.unwrap_or_else(|| vec![0; CHUNK_SIZE as usize].into_boxed_slice()))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl AsRef<[u8]> for ChunkBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_KEEP {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

/// Read `want` bytes from `file` at `offset` into `buf` (empty, with at least that capacity),
/// without zeroing it first.
fn read_exact_uninit(file: &File, buf: &mut Vec<u8>, want: usize, offset: u64) -> io::Result<()> {
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended early",
                ))
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A capacity beyond `want` may have read past it (into the chunk table): not content.
    buf.truncate(want);
    Ok(())
}
