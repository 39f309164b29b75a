//! A runnable tract plan for one model and one input signature: building it (specialise the parsed
//! model to concrete input facts, optimise, make runnable), estimating what it holds, and running
//! it.
//!
//! Every run goes through `plan.run`, which spawns a fresh state: a reused state would leak
//! recurrent state from one request into the next. A run is evaluated node by node
//! (`run_plan_with_eval`) and checks its [`Stop`] before each operator, so a run past its deadline
//! (or whose request went away) ends at the next operator boundary, dropping its intermediate
//! tensors with its state, instead of computing to the end for nobody.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    /// Estimated bytes of the plan's constants (weights, in the forms tract keeps them): what
    /// the plan holds while cached.
    pub weights_bytes: u64,
    /// Estimated peak bytes of the tensors one run holds at once (inputs and intermediates,
    /// from tract's liveness analysis of the evaluation order; operator scratch space not
    /// included). Compared with the engine's per-run memory limit before a run starts.
    pub run_bytes: u64,
    /// `weights_bytes + run_bytes`: the plan cache's weight (an estimate, like its parts).
    pub bytes: u64,
    /// Estimated arithmetic of one run (multiply-adds and divisions, tract's cost hints of the
    /// optimised operators); 0 when tract gives none.
    pub ops: u64,
    /// `ops` per node id, to count how far a stopped run got.
    node_ops: Vec<u64>,
}

/// Why a run should end before its last operator: its deadline, or its request going away.
/// Checked by the run between operators; shared with the task that awaits it.
#[derive(Clone, Debug)]
pub(crate) struct Stop {
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
}

/// Why a run ended early (see [`Stop`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It reached its deadline.
    Deadline,
    /// Whoever waited for it is gone (the client disconnected).
    Abandoned,
}

impl Stopped {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped::Deadline => "deadline",
            Stopped::Abandoned => "abandoned",
        }
    }
}

impl Stop {
    pub fn at(deadline: Instant) -> Stop {
        Stop {
            deadline,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Ask the run to end at its next operator boundary.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// Whether the run should end now, and why.
    pub fn check(&self) -> Option<Stopped> {
        if Instant::now() >= self.deadline {
            Some(Stopped::Deadline)
        } else if self.abandoned.load(Ordering::Relaxed) {
            Some(Stopped::Abandoned)
        } else {
            None
        }
    }
}

/// What a run came to: its outputs, or why it was stopped and the estimated arithmetic it had
/// done by then.
pub(crate) enum RunEnd {
    Done(Tensors),
    Stopped(Stopped, u64),
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
            || -> TractResult<(Arc<TypedRunnableModel>, u64, u64, Vec<u64>)> {
                let mut graph = loaded.graph.clone();
                for (ix, (_, dtype, shape)) in signature.inputs.iter().enumerate() {
                    graph.set_input_fact(
                        ix,
                        InferenceFact::dt_shape(to_tract(*dtype), shape.clone()),
                    )?;
                }
                let typed = graph.into_optimized()?;
                let runnable = typed.into_runnable()?;
                let (weights, run) = estimate_bytes(&runnable)?;
                let ops = estimate_ops(&runnable);
                Ok((runnable, weights, run, ops))
            },
        ));
        match built {
            Ok(Ok((runnable, weights_bytes, run_bytes, node_ops))) => Ok(Plan {
                runnable,
                spec: loaded.spec.clone(),
                weights_bytes,
                run_bytes,
                bytes: weights_bytes.saturating_add(run_bytes),
                ops: node_ops.iter().sum(),
                node_ops,
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
    /// outputs back along symbolic axes that were padded. Before each operator the run checks
    /// `stop`; when it says so, the run ends there (its state and every intermediate tensor are
    /// dropped on return) and answers where it stopped.
    pub fn run(
        &self,
        padded: &[TensorData],
        symbols: &HashMap<String, (usize, usize)>,
        stop: &Stop,
    ) -> Result<RunEnd, InferenceError> {
        let exec = |e: String| InferenceError::Execution(e);
        let inputs: TVec<TValue> = padded
            .iter()
            .map(|t| to_tract_tensor(t).map(|t| t.into_tvalue()))
            .collect::<TractResult<_>>()
            .map_err(|e| exec(format!("{e:#}")))?;
        let mut stopped = None;
        let mut done = 0u64;
        let outputs = catch_unwind(AssertUnwindSafe(|| {
            let mut state = self.runnable.spawn()?;
            state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                if let Some(why) = stop.check() {
                    stopped = Some(why);
                    return Err(tract_onnx::prelude::tract_data::internal::anyhow!(
                        "run stopped before {}: {}",
                        node.name,
                        why.as_str()
                    ));
                }
                let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                done += self.node_ops.get(node.id).copied().unwrap_or(0);
                out
            })
        }))
        .map_err(|_| exec("tract panicked while running".into()))?;
        let outputs = match (outputs, stopped) {
            (_, Some(why)) => return Ok(RunEnd::Stopped(why, done)),
            (result, None) => result.map_err(|e| exec(format!("{e:#}")))?,
        };
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
        Ok(RunEnd::Done(result))
    }
}

/// Multiply-adds and divisions per node id, from tract's cost hints (0 where there are none or
/// they are not concrete).
fn estimate_ops(plan: &TypedRunnableModel) -> Vec<u64> {
    let model = plan.model();
    model
        .nodes()
        .iter()
        .map(|node| {
            let Ok(inputs) = model.node_input_facts(node.id) else {
                return 0;
            };
            let Ok(costs) = node.op.cost(&inputs) else {
                return 0;
            };
            costs
                .iter()
                .filter(|(cost, _)| cost.is_compute())
                .map(|(_, n)| n.to_i64().unwrap_or(0).max(0) as u64)
                .fold(0u64, u64::saturating_add)
        })
        .collect()
}

/// (constants, peak of one run) in bytes, both estimates from the plan's facts: the constants'
/// sizes, and the largest sum of tensors alive at once in the plan's evaluation order (tract's
/// `eval_tmp_memory_usage`, which frees each value after its last consumer). Summing every
/// intermediate instead, as if none were ever freed, overstated deep models many times over.
fn estimate_bytes(plan: &TypedRunnableModel) -> TractResult<(u64, u64)> {
    let model = plan.model();
    let bytes = |d: TDim| d.to_i64().unwrap_or(0).max(0) as u64;
    let is_const = |n: &TypedNode| {
        n.inputs.is_empty()
            && !model
                .input_outlets()
                .is_ok_and(|i| i.iter().any(|o| o.node == n.id))
    };
    let weights = model
        .nodes()
        .iter()
        .filter(|n| is_const(n))
        .flat_map(|n| n.outputs.iter())
        .map(|o| bytes(o.fact.mem_size()))
        .sum();
    let steps = tract_onnx::tract_core::model::memory::eval_tmp_memory_usage(
        model,
        plan.order_without_consts(),
        |n| !is_const(n),
    )?;
    let run = steps.into_iter().map(|(_, m)| bytes(m)).max().unwrap_or(0);
    Ok((weights, run))
}

pub(crate) fn describe_signature(signature: &InputSignature) -> String {
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
