//! Weight formats: reading GGML/GGUF quantized models, and Q4BF16 / Q8BF16 quantization with
//! calibration for our own archives (`docs/quantization.md`, `docs/formats/q4bf16.md`).
//!
//! - [`gguf`]: a bounded, memory-mapped GGUF v2/v3 reader (header, metadata, tensor table).
//! - [`blocks`]: the GGML block formats (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
//!   Q5_K, Q6_K, Q8_K) as `#[repr(C)]` structs with scalar reference dequantizers that match
//!   ggml and gguf-py bit for bit.
//! - [`import`]: a llama.cpp `gemma3` GGUF -> Hugging Face `Gemma3ForCausalLM` checkpoint
//!   (f32 or bf16 safetensors + transformers-5 `config.json`), behind `alc convert`.
//! - [`policy`], [`grouped`], [`calib`], [`awq`], [`awq_gemma3`], [`gptq`], [`mixed`], [`stage`]:
//!   `alc quantize` (per-tensor policy, RTN / AWQ with clip search / GPTQ, mixed precision
//!   under a budget, the streamed stage writer);
//!   [`perplexity`]: `alc perplexity`; [`gate`]: `alc compile`'s quality gates on it.
//!
//! The stage sits between `ava-core` (checkpoints) and the kernel build: `download ->
//! checkpoint -> (convert) -> quantize -> build -> package -> runtime`.
#![deny(missing_docs)]

pub mod awq;
pub mod awq_gemma3;
pub mod blocks;
pub mod calib;
pub mod convert;
pub mod error;
pub mod gate;
pub mod gguf;
pub mod gptq;
pub mod gptq_gemma3;
pub mod grouped;
pub mod import;
pub mod mixed;
pub mod mixed_gemma3;
pub mod perplexity;
pub mod policy;
pub mod run;
pub mod stage;

pub use blocks::{dequantize, GgmlType};
pub use convert::{convert, ConvertOptions};
pub use error::{Error, Result};
pub use gguf::{GgufFile, TensorInfo};
pub use import::{ImportPlan, OutDtype};
pub use run::{quantize, QuantizeOptions, QuantizeProgress, QuantizeReport};

/// Helpers shared by the unit tests.
#[cfg(test)]
mod test_util {
    /// A deterministic pseudo-random value in [-1, 1).
    pub(crate) fn noise(i: usize) -> f32 {
        let x = (i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
            >> 40;
        (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
