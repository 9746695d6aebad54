//! The one error type of the hub client: every variant names the repository, file or URL and
//! says what the user can do about it.

use std::path::PathBuf;

/// Result of the hub client.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong while resolving or downloading from the hub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a repository id the hub accepts.
    #[error(
        "invalid repository id {0:?}: expected `name` or `org/name` (letters, digits, `-`, `_`, `.`)"
    )]
    InvalidRepoId(String),
    /// Not a usable revision (branch, tag or commit).
    #[error("invalid revision {0:?}")]
    InvalidRevision(String),
    /// A `--include`/`--exclude` pattern that does not compile.
    #[error("invalid glob {pattern:?}: {source}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        source: globset::Error,
    },
    /// A bad `HF_ENDPOINT` or a redirect to something that is not an http(s) URL.
    #[error("invalid URL {url:?}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        message: String,
    },
    /// 401/403: the repository is gated or private, or the token was refused.
    #[error(
        "{repo}: access denied (HTTP {status}{detail}): the repository is gated or private. \
         {hint}"
    )]
    Unauthorized {
        /// Repository id.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// The hub's own message, if any, as `: message`.
        detail: String,
        /// What to do, depending on whether a token was sent.
        hint: &'static str,
    },
    /// 404, or the hub's `RepoNotFound` / `RevisionNotFound` / `EntryNotFound` codes.
    #[error("{what} not found on {endpoint} (HTTP {status}): {hint}")]
    NotFound {
        /// The repository, revision or file that is missing.
        what: String,
        /// The hub endpoint asked.
        endpoint: String,
        /// The status the hub answered.
        status: u16,
        /// What to check.
        hint: &'static str,
    },
    /// The include/exclude patterns leave no file of the revision.
    #[error(
        "{repo}@{revision}: none of its {total} files matches --include/--exclude \
         (`*` also matches `/`)"
    )]
    NoMatchingFiles {
        /// Repository id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// Files the revision has.
        total: usize,
    },
    /// A file named on the command line is not in the revision.
    #[error("{file}: no such file in {repo}@{revision}")]
    MissingFile {
        /// Repository id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// The file.
        file: String,
    },
    /// Any other unexpected status (5xx after retries, 416, ...).
    #[error("{url}: HTTP {status}{detail}")]
    Http {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The hub's own message, if any, as `: message`.
        detail: String,
    },
    /// Connection refused, reset, timed out, TLS failure.
    #[error("{url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What the network layer said.
        message: String,
    },
    /// The server answered with something the protocol does not allow.
    #[error("{url}: invalid response: {message}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong with it.
        message: String,
    },
    /// The body ended before the announced size (a dropped connection).
    #[error("{file}: connection closed after {got} of {expected} bytes")]
    Truncated {
        /// Path in the repository.
        file: String,
        /// Bytes on disk.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// Transient failures went on past the retry limit.
    #[error("{file}: giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Path in the repository.
        file: String,
        /// How many requests were made.
        attempts: u32,
        /// The last failure.
        last: Box<Error>,
    },
    /// Downloaded bytes whose size differs from what the hub announced.
    #[error(
        "{file}: size mismatch: expected {expected} bytes, got {actual}; the download was deleted"
    )]
    SizeMismatch {
        /// Path in the repository.
        file: String,
        /// Announced size.
        expected: u64,
        /// Size received.
        actual: u64,
    },
    /// Downloaded bytes whose digest differs from the hub's etag.
    #[error(
        "{file}: {algorithm} mismatch: expected {expected}, got {actual}; the download was \
         deleted (the server or a proxy sent corrupt data)"
    )]
    ChecksumMismatch {
        /// Path in the repository.
        file: String,
        /// `sha256` or `git sha1`.
        algorithm: &'static str,
        /// The digest the hub announced.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// The server sent more bytes than the size it declared.
    #[error(
        "{file}: the server sent more than the declared {expected} bytes; the download was \
         deleted"
    )]
    Oversized {
        /// Path in the repository.
        file: String,
        /// The declared size.
        expected: u64,
    },
    /// A file took longer than the per-file deadline, every attempt together.
    #[error(
        "{file}: not downloaded within {seconds} s (--file-deadline or AVA_HUB_FILE_DEADLINE \
         sets the limit)"
    )]
    Deadline {
        /// Path in the repository.
        file: String,
        /// The deadline.
        seconds: u64,
    },
    /// The hub gives no way to check a file: no sha256, nor a size and git blob sha1.
    #[error(
        "{file}: the hub gives no checksum for it (no sha256, nor a size and git blob sha1), \
         so its content cannot be checked; refusing it (pass --no-verify to accept it anyway)"
    )]
    Unverifiable {
        /// Path in the repository.
        file: String,
    },
    /// Offline mode and something is not in the cache.
    #[error("offline mode (--offline or HF_HUB_OFFLINE): {0}")]
    Offline(String),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// Failures worth retrying: the network, 5xx and 429 answers, truncated bodies.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Truncated { .. } => true,
            Error::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// `io::Error` -> [`Error::Io`] naming `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
