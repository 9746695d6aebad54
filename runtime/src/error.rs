//! The one error type of `ava-runtime`.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while loading or running an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is compressed; only an uncompressed `.tar` can be mapped in place.
    #[error("{path}: zstd-compressed archives cannot be mapped; unpack it first (`alc unpack`)")]
    Compressed {
        /// The archive.
        path: PathBuf,
    },
    /// The archive failed verification.
    #[error(transparent)]
    Package(#[from] ava_packaging::Error),
    /// A weights entry is malformed.
    #[error(transparent)]
    Core(#[from] ava_core::Error),
    /// A file the model needs is absent.
    #[error("{path}: missing")]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// The model's weights or config do not fit the architecture.
    #[error("{0}")]
    Model(String),
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The context window is full.
    #[error("context full: {needed} positions needed, the session holds {max} (start a new session or raise the context length)")]
    ContextFull {
        /// Positions the request needs.
        needed: usize,
        /// The session's context length.
        max: usize,
    },
    /// Bad generation request (empty prompt, token id out of range, ...).
    #[error("{0}")]
    Request(String),
    /// The native-code policy refuses the model's kernel library (docs/security.md).
    #[error("tvm: kernels not loaded: {0}")]
    KernelsRefused(String),
    /// Two weight files define the same tensor.
    #[error("tensor {name:?} is defined by both {first} and {second}")]
    DuplicateTensor {
        /// The tensor name.
        name: String,
        /// The first entry defining it.
        first: String,
        /// The second entry defining it.
        second: String,
    },
}
