//! The pure-Rust `native` backend: every kernel the models need, in f32 arithmetic (q4bf16
//! weights multiply activations quantized to int8 per group, `act.rs`).
//!
//! It is the reference for parity tests and the fallback where no TVM library exists. Inner
//! loops are written so LLVM vectorises them for the baseline of each target (SSE2 on x86_64,
//! NEON on aarch64); faster paths chosen at run time sit beside them in `simd`.

mod act;
mod kernels;
mod matrix;
mod ops;
mod q4;
mod simd;
mod stored;

pub use act::QuantActs;
pub use kernels::{NativeKernels, NativePositions};
pub use matrix::{Matrix, WeightData};
pub use ops::{
    add_in_place, gelu_tanh, gelu_tanh_gate, rms_norm, rms_norm_rows, softmax_in_place, tanh, Rope,
};
pub use q4::QuantWeights;
pub use simd::dot;
