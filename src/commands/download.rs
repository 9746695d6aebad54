//! `download REPO_ID`: a hub repository into the shared cache (or a local dir), pinned to a
//! commit, resumed after interruptions and verified file by file.

use anyhow::{bail, Context};
use ava_hub::{split_revision, DownloadRequest, RepoId};

use crate::args::DownloadArgs;
use crate::hub::fetch_with_progress;
use crate::ui::Ui;

/// Runs `download`.
pub fn run(args: &DownloadArgs, ui: &Ui) -> anyhow::Result<()> {
    let (id, at_revision) = split_revision(&args.repo_id);
    let revision = match (&args.revision, at_revision) {
        (Some(flag), Some(at)) if flag != at => {
            bail!(
                "{}: revision given twice ({at} and --revision {flag})",
                args.repo_id
            )
        }
        (Some(flag), _) => Some(flag.clone()),
        (None, at) => at.map(str::to_string),
    };
    let request = DownloadRequest {
        repo: RepoId::parse(id)?,
        revision,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        local_dir: args.local_dir.clone(),
    };
    let opts = args.hub.options(ui);
    ui.detail(format!(
        "hub {}, cache {}{}",
        opts.endpoint,
        opts.cache_dir.display(),
        if opts.offline { ", offline" } else { "" }
    ));
    let snapshot = fetch_with_progress(&request, &opts, ui)
        .with_context(|| format!("downloading {}", args.repo_id))?;
    ui.result(&snapshot, || format!("{}\n", snapshot.path.display()))
}
