//! Reading a cached blob: opening and checking its file, then one checked chunk at a time.

use super::format::{corrupt, read_header, CHUNK_SIZE, HEADER_LEN};
use super::index::OpenBlob;
use super::{DiskCache, DiskError, SMALL_READ};
use bytes::Bytes;
use codec::BlobId;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

impl DiskCache {
    /// Open `range` of a cached blob for reading: `Ok(None)` when it is not indexed. The header,
    /// the file size and the chunk table are checked here; every chunk is checked as it is read.
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
            Ok(DiskReader {
                cache: Arc::clone(self),
                id: *id,
                len: handle.len,
                blob: handle,
                next: range.start,
                end: range.end,
            })
        })();
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

/// Reads a byte range of a cached blob, one checked chunk at a time.
pub struct DiskReader {
    cache: Arc<DiskCache>,
    id: BlobId,
    blob: Arc<OpenBlob>,
    /// Blob length, from the checked header.
    len: u64,
    next: u64,
    end: u64,
}

impl DiskReader {
    /// The next verified piece of the range, `Ok(None)` at the end. A chunk whose checksum does
    /// not match quarantines the file and returns `Corrupt` before any of its bytes are returned.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, DiskError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let chunk_size = u64::from(CHUNK_SIZE);
        let chunk = self.next / chunk_size;
        let chunk_start = chunk * chunk_size;
        let chunk_end = (chunk_start + chunk_size).min(self.len);
        let mut buf = Vec::with_capacity((chunk_end - chunk_start) as usize);
        let read = read_exact_uninit(&self.blob.file, &mut buf, HEADER_LEN + chunk_start);
        self.cache
            .check_chunk(&self.id, &self.blob, chunk, read.map(|()| &buf[..]))?;
        let from = (self.next - chunk_start) as usize;
        let to = (self.end.min(chunk_end) - chunk_start) as usize;
        self.next = chunk_start + to as u64;
        let mut out = Bytes::from(buf);
        if from > 0 || to < out.len() {
            out = out.slice(from..to);
        }
        Ok(Some(out))
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
        Ok(self)
    }

    /// Read the whole range into one buffer (for promotion to memory).
    pub fn read_all(mut self) -> Result<Bytes, DiskError> {
        let mut chunks = Vec::new();
        while let Some(chunk) = self.next_chunk()? {
            chunks.push(chunk);
        }
        Ok(match chunks.len() {
            1 => chunks.pop().expect("one chunk"),
            _ => Bytes::from(chunks.concat()),
        })
    }
}

/// Fill `buf`'s spare capacity (without zeroing it first) from `file` at `offset`.
fn read_exact_uninit(file: &File, buf: &mut Vec<u8>, offset: u64) -> io::Result<()> {
    let want = buf.capacity();
    while buf.len() < want {
        let at = offset + buf.len() as u64;
        if rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ));
        }
    }
    Ok(())
}
