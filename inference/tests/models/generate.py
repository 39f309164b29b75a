#!/usr/bin/env python3
"""Generate the small ONNX models the inference tests run, with onnxruntime reference outputs.

Run from anywhere (needs PyPI `onnx` and `onnxruntime`, e.g. `pip install onnx onnxruntime`):

    python3 inference/tests/models/generate.py

It writes, next to this script, `<name>.onnx` and `<name>.json` for each model. The JSON holds
`{"producer": ..., "cases": [{"inputs": {...}, "outputs": {...}}]}` where `inputs` is exactly a
request body's `inputs` object (`{"<name>": {"shape", "dtype", "data"}}`) and `outputs` is what
onnxruntime computed for it. Everything is seeded, so re-running reproduces the same files (up to
onnxruntime's own numerics). Tests never run this script and never download anything; they read
the committed files.
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 13
RNG = np.random.default_rng(20261126)

DTYPES = {
    np.dtype("float32"): "f32",
    np.dtype("float64"): "f64",
    np.dtype("int64"): "i64",
    np.dtype("int32"): "i32",
    np.dtype("uint8"): "u8",
    np.dtype("bool"): "bool",
}


def weight(name, *shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def save(name, graph):
    model = helper.make_model(
        graph,
        producer_name="walrus-inference generate.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    # IR 8 is what opset 13 shipped with; older readers (and tract) accept it.
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(HERE, name + ".onnx")
    onnx.save(model, path)
    return path


def to_json(array):
    dtype = DTYPES[array.dtype]
    if dtype == "bool":
        data = [bool(v) for v in array.reshape(-1)]
    elif dtype in ("f32", "f64"):
        # float(np.float32) is exact, so the JSON number parses back to the same f32.
        data = [float(v) for v in array.reshape(-1)]
    else:
        data = [int(v) for v in array.reshape(-1)]
    return {"shape": list(array.shape), "dtype": dtype, "data": data}


def reference(name, path, cases):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    output_names = [o.name for o in session.get_outputs()]
    out_cases = []
    for inputs in cases:
        results = session.run(output_names, inputs)
        out_cases.append(
            {
                "inputs": {k: to_json(v) for k, v in inputs.items()},
                "outputs": {k: to_json(v) for k, v in zip(output_names, results)},
            }
        )
    doc = {"producer": "onnxruntime " + ort.__version__, "cases": out_cases}
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")


def mlp():
    """16 -> 32 -> 4 with ReLU: the plainest Gemm model."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight("w1", 16, 32), weight("b1", 32), weight("w2", 32, 4), weight("b2", 4)],
    )
    path = save("mlp", graph)
    cases = [{"x": RNG.standard_normal((1, 16)).astype(np.float32)} for _ in range(2)]
    reference("mlp", path, cases)


def cnn():
    """MNIST-shaped: Conv/Relu/MaxPool twice, Flatten, Gemm to 10 logits."""
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c2"], ["r2"]),
            helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["p2"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["logits"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [
            weight("c1w", 4, 1, 3, 3),
            weight("c1b", 4, scale=0.1),
            weight("c2w", 8, 4, 3, 3, scale=0.3),
            weight("c2b", 8, scale=0.1),
            weight("fcw", 8 * 7 * 7, 10, scale=0.1),
            weight("fcb", 10, scale=0.1),
        ],
    )
    path = save("cnn", graph)
    cases = [{"image": RNG.random((1, 1, 28, 28)).astype(np.float32)}]
    reference("cnn", path, cases)


def attention():
    """Single-head self-attention over 8 tokens of width 16, with an output projection."""
    d = 16
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "wq"], ["q"]),
            helper.make_node("MatMul", ["x", "wk"], ["k"]),
            helper.make_node("MatMul", ["x", "wv"], ["v"]),
            helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["q", "kt"], ["scores"]),
            helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
            helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
            helper.make_node("MatMul", ["attn", "v"], ["ctx"]),
            helper.make_node("MatMul", ["ctx", "wo"], ["out"]),
        ],
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, d])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, d])],
        [
            weight("wq", d, d, scale=0.3),
            weight("wk", d, d, scale=0.3),
            weight("wv", d, d, scale=0.3),
            weight("wo", d, d, scale=0.3),
            numpy_helper.from_array(np.array(1.0 / np.sqrt(d), dtype=np.float32), "scale"),
        ],
    )
    path = save("attention", graph)
    cases = [{"x": RNG.standard_normal((1, 8, d)).astype(np.float32)}]
    reference("attention", path, cases)


def batch_mlp():
    """A symbolic batch dim "N": rows are independent, so padding N up to a bucket is exact.

    The output's batch axis is annotated with a different name, as tf2onnx does (`unk__215`):
    the engine must learn from shape analysis, not names, that it follows N.
    """
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["y"]),
        ],
        "batch_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__out", 3])],
        [weight("w1", 8, 12), weight("b1", 12), weight("w2", 12, 3), weight("b2", 3)],
    )
    path = save("batch_mlp", graph)
    cases = [{"x": RNG.standard_normal((n, 8)).astype(np.float32)} for n in (1, 3, 5)]
    reference("batch_mlp", path, cases)


def batch_mean():
    """Averages over its symbolic batch dim: zero rows of padding would change the mean, so N
    must not be padded (no output carries the N axis to slice it back from)."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=0)],
        "batch_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [4])],
    )
    path = save("batch_mean", graph)
    cases = [{"x": (RNG.standard_normal((3, 4)) + 1.0).astype(np.float32)}]
    reference("batch_mean", path, cases)


def multi_io():
    """Two inputs of different dtypes and two outputs (f32 and i64)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "bf"], ["sum"]),
            helper.make_node("ArgMax", ["sum"], ["argmax"], axis=1, keepdims=0),
        ],
        "multi_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, [2]),
        ],
    )
    path = save("multi_io", graph)
    cases = [
        {
            "a": RNG.standard_normal((2, 3)).astype(np.float32),
            "b": RNG.integers(-5, 5, (2, 3)).astype(np.int64),
        }
    ]
    reference("multi_io", path, cases)


def unsupported_op():
    """Well-formed ONNX whose only node is an operator no runtime implements."""
    graph = helper.make_graph(
        [helper.make_node("WalrusFrobnicate", ["x"], ["y"])],
        "unsupported_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    # Not checked (the checker rejects unknown operators, which is the point) and no reference.
    onnx.save(model, os.path.join(HERE, "unsupported_op.onnx"))


def external_data():
    """An MLP whose weights live in a side file: a blob must be self-contained, so it is refused."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "external_data",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight("w", 4, 2), weight("b", 2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save_model(
        model,
        os.path.join(HERE, "external_data.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="external_data.bin",
        size_threshold=0,
    )
    # Only the graph is committed: the side file must never be needed (or read).
    os.remove(os.path.join(HERE, "external_data.bin"))


if __name__ == "__main__":
    mlp()
    cnn()
    attention()
    batch_mlp()
    batch_mean()
    multi_io()
    unsupported_op()
    external_data()
