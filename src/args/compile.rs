//! Arguments of `alc compile`.

use std::path::PathBuf;

use ava_core::Target;
use clap::Args;

use super::{HubArgs, MethodArg, QuantArg};
use crate::commands::archive_identity::PackageVersion;

/// `compile SOURCE --quant Q --target T [--target T2 ...] [--calib FILE] -o OUT`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Stages: download (repo ids) -> convert (.gguf) -> quantize -> build (per \
target) -> package (per target). Each stage's output is cached under CACHE_DIR/ava-compile/ by \
the hash of its inputs and options, so a re-run skips finished stages and a changed option redoes \
only the stages that depend on it. OUT receives one archive per target, named after the source \
(repository, directory or file name; e.g. gemma-3-270m-it-q4bf16-linux-x86_64-v1.tar). An \
archive there from another source is never replaced without --force. See docs/tvm.md."
)]
pub struct CompileArgs {
    /// A hub repository id (`org/name[@REV]`), a checkpoint directory or a `.gguf` file.
    #[arg(value_name = "REPO_ID|DIR|FILE.gguf")]
    pub source: String,
    /// Compile this GGUF file of SOURCE, a hub repository or directory (e.g.
    /// `gemma-3-270m-it-Q4_K_M.gguf`): only it and the repository's tokenizer.json are
    /// downloaded.
    #[arg(long, value_name = "FILE.gguf")]
    pub gguf: Option<String>,
    /// Format of the projections (as `alc quantize --quant`).
    #[arg(long, value_enum, default_value_t = QuantArg::Q4bf16)]
    pub quant: QuantArg,
    /// Target to compile for (repeatable): android-arm64, linux-arm64, linux-x86_64.
    #[arg(long = "target", value_name = "TARGET", required = true)]
    pub targets: Vec<Target>,
    /// CPU preset to tune for (e.g. cortex-a76, haswell; default: per target).
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<String>,
    /// Rounding method (as `alc quantize --method`; every one but rtn calibrates).
    #[arg(long, value_enum, default_value_t = MethodArg::DEFAULT)]
    pub method: MethodArg,
    /// Calibration text (default: the built-in corpus, quantize/data/).
    #[arg(long, value_name = "FILE.txt")]
    pub calib: Option<PathBuf>,
    /// Calibration sequences.
    #[arg(long, default_value_t = ava_quantize::calib::DEFAULT_SAMPLES)]
    pub calib_samples: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = ava_quantize::calib::DEFAULT_SEQ_LEN)]
    pub calib_seq_len: usize,
    #[command(flatten)]
    pub budget: super::BudgetArgs,
    /// Fail (exit 1, no archive) when the mean KL divergence of the quantized model's token
    /// distributions from the source model's exceeds this (nats), on --gate-text.
    #[arg(long, value_name = "NATS")]
    pub max_kl: Option<f64>,
    /// Fail (exit 1, no archive) when the perplexity rises by more than this percentage over
    /// the source model's, on --gate-text.
    #[arg(long, value_name = "PERCENT")]
    pub max_ppl_increase: Option<f64>,
    /// Text the quality gates score (default: the built-in calibration corpus).
    #[arg(long, value_name = "FILE.txt")]
    pub gate_text: Option<PathBuf>,
    /// Windows of 512 tokens the quality gates score.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub gate_chunks: usize,
    /// Elements per quantization group (32, 64 or 128).
    #[arg(long, default_value_t = ava_core::quant::DEFAULT_GROUP_SIZE, value_parser = crate::args::bounds::positive)]
    pub group_size: usize,
    /// tokenizer.json for a GGUF source (default: the repository's with --gguf, else one
    /// beside the file).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Leave files matching this glob out of the archives (e.g. `goldens.json`); repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Fail, writing no archive, when the estimated runtime memory exceeds this many MiB:
    /// weights + kernel library + KV cache at --context (f16, sliding layers only their
    /// window) + workspace. The estimate is recorded in the manifest either way.
    #[arg(long, value_name = "MiB")]
    pub memory_budget: Option<u64>,
    /// Context (KV cache positions) the memory estimate is computed for [default: the
    /// runtime's default context, capped at the model's positions].
    #[arg(long)]
    pub context: Option<usize>,
    /// Compress the archives with zstd (`.tar.zst`).
    #[arg(long)]
    pub zstd: bool,
    /// Directory the archives are written to (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Version of the archives: a number, or `auto` (one above the highest version of the
    /// same name in the output directory).
    #[arg(long = "package-version", value_name = "N|auto", default_value = "1")]
    pub package_version: PackageVersion,
    /// Replace an archive in the output directory that was made from another source.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub sign: super::SignKeyArgs,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

impl CompileArgs {
    /// The quantize stage's options (the default policy and AWQ grid).
    pub fn quantize_options(&self) -> ava_quantize::QuantizeOptions {
        ava_quantize::QuantizeOptions {
            scheme: self.quant.scheme(),
            group_size: self.group_size,
            method: self.method.into(),
            policy: None,
            calib: self.calib.clone(),
            calib_samples: self.calib_samples,
            calib_seq_len: self.calib_seq_len,
            awq_grid: ava_quantize::awq::DEFAULT_GRID,
            budget: self.budget.budget(),
        }
    }

    /// The quality gates' options.
    pub fn gate_options(&self) -> ava_quantize::gate::GateOptions {
        ava_quantize::gate::GateOptions {
            max_kl: self.max_kl,
            max_ppl_increase: self.max_ppl_increase,
            chunks: self.gate_chunks,
        }
    }
}
