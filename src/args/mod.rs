//! Option groups shared by the verbs of both binaries, joined with `#[command(flatten)]`.

mod aon;
mod archive;
pub mod bench;
pub mod bounds;
pub mod build;
pub mod compile;
mod convert;
mod download;
mod quantize;
pub mod run;
mod trust;

pub use aon::{AonConvertArgs, ExportArgs, OptimizeArgs};
pub use archive::{CommonCommand, InspectArgs, PackageArgs, UnpackArgs, VerifyArgs};
pub use convert::{ConvertArgs, ConvertDtype};
pub use download::{DownloadArgs, HubArgs};
pub use quantize::{BudgetArgs, MethodArg, PerplexityArgs, QuantArg, QuantizeArgs};
pub use run::RunArgs;
pub use trust::{KeygenArgs, SignArgs, SignKeyArgs, TrustArgs};

use std::path::PathBuf;

use clap::Args;

/// `--threads N` of the commands that compute.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct ThreadsArgs {
    /// Threads to compute on (default: one per core).
    #[arg(long, value_name = "N", value_parser = bounds::threads)]
    pub threads: Option<usize>,
}

impl ThreadsArgs {
    /// Sizes the process's kernel pools to `--threads` (before any model runs).
    pub fn apply(&self) -> anyhow::Result<()> {
        if let Some(n) = self.threads {
            ava_runtime::set_process_threads(n)
                .map_err(|e| anyhow::anyhow!("--threads {n}: {e}"))?;
        }
        Ok(())
    }
}

/// Flags every subcommand accepts.
#[derive(Args, Clone, Debug, Default)]
pub struct GlobalArgs {
    /// Print the result as JSON on stdout (human messages go to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The tool's own cache, holding the compile stages [default: $XDG_CACHE_HOME/ava, else
    /// ~/.cache/ava].
    #[arg(long, global = true, env = "AVA_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where hub downloads are cached [default: HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub].
    #[arg(long, global = true, value_name = "DIR")]
    pub hub_cache: Option<PathBuf>,
}
pub mod aon_int8;
pub mod validate;
