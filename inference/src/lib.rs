//! Inference next to the cache (tract-onnx). This crate is a placeholder in the workspace so the
//! layout is fixed from the start; its work is issue 7 and it exports nothing yet.
