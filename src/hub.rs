//! The CLI side of the hub client ([`ava_hub`]): checkpoint arguments that may be repository
//! ids, and the terminal progress bar adapted to [`ava_hub::Progress`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use ava_hub::{download, DownloadRequest, HubOptions, Progress, Snapshot};
use indicatif::ProgressBar;

use crate::ui::{human_bytes, Ui};

/// An indicatif bar as the hub client's progress sink.
struct Bar<'a>(&'a ProgressBar);

impl Progress for Bar<'_> {
    fn add_total(&self, bytes: u64) {
        self.0.inc_length(bytes);
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// The checkpoint directory a pipeline command should read: `arg` itself when it exists on
/// disk; else, only when it is a well-formed `org/name[@revision]` that does not look like a
/// file name ([`ava_hub::is_hub_argument`]), `arg` read as a hub repository id, downloaded
/// into the cache first (all files but [`ava_hub::CHECKPOINT_EXCLUDE`]); the result is then a
/// `.../models--org--name/snapshots/{commit}` directory. Anything else is "no such file".
pub fn resolve_checkpoint(arg: &str, opts: &HubOptions, ui: &Ui) -> anyhow::Result<PathBuf> {
    let path = Path::new(arg);
    if path.symlink_metadata().is_ok() {
        return Ok(path.to_path_buf());
    }
    if !ava_hub::is_hub_argument(arg) {
        anyhow::bail!(
            "{arg}: no such file or directory (a hub repository is given as org/name[@revision])"
        );
    }
    let request = ava_hub::checkpoint_request(arg)
        .with_context(|| format!("{arg}: no such file or directory, nor a hub repository id"))?;
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
) -> ava_hub::Result<Snapshot> {
    let bar = ui.bytes_progress(0, "download");
    let result = download(request, opts, &Bar(&bar));
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
