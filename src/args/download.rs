//! Arguments of `download`, and the hub options every verb that takes a checkpoint flattens in.

use std::path::PathBuf;

use clap::Args;

use crate::ui::Ui;
use ava_hub::HubOptions;

/// `download REPO_ID [--revision REV] [--include GLOB]... [--exclude GLOB]... [--local-dir DIR]`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Prints the snapshot directory (with --json: the commit and every file's size and \
sha256). The cache is the one huggingface_hub uses (--cache-dir, else HF_HUB_CACHE, else \
HF_HOME/hub, else ~/.cache/huggingface/hub); HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are \
honoured. Interrupted downloads resume. See docs/download.md."
)]
pub struct DownloadArgs {
    /// Repository id, `org/name` or `name`, optionally `@REVISION`.
    pub repo_id: String,
    /// Branch, tag or full commit sha [default: main].
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only files matching this glob (`*` also matches `/`; `dir/` means all under it);
    /// repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out files matching this glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Write plain files into DIR (with resume metadata under DIR/.cache/huggingface/) instead
    /// of the cache.
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
}

/// Hub options of the verbs that accept a repository id.
#[derive(Args, Clone, Debug, Default)]
pub struct HubArgs {
    /// Use the local cache only, with no network access (also HF_HUB_OFFLINE=1); fail if
    /// something is missing.
    #[arg(long)]
    pub offline: bool,
}

impl HubArgs {
    /// The client options: these flags and the global `--cache-dir` over the `HF_*`
    /// environment.
    pub fn options(&self, ui: &Ui) -> HubOptions {
        HubOptions::from_env(ui.cache_dir.as_deref(), self.offline)
    }
}
