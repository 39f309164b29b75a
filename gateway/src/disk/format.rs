//! The file format: header layout, its checksums and the checks a file passes when opened; and
//! [`DiskKey`], what a file is cached under (a blob or a quilt patch) and how it is named.

use super::DiskError;
use codec::quilt::QuiltPatchId;
use codec::BlobId;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The magic without its last byte, the format version.
const MAGIC_PREFIX: [u8; 7] = *b"WGBLOB\x00";
/// The magic of a patch file (same layout; the header also names the patch's columns).
const PATCH_MAGIC_PREFIX: [u8; 7] = *b"WGPTCH\x00";

/// What a file of the disk tier caches: a whole blob, by its Blob ID, or one patch of a quilt,
/// by its patch ID (issue 16). Each has its own directory and file names that parse back to the
/// key: `blobs/<2>/<Blob ID>` (43 characters, as every release wrote them) and
/// `patches/<2>/<patch ID>` (50 characters, base64url of the BCS `QuiltPatchId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskKey {
    Blob(BlobId),
    Patch(QuiltPatchId),
}

impl DiskKey {
    /// The directory under the cache root holding files of this kind.
    pub fn dir(&self) -> &'static str {
        match self {
            DiskKey::Blob(_) => "blobs",
            DiskKey::Patch(_) => "patches",
        }
    }

    /// `blob` or `patch`: the `kind` label of metrics and `/admin/cache`.
    pub fn kind(&self) -> &'static str {
        match self {
            DiskKey::Blob(_) => "blob",
            DiskKey::Patch(_) => "patch",
        }
    }

    /// The key a file named `name` in directory `dir` is cached under, if the name parses.
    pub fn parse(dir: &str, name: &str) -> Option<Self> {
        match dir {
            "blobs" => name.parse().ok().map(DiskKey::Blob),
            "patches" => name.parse().ok().map(DiskKey::Patch),
            _ => None,
        }
    }

    /// The 32 bytes in the header's ID field: the Blob ID, or the quilt's for a patch.
    fn id_bytes(&self) -> &[u8; 32] {
        match self {
            DiskKey::Blob(id) => &id.0,
            DiskKey::Patch(id) => &id.quilt_id.0,
        }
    }

    fn magic(&self) -> &'static [u8; 7] {
        match self {
            DiskKey::Blob(_) => &MAGIC_PREFIX,
            DiskKey::Patch(_) => &PATCH_MAGIC_PREFIX,
        }
    }

    /// Header bytes 52..56: reserved (0) in a blob file, the patch's start and end column (u16
    /// LE each) in a patch file, so the header (and its checksum) names the whole patch ID.
    fn reserved(&self) -> [u8; 4] {
        match self {
            DiskKey::Blob(_) => [0; 4],
            DiskKey::Patch(id) => {
                let (s, e) = (id.start_index.to_le_bytes(), id.end_index.to_le_bytes());
                [s[0], s[1], e[0], e[1]]
            }
        }
    }
}

impl From<BlobId> for DiskKey {
    fn from(id: BlobId) -> Self {
        DiskKey::Blob(id)
    }
}

impl From<&BlobId> for DiskKey {
    fn from(id: &BlobId) -> Self {
        DiskKey::Blob(*id)
    }
}

impl From<QuiltPatchId> for DiskKey {
    fn from(id: QuiltPatchId) -> Self {
        DiskKey::Patch(id)
    }
}

impl fmt::Display for DiskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskKey::Blob(id) => id.fmt(f),
            DiskKey::Patch(id) => id.fmt(f),
        }
    }
}
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

/// [`corrupt`] for a file of any kind.
pub(super) fn corrupt_key(key: &DiskKey, reason: &str) -> DiskError {
    match key {
        DiskKey::Blob(id) => corrupt(id, reason),
        DiskKey::Patch(patch_id) => DiskError::CorruptPatch {
            patch_id: *patch_id,
            reason: reason.to_string(),
        },
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
    key: &DiskKey,
    len: u64,
    content_hash: &[u8; 32],
    table: &[u8],
) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..7].copy_from_slice(key.magic());
    header[7] = Format::CURRENT.version();
    header[8..40].copy_from_slice(key.id_bytes());
    header[40..48].copy_from_slice(&len.to_le_bytes());
    header[48..52].copy_from_slice(&CHUNK_SIZE.to_le_bytes());
    header[52..56].copy_from_slice(&key.reserved());
    header[56..88].copy_from_slice(content_hash);
    let mut check = blake3::Hasher::new();
    check.update(&header[..88]);
    check.update(table);
    header[88..120].copy_from_slice(check.finalize().as_bytes());
    header
}

/// Open a cached file and check its header, size and chunk table against `id`.
pub(super) fn read_header(path: &Path, id: &BlobId) -> Result<(Header, u64), DiskError> {
    read_header_of(path, &DiskKey::Blob(*id))
}

/// [`read_header`] for a file of any kind: a patch file must also be a patch file (its magic)
/// and name the same columns.
pub(super) fn read_header_of(path: &Path, key: &DiskKey) -> Result<(Header, u64), DiskError> {
    let mut file = File::open(path)?;
    let file_size = file.metadata()?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if file_size < HEADER_LEN {
        return Err(corrupt_key(key, "shorter than its header"));
    }
    file.read_exact(&mut header)?;
    let format = match header[..7] == *key.magic() {
        true => Format::from_version(header[7]),
        false => None,
    };
    let Some(format) = format else {
        return Err(corrupt_key(key, "unknown magic or format version"));
    };
    if header[8..40] != *key.id_bytes() {
        return Err(corrupt_key(key, "header names another blob"));
    }
    // Blob files never checked these reserved bytes; in a patch file they name its columns.
    if matches!(key, DiskKey::Patch(_)) && header[52..56] != key.reserved() {
        return Err(corrupt_key(key, "header names other columns of the quilt"));
    }
    let len = u64::from_le_bytes(header[40..48].try_into().expect("8 bytes"));
    let chunk_size = u32::from_le_bytes(header[48..52].try_into().expect("4 bytes"));
    if chunk_size != CHUNK_SIZE {
        return Err(corrupt_key(key, "unexpected chunk size"));
    }
    let expected_size = len
        .checked_add(HEADER_LEN)
        .and_then(|s| s.checked_add(format.entry_len() as u64 * chunk_count(len)));
    if expected_size != Some(file_size) {
        return Err(corrupt_key(
            key,
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
        return Err(corrupt_key(key, "header or chunk table fails its checksum"));
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
