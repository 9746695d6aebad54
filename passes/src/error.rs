//! The error type of `ava-passes`.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong building, reading, running or rewriting a graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf.
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The ONNX model uses something the IR does not model.
    #[error("unsupported ONNX content: {0}")]
    Unsupported(String),
    /// A graph breaks an IR invariant (dangling value, duplicate producer, ...).
    #[error("invalid graph: {0}")]
    Invalid(String),
    /// The evaluator could not run a node.
    #[error("evaluating {node} ({op}): {msg}")]
    Eval {
        /// Node name.
        node: String,
        /// Operator.
        op: String,
        /// Why.
        msg: String,
    },
    /// A checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] ava_core::Error),
    /// Unknown pass or pipeline name.
    #[error("unknown pass or pipeline `{0}` (known: {1})")]
    UnknownPass(String, String),
}
