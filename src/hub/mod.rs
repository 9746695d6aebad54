//! Hugging Face hub downloads, compatible with the cache `huggingface_hub` writes: pinned to a
//! commit, resumable, and verified before anything appears under `snapshots/` (see
//! `docs/download.md` for the protocol, the layout and the rules).
//!
//! Stages: [`options`] (flags and `HF_*` variables) -> [`http`] (revision API, `HEAD`/`GET` on
//! `resolve/`) -> [`transfer`] (one file, resumed and retried) -> [`verify`] (size, sha256, git
//! sha1) -> [`cache`] / [`local_dir`] (where verified files go), driven by [`snapshot`].

pub mod cache;
mod error;
mod http;
pub mod local_dir;
mod options;
pub mod repo;
mod snapshot;
mod transfer;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use error::{Error, Result};
pub use options::{HubOptions, DEFAULT_ENDPOINT, DEFAULT_PARALLEL};
pub use repo::{split_revision, FileFilter, RepoId};
pub use snapshot::{download, DownloadRequest, FileReport, Snapshot};
pub use transfer::{MAX_ATTEMPTS, MAX_RETRIES};

use crate::ui::{human_bytes, Ui};

/// Files a checkpoint download leaves out: pickle weights (never loaded: they execute code),
/// and other frameworks' or runtimes' copies of the weights.
pub const CHECKPOINT_EXCLUDE: [&str; 10] = [
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
];

/// The checkpoint directory a pipeline command should read: `arg` itself when it exists on
/// disk, else `arg` read as a hub repository id (`org/name` or `name`, optionally `@revision`),
/// downloaded into the cache first (all files but [`CHECKPOINT_EXCLUDE`]); the result is then a
/// `.../models--org--name/snapshots/{commit}` directory.
pub fn resolve_checkpoint(arg: &str, opts: &HubOptions, ui: &Ui) -> anyhow::Result<PathBuf> {
    let path = Path::new(arg);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let (id, revision) = split_revision(arg);
    let repo = RepoId::parse(id)
        .with_context(|| format!("{arg}: no such file or directory, nor a hub repository id"))?;
    let request = DownloadRequest {
        repo,
        revision: revision.map(str::to_string),
        include: Vec::new(),
        exclude: CHECKPOINT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
        local_dir: None,
    };
    ui.info(format!(
        "{arg}: not a local path; fetching it from {}",
        opts.endpoint
    ));
    let snapshot = fetch_with_progress(&request, opts, ui)
        .with_context(|| format!("{arg}: no such directory, and downloading it failed"))?;
    Ok(snapshot.path)
}

/// [`download`] with the terminal progress bar and a summary line on stderr.
pub fn fetch_with_progress(
    request: &DownloadRequest,
    opts: &HubOptions,
    ui: &Ui,
) -> Result<Snapshot> {
    let bar = ui.bytes_progress(0, "download");
    let result = download(request, opts, &bar);
    bar.finish_and_clear();
    let snapshot = result?;
    let fetched = snapshot.files.iter().filter(|f| f.downloaded).count();
    ui.info(format!(
        "{}@{} ({}): {} files, {} downloaded ({}), {} already present",
        snapshot.repo_id,
        snapshot.revision,
        &snapshot.commit[..snapshot.commit.len().min(12)],
        snapshot.files.len(),
        fetched,
        human_bytes(snapshot.downloaded_bytes()),
        snapshot.files.len() - fetched
    ));
    Ok(snapshot)
}
