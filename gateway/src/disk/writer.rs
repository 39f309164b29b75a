//! Writing a verified blob (or quilt patch): a temporary file, its chunk table and header, fsync
//! and rename.

use super::format::{
    chunk_count, encode_header, file_size_for, Crc32c, DiskKey, Format, CHUNK_SIZE, HEADER_LEN,
};
use super::{unique_stamp, DiskCache, DiskError};
use bytes::Bytes;
use codec::BlobId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

impl DiskCache {
    /// Start writing `id` (of `len` bytes) to a temporary file.
    pub fn writer(self: &Arc<Self>, id: BlobId, len: u64) -> Result<DiskWriter, DiskError> {
        self.writer_for(DiskKey::Blob(id), len)
    }

    /// [`DiskCache::writer`] for a file of any kind.
    pub(super) fn writer_for(
        self: &Arc<Self>,
        id: DiskKey,
        len: u64,
    ) -> Result<DiskWriter, DiskError> {
        let needed = file_size_for(len);
        self.refresh_effective();
        let capacity = self.effective_capacity();
        if needed > capacity {
            return Err(DiskError::TooLarge { needed, capacity });
        }
        let unique = format!("{id}.{}.tmp", unique_stamp());
        let temp_path = self.root.join("tmp").join(unique);
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp_path)
        };
        let mut file = match create() {
            // The directory was deleted under us: recreate it rather than fail until restart.
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => create()?,
            other => other?,
        };
        let result = file.write_all(&[0u8; HEADER_LEN as usize]);
        let ticket = {
            let mut index = self.lock();
            let ticket = index.next_tick();
            index.writing.insert(id, ticket);
            ticket
        };
        let writer = DiskWriter {
            cache: Arc::clone(self),
            ticket,
            id,
            len,
            temp_path,
            file: Some(file),
            written: 0,
            content_hash: blake3::Hasher::new(),
            chunk_sum: Crc32c::new(),
            chunk_fill: 0,
            table: Vec::with_capacity(chunk_count(len) as usize * Format::CURRENT.entry_len()),
        };
        result?;
        Ok(writer)
    }

    /// Write a whole blob (already verified) in one call; failures are counted.
    /// A full device lowers the bound in force, evicts and retries once; so does a directory
    /// deleted mid-write (after recreating it).
    pub fn insert(self: &Arc<Self>, id: BlobId, chunks: &[Bytes]) -> Result<(), DiskError> {
        self.insert_key(DiskKey::Blob(id), chunks)
    }

    /// [`DiskCache::insert`] for a file of any kind.
    pub(super) fn insert_key(
        self: &Arc<Self>,
        id: DiskKey,
        chunks: &[Bytes],
    ) -> Result<(), DiskError> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let write = || {
            let mut writer = self.writer_for(id, len)?;
            for chunk in chunks {
                writer.write(chunk)?;
            }
            writer.commit()
        };
        // The failed writer is dropped (its temporary file deleted) before the retry.
        let result = match write() {
            Err(DiskError::NoSpace) => {
                self.out_of_space(file_size_for(len));
                write()
            }
            Err(DiskError::Io(e))
                if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs().unwrap_or(false) =>
            {
                write()
            }
            other => other,
        };
        if result.is_err() {
            self.metrics.write_errors.increment(1);
        }
        result
    }
}

/// A blob being written to a temporary file. Dropping it without `commit` deletes the file.
pub struct DiskWriter {
    cache: Arc<DiskCache>,
    /// This writer's registration in `Index::writing`.
    ticket: u64,
    id: DiskKey,
    len: u64,
    temp_path: PathBuf,
    file: Option<File>,
    written: u64,
    content_hash: blake3::Hasher,
    /// CRC32C of the chunk being written (format 2).
    chunk_sum: Crc32c,
    chunk_fill: u64,
    table: Vec<u8>,
}

impl DiskWriter {
    /// Append content bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), DiskError> {
        if self.written + data.len() as u64 > self.len {
            return Err(DiskError::WrongLength {
                key: self.id,
                written: self.written + data.len() as u64,
                expected: self.len,
            });
        }
        #[cfg(test)]
        self.cache
            .simulated_space(self.written + data.len() as u64)?;
        let file = self.file.as_mut().expect("file is open until commit");
        file.write_all(data)?;
        self.content_hash.update(data);
        self.written += data.len() as u64;
        while !data.is_empty() {
            let room = (u64::from(CHUNK_SIZE) - self.chunk_fill) as usize;
            let take = room.min(data.len());
            self.chunk_sum.update(&data[..take]);
            self.chunk_fill += take as u64;
            data = &data[take..];
            if self.chunk_fill == u64::from(CHUNK_SIZE) {
                self.finish_chunk();
            }
        }
        Ok(())
    }

    fn finish_chunk(&mut self) {
        self.table
            .extend_from_slice(&self.chunk_sum.take().to_le_bytes());
        self.chunk_fill = 0;
    }

    /// Finish the file, fsync it, rename it into place and index it, evicting to stay bounded.
    pub fn commit(mut self) -> Result<(), DiskError> {
        if self.written != self.len {
            return Err(DiskError::WrongLength {
                key: self.id,
                written: self.written,
                expected: self.len,
            });
        }
        if self.chunk_fill > 0 {
            self.finish_chunk();
        }
        let header = encode_header(
            &self.id,
            self.len,
            self.content_hash.finalize().as_bytes(),
            &self.table,
        );
        let mut file = self.file.take().expect("file is open until commit");
        file.write_all(&self.table)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()?;
        drop(file);
        let target = self.cache.path_of_key(&self.id);
        let dir = target.parent().expect("blob paths have a parent");
        // `blobs/` deleted under us: recreate it through `recreate_dirs`, which also forgets
        // the blobs that went with it.
        self.cache.recreate_dirs()?;
        fs::create_dir_all(dir)?;
        {
            // Rename and index under the lock, so a purge is either before (and cancels this
            // writer) or after (and deletes the file).
            let mut index = self.cache.lock();
            if index.writing.get(&self.id) != Some(&self.ticket) {
                tracing::debug!(key = %self.id, "purged while being written; discarding");
                if matches!(self.id, DiskKey::Patch(_)) {
                    // Written just before this file; it belongs to it alone.
                    self.cache.remove_metadata_of(&self.id);
                }
                return Ok(());
            }
            index.writing.remove(&self.id);
            // Make room first, so neither the index nor the directory goes over the bound.
            let needed = file_size_for(self.len) + self.cache.beside_bytes(&self.id);
            index.remove(self.id);
            self.cache.make_room(&mut index, needed, Some(&self.id));
            fs::rename(&self.temp_path, &target)?;
            let tick = index.next_tick();
            index.insert(self.id, self.len, needed, tick);
        }
        self.cache.metrics.kinds.written(&self.id);
        File::open(dir)?.sync_all()?;
        self.cache.publish_gauges();
        Ok(())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        {
            let mut index = self.cache.lock();
            if index.writing.get(&self.id) == Some(&self.ticket) {
                index.writing.remove(&self.id);
            }
        }
        if self.file.is_some() || self.temp_path.exists() {
            self.file = None;
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}
