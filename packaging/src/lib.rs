//! The versioned, checksummed archive format (v1) shared by `alc`, `aon` and the runtime.
//!
//! An archive is a deterministic `.tar` (or `.tar.zst` for transport) whose first entry is
//! `manifest.json`, listing every other entry with its size, sha256 and role. The full
//! specification is `docs/formats/package-v1.md`.
#![deny(missing_docs)]

pub mod cache;
mod dir;
pub mod error;
mod hashing;
pub mod manifest;
pub mod naming;
#[cfg(feature = "package")]
pub mod package;
pub mod reader;
pub mod signing;
pub mod stage;
pub mod writer;

pub use dir::{read_dir_manifest, read_dir_signed, verify_dir, verify_dir_signed};
pub use error::{Error, Result};
pub use hashing::sha256_reader;
pub use manifest::{
    check_entry_path, CreatedBy, FileEntry, Manifest, PackageTarget, Role, Source, FORMAT_VERSION,
    MANIFEST_NAME,
};
pub use naming::{archive_file_name, size_label};
pub use reader::{
    read_manifest, read_signed_manifest, scan, scan_signed, unpack, verify, verify_signed,
    Verified, MAX_ENTRIES, MAX_MANIFEST_BYTES,
};
pub use signing::{PublicKey, SecretKey, Signer, SIGNATURE_NAME, SIGNED_FORMAT_VERSION};
pub use stage::{StageFile, STAGE_FILE};
pub use writer::{sign_archive, write_archive, Compression, InputFile, PackageSpec, ALIGNMENT};
