//! Fuzzes the GGUF reader and the gemma3 import plan: any byte string must give a file or an
//! error, never a panic, and no allocation beyond what the bytes justify.
#![no_main]

use std::path::Path;

use ava_quantize::gguf::gemma3::Gemma3Params;
use ava_quantize::import::ImportPlan;
use ava_quantize::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for info in file.tensors() {
        let _ = file.dequantize(info);
    }
    if let Ok(params) = Gemma3Params::from_gguf(&file) {
        let _ = params.config_json("float32");
        let _ = params.generation_config_json();
    }
    let _ = ImportPlan::gemma3(&file);
});
