//! The file format: header layout, its checksums and the checks a file passes when opened.

use super::DiskError;
use codec::BlobId;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub(super) const MAGIC: [u8; 8] = *b"WGBLOB\x00\x01";
pub(super) const HEADER_LEN: u64 = 128;
/// Content is checked in chunks of this size: the unit a stream may send after checking it.
pub const CHUNK_SIZE: u32 = 1 << 20;

pub(super) struct Header {
    pub(super) len: u64,
    pub(super) table: Vec<u8>,
    pub(super) file: File,
}

pub(super) fn corrupt(id: &BlobId, reason: &str) -> DiskError {
    DiskError::Corrupt {
        blob_id: *id,
        reason: reason.to_string(),
    }
}

pub(super) fn chunk_count(len: u64) -> u64 {
    len.div_ceil(u64::from(CHUNK_SIZE))
}

pub(super) fn file_size_for(len: u64) -> u64 {
    HEADER_LEN + len + 32 * chunk_count(len)
}

pub(super) fn encode_header(
    id: &BlobId,
    len: u64,
    content_hash: &[u8; 32],
    table: &[u8],
) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..40].copy_from_slice(&id.0);
    header[40..48].copy_from_slice(&len.to_le_bytes());
    header[48..52].copy_from_slice(&CHUNK_SIZE.to_le_bytes());
    header[56..88].copy_from_slice(content_hash);
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(table);
    header[88..120].copy_from_slice(check.finalize().as_bytes());
    header
}

/// Open a cached file and check its header, size and chunk table against `id`.
pub(super) fn read_header(path: &Path, id: &BlobId) -> Result<(Header, u64), DiskError> {
    let mut file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if file_size < HEADER_LEN {
        return Err(corrupt(id, "shorter than its header"));
    }
    file.read_exact(&mut header)?;
    if header[..8] != MAGIC {
        return Err(corrupt(id, "unknown magic or format version"));
    }
    if header[8..40] != id.0 {
        return Err(corrupt(id, "header names another blob"));
    }
    let len = u64::from_le_bytes(header[40..48].try_into().expect("8 bytes"));
    let chunk_size = u32::from_le_bytes(header[48..52].try_into().expect("4 bytes"));
    if chunk_size != CHUNK_SIZE {
        return Err(corrupt(id, "unexpected chunk size"));
    }
    let expected_size = len
        .checked_add(HEADER_LEN)
        .and_then(|s| s.checked_add(32 * chunk_count(len)));
    if expected_size != Some(file_size) {
        return Err(corrupt(
            id,
            &format!("file is {file_size} bytes, its header implies {expected_size:?}"),
        ));
    }
    let mut table = vec![0u8; (32 * chunk_count(len)) as usize];
    file.seek(SeekFrom::Start(HEADER_LEN + len))?;
    file.read_exact(&mut table)?;
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(&table);
    if check.finalize().as_bytes()[..] != header[88..120] {
        return Err(corrupt(id, "header or chunk table fails its checksum"));
    }
    Ok((Header { len, table, file }, file_size))
}
