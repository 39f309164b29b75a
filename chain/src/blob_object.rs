//! The Sui objects behind the aggregator's `GET /v1/blobs/by-object-id/{object_id}`: a
//! `walrus::blob::Blob` (or a `walrus::shared_blob::SharedBlob` wrapping one) and its
//! attributes, the `Metadata` dynamic field the blob module keeps under the fixed name
//! `b"metadata"` (`contracts/walrus/sources/system/{blob,shared_blob,metadata,storage_resource}.move`).
//!
//! The Blob ID is the `blob_id: u256` field: its BCS (32 little-endian bytes) are the Blob ID's
//! bytes, as `walrus-sui` deserializes it. Decoders are bounded like every other here (lengths
//! checked against the bytes left, trailing bytes refused).

use crate::bcs::{BcsError, Reader, Writer};
use crate::move_types::{normalize_type, MoveValue, SUI_FRAMEWORK};
use crate::object_id::ObjectId;

/// The dynamic field name of a blob's attributes (`blob::METADATA_DF`).
pub const METADATA_FIELD_NAME: &[u8] = b"metadata";
/// `bcs(TypeTag::Vector(TypeTag::U8))`: the variant of `vector` (6), then of `u8` (1).
pub const TYPE_TAG_VECTOR_U8: [u8; 2] = [6, 1];

/// `storage_resource::Storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageResource {
    pub id: ObjectId,
    pub start_epoch: u32,
    pub end_epoch: u32,
    pub storage_size: u64,
}

/// `blob::Blob`, in the contract's field order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobObject {
    pub id: ObjectId,
    pub registered_epoch: u32,
    /// The Blob ID's 32 bytes.
    pub blob_id: [u8; 32],
    pub size: u64,
    pub encoding_type: u8,
    pub certified_epoch: Option<u32>,
    pub storage: StorageResource,
    pub deletable: bool,
}

/// `shared_blob::SharedBlob`: a blob anyone can fund; its attributes hang off the inner blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBlob {
    pub id: ObjectId,
    pub blob: BlobObject,
    /// `Balance<WAL>`: a `u64`.
    pub funds: u64,
}

/// `0x2::dynamic_field::Field<vector<u8>, metadata::Metadata>`: a blob's attributes, the
/// `VecMap<String, String>` in insertion order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataField {
    pub id: ObjectId,
    pub name: Vec<u8>,
    pub attributes: Vec<(String, String)>,
}

impl MoveValue for StorageResource {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("storage.id")?,
            start_epoch: r.u32("start_epoch")?,
            end_epoch: r.u32("end_epoch")?,
            storage_size: r.u64("storage_size")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id)
            .u32(self.start_epoch)
            .u32(self.end_epoch)
            .u64(self.storage_size);
    }
}

impl MoveValue for BlobObject {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("id")?,
            registered_epoch: r.u32("registered_epoch")?,
            blob_id: r.u256("blob_id")?,
            size: r.u64("size")?,
            encoding_type: r.u8("encoding_type")?,
            certified_epoch: r.option("certified_epoch", |r| r.u32("certified_epoch"))?,
            storage: StorageResource::read(r)?,
            deletable: r.bool("deletable")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id)
            .u32(self.registered_epoch)
            .raw(&self.blob_id)
            .u64(self.size)
            .u8(self.encoding_type)
            .option(self.certified_epoch.as_ref(), |w, e| {
                w.u32(*e);
            });
        self.storage.write(w);
        w.bool(self.deletable);
    }
}

impl MoveValue for SharedBlob {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        Ok(Self {
            id: r.address("id")?,
            blob: BlobObject::read(r)?,
            funds: r.u64("funds")?,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id);
        self.blob.write(w);
        w.u64(self.funds);
    }
}

impl MoveValue for MetadataField {
    fn read(r: &mut Reader<'_>) -> Result<Self, BcsError> {
        let id = r.address("id")?;
        let name = r.bytes("name")?.to_vec();
        // Each entry is at least two empty strings (two length bytes).
        let attributes = r.vec("metadata", 2, |r| {
            Ok((r.string("metadata key")?, r.string("metadata value")?))
        })?;
        Ok(Self {
            id,
            name,
            attributes,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.address(&self.id).bytes(&self.name);
        w.vec(&self.attributes, |w, (k, v)| {
            w.string(k).string(v);
        });
    }
}

/// The object ID of the attributes field of the blob object `blob`.
pub fn metadata_field_id(blob: &ObjectId) -> ObjectId {
    let mut key = Writer::new();
    key.bytes(METADATA_FIELD_NAME);
    blob.dynamic_field_id(&key.into_bytes(), &TYPE_TAG_VECTOR_U8)
}

/// The full type strings of these objects for Walrus package (original ID) `package`.
pub mod type_of {
    use super::SUI_FRAMEWORK;
    use crate::object_id::ObjectId;

    pub fn blob(package: &ObjectId) -> String {
        format!("{package}::blob::Blob")
    }

    pub fn shared_blob(package: &ObjectId) -> String {
        format!("{package}::shared_blob::SharedBlob")
    }

    pub fn metadata_field(metadata_package: &ObjectId) -> String {
        format!(
            "{SUI_FRAMEWORK}::dynamic_field::Field<vector<u8>, {metadata_package}::metadata::Metadata>"
        )
    }
}

/// Which of the two blob-holding types `type_text` is, for package `package`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Blob,
    Shared,
}

pub fn blob_kind(type_text: &str, package: &ObjectId) -> Option<BlobKind> {
    let got = normalize_type(type_text);
    if got == type_of::blob(package) {
        Some(BlobKind::Blob)
    } else if got == type_of::shared_blob(package) {
        Some(BlobKind::Shared)
    } else {
        None
    }
}

/// Whether `type_text` is a `Field<vector<u8>, <p>::metadata::Metadata>`. The package `<p>` is
/// not pinned: a module added in a package upgrade has the upgrade's address as its type
/// origin, and only the blob module (holding the blob's `UID`) can attach a field at the
/// derived ID anyway.
pub fn is_metadata_field(type_text: &str) -> bool {
    let got = normalize_type(type_text);
    let Some(inner) = got
        .strip_prefix(&format!(
            "{SUI_FRAMEWORK}::dynamic_field::Field<vector<u8>,"
        ))
        .and_then(|rest| rest.strip_suffix("::metadata::Metadata>"))
    else {
        return false;
    };
    inner.starts_with("0x") && inner.parse::<ObjectId>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> BlobObject {
        BlobObject {
            id: ObjectId([7; 32]),
            registered_epoch: 3,
            blob_id: std::array::from_fn(|i| i as u8),
            size: 1234,
            encoding_type: 1,
            certified_epoch: Some(4),
            storage: StorageResource {
                id: ObjectId([8; 32]),
                start_epoch: 3,
                end_epoch: 56,
                storage_size: 66_034_000,
            },
            deletable: true,
        }
    }

    /// Field by field as `blob.move` lays it out: 32 + 4 + 32 + 8 + 1 + (1 + 4) + (32 + 4 + 4 +
    /// 8) + 1 bytes, the Blob ID's bytes as they are.
    #[test]
    fn blob_layout_is_the_contracts() {
        let bytes = blob().to_bcs();
        assert_eq!(bytes.len(), 131);
        assert_eq!(&bytes[36..68], &blob().blob_id);
        assert_eq!(bytes[77], 1, "Some(certified_epoch)");
        assert_eq!(BlobObject::from_bcs(&bytes).unwrap(), blob());
        let mut uncertified = blob();
        uncertified.certified_epoch = None;
        assert_eq!(uncertified.to_bcs().len(), 127);
        assert_eq!(
            BlobObject::from_bcs(&uncertified.to_bcs()).unwrap(),
            uncertified
        );
        let shared = SharedBlob {
            id: ObjectId([9; 32]),
            blob: blob(),
            funds: 5,
        };
        assert_eq!(SharedBlob::from_bcs(&shared.to_bcs()).unwrap(), shared);
        // Truncated or extended: refused.
        assert!(BlobObject::from_bcs(&bytes[..130]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(BlobObject::from_bcs(&longer).is_err());
    }

    #[test]
    fn metadata_round_trips_and_bounds_its_lengths() {
        let field = MetadataField {
            id: metadata_field_id(&ObjectId([7; 32])),
            name: METADATA_FIELD_NAME.to_vec(),
            attributes: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-other".into(), String::new()),
            ],
        };
        let bytes = field.to_bcs();
        assert_eq!(MetadataField::from_bcs(&bytes).unwrap(), field);
        // A count of 2^28 entries in a short body is refused before allocation.
        let mut forged = bytes[..41].to_vec();
        forged.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(MetadataField::from_bcs(&forged).is_err());
    }

    #[test]
    fn the_metadata_field_id_is_sui_derivation() {
        // Blake2b-256(0xF0 ‖ parent ‖ u64_le(9) ‖ 0x08 "metadata" ‖ 0x06 0x01), by hand.
        let parent = ObjectId([7; 32]);
        let mut state = blake2b_simd::Params::new().hash_length(32).to_state();
        state.update(&[0xf0]);
        state.update(&parent.0);
        state.update(&9u64.to_le_bytes());
        state.update(b"\x08metadata");
        state.update(&[6, 1]);
        assert_eq!(metadata_field_id(&parent).0, state.finalize().as_bytes());
    }

    #[test]
    fn types_are_recognised_only_for_the_package() {
        let package = ObjectId([0xab; 32]);
        assert_eq!(
            blob_kind(&type_of::blob(&package), &package),
            Some(BlobKind::Blob)
        );
        assert_eq!(
            blob_kind(&type_of::shared_blob(&package), &package),
            Some(BlobKind::Shared)
        );
        assert_eq!(
            blob_kind(&type_of::blob(&ObjectId([1; 32])), &package),
            None
        );
        assert_eq!(blob_kind("0x2::coin::Coin<0x2::sui::SUI>", &package), None);
        assert!(is_metadata_field(&type_of::metadata_field(&package)));
        assert!(is_metadata_field(
            "0x2::dynamic_field::Field<vector<u8>, 0xab::metadata::Metadata>"
        ));
        assert!(!is_metadata_field(
            "0x2::dynamic_field::Field<u64, 0xab::metadata::Metadata>"
        ));
        assert!(!is_metadata_field(
            "0x2::dynamic_field::Field<vector<u8>, 0xab::evil::Thing<0xab::metadata::Metadata>"
        ));
    }
}
