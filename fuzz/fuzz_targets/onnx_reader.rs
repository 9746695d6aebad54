//! Fuzzes the ONNX reader of the graph passes: decoding, validation, every pass of the
//! `onnxruntime` pipeline and re-encoding must give a result or an error, never a panic.
#![no_main]

use ava_passes::{onnx, Pipeline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut graph) = onnx::from_bytes(data) else {
        return;
    };
    let _ = onnx::producer(data);
    if graph.validate().is_err() {
        return;
    }
    let Ok(pipeline) = Pipeline::parse("onnxruntime") else {
        return;
    };
    if pipeline.run(&mut graph).is_ok() {
        let _ = onnx::from_bytes(&onnx::to_bytes(&graph));
    }
});
