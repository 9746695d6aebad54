//! The one error type of `ava-targets`.

use std::path::PathBuf;

use ava_core::Target;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while generating or linking kernels.
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
    /// The model's checkpoint could not be read.
    #[error(transparent)]
    Core(#[from] ava_core::Error),
    /// The stage record could not be read or written.
    #[error(transparent)]
    Packaging(#[from] ava_packaging::Error),
    /// A CPU preset the target does not know.
    #[error("unknown CPU {cpu:?} for {target} (valid: {valid})")]
    UnknownCpu {
        /// The target.
        target: Target,
        /// The preset asked for.
        cpu: String,
        /// The presets it has.
        valid: String,
    },
    /// The model uses something no kernel exists for.
    #[error("{0}")]
    Unsupported(String),
    /// The Python driver could not be started.
    #[error(
        "cannot run the TVM driver with {python}: {source} (run `make setup` to create .venv)"
    )]
    NoPython {
        /// The interpreter tried.
        python: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The Python driver failed while generating or compiling a kernel.
    #[error("TVM driver failed on kernel {kernel} for {target}: {message}")]
    Driver {
        /// The target.
        target: String,
        /// The kernel that failed (`(all)` when unknown).
        kernel: String,
        /// The driver's message.
        message: String,
    },
    /// A linker or binutils command failed.
    #[error("{tool} failed for {target}: {message}")]
    Tool {
        /// The command.
        tool: String,
        /// The target.
        target: String,
        /// Its stderr (last lines).
        message: String,
    },
    /// The driver's output is not what this crate expects.
    #[error("{path}: {message}")]
    BadOutput {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
