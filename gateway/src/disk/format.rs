//! The file format: header layout, its checksums and the checks a file passes when opened.

use super::DiskError;
use codec::BlobId;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The magic without its last byte, the format version.
const MAGIC_PREFIX: [u8; 7] = *b"WGBLOB\x00";
pub(super) const HEADER_LEN: u64 = 128;
/// Content is checked in chunks of this size: the unit a stream may send after checking it.
pub const CHUNK_SIZE: u32 = 1 << 20;

/// How each chunk is checked on every read. New files are [`Format::V2`]; files of format 1
/// (written before it) stay readable as they are, so an upgrade keeps the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// BLAKE3 (32 bytes) per chunk.
    V1,
    /// CRC32C (4 bytes, little endian) per chunk: against rot, torn writes and truncation a
    /// hardware CRC is the right tool and costs ~18 µs per MiB here against BLAKE3's ~160 µs
    /// (BENCHMARKS.md); tampering is the scrub's job (it checks against the Blob ID).
    V2,
}

impl Format {
    pub(super) const CURRENT: Format = Format::V2;

    fn version(self) -> u8 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }

    fn from_version(version: u8) -> Option<Self> {
        match version {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }

    /// Bytes of one chunk's entry in the table.
    pub(super) fn entry_len(self) -> usize {
        match self {
            Format::V1 => 32,
            Format::V2 => 4,
        }
    }

    /// Bytes a file of this format takes for a blob of `len` bytes.
    pub(super) fn file_size(self, len: u64) -> u64 {
        HEADER_LEN + len + self.entry_len() as u64 * chunk_count(len)
    }

    /// Whether `bytes` (one chunk, as read) match their `entry` in the table.
    pub(super) fn chunk_matches(self, bytes: &[u8], entry: &[u8]) -> bool {
        match self {
            Format::V1 => blake3::hash(bytes).as_bytes()[..] == *entry,
            Format::V2 => crc32c(bytes).to_le_bytes()[..] == *entry,
        }
    }
}

/// CRC32C (Castagnoli), hardware-accelerated where the CPU has it.
pub(super) fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// A running CRC32C over pieces of one chunk.
pub(super) struct Crc32c(crc_fast::Digest);

impl Crc32c {
    pub(super) fn new() -> Self {
        Self(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi))
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum so far; starts over.
    pub(super) fn take(&mut self) -> u32 {
        let sum = self.0.finalize() as u32;
        self.0.reset();
        sum
    }
}

pub(super) struct Header {
    pub(super) format: Format,
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

/// Bytes a file written now takes for a blob of `len` bytes.
pub(super) fn file_size_for(len: u64) -> u64 {
    Format::CURRENT.file_size(len)
}

pub(super) fn encode_header(
    id: &BlobId,
    len: u64,
    content_hash: &[u8; 32],
    table: &[u8],
) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..7].copy_from_slice(&MAGIC_PREFIX);
    header[7] = Format::CURRENT.version();
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
    let format = match header[..7] == MAGIC_PREFIX {
        true => Format::from_version(header[7]),
        false => None,
    };
    let Some(format) = format else {
        return Err(corrupt(id, "unknown magic or format version"));
    };
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
        .and_then(|s| s.checked_add(format.entry_len() as u64 * chunk_count(len)));
    if expected_size != Some(file_size) {
        return Err(corrupt(
            id,
            &format!("file is {file_size} bytes, its header implies {expected_size:?}"),
        ));
    }
    let mut table = vec![0u8; format.entry_len() * chunk_count(len) as usize];
    file.seek(SeekFrom::Start(HEADER_LEN + len))?;
    file.read_exact(&mut table)?;
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(&table);
    if check.finalize().as_bytes()[..] != header[88..120] {
        return Err(corrupt(id, "header or chunk table fails its checksum"));
    }
    Ok((
        Header {
            format,
            len,
            table,
            file,
        },
        file_size,
    ))
}
