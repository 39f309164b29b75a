//! A runnable tract plan for one model and one input signature: building it (specialise the parsed
//! model to concrete input facts, optimise, make runnable), measuring it, and running it.
//!
//! Every run goes through `plan.run`, which spawns a fresh state: a reused state would leak
//! recurrent state from one request into the next.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use codec::BlobId;
use tract_onnx::prelude::*;

use crate::error::InferenceError;
use crate::model::{Dim, LoadedModel, ModelSpec};
use crate::signature::InputSignature;
use crate::tensor::{DType, TensorData, TensorValues, Tensors};

/// An optimised, runnable model for one concrete input signature. Immutable and shared by every
/// request with that signature.
pub(crate) struct Plan {
    runnable: Arc<TypedRunnableModel>,
    spec: Arc<ModelSpec>,
    /// Estimated resident size: every constant (weights, in their packed forms) plus every
    /// intermediate tensor of one run. The plan cache's weight.
    pub bytes: u64,
}

impl Plan {
    /// Specialise `loaded` to `signature` and optimise it. CPU-heavy (seconds for big models);
    /// callers run it off the reactor, one at a time.
    pub fn build(
        model: &BlobId,
        loaded: &LoadedModel,
        signature: &InputSignature,
    ) -> Result<Plan, InferenceError> {
        let invalid = |reason: String| InferenceError::InvalidModel {
            model: *model,
            reason,
        };
        let built = catch_unwind(AssertUnwindSafe(
            || -> TractResult<(Arc<TypedRunnableModel>, u64)> {
                let mut graph = loaded.graph.clone();
                for (ix, (_, dtype, shape)) in signature.inputs.iter().enumerate() {
                    graph.set_input_fact(
                        ix,
                        InferenceFact::dt_shape(to_tract(*dtype), shape.clone()),
                    )?;
                }
                let typed = graph.into_optimized()?;
                let bytes = typed
                    .nodes()
                    .iter()
                    .flat_map(|n| n.outputs.iter())
                    .map(|o| o.fact.mem_size().to_i64().unwrap_or(0).max(0) as u64)
                    .sum();
                Ok((typed.into_runnable()?, bytes))
            },
        ));
        match built {
            Ok(Ok((runnable, bytes))) => Ok(Plan {
                runnable,
                spec: loaded.spec.clone(),
                bytes,
            }),
            Ok(Err(e)) => Err(invalid(format!(
                "cannot build a plan for inputs {}: {e:#}",
                describe_signature(signature)
            ))),
            Err(_) => Err(invalid(format!(
                "tract panicked building a plan for inputs {}",
                describe_signature(signature)
            ))),
        }
    }

    /// Run on `padded` inputs (model order, signature shapes) with a fresh state, then slice
    /// outputs back along symbolic axes that were padded.
    pub fn run(
        &self,
        padded: &[TensorData],
        symbols: &HashMap<String, (usize, usize)>,
    ) -> Result<Tensors, InferenceError> {
        let exec = |e: String| InferenceError::Execution(e);
        let inputs: TVec<TValue> = padded
            .iter()
            .map(|t| to_tract_tensor(t).map(|t| t.into_tvalue()))
            .collect::<TractResult<_>>()
            .map_err(|e| exec(format!("{e:#}")))?;
        let outputs = catch_unwind(AssertUnwindSafe(|| self.runnable.run(inputs)))
            .map_err(|_| exec("tract panicked while running".into()))?
            .map_err(|e| exec(format!("{e:#}")))?;
        let mut result = BTreeMap::new();
        for (ix, value) in outputs.into_iter().enumerate() {
            let spec = self.spec.outputs.get(ix);
            let name = spec
                .map(|s| s.name.clone())
                .unwrap_or_else(|| format!("output_{ix}"));
            let mut tensor: Tensor = value.into_tensor();
            if let Some(dims) = spec.and_then(|s| s.dims.as_ref()) {
                for (axis, dim) in dims.iter().enumerate() {
                    let Dim::Symbol(s) = dim else { continue };
                    let Some(&(len, padded_len)) = symbols.get(s) else {
                        continue;
                    };
                    if len < padded_len && tensor.shape().get(axis) == Some(&padded_len) {
                        tensor = tensor
                            .slice(axis, 0, len)
                            .map_err(|e| exec(format!("{e:#}")))?;
                    }
                }
            }
            let data =
                from_tract_tensor(&tensor).map_err(|e| exec(format!("output `{name}`: {e}")))?;
            result.insert(name, data);
        }
        Ok(result)
    }
}

fn describe_signature(signature: &InputSignature) -> String {
    let parts: Vec<String> = signature
        .inputs
        .iter()
        .map(|(n, d, s)| format!("{n}: {d}{s:?}"))
        .collect();
    parts.join(", ")
}

pub(crate) fn to_tract(dtype: DType) -> DatumType {
    match dtype {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::I64 => DatumType::I64,
        DType::I32 => DatumType::I32,
        DType::U8 => DatumType::U8,
        DType::Bool => DatumType::Bool,
    }
}

fn to_tract_tensor(t: &TensorData) -> TractResult<Tensor> {
    let shape = t.shape();
    match t.values() {
        TensorValues::F32(v) => Tensor::from_shape(shape, v),
        TensorValues::F64(v) => Tensor::from_shape(shape, v),
        TensorValues::I64(v) => Tensor::from_shape(shape, v),
        TensorValues::I32(v) => Tensor::from_shape(shape, v),
        TensorValues::U8(v) => Tensor::from_shape(shape, v),
        TensorValues::Bool(v) => Tensor::from_shape(shape, v),
    }
}

fn from_tract_tensor(t: &Tensor) -> Result<TensorData, String> {
    fn collect<T: Datum + Copy>(t: &Tensor) -> Result<Vec<T>, String> {
        Ok(t.to_plain_array_view::<T>()
            .map_err(|e| format!("{e:#}"))?
            .iter()
            .copied()
            .collect())
    }
    let values = match t.datum_type() {
        DatumType::F32 => TensorValues::F32(collect(t)?),
        DatumType::F64 => TensorValues::F64(collect(t)?),
        DatumType::I64 => TensorValues::I64(collect(t)?),
        DatumType::I32 => TensorValues::I32(collect(t)?),
        DatumType::U8 => TensorValues::U8(collect(t)?),
        DatumType::Bool => TensorValues::Bool(collect(t)?),
        other => return Err(format!("dtype {other:?} cannot be returned as JSON")),
    };
    TensorData::new(t.shape().to_vec(), values)
}
