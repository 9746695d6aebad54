//! Fuzzes the ALBERT `config.json` parser and what is derived from a parsed config: errors
//! only, never a panic, and no allocation sized by an unchecked config value.
#![no_main]

use std::path::Path;

use ava_core::AlbertConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(config) = AlbertConfig::from_json(Path::new("config.json"), &value) else {
        return;
    };
    let _ = config.is_classifier();
    let _ = config.num_labels();
    let _ = config.has_pooler();
    let _ = config.head_dim();
    for layer in 0..config.num_hidden_layers.min(4) {
        let _ = config.group_of_layer(layer);
    }
    let _ = config.expected_tensors();
});
