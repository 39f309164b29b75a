//! The `sui.rpc.v2` LedgerService messages the read path uses, written by hand with `prost`'s
//! derive (field numbers from the vendored protos in MystenLabs/sui-rust-sdk,
//! `crates/sui-rpc/vendored/proto/sui/rpc/v2/{ledger_service,object,bcs,owner}.proto`), so no
//! build script or `protoc` is needed. Fields the read path never looks at are left out; protobuf
//! decoders skip unknown fields, so answers that carry them still decode.

/// `/sui.rpc.v2.LedgerService/...` paths.
pub mod path {
    pub const GET_SERVICE_INFO: &str = "/sui.rpc.v2.LedgerService/GetServiceInfo";
    pub const GET_OBJECT: &str = "/sui.rpc.v2.LedgerService/GetObject";
    pub const BATCH_GET_OBJECTS: &str = "/sui.rpc.v2.LedgerService/BatchGetObjects";
}

/// The read mask the gateway sends: enough to check each object's identity and type and decode
/// its contents.
pub const READ_MASK: [&str; 4] = ["object_id", "version", "object_type", "contents"];

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServiceInfoRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServiceInfoResponse {
    /// Base58 digest of the genesis checkpoint.
    #[prost(string, optional, tag = "1")]
    pub chain_id: Option<String>,
    /// `mainnet`, `testnet`, ...
    #[prost(string, optional, tag = "2")]
    pub chain: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub epoch: Option<u64>,
    #[prost(uint64, optional, tag = "4")]
    pub checkpoint_height: Option<u64>,
    #[prost(message, optional, tag = "5")]
    pub timestamp: Option<Timestamp>,
    #[prost(uint64, optional, tag = "6")]
    pub lowest_available_checkpoint: Option<u64>,
    #[prost(uint64, optional, tag = "7")]
    pub lowest_available_checkpoint_objects: Option<u64>,
    #[prost(string, optional, tag = "8")]
    pub server: Option<String>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.FieldMask`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldMask {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

impl FieldMask {
    pub fn of(paths: &[&str]) -> Self {
        Self {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// Whether `field` (a top-level field name) is selected, also through a nested path
    /// (`owner.version` selects `owner`).
    pub fn selects(&self, field: &str) -> bool {
        self.paths.iter().any(|p| {
            p.split(',').any(|p| {
                let p = p.trim();
                p == field
                    || p.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with('.'))
            })
        })
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetObjectRequest {
    #[prost(string, optional, tag = "1")]
    pub object_id: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub version: Option<u64>,
    #[prost(message, optional, tag = "3")]
    pub read_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetObjectResponse {
    #[prost(message, optional, tag = "1")]
    pub object: Option<Object>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetObjectsRequest {
    #[prost(message, repeated, tag = "1")]
    pub requests: Vec<GetObjectRequest>,
    #[prost(message, optional, tag = "2")]
    pub read_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchGetObjectsResponse {
    #[prost(message, repeated, tag = "1")]
    pub objects: Vec<GetObjectResult>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetObjectResult {
    #[prost(oneof = "get_object_result::Result", tags = "1, 2")]
    pub result: Option<get_object_result::Result>,
}

pub mod get_object_result {
    // An object result is the common case; boxing it would cost an allocation per object.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        #[prost(message, tag = "1")]
        Object(super::Object),
        #[prost(message, tag = "2")]
        Error(super::Status),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Object {
    #[prost(message, optional, tag = "1")]
    pub bcs: Option<Bcs>,
    #[prost(string, optional, tag = "2")]
    pub object_id: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub version: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub digest: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub owner: Option<Owner>,
    #[prost(string, optional, tag = "6")]
    pub object_type: Option<String>,
    #[prost(bool, optional, tag = "7")]
    pub has_public_transfer: Option<bool>,
    /// The bare BCS of the Move struct (first 32 bytes: its UID).
    #[prost(message, optional, tag = "8")]
    pub contents: Option<Bcs>,
    #[prost(string, optional, tag = "10")]
    pub previous_transaction: Option<String>,
    #[prost(uint64, optional, tag = "11")]
    pub storage_rebate: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bcs {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Owner {
    /// `OwnerKind`: 1 address, 2 object, 3 shared, 4 immutable, 5 consensus address.
    #[prost(int32, optional, tag = "1")]
    pub kind: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub address: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    pub version: Option<u64>,
}

/// `Owner.kind` values.
pub mod owner_kind {
    pub const ADDRESS: i32 = 1;
    pub const OBJECT: i32 = 2;
    pub const SHARED: i32 = 3;
    pub const IMMUTABLE: i32 = 4;
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Hand-assembled wire bytes, field by field, so a wrong tag in a derive shows up here.
    #[test]
    fn messages_use_the_protos_field_numbers() {
        let request = GetObjectRequest {
            object_id: Some("0x2".into()),
            version: None,
            read_mask: Some(FieldMask::of(&["contents"])),
        };
        // 1: string "0x2"; 3: message { 1: string "contents" }.
        let want = [
            0x0a, 3, b'0', b'x', b'2', 0x1a, 10, 0x0a, 8, b'c', b'o', b'n', b't', b'e', b'n', b't',
            b's',
        ];
        assert_eq!(request.encode_to_vec(), want);

        let object = Object {
            object_type: Some("t".into()),
            contents: Some(Bcs {
                name: None,
                value: Some(vec![9]),
            }),
            ..Object::default()
        };
        // 6: string "t"; 8: message { 2: bytes [9] }.
        assert_eq!(object.encode_to_vec(), [0x32, 1, b't', 0x42, 3, 0x12, 1, 9]);

        let result = GetObjectResult {
            result: Some(get_object_result::Result::Error(Status {
                code: 5,
                message: String::new(),
                details: Vec::new(),
            })),
        };
        assert_eq!(result.encode_to_vec(), [0x12, 2, 0x08, 5]);
        assert_eq!(
            GetObjectResult::decode(&[0x12u8, 2, 0x08, 5][..]).unwrap(),
            result
        );
    }

    #[test]
    fn masks_select_top_level_and_nested_paths() {
        let mask = FieldMask::of(&["owner.version", "contents,object_type"]);
        assert!(mask.selects("owner"));
        assert!(mask.selects("contents"));
        assert!(mask.selects("object_type"));
        assert!(!mask.selects("bcs"));
        assert!(!mask.selects("own"));
    }
}
