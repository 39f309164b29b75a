//! Turning a verified blob's bytes into a parsed ONNX model and the spec of its inputs and
//! outputs.
//!
//! Guarantees: untrusted bytes never read the file system (external tensor data is refused), never
//! panic out of [`load`] (a panic inside tract becomes [`InferenceError::InvalidModel`]), and an
//! operator tract does not implement is reported by name before any analysis runs.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use codec::BlobId;
use tract_onnx::data_resolver::ModelDataResolver;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::InferenceError;
use crate::tensor::DType;

/// One axis of a declared input or output shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed length; requests must match it exactly.
    Fixed(usize),
    /// A named symbolic length (ONNX `dim_param`, e.g. `batch`, `seq`). Every axis with the same
    /// symbol has the same length in one request; it is padded up to a bucket length.
    Symbol(String),
    /// No length declared: any length is accepted as is (no padding, since nothing tells which
    /// output axes follow it).
    Free,
}

/// A declared model input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

/// A declared model output (shape only when the model declares one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    pub dims: Option<Vec<Dim>>,
}

/// What a model takes and gives, from its ONNX graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Graph inputs that are not initializers, in graph order (the plan's input order).
    pub inputs: Vec<InputSpec>,
    /// Graph outputs in graph order (the plan's output order). Axes that tract's shape analysis
    /// proves equal to an input symbol are `Dim::Symbol` of that input symbol, whatever the
    /// export annotated (exporters often give outputs fresh names such as `unk__215`).
    pub outputs: Vec<OutputSpec>,
    /// Input symbols padded to a bucket: every output has an axis that is exactly the symbol and
    /// no axis that depends on it otherwise, so the padding can be sliced off every output (an
    /// output reduced over the symbol would see the padding). Empty when the symbolic analysis
    /// fails; then every request runs at its exact shape. Padding still assumes positions along
    /// the axis do not influence each other (a batch axis), or that a mask input says so.
    pub paddable: BTreeSet<String>,
}

/// A parsed model, ready to be specialised to concrete input shapes and optimised.
pub(crate) struct LoadedModel {
    pub spec: Arc<ModelSpec>,
    pub graph: InferenceModel,
    /// Size of the blob it came from; the model cache's weight.
    pub blob_len: u64,
}

/// Refuses every external-data read: a model from the network must be self-contained, and a
/// path inside it must never reach the gateway's file system.
struct NoExternalData;

impl ModelDataResolver for NoExternalData {
    fn read_bytes_from_path(
        &self,
        _buf: &mut Vec<u8>,
        p: &Path,
        _offset: usize,
        _length: Option<usize>,
    ) -> TractResult<()> {
        Err(TractError::msg(format!(
            "external tensor data ({}) is not allowed",
            p.display()
        )))
    }
}

/// Parse `bytes` (an already-verified blob) as an ONNX model.
pub(crate) fn load(model: &BlobId, bytes: &[u8]) -> Result<LoadedModel, InferenceError> {
    let invalid = |reason: String| InferenceError::InvalidModel {
        model: *model,
        reason,
    };
    catch_unwind(AssertUnwindSafe(|| load_inner(model, bytes)))
        .unwrap_or_else(|_| Err(invalid("the ONNX parser panicked on this model".into())))
}

fn load_inner(model: &BlobId, bytes: &[u8]) -> Result<LoadedModel, InferenceError> {
    let invalid = |reason: String| InferenceError::InvalidModel {
        model: *model,
        reason,
    };
    let mut onnx = tract_onnx::onnx();
    onnx.provider = Arc::new(NoExternalData);
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| invalid(format!("not an ONNX protobuf: {e:#}")))?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| invalid("the model has no graph".into()))?;

    let mut unsupported = BTreeSet::new();
    collect_unsupported(graph, &onnx, &mut unsupported);
    if !unsupported.is_empty() {
        return Err(InferenceError::UnsupportedOperator {
            model: *model,
            operators: unsupported.into_iter().collect(),
        });
    }
    if graph
        .initializer
        .iter()
        .any(|t| !t.external_data.is_empty() || t.data_location == Some(1))
    {
        return Err(invalid(
            "initializers with external data are not allowed".into(),
        ));
    }

    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut inputs = Vec::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
    {
        let Some(pb::type_proto::Value::TensorType(tt)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(invalid(format!("input `{}` is not a tensor", input.name)));
        };
        let dtype = dtype_of_onnx(tt.elem_type).ok_or_else(|| {
            invalid(format!(
                "input `{}` has ONNX element type {}, which JSON requests cannot carry",
                input.name, tt.elem_type
            ))
        })?;
        let dims = tt
            .shape
            .as_ref()
            .map(dims_of)
            .ok_or_else(|| invalid(format!("input `{}` declares no rank", input.name)))?;
        inputs.push(InputSpec {
            name: input.name.clone(),
            dtype,
            dims,
        });
    }
    let outputs = graph
        .output
        .iter()
        .map(|o| OutputSpec {
            name: o.name.clone(),
            dims: match o.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(pb::type_proto::Value::TensorType(tt)) => tt.shape.as_ref().map(dims_of),
                _ => None,
            },
        })
        .collect();

    let graph = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| invalid(format!("tract cannot read the graph: {e:#}")))?;
    let mut outputs: Vec<OutputSpec> = outputs;
    let paddable = symbolic_outputs(&graph, &inputs, &mut outputs);
    Ok(LoadedModel {
        spec: Arc::new(ModelSpec {
            inputs,
            outputs,
            paddable,
        }),
        graph,
        blob_len: bytes.len() as u64,
    })
}

/// Run tract's shape analysis with the inputs' symbols to learn which output axes follow which
/// input symbol. Rewrites those output axes to `Dim::Symbol` and returns the symbols that are
/// safe to pad (no output axis depends on them other than as exactly themselves).
fn symbolic_outputs(
    graph: &InferenceModel,
    inputs: &[InputSpec],
    outputs: &mut [OutputSpec],
) -> BTreeSet<String> {
    let symbols: BTreeSet<String> = inputs
        .iter()
        .flat_map(|i| i.dims.iter())
        .filter_map(|d| {
            if let Dim::Symbol(s) = d {
                Some(s.clone())
            } else {
                None
            }
        })
        .collect();
    if symbols.is_empty() {
        return BTreeSet::new();
    }
    let analysed = catch_unwind(AssertUnwindSafe(|| graph.clone().into_typed()));
    let typed = match analysed {
        Ok(Ok(typed)) => typed,
        Ok(Err(e)) => {
            tracing::debug!("symbolic shape analysis failed, no padding for this model: {e:#}");
            return BTreeSet::new();
        }
        Err(_) => return BTreeSet::new(),
    };
    let mut paddable = symbols.clone();
    for (ix, output) in outputs.iter_mut().enumerate() {
        let Ok(fact) = typed.output_fact(ix) else {
            return BTreeSet::new();
        };
        let mut dims = Vec::with_capacity(fact.shape.len());
        let mut present = BTreeSet::new();
        for dim in fact.shape.iter() {
            match dim {
                TDim::Val(v) if *v >= 0 => dims.push(Dim::Fixed(*v as usize)),
                TDim::Sym(s) if symbols.contains(&s.to_string()) => {
                    present.insert(s.to_string());
                    dims.push(Dim::Symbol(s.to_string()))
                }
                other => {
                    for s in other.symbols() {
                        paddable.remove(&s.to_string());
                    }
                    dims.push(Dim::Free);
                }
            }
        }
        paddable.retain(|s| present.contains(s));
        output.dims = Some(dims);
    }
    paddable
}

/// Operators (by ONNX op type, with the domain when not the default one) this tract build has no
/// implementation for, in the graph and every subgraph (If/Loop/Scan bodies).
fn collect_unsupported(
    graph: &pb::GraphProto,
    onnx: &tract_onnx::Onnx,
    out: &mut BTreeSet<String>,
) {
    for node in &graph.node {
        if !onnx.op_register.0.contains_key(&node.op_type) {
            if node.domain.is_empty() || node.domain == "ai.onnx" {
                out.insert(node.op_type.clone());
            } else {
                out.insert(format!("{}.{}", node.domain, node.op_type));
            }
        }
        for attr in &node.attribute {
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                collect_unsupported(g, onnx, out);
            }
        }
    }
}

fn dims_of(shape: &pb::TensorShapeProto) -> Vec<Dim> {
    use pb::tensor_shape_proto::dimension::Value;
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
            Some(Value::DimParam(s)) if !s.is_empty() => Dim::Symbol(s.clone()),
            _ => Dim::Free,
        })
        .collect()
}

/// ONNX `TensorProto.DataType` codes of the dtypes JSON carries.
fn dtype_of_onnx(code: i32) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        11 => DType::F64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> BlobId {
        BlobId([7; 32])
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        for bytes in [
            &b""[..],
            b"not onnx at all",
            &[0xff; 64],
            &[0x0a, 0xff, 0xff, 0xff, 0x0f],
        ] {
            match load(&id(), bytes) {
                Err(InferenceError::InvalidModel { .. }) => {}
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("{bytes:?} loaded"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = load(&id(), &bytes);
        }
    }

    #[test]
    fn onnx_codes_map_to_wire_dtypes() {
        assert_eq!(dtype_of_onnx(1), Some(DType::F32));
        assert_eq!(dtype_of_onnx(10), None, "f16 cannot travel as JSON");
    }
}
