//! Hugging Face hub downloads, compatible with the cache `huggingface_hub` writes: pinned to a
//! commit, resumable, and verified before anything appears under `snapshots/` (see
//! `docs/download.md` for the protocol, the layout and the rules).
//!
//! Progress is reported through the caller's [`Progress`].
//!
//! Stages: [`options`] (flags and `HF_*` variables) -> [`http`] (revision API, `HEAD`/`GET` on
//! `resolve/`) -> [`transfer`] (one file, resumed and retried) -> [`verify`] (size, sha256, git
//! sha1) -> [`cache`] / [`local_dir`] (where verified files go), driven by [`snapshot`].

pub mod cache;
mod error;
mod http;
pub mod local_dir;
mod options;
mod progress;
pub mod repo;
mod snapshot;
mod transfer;
pub mod verify;

pub use error::{Error, Result};
pub use options::{HubOptions, DEFAULT_ENDPOINT, DEFAULT_PARALLEL};
pub use progress::{NoProgress, Progress};
pub use repo::{is_hub_argument, split_revision, FileFilter, RepoId};
pub use snapshot::{download, plan, DownloadRequest, FileReport, Plan, PlannedFile, Snapshot};
pub use transfer::{MAX_ATTEMPTS, MAX_RETRIES};

/// Files a checkpoint download leaves out: pickle weights (never loaded: they execute code),
/// other frameworks' or runtimes' copies of the weights, and kernel libraries (`lib/`: native
/// code, never loaded from a hub download, docs/security.md).
pub const CHECKPOINT_EXCLUDE: [&str; 11] = [
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.gguf",
    "lib/",
];

/// Files a GGUF conversion takes from the GGUF's repository too, when it has them.
pub const GGUF_COMPANIONS: [&str; 1] = ["tokenizer.json"];

/// The request that fetches one GGUF file, `file`, of repository `arg` (`org/name[@revision]`)
/// and those of [`GGUF_COMPANIONS`] the repository has: none of its other files.
pub fn gguf_request(arg: &str, file: &str) -> Result<DownloadRequest> {
    let (id, revision) = split_revision(arg);
    Ok(DownloadRequest {
        repo: RepoId::parse(id)?,
        revision: revision.map(str::to_string),
        files: vec![file.to_string()],
        optional: GGUF_COMPANIONS.iter().map(|s| s.to_string()).collect(),
        include: Vec::new(),
        exclude: Vec::new(),
        local_dir: None,
    })
}

/// The request that fetches checkpoint `arg`, read as a hub repository id (`org/name` or
/// `name`, optionally `@revision`): every file but [`CHECKPOINT_EXCLUDE`], into the cache.
pub fn checkpoint_request(arg: &str) -> Result<DownloadRequest> {
    let (id, revision) = split_revision(arg);
    Ok(DownloadRequest {
        repo: RepoId::parse(id)?,
        revision: revision.map(str::to_string),
        files: Vec::new(),
        optional: Vec::new(),
        include: Vec::new(),
        exclude: CHECKPOINT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
        local_dir: None,
    })
}
