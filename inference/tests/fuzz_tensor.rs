//! Fuzz-style property tests for the inference crate's parsers of untrusted bytes: the
//! `POST /v1/inference/{model}` body (tensor JSON, `data` or `data_b64`) and a proof blob read
//! back from Walrus (`verify-proof`: anyone can store a blob that claims to be a proof).
//!
//! Inputs are valid bodies mutated at the byte level (truncated, extended, bytes flipped,
//! inserted or removed) and at the JSON level (a shape, dtype or data replaced by a hostile
//! value: a dimension of 2^62, a negative one, the wrong type, a huge base64 string). Every case
//! checks that parsing returns instead of panicking, that its largest single allocation is
//! bounded by the body's size (a declared shape allocates nothing by itself), that every tensor
//! it accepts holds exactly `product(shape)` elements, and that valid requests round-trip in both
//! encodings. Case counts keep the file to seconds in the dev profile.

use codec::BlobId;
use fuzzkit::{largest_allocation, mutated, total_allocation, Edits, Mutation};
use inference::{
    DType, EngineTag, Identity, InferenceRequest, ProofBlob, ProofMode, ProofRecord, RequestInputs,
    RequestLimits, TensorData, TensorEncoding, TensorValues, Tensors,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Records the largest single allocation made on the current thread, and the bytes allocated in
/// all (frees not subtracted), for `largest_allocation` and `total_allocation`.
#[global_allocator]
static ALLOCATOR: fuzzkit::AllocationProbe = fuzzkit::AllocationProbe;

/// What parsing may reserve for an `n`-byte body: JSON numbers become 16-byte scalars in a
/// vector that grows by doubling, then 8-byte elements; slack for messages.
fn allocation_bound(n: usize) -> usize {
    64 * n + 65_536
}

/// Edits of JSON bodies: inserted bytes are random or JSON's own punctuation and digits.
fn mutation() -> impl Strategy<Value = Mutation> {
    Edits {
        tokens: b"{}[],:\"0123456789-e.",
        ..Edits::default()
    }
    .strategy()
}

/// A tensor of any dtype and a small shape; floats finite when `finite` (JSON numbers cannot
/// carry the rest), any bits otherwise.
fn tensor(finite: bool) -> impl Strategy<Value = TensorData> {
    let shape = prop::collection::vec(0usize..4, 0..4);
    (shape, 0usize..6, any::<u64>()).prop_flat_map(move |(shape, dtype, _)| {
        let n: usize = shape.iter().product();
        let values = match dtype {
            0 => prop::collection::vec(any::<u32>(), n)
                .prop_map(move |bits| {
                    TensorValues::F32(
                        bits.into_iter()
                            .map(f32::from_bits)
                            .map(|x| if finite && !x.is_finite() { 1.5 } else { x })
                            .collect(),
                    )
                })
                .boxed(),
            1 => prop::collection::vec(any::<u64>(), n)
                .prop_map(move |bits| {
                    TensorValues::F64(
                        bits.into_iter()
                            .map(f64::from_bits)
                            .map(|x| if finite && !x.is_finite() { -2.25 } else { x })
                            .collect(),
                    )
                })
                .boxed(),
            2 => prop::collection::vec(any::<i64>(), n)
                .prop_map(TensorValues::I64)
                .boxed(),
            3 => prop::collection::vec(any::<i32>(), n)
                .prop_map(TensorValues::I32)
                .boxed(),
            4 => prop::collection::vec(any::<u8>(), n)
                .prop_map(TensorValues::U8)
                .boxed(),
            _ => prop::collection::vec(any::<bool>(), n)
                .prop_map(TensorValues::Bool)
                .boxed(),
        };
        let shape = shape.clone();
        values.prop_map(move |v| TensorData::new(shape.clone(), v).expect("consistent"))
    })
}

fn tensors(finite: bool) -> impl Strategy<Value = Tensors> {
    prop::collection::btree_map("[a-z_]{1,6}", tensor(finite), 1..4)
}

fn request(finite: bool) -> impl Strategy<Value = InferenceRequest> {
    (
        prop_oneof![
            tensors(finite).prop_map(RequestInputs::Named),
            tensor(finite).prop_map(RequestInputs::Unnamed),
        ],
        prop::option::of(prop_oneof![Just(ProofMode::Inline), Just(ProofMode::Store)]),
        prop_oneof![Just(TensorEncoding::Json), Just(TensorEncoding::Base64)],
    )
        .prop_map(|(inputs, proof, output_encoding)| InferenceRequest {
            inputs,
            proof,
            output_encoding,
        })
}

/// Every accepted tensor holds exactly `product(shape)` elements, within the limits.
fn check_tensor(t: &TensorData, limits: &RequestLimits) -> Result<(), TestCaseError> {
    let count = t
        .shape()
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d));
    prop_assert_eq!(count, Some(t.len()), "shape {:?}", t.shape());
    prop_assert!(t.shape().len() <= limits.max_rank);
    prop_assert!(t.len() <= limits.max_elements);
    Ok(())
}

fn check_request(body: &[u8], limits: &RequestLimits) -> Result<(), TestCaseError> {
    let (parsed, largest) = largest_allocation(|| InferenceRequest::from_json(body, limits));
    prop_assert!(largest <= allocation_bound(body.len()), "{largest} bytes");
    if let Ok(request) = parsed {
        match &request.inputs {
            RequestInputs::Named(m) => {
                prop_assert!(m.len() <= limits.max_inputs);
                let mut total = 0;
                for t in m.values() {
                    check_tensor(t, limits)?;
                    total += t.len();
                }
                prop_assert!(total <= limits.max_elements);
            }
            RequestInputs::Unnamed(t) => check_tensor(t, limits)?,
        }
        // What was accepted writes back to a body that reads the same (NaN bits aside: JSON
        // carries them as null).
        let again = InferenceRequest::from_json(&request.to_json(TensorEncoding::Base64), limits);
        prop_assert!(again.is_ok(), "{:?}", again);
    }
    Ok(())
}

fn small_limits() -> RequestLimits {
    RequestLimits {
        max_inputs: 3,
        max_rank: 3,
        max_elements: 40,
    }
}

/// A JSON value a hostile client might put where a shape, dtype or data belongs.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!([4611686018427387904u64])),
        Just(json!([u64::MAX])),
        Just(json!([0, 4611686018427387904u64])),
        Just(json!([4611686018427387904u64, 0])),
        Just(json!([65536, 65536, 65536, 65536])),
        Just(json!([-1])),
        Just(json!([1.5])),
        Just(json!([])),
        Just(json!([1, 1, 1, 1, 1, 1, 1, 1, 1, 1])),
        Just(json!("f32")),
        Just(json!("f16")),
        Just(json!(null)),
        Just(json!({})),
        Just(json!([null, true, 1e308, -1e308, 1e39, -0.0])),
        Just(json!([1u64 << 63, -(1i64 << 62), 256, -1])),
        Just(json!("AAAA")),
        Just(json!("AAA=")),
        Just(json!("////")),
        Just(json!("A===")),
        Just(json!("=")),
        "[A-Za-z0-9+/=]{0,64}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!([n])),
    ]
}

/// Replace one field of one tensor (or of the envelope) of `body` with `value`.
fn edit(mut body: Value, which: &prop::sample::Index, field: usize, value: Value) -> Value {
    const FIELDS: [&str; 6] = [
        "shape",
        "dtype",
        "data",
        "data_b64",
        "proof",
        "output_encoding",
    ];
    let field = FIELDS[field % FIELDS.len()];
    if field == "proof" || field == "output_encoding" {
        body[field] = value;
        return body;
    }
    let inputs = &mut body["inputs"];
    let single = inputs.get("dtype").is_some_and(Value::is_string);
    let target = if single {
        Some(inputs)
    } else {
        inputs.as_object_mut().and_then(|m| {
            let n = m.len();
            (n > 0)
                .then(|| m.values_mut().nth(which.index(n)))
                .flatten()
        })
    };
    if let Some(Value::Object(t)) = target {
        t.insert(field.to_owned(), value);
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip_in_both_encodings(req in request(true), bits in request(false)) {
        let limits = RequestLimits::default();
        prop_assert_eq!(
            InferenceRequest::from_json(&req.to_json(TensorEncoding::Json), &limits).unwrap(),
            req.clone()
        );
        let back = InferenceRequest::from_json(&req.to_json(TensorEncoding::Base64), &limits).unwrap();
        prop_assert_eq!(back, req);
        // base64 keeps every bit, NaN payloads and infinities included.
        let back = InferenceRequest::from_json(&bits.to_json(TensorEncoding::Base64), &limits).unwrap();
        let bytes = |r: &InferenceRequest| match &r.inputs {
            RequestInputs::Named(m) => m.values().map(TensorData::le_bytes).collect::<Vec<_>>(),
            RequestInputs::Unnamed(t) => vec![t.le_bytes()],
        };
        prop_assert_eq!(bytes(&back), bytes(&bits));
    }

    #[test]
    fn mutated_request_bodies_never_panic_or_overallocate(
        req in request(true),
        base64 in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let encoding = if base64 { TensorEncoding::Base64 } else { TensorEncoding::Json };
        let body = mutated(req.to_json(encoding), &mutations);
        check_request(&body, &RequestLimits::default())?;
        check_request(&body, &small_limits())?;
    }

    #[test]
    fn hostile_fields_are_refused_or_consistent(
        req in request(true),
        base64 in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..6, hostile_value()), 1..3),
    ) {
        let encoding = if base64 { TensorEncoding::Base64 } else { TensorEncoding::Json };
        let mut body: Value = serde_json::from_slice(&req.to_json(encoding)).unwrap();
        for (which, field, value) in edits {
            body = edit(body, &which, field, value);
        }
        let body = serde_json::to_vec(&body).unwrap();
        check_request(&body, &RequestLimits::default())?;
        check_request(&body, &small_limits())?;
    }

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check_request(&body, &RequestLimits::default())?;
        let _ = ProofBlob::from_bytes(&body);
    }
}

fn proof_blob(outputs: Tensors, inputs: &Tensors) -> ProofBlob {
    let identity = Identity::from_seed([7; 32]);
    let record = ProofRecord::new(
        BlobId([3; 32]),
        &EngineTag::local(),
        inputs,
        &outputs,
        &identity.public_key(),
    );
    ProofBlob {
        outputs,
        proof: identity.sign(record),
    }
}

/// A proof blob read back from Walrus: any tensor it yields is consistent, and checking its
/// signature and hashing its outputs never panic.
fn check_proof_blob(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (parsed, largest) = largest_allocation(|| ProofBlob::from_bytes(bytes));
    prop_assert!(largest <= allocation_bound(bytes.len()), "{largest} bytes");
    if let Ok(blob) = parsed {
        for t in blob.outputs.values() {
            let count = t
                .shape()
                .iter()
                .try_fold(1usize, |acc, d| acc.checked_mul(*d));
            prop_assert_eq!(count, Some(t.len()), "shape {:?}", t.shape());
        }
        let _ = blob.proof.verify_signature();
        let _ = blob.proof.check_signer("00");
        let _ = inference::tensor::canonical_hash(&blob.outputs);
    }
    Ok(())
}

proptest! {
    // Each case signs a record (ed25519): fewer cases.
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn proof_blobs_round_trip_and_verify(outputs in tensors(false), inputs in tensors(true)) {
        let blob = proof_blob(outputs, &inputs);
        let back = ProofBlob::from_bytes(&blob.to_bytes()).unwrap();
        prop_assert!(back.proof.verify_signature().is_ok());
        prop_assert_eq!(&back.proof, &blob.proof);
        prop_assert_eq!(back.outputs.len(), blob.outputs.len());
        for (a, b) in back.outputs.values().zip(blob.outputs.values()) {
            prop_assert!(a.bitwise_eq(b));
        }
    }

    #[test]
    fn mutated_proof_blobs_never_panic_or_overallocate(
        outputs in tensors(false),
        mutations in prop::collection::vec(mutation(), 1..4),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, hostile_value()), 0..2),
    ) {
        let blob = proof_blob(outputs, &Tensors::new());
        check_proof_blob(&mutated(blob.to_bytes(), &mutations))?;
        let mut value: Value = serde_json::from_slice(&blob.to_bytes()).unwrap();
        for (which, field, hostile) in edits {
            let wrapped = json!({ "inputs": value["outputs"].clone() });
            value["outputs"] = edit(wrapped, &which, field, hostile)["inputs"].clone();
        }
        check_proof_blob(&serde_json::to_vec(&value).unwrap())?;
    }
}

/// Regression (found by `mutated_proof_blobs_never_panic_or_overallocate`): a proof blob's
/// tensors are read without request limits, and `data_b64` sized its expectation as
/// `count * size_of(dtype)` unchecked: a shape of 2^62 f64 overflowed (a panic in debug builds;
/// in release it wrapped to 0 and an empty string was accepted as a tensor of 2^62 elements).
#[test]
fn a_proof_blob_shape_that_overflows_the_byte_count_is_refused() {
    let blob = proof_blob(Tensors::new(), &Tensors::new());
    for (shape, dtype) in [
        (json!([4611686018427387904u64]), "f64"),
        (json!([2305843009213693952u64, 2]), "i64"),
        (json!([4611686018427387904u64]), "f32"),
        (json!([u64::MAX]), "u8"),
    ] {
        let mut value: Value = serde_json::from_slice(&blob.to_bytes()).unwrap();
        value["outputs"] = json!({ "y": { "shape": shape, "dtype": dtype, "data_b64": "" } });
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(
            ProofBlob::from_bytes(&bytes).is_err(),
            "shape {shape} of {dtype} with no data was accepted"
        );
        // The same tensor in a request is refused by the element limit.
        let body = json!({ "inputs": { "shape": shape, "dtype": dtype, "data_b64": "" } });
        assert!(InferenceRequest::from_json(
            &serde_json::to_vec(&body).unwrap(),
            &RequestLimits::default()
        )
        .is_err());
    }
}

/// Regression (found by `requests_round_trip_in_both_encodings`): JSON numbers must parse to the
/// exact f64 they name; serde_json's default fast path read this shortest form one ULP low, so
/// the proof committed to an input the client never sent.
#[test]
fn json_numbers_parse_to_the_exact_float() {
    for x in [
        5.966871283657502e-184f64,
        2.2250738585072014e-308,
        1.7976931348623157e308,
        0.1,
    ] {
        let body = format!(r#"{{"inputs":{{"shape":[1],"dtype":"f64","data":[{x:e}]}}}}"#);
        let request =
            InferenceRequest::from_json(body.as_bytes(), &RequestLimits::default()).unwrap();
        let RequestInputs::Unnamed(t) = request.inputs else {
            panic!("one unnamed input")
        };
        assert_eq!(t.values(), &TensorValues::F64(vec![x]), "{x:e}");
    }
}

/// Regression: `RequestLimits` promise that network input never allocates past them, but a
/// `data` array was read whole (16 bytes per element, doubling) before its length was compared
/// with the shape: a 2 MB body of `0,0,...` reserved 16 MiB for a tensor of 10 elements, and a
/// 64 MiB body a gigabyte. The array is now read against the shape's count and refused as soon
/// as it runs past it.
#[test]
fn arrays_past_their_limits_are_refused_while_they_are_read() {
    let limits = RequestLimits {
        max_inputs: 4,
        max_rank: 4,
        max_elements: 1000,
    };
    for (shape, key_order_data_first) in [(10, false), (1000, false), (10, true)] {
        let data = vec!["0"; 1_000_000].join(",");
        let body = if key_order_data_first {
            format!(r#"{{"inputs":{{"a":{{"data":[{data}],"dtype":"f32","shape":[{shape}]}}}}}}"#)
        } else {
            format!(r#"{{"inputs":{{"a":{{"shape":[{shape}],"dtype":"f32","data":[{data}]}}}}}}"#)
        };
        let (result, largest) =
            largest_allocation(|| InferenceRequest::from_json(body.as_bytes(), &limits));
        let err = result.unwrap_err().to_string();
        assert!(err.contains("more than"), "{err}");
        assert!(largest <= 256 << 10, "shape [{shape}]: {largest} bytes");
    }
    // The same for a shape with more axes than the rank limit allows.
    let axes = vec!["1"; 1_000_000].join(",");
    let body = format!(r#"{{"inputs":{{"a":{{"shape":[{axes}],"dtype":"f32","data":[]}}}}}}"#);
    let (result, largest) =
        largest_allocation(|| InferenceRequest::from_json(body.as_bytes(), &limits));
    let err = result.unwrap_err();
    assert!(
        matches!(err, inference::InferenceError::TooLarge(_)),
        "{err}"
    );
    assert!(largest <= 256 << 10, "a long shape: {largest} bytes");
    // And for a million input names: refused before the map of names is built.
    let names: Vec<String> = (0..1_000_000).map(|i| format!(r#""i{i}":0"#)).collect();
    let body = format!(r#"{{"inputs":{{{}}}}}"#, names.join(","));
    let (result, total) =
        total_allocation(|| InferenceRequest::from_json(body.as_bytes(), &limits));
    let err = result.unwrap_err();
    assert!(
        matches!(err, inference::InferenceError::TooLarge(_)),
        "{err}"
    );
    assert!(
        total <= 256 << 10,
        "a million names: {total} bytes allocated"
    );
}

#[test]
fn every_dtype_name_parses() {
    for d in [
        DType::F32,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::U8,
        DType::Bool,
    ] {
        assert_eq!(DType::parse(d.as_str()), Some(d));
    }
}

/// The probe itself: a large allocation is seen, so the bounds above can fail.
#[test]
fn the_allocation_probe_sees_large_allocations() {
    let (v, largest) = largest_allocation(|| vec![0u8; 1 << 20]);
    assert_eq!(v.len(), 1 << 20);
    assert!(largest >= 1 << 20);
}
