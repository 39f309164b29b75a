//! Fuzz-style property test of the JSON answers the gateway reads from storage nodes (a blob's
//! status, `committee::BlobStatus::parse`) and from a publisher (`PublisherAnswer::blob_id`):
//! valid answers mutated at the byte and the JSON level parse to what they say or to nothing,
//! never a panic. (Node BCS bodies are fuzzed in `codec/tests/fuzz_codec.rs`.)

use codec::BlobId;
use gateway::committee::BlobStatus;
use gateway::publisher::PublisherAnswer;
use http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Value};

fn status() -> impl Strategy<Value = (Value, BlobStatus)> {
    let epoch = prop_oneof![Just(None), any::<u32>().prop_map(Some)];
    prop_oneof![
        Just((json!("nonexistent"), BlobStatus::Nonexistent)),
        Just((json!({"invalid": {"event": {}}}), BlobStatus::Invalid)),
        (any::<u32>(), any::<bool>(), epoch.clone(), any::<bool>()).prop_map(
            |(end_epoch, certified, initial, camel)| {
                let data = if camel {
                    json!({"permanent": {"endEpoch": end_epoch, "isCertified": certified,
                        "initialCertifiedEpoch": initial}})
                } else {
                    json!({"permanent": {"end_epoch": end_epoch, "is_certified": certified,
                        "initial_certified_epoch": initial}})
                };
                (
                    data,
                    BlobStatus::Permanent {
                        end_epoch,
                        certified,
                        initial_certified_epoch: initial,
                    },
                )
            }
        ),
        epoch.prop_map(|initial| (
            json!({"deletable": {"initialCertifiedEpoch": initial}}),
            BlobStatus::Deletable {
                initial_certified_epoch: initial
            }
        )),
    ]
}

fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(4_294_967_296u64)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!("7")),
        Just(json!([])),
        Just(json!({})),
        Just(json!(true)),
        "\\PC{0,20}".prop_map(Value::String),
    ]
}

/// Replace the value at a random depth of `value` with `with`.
fn replace_somewhere(value: &mut Value, path: &[prop::sample::Index], with: Value) {
    let Some((first, rest)) = path.split_first() else {
        *value = with;
        return;
    };
    let child = match value {
        Value::Object(map) if !map.is_empty() => {
            let n = map.len();
            map.values_mut().nth(first.index(n))
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            items.get_mut(first.index(n))
        }
        _ => None,
    };
    match child {
        Some(child) => replace_somewhere(child, rest, with),
        None => *value = with,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn blob_statuses_parse_to_what_they_say((data, want) in status()) {
        let body = serde_json::to_vec(&json!({"success": {"code": 200, "data": data}})).unwrap();
        prop_assert_eq!(BlobStatus::parse(&body), Some(want));
    }

    #[test]
    fn mutated_blob_statuses_never_panic(
        (data, _) in status(),
        path in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        with in hostile(),
        cut in any::<prop::sample::Index>(),
        flip in (any::<prop::sample::Index>(), 1u8..=255),
    ) {
        let mut answer = json!({"success": {"code": 200, "data": data}});
        replace_somewhere(&mut answer, &path, with);
        let body = serde_json::to_vec(&answer).unwrap();
        let _ = BlobStatus::parse(&body);
        let _ = BlobStatus::parse(&body[..cut.index(body.len())]);
        let mut flipped = body.clone();
        let at = flip.0.index(flipped.len());
        flipped[at] ^= flip.1;
        let _ = BlobStatus::parse(&flipped);
    }

    #[test]
    fn publisher_answers_name_a_blob_only_when_they_hold_one(
        id in any::<[u8; 32]>(),
        created in any::<bool>(),
        path in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        with in hostile(),
    ) {
        let id = BlobId(id);
        let json = if created {
            json!({"newlyCreated": {"blobObject": {"blobId": id.to_string(), "size": 5}}})
        } else {
            json!({"alreadyCertified": {"blobId": id.to_string(), "endEpoch": 3}})
        };
        let answer = PublisherAnswer { status: StatusCode::OK, json: json.clone() };
        prop_assert_eq!(answer.blob_id(), Some(id));
        let mut broken = json;
        replace_somewhere(&mut broken, &path, with);
        let found = PublisherAnswer { status: StatusCode::OK, json: broken }.blob_id();
        // A damaged answer names the blob or none; never another one.
        prop_assert!(found.is_none() || found == Some(id));
    }

    #[test]
    fn random_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = BlobStatus::parse(&body);
    }
}

/// Deep nesting is refused by the JSON reader's recursion limit, not a stack overflow.
#[test]
fn deeply_nested_answers_are_refused() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(BlobStatus::parse(body.as_bytes()), None);
}
