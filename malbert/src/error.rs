//! The one error type of the encoder conversion, and the crate's helpers that attach context
//! (what was being read or built) to the errors of the crates it calls.

use std::fmt::Display;

/// Result of the encoder conversion.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while converting a checkpoint or reading utterance data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input that cannot be used (a missing tensor, a malformed data set, a bad setting).
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer refused to load or to encode.
    #[error("{0}")]
    Tokenizer(String),
    /// A file system operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// JSON that does not parse or serialise.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] ava_core::Error),
    /// The encoder graph could not be evaluated.
    #[error(transparent)]
    Graph(#[from] ava_passes::Error),
    /// The runtime could not load or run a classifier.
    #[error(transparent)]
    Runtime(#[from] ava_runtime::Error),
    /// The converted weights could not be written.
    #[error(transparent)]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// An error with what was being done when it happened.
    #[error("{context}")]
    Context {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: Box<Error>,
    },
}

/// Returns early with [`Error::Invalid`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// Attaches context to a failure, as `anyhow::Context` does in binaries.
pub(crate) trait Context<T> {
    /// The failure, wrapped with `context`.
    fn context(self, context: impl Display) -> Result<T>;
    /// The failure, wrapped with the context `f` builds (only on failure).
    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.with_context(|| context)
    }

    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().to_string(),
            source: Box::new(e.into()),
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl Display) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(context.to_string()))
    }

    fn with_context<C: Display>(self, f: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(f().to_string()))
    }
}

/// A tokenizer failure, as [`Error::Tokenizer`] with what was being done.
pub(crate) fn tokenizer_err(what: impl Display) -> impl FnOnce(tokenizers::Error) -> Error {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}
