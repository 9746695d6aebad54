//! Fuzzes the runtime's ALBERT ONNX loader (the graph walk that finds the encoder's weights):
//! errors only, never a panic, and nothing allocated beyond what the initializers hold.
#![no_main]

use ava_runtime::albert::encoder::Encoder;
use ava_runtime::albert::graph::OnnxGraph;
use libfuzzer_sys::fuzz_target;

/// Longest id sequence run through a loaded encoder.
const MAX_IDS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = OnnxGraph::parse(data) else {
        return;
    };
    let Ok(encoder) = Encoder::from_graph(&graph) else {
        return;
    };
    let ids: Vec<u32> = data.iter().take(MAX_IDS).map(|&b| u32::from(b)).collect();
    let _ = encoder.logits(&ids);
});
