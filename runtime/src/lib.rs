//! The on-device runtime: loads v1 archives (or checkpoint directories) in place and runs them.
//!
//! This crate depends on the archive format and the tensor types only: no CLI, HTTP or
//! compiler-side crates and no C code, so it stays small enough to ship inside an app and
//! builds for Android without an NDK.
#![deny(missing_docs)]

pub mod albert;
#[cfg(feature = "capi")]
pub mod capi;
pub mod error;
pub mod gemma3;
pub mod generate;
pub mod native;
pub mod package;
pub mod policy;
pub mod runner_report;
pub mod sampling;
pub mod source;
pub mod stepwise;
pub mod threads;
pub mod tokenizer;
pub mod tvm;

pub use error::{Error, Result};
pub use gemma3::{Gemma3, KvCache, KvDtype, LanguageModel};
pub use generate::{Engine, GenerateOptions, Generation, Piece, Session, StopReason, Timings};
pub use package::Package;
pub use policy::KernelPolicy;
pub use sampling::SamplingParams;
pub use source::ModelSource;
pub use threads::{set_process_threads, Threads};
pub use tokenizer::Tokenizer;
pub use tvm::Backend;
