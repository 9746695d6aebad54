//! The crate's error type: every variant names the file and, where there is one, the tensor
//! or metadata key.

use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong reading a GGUF file or converting it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{}: not a GGUF file: {reason}", path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A GGUF version other than 2 or 3.
    #[error("{}: GGUF version {version} is not supported (supported: 2, 3)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the header.
        version: u32,
    },
    /// The header, metadata or tensor table is inconsistent or runs past the end of the file.
    #[error("{}: malformed GGUF at byte {offset}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where reading stopped.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A metadata key is missing or has the wrong type or value.
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor cannot be used (bad shape, out of bounds, missing, unexpected...).
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor type we cannot dequantize.
    #[error(
        "{}: tensor `{tensor}`: unsupported tensor type {ggml_type} (supported: {})",
        path.display(),
        crate::blocks::SUPPORTED_NAMES
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the file.
        tensor: String,
        /// The type's name (or `type 123` when unknown).
        ggml_type: String,
    },
    /// `general.architecture` names a model family we cannot convert.
    #[error("{}: unsupported architecture `{arch}` (supported: {})", path.display(), crate::gguf::gemma3::ARCH)]
    UnsupportedArchitecture {
        /// The file.
        path: PathBuf,
        /// The architecture it declares.
        arch: String,
    },
    /// Block data whose length does not match the element count.
    #[error("{ggml_type} data of {bytes} bytes cannot hold {elements} elements")]
    BlockLength {
        /// The block format.
        ggml_type: &'static str,
        /// Bytes given.
        bytes: usize,
        /// Elements asked for.
        elements: usize,
    },
    /// The checkpoint written does not pass `ava-core`'s own checks.
    #[error(transparent)]
    Core(#[from] ava_core::Error),
    /// Running the model (calibration, perplexity) failed.
    #[error(transparent)]
    Runtime(#[from] ava_runtime::Error),
    /// A bad quantization request (policy, group size, tensor that cannot be quantized).
    #[error("{0}")]
    Quantize(String),
    /// A size budget below the smallest file the policy can write.
    #[error(
        "{budget}: below the smallest this policy writes ({minimum}, every projection at \
         q4bf16); raise it, or lower the policy (e.g. --policy embed=q4bf16)"
    )]
    BudgetTooSmall {
        /// The budget asked for.
        budget: String,
        /// The smallest reachable, in the budget's unit.
        minimum: String,
    },
    /// Writing the stage record failed.
    #[error(transparent)]
    Packaging(#[from] ava_packaging::Error),
    /// A step of the quantize stage failed (what it was doing; the cause is the source).
    #[error("{what}")]
    Step {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A problem with tensor `tensor` of `path`.
    pub fn tensor(path: &Path, tensor: &str, reason: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    /// A problem with metadata key `key` of `path`.
    pub fn metadata(path: &Path, key: &str, reason: impl Into<String>) -> Self {
        Error::Metadata {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
