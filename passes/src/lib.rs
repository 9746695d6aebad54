//! Graph passes for the encoder pipeline (`aon`).
//!
//! Reserved: the pass trait and the named pipelines arrive with the ONNX export (issue 7).
