//! A model whose run time scales with its input, written as ONNX bytes in the test itself (no
//! Python, no binary fixture): `y = x · W · W · … · W` (`depth` MatMul nodes sharing one `width`
//! × `width` f32 initializer), input `x: f32[batch, width]` with a symbolic `batch` axis. One run
//! costs `batch · width² · depth` multiply-adds in `depth` separate operators, so a test can make
//! a run take seconds with a few MiB of model while each operator stays short: what a deadline
//! that stops "at the next operator boundary" needs to be shown.
//!
//! Shared by `inference/tests` and `gateway/tests` through `#[path]`. The protobuf is written by
//! hand (field numbers from `onnx.proto`); tract parses it like any exported model.

#![allow(dead_code)]

/// ONNX bytes of the chain. `W` is `1/width` everywhere, so every row stays at its mean and the
/// outputs stay finite however deep the chain.
pub fn matmul_chain(width: usize, depth: usize) -> Vec<u8> {
    let weight = {
        let mut t = Vec::new();
        for _ in 0..2 {
            varint_field(&mut t, 1, width as u64); // dims
        }
        varint_field(&mut t, 2, 1); // data_type FLOAT
        bytes_field(&mut t, 8, b"W"); // name
        let value = (1.0f32 / width as f32).to_le_bytes();
        let raw: Vec<u8> = (0..width * width).flat_map(|_| value).collect();
        bytes_field(&mut t, 9, &raw); // raw_data
        t
    };
    let mut graph = Vec::new();
    for i in 0..depth {
        let input = if i == 0 {
            "x".to_owned()
        } else {
            format!("h{i}")
        };
        let output = if i + 1 == depth {
            "y".to_owned()
        } else {
            format!("h{}", i + 1)
        };
        let mut node = Vec::new();
        bytes_field(&mut node, 1, input.as_bytes());
        bytes_field(&mut node, 1, b"W");
        bytes_field(&mut node, 2, output.as_bytes());
        bytes_field(&mut node, 3, format!("matmul_{i}").as_bytes());
        bytes_field(&mut node, 4, b"MatMul");
        bytes_field(&mut graph, 1, &node);
    }
    bytes_field(&mut graph, 2, b"matmul_chain");
    bytes_field(&mut graph, 5, &weight);
    bytes_field(&mut graph, 11, &value_info("x", width));
    bytes_field(&mut graph, 12, &value_info("y", width));

    let mut opset = Vec::new();
    varint_field(&mut opset, 2, 13);
    let mut model = Vec::new();
    varint_field(&mut model, 1, 8); // ir_version
    bytes_field(&mut model, 2, b"walrus-gateway tests"); // producer_name
    bytes_field(&mut model, 7, &graph);
    bytes_field(&mut model, 8, &opset);
    model
}

/// `name: f32[batch, width]`.
fn value_info(name: &str, width: usize) -> Vec<u8> {
    let mut batch = Vec::new();
    bytes_field(&mut batch, 2, b"batch"); // dim_param
    let mut cols = Vec::new();
    varint_field(&mut cols, 1, width as u64); // dim_value
    let mut shape = Vec::new();
    bytes_field(&mut shape, 1, &batch);
    bytes_field(&mut shape, 1, &cols);
    let mut tensor = Vec::new();
    varint_field(&mut tensor, 1, 1); // elem_type FLOAT
    bytes_field(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    bytes_field(&mut ty, 1, &tensor); // tensor_type
    let mut info = Vec::new();
    bytes_field(&mut info, 1, name.as_bytes());
    bytes_field(&mut info, 2, &ty);
    info
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}
