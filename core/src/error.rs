//! The crate's single error type: every variant that concerns a file names it.

use std::path::PathBuf;

/// Errors from reading tensors, checkpoints and configs.
///
/// Variants that concern a file carry its `path` and their message starts with it, so a user
/// can always tell which file to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A JSON file (config, index) could not be parsed.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A `.safetensors` file is malformed.
    #[error("{}: invalid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The `.safetensors` file.
        path: PathBuf,
        /// What is wrong, precisely.
        reason: String,
    },
    /// A tensor uses a dtype this toolchain does not handle (e.g. `F8_E4M3`).
    #[error("{}: tensor `{tensor}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The `.safetensors` file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype as written in the file.
        dtype: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{}: tensor `{name}` not found in checkpoint", path.display())]
    MissingTensor {
        /// The checkpoint directory.
        path: PathBuf,
        /// The tensor's full name.
        name: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error(
        "{}: tensor `{name}` has shape {found:?}, but the config implies {expected:?}",
        path.display()
    )]
    ShapeMismatch {
        /// The `.safetensors` file holding the tensor.
        path: PathBuf,
        /// The tensor's full name.
        name: String,
        /// The shape derived from the config.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },
    /// Only pickle weights were found; loading them could run arbitrary code.
    #[error(
        "{}: refusing to load a pickle checkpoint (unpickling can execute arbitrary code); \
         convert it to .safetensors first, e.g. with transformers: \
         `AutoModel.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`",
        path.display()
    )]
    PickleRefused {
        /// The pickle file.
        path: PathBuf,
    },
    /// A checkpoint directory holds no weight files at all.
    #[error("{}: no weights found (expected one or more *.safetensors files)", path.display())]
    NoWeights {
        /// The checkpoint directory.
        path: PathBuf,
    },
    /// A config value is missing, malformed or unsupported.
    #[error("{}: config key `{key}`: {reason}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The key, dotted for nested keys (`text_config.rope_scaling.factor`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `*.safetensors.index.json` file is malformed or disagrees with its shards.
    #[error("{}: invalid safetensors index: {reason}", path.display())]
    InvalidIndex {
        /// The index file (or the checkpoint directory when no single index applies).
        path: PathBuf,
        /// What is wrong, precisely.
        reason: String,
    },
    /// `config.json` describes a model family this toolchain does not support.
    #[error(
        "{}: unsupported model family `{model_type}` (supported: gemma3, albert)",
        path.display()
    )]
    UnknownFamily {
        /// The config file.
        path: PathBuf,
        /// The `model_type` (or architectures) found.
        model_type: String,
    },
    /// A tensor view's bytes do not match its shape and dtype.
    #[error("tensor `{name}`: {reason}")]
    TensorData {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of a format version this reader does not read.
    #[error("{}: {what} format {found} (this reader reads {supported})", path.display())]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// Which format ("kernel table").
        what: &'static str,
        /// The version found, as written (`null` when absent).
        found: String,
        /// The version this reader reads.
        supported: u32,
    },
    /// A name (dtype, target) given on a command line or in a manifest is unknown.
    #[error("unknown {what} `{value}` (valid: {valid})")]
    Parse {
        /// What was being parsed ("dtype", "target").
        what: &'static str,
        /// The rejected input.
        value: String,
        /// The accepted names, comma-separated.
        valid: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn safetensors(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::Safetensors {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(
        path: &std::path::Path,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn index(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::InvalidIndex {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file() {
        let e = Error::config(
            std::path::Path::new("/m/config.json"),
            "head_dim",
            "must be > 0",
        );
        assert_eq!(
            e.to_string(),
            "/m/config.json: config key `head_dim`: must be > 0"
        );
        let e = Error::PickleRefused {
            path: "/m/pytorch_model.bin".into(),
        };
        assert!(e.to_string().starts_with("/m/pytorch_model.bin: refusing"));
        assert!(e.to_string().contains("safetensors"));
    }
}
