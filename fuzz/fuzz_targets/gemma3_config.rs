//! Fuzzes the Gemma 3 `config.json` parser and what is derived from a parsed config: errors
//! only, never a panic, and no allocation sized by an unchecked config value.
#![no_main]

use std::path::Path;

use ava_core::{Gemma3Config, LayerKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(config) = Gemma3Config::from_json(Path::new("config.json"), &value) else {
        return;
    };
    for layer in 0..config.num_hidden_layers.min(4) {
        let _ = config.layer_kind(layer);
    }
    let _ = config.rope(LayerKind::Full);
    let _ = config.rope(LayerKind::Sliding);
    let _ = config.num_full_layers();
    let _ = config.attention_scale();
    let _ = config.lm_head_name();
    let _ = config.expected_tensors();
});
