//! Fuzzes the safetensors parser and the config readers: errors only, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(file) = ava_core::SafetensorsFile::from_bytes(path, data.to_vec()) {
        for tensor in file.tensors() {
            let _ = tensor.to_f32_vec();
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ava_core::Gemma3Config::from_json(Path::new("config.json"), &value);
        let _ = ava_core::AlbertConfig::from_json(Path::new("config.json"), &value);
    }
});
