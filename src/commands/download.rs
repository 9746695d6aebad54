//! `download REPO_ID`: a hub repository into the shared cache (or a local dir), pinned to a
//! commit, resumed after interruptions and verified file by file.

use anyhow::{bail, Context};
use ava_hub::{split_revision, DownloadRequest, RepoId};

use crate::args::DownloadArgs;
use crate::hub::fetch_with_progress;
use crate::ui::{escape, human_bytes, Ui};

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
        files: args.files.clone(),
        optional: Vec::new(),
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
    if args.dry_run {
        let plan =
            ava_hub::plan(&request, &opts).with_context(|| format!("listing {}", args.repo_id))?;
        return ui.result(&plan, || plan_text(&plan));
    }
    let snapshot = fetch_with_progress(&request, &opts, ui)
        .with_context(|| format!("downloading {}", args.repo_id))?;
    ui.result(&snapshot, || format!("{}\n", snapshot.path.display()))
}

/// A dry run for people: one line per file, then the total to fetch.
fn plan_text(plan: &ava_hub::Plan) -> String {
    let mut s = format!(
        "{}@{} ({}): would fetch\n",
        plan.repo_id,
        plan.revision,
        &plan.commit[..plan.commit.len().min(12)]
    );
    for f in &plan.files {
        let size = f.size.map_or_else(|| "?".to_string(), human_bytes);
        let state = if f.present { "  (already here)" } else { "" };
        s += &format!("{size:>10}  {}{state}\n", escape(&f.path));
    }
    let missing = plan.files.iter().filter(|f| !f.present).count();
    s += &format!(
        "{missing} of {} files to download, {}\n",
        plan.files.len(),
        human_bytes(plan.bytes_to_fetch())
    );
    s
}
