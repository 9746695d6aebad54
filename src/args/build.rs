//! Arguments of `alc build`.

use std::path::PathBuf;

use ava_core::Target;
use clap::Args;

/// `build DIR --target T [--target T2 ...] -o OUT`.
#[derive(Args, Clone, Debug)]
pub struct BuildArgs {
    /// A Gemma 3 checkpoint directory or stage output (f32, bf16 or q4bf16 weights).
    pub dir: PathBuf,
    /// Target to build kernels for (repeatable): android-arm64, linux-arm64, linux-x86_64.
    #[arg(long = "target", value_name = "TARGET", required = true)]
    pub targets: Vec<Target>,
    /// CPU preset to tune for (e.g. cortex-a76, haswell; default: per target).
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<String>,
    /// Output directory: the checkpoint's files plus lib/<target>/{libmodel.so,kernels.json}.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Replace an existing output that is not a stage directory (or is a symlink, FIFO or
    /// device).
    #[arg(long)]
    pub force: bool,
}

impl BuildArgs {
    /// The build stage's targets: each `--target` with `--cpu` (or its default preset).
    pub fn specs(&self) -> ava_targets::Result<Vec<ava_targets::TargetSpec>> {
        self.targets
            .iter()
            .map(|t| ava_targets::TargetSpec::new(*t, self.cpu.as_deref()))
            .collect()
    }
}
