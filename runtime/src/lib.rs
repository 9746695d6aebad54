//! The on-device runtime: loads v1 archives (or checkpoint directories) in place and runs them.
//!
//! This crate depends on the archive format and the tensor types only: no CLI, HTTP or
//! compiler-side crates and no C code, so it stays small enough to ship inside an app and
//! builds for Android without an NDK.
#![deny(missing_docs)]

pub mod error;
pub mod gemma3;
pub mod native;
pub mod package;
pub mod source;

pub use error::{Error, Result};
pub use gemma3::{Gemma3, KvCache};
pub use package::Package;
pub use source::ModelSource;
