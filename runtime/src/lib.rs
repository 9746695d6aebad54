//! The on-device runtime: loads v1 archives in place and (with later issues) runs them.
//!
//! This crate depends on the archive format and the tensor types only: no CLI, HTTP or
//! compiler-side crates, so it stays small enough to ship inside an app.
#![deny(missing_docs)]

pub mod error;
pub mod package;

pub use error::{Error, Result};
pub use package::Package;
