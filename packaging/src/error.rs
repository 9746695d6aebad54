//! The one error type of `ava-packaging`.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while writing, reading or unpacking an archive.
///
/// Variants that concern one entry name it, so a user can tell which file is bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The tar stream itself could not be read (bad header, bad checksum, cut short).
    #[error("{archive}: malformed tar stream: {reason}")]
    Malformed {
        /// The archive being read.
        archive: PathBuf,
        /// What the tar reader reported.
        reason: String,
    },
    /// The archive ended before an entry or the end-of-archive marker.
    #[error("{archive}: truncated archive: {reason}")]
    Truncated {
        /// The archive being read.
        archive: PathBuf,
        /// Where it ended.
        reason: String,
    },
    /// `manifest.json` is missing, not first, too large or invalid.
    #[error("{archive}: bad manifest: {reason}")]
    Manifest {
        /// The archive (or directory) whose manifest is bad.
        archive: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry path is absolute, contains `..`, or is otherwise unsafe or invalid.
    #[error("{archive}: entry {entry:?}: unsafe path: {reason}")]
    UnsafePath {
        /// The archive being read.
        archive: PathBuf,
        /// The entry path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// An entry is not a regular file (symlink, hard link, device, directory, ...).
    #[error("{archive}: entry {entry:?}: {kind} entries are not allowed")]
    ForbiddenEntryType {
        /// The archive being read.
        archive: PathBuf,
        /// The entry path.
        entry: String,
        /// The tar entry type found.
        kind: String,
    },
    /// The same path appears twice.
    #[error("{archive}: entry {entry:?} appears more than once")]
    DuplicateEntry {
        /// The archive being read.
        archive: PathBuf,
        /// The repeated path.
        entry: String,
    },
    /// An entry is present in the tar stream but not listed in the manifest.
    #[error("{archive}: entry {entry:?} is not listed in the manifest")]
    UnlistedEntry {
        /// The archive being read.
        archive: PathBuf,
        /// The unlisted path.
        entry: String,
    },
    /// A file listed in the manifest is absent from the archive.
    #[error("{archive}: entry {entry:?} is listed in the manifest but missing")]
    MissingEntry {
        /// The archive being read.
        archive: PathBuf,
        /// The missing path.
        entry: String,
    },
    /// An entry's size differs from the manifest.
    #[error("{archive}: entry {entry:?} has {found} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The archive being read.
        archive: PathBuf,
        /// The entry path.
        entry: String,
        /// Size recorded in the manifest.
        expected: u64,
        /// Size found in the archive.
        found: u64,
    },
    /// An entry's sha256 differs from the manifest.
    #[error("{archive}: entry {entry:?} is corrupt: sha256 {found}, the manifest says {expected}")]
    ChecksumMismatch {
        /// The archive being read.
        archive: PathBuf,
        /// The entry path.
        entry: String,
        /// Digest recorded in the manifest.
        expected: String,
        /// Digest of the bytes read.
        found: String,
    },
    /// A hard limit was exceeded (entry count, manifest size, decompressed size).
    #[error("{archive}: {what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// The archive being read.
        archive: PathBuf,
        /// What was counted.
        what: String,
        /// The limit that was exceeded.
        limit: u64,
    },
    /// Data follows the end-of-archive marker.
    #[error("{archive}: data after the end-of-archive marker")]
    TrailingData {
        /// The archive being read.
        archive: PathBuf,
    },
    /// A stage directory's `ava-stage.json` that does not parse (or cannot be written).
    #[error("{path}: invalid stage metadata: {reason}")]
    StageFile {
        /// The stage file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The input directory or options cannot be packaged.
    #[error("{path}: cannot package: {reason}")]
    Input {
        /// The offending input.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint being packaged is unreadable or inconsistent.
    #[error(transparent)]
    Checkpoint(#[from] ava_core::Error),
    /// The destination exists already.
    #[error("{path}: already exists (remove it first)")]
    DestinationExists {
        /// The destination path.
        path: PathBuf,
    },
    /// The file is something else than an archive, recognised by its first bytes.
    #[error("{path}: not an archive: this is {what}")]
    NotAnArchive {
        /// The file involved.
        path: PathBuf,
        /// What it looks like, and what to do with it.
        what: String,
    },
    /// The archive is signed, but its signature does not check out (tampered or corrupt).
    #[error("{archive}: bad signature: {reason}")]
    BadSignature {
        /// The archive being read.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file could not be used.
    #[error("{path}: bad key file: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A feature this build leaves out was needed.
    #[error("{path}: {what} not supported by this build")]
    Unsupported {
        /// The file involved.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The archive entry this error is about, when there is one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            Error::UnsafePath { entry, .. }
            | Error::ForbiddenEntryType { entry, .. }
            | Error::DuplicateEntry { entry, .. }
            | Error::UnlistedEntry { entry, .. }
            | Error::MissingEntry { entry, .. }
            | Error::SizeMismatch { entry, .. }
            | Error::ChecksumMismatch { entry, .. } => Some(entry),
            _ => None,
        }
    }
}
