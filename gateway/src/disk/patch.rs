//! Quilt patches on the disk tier (issue 16): a patch read from a cold quilt's columns is kept
//! under its patch ID, so a later read (after a restart too) needs no node.
//!
//! A patch file (`patches/<2>/<patch ID>`) has the blob file's layout (see [`super`]) with the
//! magic `WGPTCH\0`, the quilt's Blob ID in the ID field and the patch's start and end column in
//! header bytes 52..56 (under the header checksum). Its content is the patch as its columns hold
//! it, from the patch's first byte: the 6-byte patch header, the identifier, the tags, then the
//! data; a read checks every chunk's CRC32C, parses the header from the content and serves the
//! data after it. Nothing else is needed to serve it.
//!
//! Beside it, `meta/<patch ID>` keeps what the scrub needs to check the file against the QUILT
//! ID, as a blob file is checked against its Blob ID: the quilt's metadata (re-verified against
//! the quilt ID when the entry is written and whenever the scrub loads it) and the bytes of the
//! patch's columns after its data (padding). The scrub rebuilds each of the patch's columns from
//! the file's content and that padding and checks it with [`codec::quilt::verify_column`], the
//! check a cold read makes on a column from a node. A patch file whose frame is missing or
//! damaged cannot be checked: the scrub drops the entry (the next read fetches its columns
//! again) rather than serve what it cannot vouch for beyond its CRCs. The frame's bytes count
//! against the tier's bound with the patch file's, and go with it.
//!
//! Frame file (`meta/<patch ID>`, integers little endian):
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | magic `WGPMETA` + version byte `1` |
//! | 8 | 2 | start column |
//! | 10 | 2 | end column (exclusive) |
//! | 12 | 4 | length `L` of the BCS body |
//! | 16 | 4 | padding length `P` |
//! | 20 | 1 | padding form: 0 = the `P` bytes follow the body, 1 = `P` zeros (not stored) |
//! | 21 | 3 | reserved (0) |
//! | 24 | L | BCS `BlobMetadataWithId` of the quilt |
//! | 24 + L | P or 0 | padding |
//! | end − 4 | 4 | CRC32C of everything before |

use super::format::{corrupt_key, crc32c, read_header_of, DiskKey};
use super::scrub::ScrubOutcome;
use super::{write_atomically, DiskCache, DiskError};
use bytes::Bytes;
use codec::quilt::{self, ColumnSource, QuiltPatch, QuiltPatchId};
use codec::{EncodingConfig, VerifiedMetadata};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

const FRAME_MAGIC: [u8; 8] = *b"WGPMETA\x01";
const FRAME_HEAD: usize = 24;
/// Padding forms.
const PADDING_BYTES: u8 = 0;
const PADDING_ZEROS: u8 = 1;

/// A patch served from the disk tier: its entry in the quilt's index (identifier and tags as
/// its header in the checked file gives them) and its data.
#[derive(Debug, Clone)]
pub struct DiskPatch {
    pub patch: QuiltPatch,
    pub data: Bytes,
}

/// What is kept beside a patch file: the quilt's verified metadata and the padding after the
/// patch's data in its last column.
#[derive(Debug, Clone)]
pub struct PatchFrame {
    pub meta: VerifiedMetadata,
    pub padding: Bytes,
}

/// The patch's bytes as one column starting at `start`: offsets run through the content in the
/// order the patch's columns hold it, so the codec's header parser reads it as it reads columns.
struct Linear<'a> {
    start: usize,
    bytes: &'a [u8],
}

impl ColumnSource for Linear<'_> {
    fn column_size(&self) -> usize {
        self.bytes.len()
    }

    fn n_columns(&self) -> usize {
        self.start + 1
    }

    fn has_column(&self, col: usize) -> bool {
        col == self.start
    }

    fn append(&self, _col: usize, offset: usize, len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[offset..offset + len]);
    }
}

/// The patch header, identifier and tags at the start of `content` (a patch file's), checked to
/// end exactly where the content does.
fn parse_content(id: &QuiltPatchId, content: &[u8]) -> Result<(QuiltPatch, usize), String> {
    if content.is_empty() {
        return Err("empty".into());
    }
    let source = Linear {
        start: usize::from(id.start_index),
        bytes: content,
    };
    let header = quilt::decode_patch_header(&source, usize::from(id.start_index))
        .map_err(|e| e.to_string())?;
    if header.data_offset.checked_add(header.data_len) != Some(content.len()) {
        return Err(format!(
            "its header puts {} data bytes at {}, the file holds {}",
            header.data_len,
            header.data_offset,
            content.len()
        ));
    }
    let patch = QuiltPatch {
        identifier: header.identifier,
        tags: header.tags,
        start_index: id.start_index,
        end_index: id.end_index,
    };
    Ok((patch, header.data_offset))
}

fn encode_frame(id: &QuiltPatchId, meta: &VerifiedMetadata, padding: &[u8]) -> Vec<u8> {
    let body = codec::bcs::encode_metadata_with_id(&meta.blob_id(), meta.metadata());
    let zeros = padding.iter().all(|&b| b == 0);
    let mut out = Vec::with_capacity(FRAME_HEAD + body.len() + padding.len() + 4);
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&id.start_index.to_le_bytes());
    out.extend_from_slice(&id.end_index.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&(padding.len() as u32).to_le_bytes());
    out.push(if zeros { PADDING_ZEROS } else { PADDING_BYTES });
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&body);
    if !zeros {
        out.extend_from_slice(padding);
    }
    let sum = crc32c(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Parse a frame file for `id`, verifying its metadata against the quilt ID.
fn decode_frame(
    id: &QuiltPatchId,
    bytes: &[u8],
    config: EncodingConfig,
) -> Result<PatchFrame, String> {
    let Some((content, sum)) = bytes.split_last_chunk::<4>() else {
        return Err("too short".into());
    };
    if content.len() < FRAME_HEAD || content[..8] != FRAME_MAGIC {
        return Err("unknown magic or version".into());
    }
    if crc32c(content) != u32::from_le_bytes(*sum) {
        return Err("its CRC32C does not match".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([content[at], content[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(content[at..at + 4].try_into().expect("4 bytes"));
    if (u16_at(8), u16_at(10)) != (id.start_index, id.end_index) {
        return Err("it names other columns".into());
    }
    let body_len = u32_at(12) as usize;
    let padding_len = u32_at(16) as usize;
    let rest = &content[FRAME_HEAD..];
    if rest.len() < body_len {
        return Err("truncated".into());
    }
    let (body, stored) = rest.split_at(body_len);
    let padding = match content[20] {
        PADDING_ZEROS if stored.is_empty() => Bytes::from(vec![0u8; padding_len]),
        PADDING_BYTES if stored.len() == padding_len => Bytes::copy_from_slice(stored),
        _ => return Err("its padding has the wrong length or form".into()),
    };
    let meta = VerifiedMetadata::from_bcs(id.quilt_id, body, config)
        .map_err(|e| format!("its metadata does not verify against the quilt ID: {e}"))?;
    Ok(PatchFrame { meta, padding })
}

/// Bytes of one column of the quilt `meta` describes: `kp` symbols.
fn column_size(meta: &VerifiedMetadata) -> usize {
    usize::from(meta.config().n_primary_source_symbols()) * usize::from(meta.symbol_size())
}

impl DiskCache {
    fn frame_path(&self, id: &QuiltPatchId) -> PathBuf {
        self.root.join("meta").join(id.to_string())
    }

    /// Bytes kept beside the file of `key` that its entry counts against the bound: a patch's
    /// frame (the quilt's metadata is most of it, about 66 bytes a shard). A blob's metadata
    /// file is not counted (as before patches).
    pub(super) fn beside_bytes(&self, key: &DiskKey) -> u64 {
        match key {
            DiskKey::Blob(_) => 0,
            DiskKey::Patch(id) => std::fs::metadata(self.frame_path(id)).map_or(0, |m| m.len()),
        }
    }

    pub(super) fn remove_patch_frame(&self, id: &QuiltPatchId) {
        let _ = std::fs::remove_file(self.frame_path(id));
    }

    /// Whether patch `id` is indexed.
    pub fn contains_patch(&self, id: &QuiltPatchId) -> bool {
        self.lock().patches.contains_key(id)
    }

    /// Keep patch `id`, read from its quilt's `columns` (each verified against `meta`, the
    /// quilt's metadata; all of the patch's columns, in order): the patch file holds the patch
    /// up to the end of its data, the frame beside it the metadata and the padding after. The
    /// columns are checked to be the patch's (count, size, a header that fits them) and `meta`
    /// the quilt's. Blocking.
    pub fn insert_patch(
        self: &Arc<Self>,
        id: QuiltPatchId,
        meta: &VerifiedMetadata,
        columns: &[Bytes],
    ) -> Result<(), DiskError> {
        let bad = |reason: String| DiskError::BadPatch {
            patch_id: id,
            reason,
        };
        if meta.blob_id() != id.quilt_id {
            return Err(bad(format!(
                "metadata of blob {} is not the quilt's",
                meta.blob_id()
            )));
        }
        let cs = column_size(meta);
        let want = usize::from(id.end_index.saturating_sub(id.start_index));
        if columns.len() != want || want == 0 || columns.iter().any(|c| c.len() != cs) {
            return Err(bad(format!(
                "needs {want} columns of {cs} bytes, got {} ({:?} bytes)",
                columns.len(),
                columns.iter().map(Bytes::len).collect::<Vec<_>>()
            )));
        }
        let mut set = quilt::ColumnSet::new(meta.config());
        for (at, column) in columns.iter().enumerate() {
            set.insert(id.start_index + at as u16, column.clone())
                .map_err(|e| bad(e.to_string()))?;
        }
        let header = quilt::decode_patch_header(&set, usize::from(id.start_index))
            .map_err(|e| bad(e.to_string()))?;
        if header.end_column(cs) != usize::from(id.end_index) {
            return Err(bad(format!(
                "its header ends at column {}, its ID at {}",
                header.end_column(cs),
                id.end_index
            )));
        }
        // The content: whole columns, then the part of the last one up to the data's end
        // (slices of the verified columns, no copy).
        let content_len = header.data_offset + header.data_len;
        let mut content = Vec::with_capacity(want);
        let mut left = content_len;
        for column in columns {
            let take = left.min(cs);
            if take > 0 {
                content.push(column.slice(..take));
            }
            left -= take;
        }
        let last = &columns[want - 1];
        let padding = last.slice(content_len - (want - 1) * cs..);
        let key = DiskKey::Patch(id);
        // The frame first: a patch file is never in place without what the scrub needs.
        let frame = encode_frame(&id, meta, &padding);
        let path = self.frame_path(&id);
        let write = || write_atomically(&path, &self.root.join("tmp"), &frame);
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.recreate_dirs()? => write()?,
            other => other?,
        }
        let result = self.insert_key(key, &content);
        if result.is_err() {
            self.remove_patch_frame(&id);
        }
        result
    }

    /// Patch `id` from its file, every chunk checked: `Ok(None)` when it is not cached; a file
    /// that fails a check is quarantined and `CorruptPatch` (none of its bytes are returned).
    /// Blocking.
    pub fn read_patch(&self, id: &QuiltPatchId) -> Result<Option<DiskPatch>, DiskError> {
        let key = DiskKey::Patch(*id);
        let len = {
            let mut index = self.lock();
            let len = index.patches.get(id).map(|e| e.len);
            if len.is_some() {
                index.touch_patch(id);
            }
            len
        };
        if len.is_none() && self.index_ready() {
            return Ok(None);
        }
        let read = (|| -> Result<DiskPatch, DiskError> {
            let (header, file_size) = read_header_of(&self.path_of_key(&key), &key)?;
            if len.is_some_and(|len| len != header.len) {
                return Err(corrupt_key(&key, "length differs from the index"));
            }
            let total = usize::try_from(header.len)
                .map_err(|_| corrupt_key(&key, "longer than this machine can hold"))?;
            let mut content = vec![0u8; total];
            if let Err(e) = header
                .file
                .read_exact_at(&mut content, super::format::HEADER_LEN)
            {
                return Err(corrupt_key(&key, &format!("unreadable: {e}")));
            }
            let entry = header.format.entry_len();
            for (chunk, bytes) in content
                .chunks(super::format::CHUNK_SIZE as usize)
                .enumerate()
            {
                let at = chunk * entry;
                if !header
                    .format
                    .chunk_matches(bytes, &header.table[at..at + entry])
                {
                    return Err(corrupt_key(
                        &key,
                        &format!("chunk {chunk} fails its checksum"),
                    ));
                }
            }
            let (patch, data_offset) =
                parse_content(id, &content).map_err(|e| corrupt_key(&key, &e))?;
            if len.is_none() {
                // Found by a lookup before the index rebuild reached it.
                let mut index = self.lock();
                if index.get(&key).is_none() && !index.writing.contains_key(&key) {
                    let tick = index.next_tick();
                    index.insert(key, header.len, file_size + self.beside_bytes(&key), tick);
                }
            }
            Ok(DiskPatch {
                patch,
                data: Bytes::from(content).slice(data_offset..),
            })
        })();
        match read {
            Ok(patch) => {
                if len.is_none() {
                    self.publish_gauges();
                }
                Ok(Some(patch))
            }
            Err(DiskError::CorruptPatch { patch_id, reason }) => {
                self.quarantine_key(&key, &reason);
                Err(DiskError::CorruptPatch { patch_id, reason })
            }
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.lock().remove(key);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The frame kept beside patch `id`'s file, its metadata verified against the quilt ID;
    /// `Err` says why it cannot be had.
    pub fn patch_frame(
        &self,
        id: &QuiltPatchId,
        config: EncodingConfig,
    ) -> Result<PatchFrame, String> {
        let bytes = std::fs::read(self.frame_path(id)).map_err(|e| e.to_string())?;
        decode_frame(id, &bytes, config)
    }

    /// Check patch `id`'s file against its quilt ID (see the module docs). A file that fails
    /// is quarantined; one whose frame cannot be had is dropped. Blocking.
    pub fn scrub_patch(
        &self,
        id: &QuiltPatchId,
        config: EncodingConfig,
    ) -> Result<ScrubOutcome, DiskError> {
        let key = DiskKey::Patch(*id);
        if !self.contains_patch(id) {
            return Ok(ScrubOutcome::Gone);
        }
        let frame = match self.patch_frame(id, config) {
            Ok(frame) => frame,
            Err(reason) => {
                tracing::warn!(patch_id = %id, %reason, "the frame kept beside a cached patch is missing or damaged: dropping the patch (its next read fetches its columns again)");
                self.drop_patch(id);
                return Ok(ScrubOutcome::Dropped { reason });
            }
        };
        let (header, _) = match read_header_of(&self.path_of_key(&key), &key) {
            Ok(opened) => opened,
            Err(DiskError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.lock().remove(key);
                return Ok(ScrubOutcome::Gone);
            }
            Err(DiskError::CorruptPatch { reason, .. }) => {
                return Ok(self.scrub_failed_key(&key, reason))
            }
            Err(e) => return Err(e),
        };
        let meta = &frame.meta;
        let cs = column_size(meta);
        let columns = usize::from(id.end_index.saturating_sub(id.start_index));
        let span = columns.saturating_mul(cs) as u64;
        if header.len + frame.padding.len() as u64 != span || cs == 0 {
            let reason = format!(
                "file holds {} bytes and {} of padding; columns {}..{} of the quilt hold {span}",
                header.len,
                frame.padding.len(),
                id.start_index,
                id.end_index
            );
            return Ok(self.scrub_failed_key(&key, reason));
        }
        let started = Instant::now();
        let mut all = vec![0u8; span as usize];
        let content_len = header.len as usize;
        if let Err(e) = header
            .file
            .read_exact_at(&mut all[..content_len], super::format::HEADER_LEN)
        {
            return Ok(self.scrub_failed_key(&key, format!("unreadable: {e}")));
        }
        all[content_len..].copy_from_slice(&frame.padding);
        let all = Bytes::from(all);
        for at in 0..columns {
            let column = id.start_index + at as u16;
            let data = all.slice(at * cs..(at + 1) * cs);
            if let Err(e) = quilt::verify_column(meta, column, data) {
                let reason = format!("column {column} does not match the quilt ID: {e}");
                return Ok(self.scrub_failed_key(&key, reason));
            }
            self.scrub_progress(cs as u64, started);
        }
        self.metrics.scrub_files.increment(1);
        self.metrics.scrub_bytes.increment(header.len);
        self.metrics.kinds.scrubbed(&key);
        Ok(ScrubOutcome::Verified { bytes: header.len })
    }

    /// Forget patch `id` and delete its file and frame (not a failure of its bytes).
    fn drop_patch(&self, id: &QuiltPatchId) {
        let key = DiskKey::Patch(*id);
        {
            let mut index = self.lock();
            index.remove(key);
            let _ = std::fs::remove_file(self.path_of_key(&key));
        }
        self.remove_patch_frame(id);
        self.publish_gauges();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_damage() {
        let config = EncodingConfig::new(10).unwrap();
        let meta = codec::compute_metadata(&config, &[7u8; 5000]).unwrap();
        let id = QuiltPatchId {
            quilt_id: meta.blob_id(),
            start_index: 2,
            end_index: 4,
        };
        for padding in [vec![0u8; 300], vec![9u8; 300], Vec::new()] {
            let bytes = encode_frame(&id, &meta, &padding);
            let frame = decode_frame(&id, &bytes, config).unwrap();
            assert_eq!(frame.meta, meta);
            assert_eq!(&frame.padding[..], &padding[..]);
            // Every single flipped byte is refused.
            for at in [0, 9, 13, 17, 20, 30, bytes.len() - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 1;
                assert!(decode_frame(&id, &bad, config).is_err(), "byte {at}");
            }
            let other = QuiltPatchId { end_index: 5, ..id };
            assert!(decode_frame(&other, &bytes, config).is_err());
        }
        // Metadata of another blob, under this quilt's name, with a good CRC: refused.
        let stranger = codec::compute_metadata(&config, &[8u8; 5000]).unwrap();
        let bytes = encode_frame(&id, &stranger, &[]);
        assert!(decode_frame(&id, &bytes, config)
            .unwrap_err()
            .contains("does not verify"));
    }
}
