//! Checking a request against a model's declared inputs and reducing it to an input signature:
//! the (name, dtype, shape) of every input after padding symbolic axes up to a bucket length.
//!
//! The signature is the plan cache key (with the model's Blob ID): concrete shapes give tract
//! concrete plans, which are faster, and buckets keep a model to a handful of plans instead of one
//! per request length. Only symbols in [`ModelSpec::paddable`] are padded (tract's shape analysis
//! shows every output carries the axis, so it can be sliced back). Padding is with zeros (`false`)
//! at the end of the axis; output axes with the same symbol are sliced back to the request's
//! length, so for models whose rows or positions are independent (a batch axis, or a sequence
//! axis masked by an attention-mask input that is padded with zeros too) the answer is the one
//! an unpadded run gives.

use std::collections::{BTreeMap, HashMap};

use crate::error::InferenceError;
use crate::model::{Dim, ModelSpec};
use crate::tensor::{DType, RequestInputs, TensorData, Tensors};

/// The concrete (padded) inputs a plan is built for, in the model's input order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputSignature {
    pub inputs: Vec<(String, DType, Vec<usize>)>,
}

/// A request checked against a model and padded to its signature.
pub(crate) struct Prepared {
    pub signature: InputSignature,
    /// Inputs in the model's order, padded to the signature's shapes.
    pub padded: Vec<TensorData>,
    /// The inputs as the caller sent them (named), which the proof commits to.
    pub inputs: Tensors,
    /// symbol → (request length, padded length), for slicing outputs back.
    pub symbols: HashMap<String, (usize, usize)>,
}

/// The smallest bucket >= `len`, or `len` itself past the largest bucket.
pub fn bucket_for(len: usize, buckets: &[usize]) -> usize {
    buckets
        .iter()
        .copied()
        .filter(|b| *b >= len)
        .min()
        .unwrap_or(len)
}

/// Check `request` against `spec` (names, dtypes, ranks, fixed dims, consistent symbols) and pad
/// it to its bucketed signature. Every error names the input.
pub(crate) fn prepare(
    spec: &ModelSpec,
    request: RequestInputs,
    buckets: &[usize],
    max_elements: usize,
) -> Result<Prepared, InferenceError> {
    let inputs = match request {
        RequestInputs::Named(map) => map,
        RequestInputs::Unnamed(t) => match spec.inputs.as_slice() {
            [only] => BTreeMap::from([(only.name.clone(), t)]),
            many => {
                return Err(InferenceError::BadRequest(format!(
                    "the model has {} inputs ({}); name each one",
                    many.len(),
                    names(spec)
                )))
            }
        },
    };
    if let Some(extra) = inputs
        .keys()
        .find(|k| !spec.inputs.iter().any(|i| &i.name == *k))
    {
        return Err(InferenceError::bad_input(
            extra.clone(),
            format!(
                "the model has no such input; its inputs are: {}",
                names(spec)
            ),
        ));
    }

    // First pass: check every input and bind every symbol to one length.
    let mut bound: HashMap<String, (usize, String)> = HashMap::new();
    for input in &spec.inputs {
        let t = inputs
            .get(&input.name)
            .ok_or_else(|| InferenceError::bad_input(&input.name, "missing"))?;
        if t.dtype() != input.dtype {
            return Err(InferenceError::bad_input(
                &input.name,
                format!("dtype is {}, the model expects {}", t.dtype(), input.dtype),
            ));
        }
        if t.shape().len() != input.dims.len() {
            return Err(InferenceError::bad_input(
                &input.name,
                format!(
                    "shape {:?} has rank {}, the model expects rank {} ({})",
                    t.shape(),
                    t.shape().len(),
                    input.dims.len(),
                    describe(&input.dims)
                ),
            ));
        }
        for (axis, (dim, &len)) in input.dims.iter().zip(t.shape()).enumerate() {
            match dim {
                Dim::Fixed(n) if *n != len => {
                    return Err(InferenceError::bad_input(
                        &input.name,
                        format!(
                            "axis {axis} is {len}, the model expects {n} (shape {})",
                            describe(&input.dims)
                        ),
                    ))
                }
                Dim::Symbol(s) => match bound.get(s) {
                    Some((other, from)) if *other != len => {
                        return Err(InferenceError::bad_input(
                            &input.name,
                            format!(
                            "axis {axis} (`{s}`) is {len}, but `{s}` is {other} in input `{from}`"
                        ),
                        ))
                    }
                    Some(_) => {}
                    None => {
                        bound.insert(s.clone(), (len, input.name.clone()));
                    }
                },
                _ => {}
            }
        }
    }

    let symbols: HashMap<String, (usize, usize)> = bound
        .into_iter()
        .map(|(s, (len, _))| {
            let padded = if spec.paddable.contains(&s) {
                bucket_for(len, buckets)
            } else {
                len
            };
            (s, (len, padded))
        })
        .collect();
    let mut signature = Vec::with_capacity(spec.inputs.len());
    let mut padded = Vec::with_capacity(spec.inputs.len());
    let mut total = 0usize;
    for input in &spec.inputs {
        let t = &inputs[&input.name];
        let shape: Vec<usize> = input
            .dims
            .iter()
            .zip(t.shape())
            .map(|(dim, &len)| match dim {
                Dim::Symbol(s) => symbols[s].1,
                _ => len,
            })
            .collect();
        // Bound before allocating: padding grows a tensor, and a zero-length axis padded to 1
        // turns the other axes' lengths into real elements.
        let span = shape
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul((*d).max(1)));
        total = span
            .and_then(|n| total.checked_add(n))
            .unwrap_or(usize::MAX);
        if total > max_elements {
            return Err(InferenceError::TooLarge(format!(
                "padded to bucket lengths, the inputs exceed {max_elements} elements (at `{}`)",
                input.name
            )));
        }
        padded.push(t.padded(&shape));
        signature.push((input.name.clone(), input.dtype, shape));
    }
    Ok(Prepared {
        signature: InputSignature { inputs: signature },
        padded,
        inputs,
        symbols,
    })
}

fn names(spec: &ModelSpec) -> String {
    spec.inputs
        .iter()
        .map(|i| format!("`{}`", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => s.clone(),
            Dim::Free => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InputSpec;
    use crate::tensor::TensorValues;

    fn spec() -> ModelSpec {
        ModelSpec {
            inputs: vec![
                InputSpec {
                    name: "ids".into(),
                    dtype: DType::I64,
                    dims: vec![Dim::Symbol("batch".into()), Dim::Symbol("seq".into())],
                },
                InputSpec {
                    name: "mask".into(),
                    dtype: DType::Bool,
                    dims: vec![Dim::Symbol("batch".into()), Dim::Symbol("seq".into())],
                },
                InputSpec {
                    name: "temp".into(),
                    dtype: DType::F32,
                    dims: vec![Dim::Fixed(1)],
                },
            ],
            outputs: vec![],
            paddable: ["batch".to_string(), "seq".to_string()].into(),
        }
    }

    fn request(batch: usize, seq: usize, seq_mask: usize) -> RequestInputs {
        let mut m = Tensors::new();
        m.insert(
            "ids".into(),
            TensorData::new(vec![batch, seq], TensorValues::I64(vec![1; batch * seq])).unwrap(),
        );
        m.insert(
            "mask".into(),
            TensorData::new(
                vec![batch, seq_mask],
                TensorValues::Bool(vec![true; batch * seq_mask]),
            )
            .unwrap(),
        );
        m.insert(
            "temp".into(),
            TensorData::new(vec![1], TensorValues::F32(vec![0.5])).unwrap(),
        );
        RequestInputs::Named(m)
    }

    #[test]
    fn buckets_round_up_and_pass_through_past_the_largest() {
        let b = [1, 2, 4, 8];
        assert_eq!(bucket_for(0, &b), 1);
        assert_eq!(bucket_for(3, &b), 4);
        assert_eq!(bucket_for(8, &b), 8);
        assert_eq!(bucket_for(9, &b), 9);
        assert_eq!(bucket_for(5, &[]), 5);
    }

    #[test]
    fn pads_symbols_consistently() {
        let p = prepare(&spec(), request(3, 5, 5), &[1, 4, 16], 1 << 20).unwrap();
        assert_eq!(
            p.signature.inputs,
            vec![
                ("ids".into(), DType::I64, vec![4, 16]),
                ("mask".into(), DType::Bool, vec![4, 16]),
                ("temp".into(), DType::F32, vec![1]),
            ]
        );
        assert_eq!(p.symbols["seq"], (5, 16));
        assert_eq!(p.inputs["ids"].shape(), &[3, 5]);
        assert_eq!(p.padded[1].shape(), &[4, 16]);
        // Two lengths in one bucket share a signature (one plan).
        let q = prepare(&spec(), request(4, 9, 9), &[1, 4, 16], 1 << 20).unwrap();
        assert_eq!(p.signature, q.signature);
        // A symbol the analysis could not prove safe is never padded.
        let mut strict = spec();
        strict.paddable.remove("seq");
        let r = prepare(&strict, request(3, 5, 5), &[1, 4, 16], 1 << 20).unwrap();
        assert_eq!(r.signature.inputs[0].2, vec![4, 5]);
    }

    #[test]
    fn padding_is_bounded_before_allocating() {
        // 3x5 + 3x5 + 1 = 31 elements as sent; 4x16 twice + 1 = 129 padded.
        assert!(prepare(&spec(), request(3, 5, 5), &[4, 16], 129).is_ok());
        let err = prepare(&spec(), request(3, 5, 5), &[4, 16], 128)
            .err()
            .unwrap();
        assert_eq!(err.http_status(), 413, "{err}");
        // A zero-length batch padded to 1 cannot turn a long axis into an allocation.
        let err = prepare(&spec(), request(0, 1 << 30, 1 << 30), &[1], 1 << 20)
            .err()
            .unwrap();
        assert_eq!(err.http_status(), 413, "{err}");
    }

    #[test]
    fn errors_name_the_input() {
        let cases: Vec<(RequestInputs, &str, &str)> = vec![
            (request(2, 3, 4), "mask", "`seq` is 3"),
            (
                {
                    let RequestInputs::Named(mut m) = request(1, 1, 1) else {
                        unreachable!()
                    };
                    m.remove("temp");
                    RequestInputs::Named(m)
                },
                "temp",
                "missing",
            ),
            (
                {
                    let RequestInputs::Named(mut m) = request(1, 1, 1) else {
                        unreachable!()
                    };
                    m.insert("tmep".into(), m["temp"].clone());
                    RequestInputs::Named(m)
                },
                "tmep",
                "no such input",
            ),
            (
                {
                    let RequestInputs::Named(mut m) = request(1, 1, 1) else {
                        unreachable!()
                    };
                    m.insert(
                        "temp".into(),
                        TensorData::new(vec![1], TensorValues::F64(vec![0.5])).unwrap(),
                    );
                    RequestInputs::Named(m)
                },
                "temp",
                "expects f32",
            ),
            (
                {
                    let RequestInputs::Named(mut m) = request(1, 1, 1) else {
                        unreachable!()
                    };
                    m.insert(
                        "temp".into(),
                        TensorData::new(vec![2], TensorValues::F32(vec![0.5, 1.0])).unwrap(),
                    );
                    RequestInputs::Named(m)
                },
                "temp",
                "axis 0 is 2",
            ),
            (
                {
                    let RequestInputs::Named(mut m) = request(1, 1, 1) else {
                        unreachable!()
                    };
                    m.insert(
                        "ids".into(),
                        TensorData::new(vec![1], TensorValues::I64(vec![1])).unwrap(),
                    );
                    RequestInputs::Named(m)
                },
                "ids",
                "rank",
            ),
        ];
        for (req, name, needle) in cases {
            match prepare(&spec(), req, &[4], 1 << 20) {
                Err(InferenceError::BadInput { input, reason }) => {
                    assert_eq!(input, name);
                    assert!(reason.contains(needle), "{reason} lacks {needle}");
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("accepted"),
            }
        }
        let unnamed =
            RequestInputs::Unnamed(TensorData::new(vec![1], TensorValues::F32(vec![1.0])).unwrap());
        assert!(matches!(
            prepare(&spec(), unnamed, &[], 1 << 20),
            Err(InferenceError::BadRequest(_))
        ));
    }
}
