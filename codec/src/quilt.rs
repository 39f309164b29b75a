//! Walrus quilts, version 1, byte for byte as `walrus-core`'s `quilt_encoding` writes them: many
//! small blobs ("patches") laid out column by column in one blob, each addressable by a
//! [`QuiltPatchId`] and readable from only its own columns (the quilt's secondary slivers).
//!
//! Layout of a quilt of `n_shards` shards (message matrix of `kp` rows × `ks` columns, symbol
//! size `s`, column size `kp·s`; bytes are written down a column symbol by symbol, then on to
//! the next column):
//! * columns `0..c`: version byte `1`, the index length (u32 LE), BCS `QuiltIndexV1`
//!   (`vector<struct { end_index: u16, identifier: string, tags: map<string, string> }>`; the
//!   start of a patch is the end of the one before, the first starts at `c`);
//! * each patch, sorted by identifier, in its own consecutive columns: a 6-byte header
//!   (version `1`, length u32 LE of everything after the header, mask: bit 0 = has tags), the
//!   BCS identifier with a u16 LE length before it, the BCS tags with a u16 LE length (only
//!   with the mask bit), then the data.
//!
//! The symbol size is the smallest (then rounded up to even, RS2's alignment) for which every
//! part fits its own whole columns (Walrus's binary search, reproduced exactly).
//!
//! Decoders read untrusted bytes: every length is checked against the columns actually present
//! before anything is allocated, BCS must be canonical (as Walrus's `bcs` crate requires), and
//! nothing panics on any input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;

use crate::blob_id::BlobId;
use crate::config::{EncodingConfig, MAX_SYMBOL_SIZE};

/// The quilt format version this module reads and writes.
pub const QUILT_VERSION_V1: u8 = 1;
/// Version byte + u32 index length before the BCS index.
pub const QUILT_INDEX_PREFIX_SIZE: usize = 5;
/// Bytes of a patch header: version, u32 length, mask.
pub const PATCH_HEADER_SIZE: usize = 6;
/// The index may span at most this many columns.
pub const MAX_INDEX_COLUMNS: usize = 10;
/// Largest identifier (in BCS bytes, length prefix included) a patch can carry.
pub const MAX_IDENTIFIER_LEN: usize = u16::MAX as usize;
/// Mask bit of a patch header saying that tags follow the identifier.
const TAGS_FLAG: u8 = 1;
/// BCS's own cap on sequence lengths.
const MAX_SEQUENCE_LENGTH: u64 = (1 << 31) - 1;
/// Bytes of a [`QuiltPatchId`]: the quilt's Blob ID, then version, start and end column.
pub const QUILT_PATCH_ID_LEN: usize = BlobId::LENGTH + 5;

/// What was wrong with a quilt, its patches, or a request for one of them.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QuiltError {
    #[error("invalid patch identifier: {0}")]
    InvalidIdentifier(String),
    #[error("two patches have the identifier {0:?}")]
    DuplicateIdentifier(String),
    #[error("a quilt needs at least one patch")]
    NoPatches,
    #[error("too many patches: {got}, at most {max} fit a quilt of this committee")]
    TooManyPatches { got: usize, max: usize },
    #[error("patch {identifier:?} is too large for a quilt ({size} bytes with its header)")]
    PatchTooLarge { identifier: String, size: u64 },
    #[error("the tags of patch {0:?} exceed 65535 bytes")]
    TagsTooLarge(String),
    #[error(
        "the quilt does not fit one blob: it would need symbols of {needed} bytes (at most {max})"
    )]
    QuiltTooLarge { needed: usize, max: usize },
    #[error("the quilt would be {len} bytes, above the limit of {limit}")]
    ExceedsLimit { len: u64, limit: u64 },
    #[error("the quilt index needs {0} columns (at most {MAX_INDEX_COLUMNS})")]
    IndexTooLarge(usize),
    #[error("a quilt of {len} bytes is not a whole number of {multiple}-byte symbol rows")]
    NotAligned { len: usize, multiple: usize },
    #[error("unsupported quilt version byte {0} (only 1 is known)")]
    UnknownVersion(u8),
    #[error("columns {0:?} are needed and not present")]
    MissingColumns(Vec<u16>),
    #[error("columns have different sizes ({0} and {1} bytes)")]
    ColumnSizeMismatch(usize, usize),
    #[error("malformed quilt: {0}")]
    Malformed(String),
}

/// Whether `identifier` may name a patch: not empty, at most 65535 bytes, no trailing
/// whitespace, no control characters (Walrus's `validate_quilt_identifier`).
pub fn validate_identifier(identifier: &str) -> Result<(), QuiltError> {
    let reason = if identifier.len() > MAX_IDENTIFIER_LEN {
        format!("too long: {} bytes", identifier.len())
    } else if identifier.is_empty() {
        "empty".to_string()
    } else if identifier.trim_end() != identifier {
        format!("trailing whitespace: {identifier:?}")
    } else if identifier.chars().any(char::is_control) {
        format!("control characters: {identifier:?}")
    } else {
        return Ok(());
    };
    Err(QuiltError::InvalidIdentifier(reason))
}

/// One patch of a quilt as its index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiltPatch {
    pub identifier: String,
    pub tags: BTreeMap<String, String>,
    /// First column (secondary sliver index) of the patch; not on the wire, derived.
    pub start_index: u16,
    /// One past the last column.
    pub end_index: u16,
}

impl QuiltPatch {
    /// The columns (secondary sliver indices) this patch occupies.
    pub fn columns(&self) -> std::ops::Range<u16> {
        self.start_index..self.end_index
    }

    /// The patch's ID within the quilt `quilt_id`.
    pub fn patch_id(&self, quilt_id: BlobId) -> QuiltPatchId {
        QuiltPatchId {
            quilt_id,
            start_index: self.start_index,
            end_index: self.end_index,
        }
    }
}

/// `QuiltIndexV1`: the patches in layout (identifier) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuiltIndex {
    pub patches: Vec<QuiltPatch>,
}

impl QuiltIndex {
    /// The first patch with this identifier (Walrus returns the first on duplicates).
    pub fn by_identifier(&self, identifier: &str) -> Option<&QuiltPatch> {
        self.patches.iter().find(|p| p.identifier == identifier)
    }

    /// The patch exactly at these columns, if there is one.
    pub fn by_columns(&self, start_index: u16, end_index: u16) -> Option<&QuiltPatch> {
        self.patches
            .iter()
            .find(|p| p.start_index == start_index && p.end_index == end_index)
    }

    /// BCS `QuiltIndexV1` (start indices are not on the wire).
    pub fn to_bcs(&self) -> Result<Vec<u8>, QuiltError> {
        let mut out = Vec::new();
        crate::bcs::put_uleb128(&mut out, self.patches.len() as u64);
        for p in &self.patches {
            out.extend_from_slice(&p.end_index.to_le_bytes());
            put_string(&mut out, &p.identifier);
            put_tags(&mut out, &p.tags)
                .map_err(|_| QuiltError::TagsTooLarge(p.identifier.clone()))?;
        }
        Ok(out)
    }

    /// Decode BCS `QuiltIndexV1`; start indices follow from `first_column`.
    pub fn from_bcs(bytes: &[u8], first_column: u16) -> Result<Self, QuiltError> {
        let mut r = Reader::new(bytes);
        // Each patch is at least 4 bytes: end index, empty identifier, empty map.
        let count = r.length(4)?;
        let mut patches = Vec::with_capacity(count);
        let mut start = first_column;
        for _ in 0..count {
            let end_index = u16::from_le_bytes(r.array::<2>()?);
            let identifier = r.string()?;
            let tags = r.tags()?;
            patches.push(QuiltPatch {
                identifier,
                tags,
                start_index: start,
                end_index,
            });
            start = end_index;
        }
        r.finish()?;
        Ok(Self { patches })
    }
}

/// A globally unique name of a patch: the quilt's Blob ID and the patch's column range, as
/// BCS `QuiltPatchId { quilt_id, patch_id: { version, start_index, end_index } }` (37 bytes),
/// written as base64url without padding (50 characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuiltPatchId {
    pub quilt_id: BlobId,
    pub start_index: u16,
    pub end_index: u16,
}

/// Why a text is not a quilt patch ID.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QuiltPatchIdParseError {
    #[error("a quilt patch ID is base64url without padding: {0}")]
    NotBase64(String),
    #[error("a quilt patch ID is {QUILT_PATCH_ID_LEN} bytes (50 characters), got {0} bytes")]
    WrongLength(usize),
    #[error("unsupported quilt patch ID version {0} (only 1 is known)")]
    UnknownVersion(u8),
}

impl QuiltPatchId {
    /// The 37 BCS bytes.
    pub fn to_bytes(&self) -> [u8; QUILT_PATCH_ID_LEN] {
        let mut out = [0u8; QUILT_PATCH_ID_LEN];
        out[..32].copy_from_slice(&self.quilt_id.0);
        out[32] = QUILT_VERSION_V1;
        out[33..35].copy_from_slice(&self.start_index.to_le_bytes());
        out[35..37].copy_from_slice(&self.end_index.to_le_bytes());
        out
    }

    /// Parse the 37 BCS bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, QuiltPatchIdParseError> {
        if bytes.len() != QUILT_PATCH_ID_LEN {
            return Err(QuiltPatchIdParseError::WrongLength(bytes.len()));
        }
        if bytes[32] != QUILT_VERSION_V1 {
            return Err(QuiltPatchIdParseError::UnknownVersion(bytes[32]));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes[..32]);
        Ok(Self {
            quilt_id: BlobId(id),
            start_index: u16::from_le_bytes([bytes[33], bytes[34]]),
            end_index: u16::from_le_bytes([bytes[35], bytes[36]]),
        })
    }
}

impl fmt::Display for QuiltPatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.to_bytes()))
    }
}

impl FromStr for QuiltPatchId {
    type Err = QuiltPatchIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Bound the work before decoding: 37 bytes are 50 characters.
        if s.len() > 64 {
            return Err(QuiltPatchIdParseError::WrongLength(s.len() * 3 / 4));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|e| QuiltPatchIdParseError::NotBase64(e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

/// One file to put into a quilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchInput<'a> {
    pub identifier: String,
    pub tags: BTreeMap<String, String>,
    pub data: &'a [u8],
}

/// A patch read back from a quilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPatch {
    pub identifier: String,
    pub tags: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

/// An encoded quilt: the blob to store, its symbol size and its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedQuilt {
    pub data: Vec<u8>,
    pub symbol_size: u16,
    pub index: QuiltIndex,
}

impl EncodedQuilt {
    /// The patch IDs in index order, once the quilt's Blob ID is known.
    pub fn patch_ids(&self, quilt_id: BlobId) -> Vec<(String, QuiltPatchId)> {
        self.index
            .patches
            .iter()
            .map(|p| (p.identifier.clone(), p.patch_id(quilt_id)))
            .collect()
    }
}

/// The header and identifier/tags sections written before a patch's data.
fn patch_prefix(p: &PatchInput<'_>) -> Result<Vec<u8>, QuiltError> {
    let mut ident = Vec::with_capacity(p.identifier.len() + 5);
    put_string(&mut ident, &p.identifier);
    // Walrus refuses identifiers whose BCS size reaches the u16 maximum.
    if ident.len() >= MAX_IDENTIFIER_LEN {
        return Err(QuiltError::InvalidIdentifier(format!(
            "too long: {} BCS bytes",
            ident.len()
        )));
    }
    let mut tags = Vec::new();
    let mut mask = 0u8;
    if !p.tags.is_empty() {
        put_tags(&mut tags, &p.tags).map_err(|_| QuiltError::TagsTooLarge(p.identifier.clone()))?;
        if tags.len() > usize::from(u16::MAX) {
            return Err(QuiltError::TagsTooLarge(p.identifier.clone()));
        }
        mask |= TAGS_FLAG;
    }
    let sections = 2 + ident.len() + if tags.is_empty() { 0 } else { 2 + tags.len() };
    let length = u32::try_from(sections as u64 + p.data.len() as u64).map_err(|_| {
        QuiltError::PatchTooLarge {
            identifier: p.identifier.clone(),
            size: (PATCH_HEADER_SIZE + sections) as u64 + p.data.len() as u64,
        }
    })?;
    let mut out = Vec::with_capacity(PATCH_HEADER_SIZE + sections);
    out.push(QUILT_VERSION_V1);
    out.extend_from_slice(&length.to_le_bytes());
    out.push(mask);
    out.extend_from_slice(&(ident.len() as u16).to_le_bytes());
    out.extend_from_slice(&ident);
    if !tags.is_empty() {
        out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
        out.extend_from_slice(&tags);
    }
    Ok(out)
}

/// Encode `patches` as a version-1 quilt for `config`'s committee.
///
/// Patches are sorted by identifier (byte order, as Walrus); duplicate or invalid identifiers
/// are refused.
pub fn encode_quilt(
    config: &EncodingConfig,
    patches: &[PatchInput<'_>],
) -> Result<EncodedQuilt, QuiltError> {
    encode_quilt_bounded(config, patches, u64::MAX)
}

/// [`encode_quilt`], refusing before allocating it a quilt longer than `max_len` bytes: every
/// patch takes whole columns, so one large patch among many small ones can make the quilt
/// hundreds of times larger than its patches.
pub fn encode_quilt_bounded(
    config: &EncodingConfig,
    patches: &[PatchInput<'_>],
    max_len: u64,
) -> Result<EncodedQuilt, QuiltError> {
    if patches.is_empty() {
        return Err(QuiltError::NoPatches);
    }
    let n_rows = usize::from(config.n_primary_source_symbols());
    let n_cols = usize::from(config.n_secondary_source_symbols());
    if patches.len() + 1 > n_cols {
        return Err(QuiltError::TooManyPatches {
            got: patches.len(),
            max: n_cols - 1,
        });
    }
    let mut sorted: Vec<&PatchInput<'_>> = patches.iter().collect();
    sorted.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    for pair in sorted.windows(2) {
        if pair[0].identifier == pair[1].identifier {
            return Err(QuiltError::DuplicateIdentifier(pair[0].identifier.clone()));
        }
    }
    for p in &sorted {
        validate_identifier(&p.identifier)?;
    }
    let mut index = QuiltIndex {
        patches: sorted
            .iter()
            .map(|p| QuiltPatch {
                identifier: p.identifier.clone(),
                tags: p.tags.clone(),
                start_index: 0,
                end_index: 0,
            })
            .collect(),
    };
    // The end indices are fixed-width, so the size does not depend on their values.
    let index_len = index.to_bcs()?.len();
    let index_total = QUILT_INDEX_PREFIX_SIZE + index_len;
    let prefixes = sorted
        .iter()
        .map(|p| patch_prefix(p))
        .collect::<Result<Vec<_>, _>>()?;
    let sizes: Vec<usize> = std::iter::once(index_total)
        .chain(
            sorted
                .iter()
                .zip(&prefixes)
                .map(|(p, prefix)| prefix.len() + p.data.len()),
        )
        .collect();
    let symbol_size = compute_symbol_size(&sizes, n_cols, n_rows, MAX_INDEX_COLUMNS)?;
    let column_size = symbol_size * n_rows;
    let index_columns = index_total.div_ceil(column_size);
    if index_columns > MAX_INDEX_COLUMNS {
        return Err(QuiltError::IndexTooLarge(index_columns));
    }
    let len = (symbol_size * n_rows * n_cols) as u64;
    if len > max_len {
        return Err(QuiltError::ExceedsLimit {
            len,
            limit: max_len,
        });
    }
    let mut quilt = ColumnWriter {
        data: vec![0u8; symbol_size * n_rows * n_cols],
        symbol_size,
        n_rows,
        n_cols,
    };
    let mut column = index_columns;
    for ((p, prefix), entry) in sorted.iter().zip(&prefixes).zip(&mut index.patches) {
        quilt.write(column, 0, prefix);
        quilt.write(column, prefix.len(), p.data);
        let used = (prefix.len() + p.data.len()).div_ceil(column_size);
        // compute_symbol_size guaranteed that all parts fit n_cols <= u16::MAX columns.
        entry.start_index = column as u16;
        column += used;
        entry.end_index = column as u16;
    }
    let bcs = index.to_bcs()?;
    let mut meta = Vec::with_capacity(index_total);
    meta.push(QUILT_VERSION_V1);
    meta.extend_from_slice(&(bcs.len() as u32).to_le_bytes());
    meta.extend_from_slice(&bcs);
    quilt.write(0, 0, &meta);
    Ok(EncodedQuilt {
        data: quilt.data,
        symbol_size: symbol_size as u16,
        index,
    })
}

/// Walrus's `compute_symbol_size`: the smallest symbol size for which every part (the index
/// first) fits its own whole columns, rounded up to RS2's 2-byte alignment.
fn compute_symbol_size(
    sizes: &[usize],
    n_cols: usize,
    n_rows: usize,
    max_index_columns: usize,
) -> Result<usize, QuiltError> {
    if sizes.is_empty() || sizes.len() > n_cols {
        return Err(QuiltError::TooManyPatches {
            got: sizes.len().saturating_sub(1),
            max: n_cols.saturating_sub(1),
        });
    }
    let fits =
        |column_size: usize| sizes.iter().map(|s| s.div_ceil(column_size)).sum::<usize>() <= n_cols;
    let total: usize = sizes.iter().sum();
    let mut min = total
        .div_ceil(n_cols * n_rows)
        .max(sizes[0].div_ceil(n_rows * max_index_columns))
        .max(QUILT_INDEX_PREFIX_SIZE.div_ceil(n_rows));
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mut max = largest.div_ceil(n_cols / sizes.len() * n_rows);
    while min < max {
        let mid = (min + max) / 2;
        if fits(mid * n_rows) {
            max = mid;
        } else {
            min = mid + 1;
        }
    }
    let symbol_size = min.next_multiple_of(2);
    if symbol_size > usize::from(MAX_SYMBOL_SIZE) {
        return Err(QuiltError::QuiltTooLarge {
            needed: symbol_size,
            max: usize::from(MAX_SYMBOL_SIZE),
        });
    }
    Ok(symbol_size)
}

/// The row-major message matrix being filled column by column.
struct ColumnWriter {
    data: Vec<u8>,
    symbol_size: usize,
    n_rows: usize,
    n_cols: usize,
}

impl ColumnWriter {
    /// Write `bytes` into the columns from `start_col`, `skip` bytes in.
    fn write(&mut self, start_col: usize, skip: usize, bytes: &[u8]) {
        let ss = self.symbol_size;
        let row_size = ss * self.n_cols;
        let symbol = skip / ss;
        let mut offset = skip % ss;
        let mut col = start_col + symbol / self.n_rows;
        let mut row = symbol % self.n_rows;
        let mut done = 0;
        while done < bytes.len() {
            let at = row * row_size + col * ss + offset;
            let len = (ss - offset).min(bytes.len() - done);
            self.data[at..at + len].copy_from_slice(&bytes[done..done + len]);
            done += len;
            offset = 0;
            row += 1;
            if row == self.n_rows {
                row = 0;
                col += 1;
            }
        }
    }
}

/// Check `data` as column `column` of the quilt `meta` describes: the column's `kp` symbols are
/// secondary sliver `column`'s systematic part, so expanded and hashed they must give the
/// metadata's `secondary_hash` for that sliver. A cold patch read checks each column it fetches
/// with this, and the gateway's disk scrub each column it rebuilds from a cached patch file.
/// CPU-heavy (a Reed–Solomon expansion).
pub fn verify_column(
    meta: &crate::VerifiedMetadata,
    column: u16,
    data: Bytes,
) -> Result<crate::VerifiedSliver, crate::CodecError> {
    meta.verify_sliver(crate::Sliver {
        kind: crate::SliverKind::Secondary,
        index: column,
        symbol_size: meta.symbol_size(),
        data,
    })
}

/// Columns of a quilt (the systematic part of its secondary slivers), whole or in part.
pub trait ColumnSource {
    /// Bytes per column: `kp` symbols.
    fn column_size(&self) -> usize;
    /// Columns in the quilt (`ks`).
    fn n_columns(&self) -> usize;
    /// Whether column `col` is available.
    fn has_column(&self, col: usize) -> bool;
    /// Append `len` bytes of column `col`, from `offset` on; only called for present columns and
    /// ranges inside the column.
    fn append(&self, col: usize, offset: usize, len: usize, out: &mut Vec<u8>);
}

/// Read `len` bytes of the quilt from column `start_col` on, `skip` bytes in, refusing before
/// allocating anything if the columns needed are outside the quilt or absent.
pub fn read_columns<S: ColumnSource + ?Sized>(
    src: &S,
    start_col: usize,
    skip: usize,
    len: usize,
) -> Result<Vec<u8>, QuiltError> {
    let cs = src.column_size();
    if cs == 0 {
        return Err(QuiltError::Malformed("columns are empty".into()));
    }
    let out_of_bounds = || {
        QuiltError::Malformed(format!(
            "{len} bytes at offset {skip} of column {start_col} run past the quilt's {} columns",
            src.n_columns()
        ))
    };
    let end = skip.checked_add(len).ok_or_else(out_of_bounds)?;
    let first = start_col + skip / cs;
    let end_col = start_col
        .checked_add(end.div_ceil(cs))
        .ok_or_else(out_of_bounds)?;
    if end_col > src.n_columns() || (len > 0 && first >= src.n_columns()) {
        return Err(out_of_bounds());
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    let missing: Vec<u16> = (first..end_col)
        .filter(|&c| !src.has_column(c))
        .map(|c| c as u16)
        .collect();
    if !missing.is_empty() {
        return Err(QuiltError::MissingColumns(missing));
    }
    let mut out = Vec::with_capacity(len);
    let mut col = first;
    let mut offset = skip % cs;
    while out.len() < len {
        let n = (cs - offset).min(len - out.len());
        src.append(col, offset, n, &mut out);
        col += 1;
        offset = 0;
    }
    Ok(out)
}

/// A whole quilt blob, read in place.
#[derive(Debug, Clone, Copy)]
pub struct QuiltView<'a> {
    data: &'a [u8],
    symbol_size: usize,
    n_rows: usize,
    n_cols: usize,
}

impl<'a> QuiltView<'a> {
    /// View `data` (a quilt blob of `config`'s committee): its length must be a whole number of
    /// `kp × ks` symbol matrices.
    pub fn new(config: &EncodingConfig, data: &'a [u8]) -> Result<Self, QuiltError> {
        let n_rows = usize::from(config.n_primary_source_symbols());
        let n_cols = usize::from(config.n_secondary_source_symbols());
        let multiple = n_rows * n_cols;
        if data.is_empty() || !data.len().is_multiple_of(multiple) {
            return Err(QuiltError::NotAligned {
                len: data.len(),
                multiple,
            });
        }
        Ok(Self {
            data,
            symbol_size: data.len() / multiple,
            n_rows,
            n_cols,
        })
    }

    pub fn symbol_size(&self) -> usize {
        self.symbol_size
    }
}

impl ColumnSource for QuiltView<'_> {
    fn column_size(&self) -> usize {
        self.symbol_size * self.n_rows
    }

    fn n_columns(&self) -> usize {
        self.n_cols
    }

    fn has_column(&self, col: usize) -> bool {
        col < self.n_cols
    }

    fn append(&self, col: usize, mut offset: usize, mut len: usize, out: &mut Vec<u8>) {
        let ss = self.symbol_size;
        let row_size = ss * self.n_cols;
        while len > 0 {
            let row = offset / ss;
            let within = offset % ss;
            let n = (ss - within).min(len);
            let at = row * row_size + col * ss + within;
            out.extend_from_slice(&self.data[at..at + n]);
            offset += n;
            len -= n;
        }
    }
}

/// Some columns of a quilt, each the systematic part (first `kp` symbols) of a verified
/// secondary sliver.
#[derive(Debug, Clone, Default)]
pub struct ColumnSet {
    columns: BTreeMap<u16, Bytes>,
    column_size: usize,
    n_cols: usize,
}

impl ColumnSet {
    /// An empty set for a quilt of `config`'s committee.
    pub fn new(config: &EncodingConfig) -> Self {
        Self {
            columns: BTreeMap::new(),
            column_size: 0,
            n_cols: usize::from(config.n_secondary_source_symbols()),
        }
    }

    /// Add column `index`; every column must have the same size.
    pub fn insert(&mut self, index: u16, column: Bytes) -> Result<(), QuiltError> {
        if usize::from(index) >= self.n_cols {
            return Err(QuiltError::Malformed(format!(
                "column {index} is outside the quilt's {} columns",
                self.n_cols
            )));
        }
        if column.is_empty() {
            return Err(QuiltError::Malformed("empty column".into()));
        }
        if self.columns.is_empty() {
            self.column_size = column.len();
        } else if column.len() != self.column_size {
            return Err(QuiltError::ColumnSizeMismatch(
                self.column_size,
                column.len(),
            ));
        }
        self.columns.insert(index, column);
        Ok(())
    }

    pub fn contains(&self, index: u16) -> bool {
        self.columns.contains_key(&index)
    }

    /// Column `index`, if present.
    pub fn column(&self, index: u16) -> Option<&Bytes> {
        self.columns.get(&index)
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }
}

impl ColumnSource for ColumnSet {
    fn column_size(&self) -> usize {
        self.column_size
    }

    fn n_columns(&self) -> usize {
        self.n_cols
    }

    fn has_column(&self, col: usize) -> bool {
        u16::try_from(col).is_ok_and(|c| self.columns.contains_key(&c))
    }

    fn append(&self, col: usize, offset: usize, len: usize, out: &mut Vec<u8>) {
        if let Some(c) = u16::try_from(col).ok().and_then(|c| self.columns.get(&c)) {
            out.extend_from_slice(&c[offset..offset + len]);
        }
    }
}

/// How many columns the index of a quilt spans, from the first column's first bytes.
pub fn index_columns<S: ColumnSource + ?Sized>(src: &S) -> Result<usize, QuiltError> {
    let (_, total) = index_len(src)?;
    Ok(total.div_ceil(src.column_size()))
}

/// `(index BCS length, prefix + index length)`, checked against the 10-column cap.
fn index_len<S: ColumnSource + ?Sized>(src: &S) -> Result<(usize, usize), QuiltError> {
    let prefix = read_columns(src, 0, 0, QUILT_INDEX_PREFIX_SIZE)?;
    if prefix[0] != QUILT_VERSION_V1 {
        return Err(QuiltError::UnknownVersion(prefix[0]));
    }
    let len = u32::from_le_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    let max = src
        .column_size()
        .saturating_mul(MAX_INDEX_COLUMNS)
        .saturating_sub(QUILT_INDEX_PREFIX_SIZE);
    if len > max {
        return Err(QuiltError::Malformed(format!(
            "quilt index of {len} bytes exceeds the {max} bytes of {MAX_INDEX_COLUMNS} columns"
        )));
    }
    Ok((len, len + QUILT_INDEX_PREFIX_SIZE))
}

/// Decode the quilt's index (needs its first columns only).
pub fn decode_index<S: ColumnSource + ?Sized>(src: &S) -> Result<QuiltIndex, QuiltError> {
    let (len, total) = index_len(src)?;
    let bytes = read_columns(src, 0, QUILT_INDEX_PREFIX_SIZE, len)?;
    let columns = total.div_ceil(src.column_size());
    let first = u16::try_from(columns)
        .map_err(|_| QuiltError::Malformed(format!("index spans {columns} columns")))?;
    QuiltIndex::from_bcs(&bytes, first)
}

/// Where a patch's parts lie, from its header: read from its first column only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchHeader {
    pub identifier: String,
    pub tags: BTreeMap<String, String>,
    /// First column of the patch.
    pub start_column: usize,
    /// Byte offset of the data from the start of the patch's first column.
    pub data_offset: usize,
    /// Length of the data.
    pub data_len: usize,
}

/// Decode the header, identifier and tags of the patch starting at `start_col`.
pub fn decode_patch_header<S: ColumnSource + ?Sized>(
    src: &S,
    start_col: usize,
) -> Result<PatchHeader, QuiltError> {
    let header = read_columns(src, start_col, 0, PATCH_HEADER_SIZE)?;
    if header[0] != QUILT_VERSION_V1 {
        return Err(QuiltError::Malformed(format!(
            "patch header at column {start_col} has version byte {}",
            header[0]
        )));
    }
    let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mask = header[5];
    let available = src.column_size().saturating_mul(src.n_columns());
    if length > available {
        return Err(QuiltError::Malformed(format!(
            "patch claims {length} bytes, the quilt has {available}"
        )));
    }
    let mut offset = PATCH_HEADER_SIZE;
    let short = || {
        QuiltError::Malformed(format!(
            "patch length {length} is shorter than its header sections"
        ))
    };
    let ident_len = read_u16(src, start_col, offset)?;
    offset += 2;
    let identifier = Reader::whole(
        &read_columns(src, start_col, offset, ident_len)?,
        Reader::string,
    )?;
    offset += ident_len;
    let mut remaining = length.checked_sub(2 + ident_len).ok_or_else(short)?;
    let tags = if mask & TAGS_FLAG != 0 {
        let tags_len = read_u16(src, start_col, offset)?;
        offset += 2;
        let tags = Reader::whole(
            &read_columns(src, start_col, offset, tags_len)?,
            Reader::tags,
        )?;
        offset += tags_len;
        remaining = remaining.checked_sub(2 + tags_len).ok_or_else(short)?;
        tags
    } else {
        BTreeMap::new()
    };
    validate_identifier(&identifier)?;
    // The data must lie inside the quilt; read_columns checks presence when it is read.
    let end = offset.saturating_add(remaining);
    if start_col.saturating_add(end.div_ceil(src.column_size())) > src.n_columns() {
        return Err(QuiltError::Malformed(format!(
            "patch at column {start_col} runs past the end of the quilt"
        )));
    }
    Ok(PatchHeader {
        identifier,
        tags,
        start_column: start_col,
        data_offset: offset,
        data_len: remaining,
    })
}

impl PatchHeader {
    /// Columns the patch occupies, from its header.
    pub fn end_column(&self, column_size: usize) -> usize {
        self.start_column + (self.data_offset + self.data_len).div_ceil(column_size.max(1))
    }
}

/// Decode the patch starting at column `start_col`.
pub fn decode_patch<S: ColumnSource + ?Sized>(
    src: &S,
    start_col: usize,
) -> Result<DecodedPatch, QuiltError> {
    let h = decode_patch_header(src, start_col)?;
    let data = read_columns(src, start_col, h.data_offset, h.data_len)?;
    Ok(DecodedPatch {
        identifier: h.identifier,
        tags: h.tags,
        data,
    })
}

fn read_u16<S: ColumnSource + ?Sized>(
    src: &S,
    col: usize,
    offset: usize,
) -> Result<usize, QuiltError> {
    let b = read_columns(src, col, offset, 2)?;
    Ok(usize::from(u16::from_le_bytes([b[0], b[1]])))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    crate::bcs::put_uleb128(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// BCS map: entries ordered by their serialized keys (as the `bcs` crate and `@mysten/bcs`
/// both do), which is not the strings' order when lengths differ.
fn put_tags(out: &mut Vec<u8>, tags: &BTreeMap<String, String>) -> Result<(), ()> {
    if tags.len() as u64 > MAX_SEQUENCE_LENGTH {
        return Err(());
    }
    let mut entries: Vec<(Vec<u8>, &String)> = tags
        .iter()
        .map(|(k, v)| {
            let mut key = Vec::with_capacity(k.len() + 5);
            put_string(&mut key, k);
            (key, v)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    crate::bcs::put_uleb128(out, entries.len() as u64);
    for (key, value) in entries {
        out.extend_from_slice(&key);
        put_string(out, value);
    }
    Ok(())
}

/// The quilt index's reader: [`crate::bcs::Reader`], with the string and map forms the index
/// uses and errors in the quilt's words.
struct Reader<'a>(crate::bcs::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self(crate::bcs::Reader::new(buf))
    }

    /// Decode all of `buf` with `f`; trailing bytes are an error.
    fn whole<T>(
        buf: &'a [u8],
        f: impl FnOnce(&mut Self) -> Result<T, QuiltError>,
    ) -> Result<T, QuiltError> {
        let mut r = Self::new(buf);
        let value = f(&mut r)?;
        r.finish()?;
        Ok(value)
    }

    fn malformed(&self, what: impl fmt::Display) -> QuiltError {
        QuiltError::Malformed(format!("BCS: {what} at offset {}", self.0.position()))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], QuiltError> {
        self.0.take(n).map_err(|e| self.malformed(e))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], QuiltError> {
        self.0.array().map_err(|e| self.malformed(e))
    }

    /// A sequence length for elements of at least `min_element` bytes, bounded by what is left.
    fn length(&mut self, min_element: usize) -> Result<usize, QuiltError> {
        self.0
            .length(min_element, u64::from(u32::MAX))
            .map_err(|e| self.malformed(e))
    }

    fn string(&mut self) -> Result<String, QuiltError> {
        let len = self.length(1)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.malformed("string is not UTF-8"))
    }

    /// A canonical map: keys strictly increasing by their serialized bytes.
    fn tags(&mut self) -> Result<BTreeMap<String, String>, QuiltError> {
        let count = self.length(2)?;
        let mut tags = BTreeMap::new();
        let mut previous: Option<&'a [u8]> = None;
        for _ in 0..count {
            let key_start = self.0.position();
            let key = self.string()?;
            let key_bytes = self.0.read_since(key_start);
            if previous.is_some_and(|p| p >= key_bytes) {
                return Err(self.malformed("map keys not in canonical order"));
            }
            previous = Some(key_bytes);
            let value = self.string()?;
            tags.insert(key, value);
        }
        Ok(tags)
    }

    fn finish(self) -> Result<(), QuiltError> {
        let at = self.0.position();
        self.0
            .finish()
            .map_err(|e| QuiltError::Malformed(format!("BCS: {e} at offset {at}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(id: &str, data: &'a [u8]) -> PatchInput<'a> {
        PatchInput {
            identifier: id.into(),
            tags: BTreeMap::new(),
            data,
        }
    }

    /// Walrus's own `test_quilt_find_min_length` cases (RS2).
    #[test]
    fn symbol_size_matches_walrus_cases() {
        type Case = (&'static [usize], usize, usize, usize, Option<usize>);
        let cases: &[Case] = &[
            (&[2, 1, 2, 1], 3, 3, 1, None),
            (&[1000, 1, 1], 4, 7, 2, Some(72)),
            (&[], 3, 1, 1, None),
            (&[1], 3, 2, 1, Some(4)),
            (&[115, 80, 4], 17, 9, 3, Some(6)),
            (&[20, 20, 20], 3, 5, 2, Some(4)),
            (&[5, 5, 5], 5, 1, 1, Some(6)),
            (&[25, 35, 45], 200, 1, 3, Some(10)),
            (&[10, 0, 0, 0], 17, 9, 2, Some(2)),
            (
                &[
                    416, 253, 258, 384, 492, 303, 276, 464, 143, 251, 388, 263, 515, 433, 505, 385,
                    346, 69, 48, 495, 329, 450, 494, 104, 539, 245, 109, 317, 60,
                ],
                34,
                16,
                3,
                Some(32),
            ),
        ];
        for &(sizes, n_cols, n_rows, max_index_cols, expected) in cases {
            let got = compute_symbol_size(sizes, n_cols, n_rows, max_index_cols).ok();
            assert_eq!(
                got, expected,
                "{sizes:?} {n_cols} {n_rows} {max_index_cols}"
            );
        }
    }

    #[test]
    fn round_trips_and_ids() {
        let config = EncodingConfig::new(10).unwrap();
        let mut tagged = input("b", b"world");
        tagged.tags.insert("zz".into(), "1".into());
        tagged.tags.insert("a".into(), "2".into());
        let patches = vec![input("c", &[]), tagged, input("a", b"hello")];
        let quilt = encode_quilt(&config, &patches).unwrap();
        let view = QuiltView::new(&config, &quilt.data).unwrap();
        let index = decode_index(&view).unwrap();
        assert_eq!(index, quilt.index);
        let ids: Vec<&str> = index
            .patches
            .iter()
            .map(|p| p.identifier.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        for p in &index.patches {
            let got = decode_patch(&view, usize::from(p.start_index)).unwrap();
            let want = patches
                .iter()
                .find(|q| q.identifier == p.identifier)
                .unwrap();
            assert_eq!(got.data, want.data);
            assert_eq!(got.tags, want.tags);
            let id = p.patch_id(BlobId([7; 32]));
            assert_eq!(id.to_string().len(), 50);
            assert_eq!(id.to_string().parse::<QuiltPatchId>().unwrap(), id);
        }
    }

    #[test]
    fn refuses_bad_inputs() {
        let config = EncodingConfig::new(10).unwrap();
        assert_eq!(encode_quilt(&config, &[]), Err(QuiltError::NoPatches));
        assert!(matches!(
            encode_quilt(&config, &[input("x", b"1"), input("x", b"2")]),
            Err(QuiltError::DuplicateIdentifier(_))
        ));
        assert!(matches!(
            encode_quilt(&config, &[input("x ", b"1")]),
            Err(QuiltError::InvalidIdentifier(_))
        ));
        let many: Vec<PatchInput<'_>> = (0..7).map(|i| input(&i.to_string(), b"")).collect();
        assert!(matches!(
            encode_quilt(&config, &many),
            Err(QuiltError::TooManyPatches { .. })
        ));
        // One large patch beside small ones: the quilt is many times its bytes, refused first.
        let big = vec![7u8; 100_000];
        let lopsided = [input("a", &big), input("b", b""), input("c", b"")];
        let quilt = encode_quilt(&config, &lopsided).unwrap();
        assert!(quilt.data.len() > big.len() + big.len() / 2);
        assert_eq!(
            encode_quilt_bounded(&config, &lopsided, 150_000),
            Err(QuiltError::ExceedsLimit {
                len: quilt.data.len() as u64,
                limit: 150_000
            })
        );
    }
}
