//! Arguments of `download`, and the hub options every verb that takes a checkpoint flattens in.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::ui::Ui;
use ava_hub::HubOptions;

/// `download REPO_ID [FILES]... [--revision REV] [--include GLOB]... [--exclude GLOB]...
/// [--local-dir DIR] [--dry-run]`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Prints the snapshot directory (with --json: the commit and every file's size and \
sha256). The cache is the one huggingface_hub uses (--hub-cache, else HF_HUB_CACHE, else \
HF_HOME/hub, else ~/.cache/huggingface/hub); HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are \
honoured. Interrupted downloads resume. See docs/download.md."
)]
pub struct DownloadArgs {
    /// Repository id, `org/name` or `name`, optionally `@REVISION`.
    pub repo_id: String,
    /// Only these files (paths in the repository; each must exist), as the hub's own CLI
    /// takes them.
    #[arg(value_name = "FILES")]
    pub files: Vec<String>,
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
    /// List what would be fetched (files, sizes, what is already here) without downloading.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Give up on a download attempt after SECS without a byte (also AVA_HUB_STALL_TIMEOUT)
    /// [default: 60].
    #[arg(long, value_name = "SECS", value_parser = crate::args::bounds::positive_seconds)]
    pub stall_timeout: Option<f64>,
    /// Give up on a file after SECS in all, every retry included (also
    /// AVA_HUB_FILE_DEADLINE) [default: 14400].
    #[arg(long, value_name = "SECS", value_parser = crate::args::bounds::positive_seconds)]
    pub file_deadline: Option<f64>,
    /// Accept files the hub gives no checksum for (no sha256, nor a size and git blob sha1).
    #[arg(long)]
    pub no_verify: bool,
    /// Hub access token (overrides HF_TOKEN and the stored token).
    #[arg(long, value_name = "TOKEN", value_parser = token)]
    pub token: Option<String>,
}

/// A `--token`: trimmed, not empty, no control characters (it goes into an HTTP header).
fn token(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() || t.chars().any(char::is_control) {
        return Err("must be a non-empty token without control characters".into());
    }
    Ok(t.to_string())
}

impl HubArgs {
    /// The client options: these flags and the global `--hub-cache` over the `HF_*` and
    /// `AVA_HUB_*` environment.
    pub fn options(&self, ui: &Ui) -> HubOptions {
        let mut o = HubOptions::from_env(ui.hub_cache.as_deref(), self.offline);
        if let Some(s) = self.stall_timeout {
            o.stall_timeout = Duration::from_secs_f64(s);
        }
        if let Some(s) = self.file_deadline {
            o.file_deadline = Duration::from_secs_f64(s);
        }
        o.no_verify = self.no_verify;
        if let Some(token) = &self.token {
            o.token = Some(token.clone());
        }
        o
    }
}
