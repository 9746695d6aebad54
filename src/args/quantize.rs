//! Arguments of `alc quantize` and `alc perplexity`.

use std::path::PathBuf;

use ava_quantize::mixed::Budget;
use ava_quantize::policy::Scheme;
use ava_quantize::stage::Method;
use ava_quantize::QuantizeOptions;
use clap::{Args, ValueEnum};

use super::HubArgs;

/// `--quant`: the scheme of the projections (and the default of the other roles).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantArg {
    /// 4-bit codes, bf16 scale per group (the embedding defaults to q8bf16).
    Q4bf16,
    /// 8-bit codes, bf16 scale per group.
    Q8bf16,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

/// `--method`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodArg {
    /// Round to nearest, per group.
    Rtn,
    /// Activation-aware scaling plus a per-group clip search (calibrated).
    Awq,
    /// GPTQ: rounding error fed back through the inverse Hessian of the inputs (calibrated).
    Gptq,
    /// AWQ's scaling and clip search, then GPTQ on its group scales (calibrated).
    AwqGptq,
}

impl MethodArg {
    /// The method used when none is given (docs/quantization.md says why).
    pub const DEFAULT: MethodArg = MethodArg::AwqGptq;
}

/// `quantize DIR|REPO --quant Q -o DIR`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "The output is a checkpoint directory (config.json, tokenizer files, \
model.safetensors with Q4BF16/Q8BF16 planes, ava-stage.json); see docs/formats/q4bf16.md and \
docs/quantization.md. Policy roles: embed (embedding / tied lm_head), proj (attention and MLP \
projections), norm (never quantized), other."
)]
pub struct QuantizeArgs {
    /// A checkpoint directory or hub repository id (`org/name[@REV]`).
    #[arg(value_name = "DIR|REPO_ID")]
    pub input: PathBuf,
    /// Output directory (must not exist; written under a temporary name first).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Format of the projections.
    #[arg(long, value_enum, default_value_t = QuantArg::Q4bf16)]
    pub quant: QuantArg,
    /// Elements per group along the input dimension (32, 64 or 128).
    #[arg(long, default_value_t = ava_core::quant::DEFAULT_GROUP_SIZE, value_parser = crate::args::bounds::positive)]
    pub group_size: usize,
    /// Rounding method (every one but rtn calibrates; ignored for float formats).
    #[arg(long, value_enum, default_value_t = MethodArg::DEFAULT)]
    pub method: MethodArg,
    /// Per-role overrides, e.g. `embed=q4bf16,norm=f32`, or per tensor
    /// (`model.layers.3.mlp.down_proj.weight=q8bf16`; a budget leaves those alone).
    #[arg(long, value_name = "ROLE=SCHEME,...")]
    pub policy: Option<String>,
    /// Calibration text (plain UTF-8; default: the built-in corpus, quantize/data/).
    #[arg(long, value_name = "FILE.txt")]
    pub calib: Option<PathBuf>,
    /// Calibration sequences.
    #[arg(long, default_value_t = ava_quantize::calib::DEFAULT_SAMPLES, value_parser = crate::args::bounds::positive)]
    pub calib_samples: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = ava_quantize::calib::DEFAULT_SEQ_LEN, value_parser = crate::args::bounds::positive)]
    pub calib_seq_len: usize,
    /// Exponents tried by the AWQ search (evenly spaced in [0, 1]).
    #[arg(long, default_value_t = ava_quantize::awq::DEFAULT_GRID, value_parser = crate::args::bounds::positive)]
    pub awq_grid: usize,
    #[command(flatten)]
    pub budget: BudgetArgs,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// Mixed precision under a budget (`docs/quantization.md#mixed-precision-under-a-budget`).
#[derive(Args, Clone, Debug, Default)]
pub struct BudgetArgs {
    /// Keep the most sensitive q4bf16 projections at q8bf16 while model.safetensors (as
    /// written, header included) stays within BYTES (measured on the calibration text).
    #[arg(long, value_name = "BYTES", value_parser = crate::args::bounds::positive_bytes, conflicts_with = "bpw")]
    pub size_budget: Option<u64>,
    /// The same, within N bits per weight over the q4bf16/q8bf16 tensors (codes and scales).
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::positive_f32)]
    pub bpw: Option<f32>,
}

impl BudgetArgs {
    /// The library's budget.
    pub fn budget(&self) -> Option<Budget> {
        match (self.size_budget, self.bpw) {
            (Some(b), _) => Some(Budget::FileBytes(b)),
            (None, Some(b)) => Some(Budget::Bpw(f64::from(b))),
            (None, None) => None,
        }
    }
}

impl QuantArg {
    /// The library's scheme.
    pub fn scheme(self) -> Scheme {
        match self {
            QuantArg::Q4bf16 => Scheme::Q4Bf16,
            QuantArg::Q8bf16 => Scheme::Q8Bf16,
            QuantArg::Bf16 => Scheme::Bf16,
            QuantArg::F16 => Scheme::F16,
            QuantArg::F32 => Scheme::F32,
        }
    }
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Rtn => Method::Rtn,
            MethodArg::Awq => Method::Awq,
            MethodArg::Gptq => Method::Gptq,
            MethodArg::AwqGptq => Method::AwqGptq,
        }
    }
}

impl QuantizeArgs {
    /// The quantize stage's options.
    pub fn options(&self) -> QuantizeOptions {
        QuantizeOptions {
            scheme: self.quant.scheme(),
            group_size: self.group_size,
            method: self.method.into(),
            policy: self.policy.clone(),
            calib: self.calib.clone(),
            calib_samples: self.calib_samples,
            calib_seq_len: self.calib_seq_len,
            awq_grid: self.awq_grid,
            budget: self.budget.budget(),
        }
    }
}

/// `perplexity PKG|DIR --text FILE [--reference PKG|DIR]`.
#[derive(Args, Clone, Debug)]
pub struct PerplexityArgs {
    /// An archive, unpacked archive or checkpoint directory.
    #[arg(value_name = "PKG|DIR")]
    pub model: PathBuf,
    /// The text to score (e.g. WikiText-2 test.txt).
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512, value_parser = crate::args::bounds::positive)]
    pub ctx: usize,
    /// Tokens between window starts (default: --ctx).
    #[arg(long, value_parser = crate::args::bounds::positive)]
    pub stride: Option<usize>,
    /// Most windows to run.
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub max_chunks: Option<usize>,
    /// A reference model (e.g. the f32 checkpoint): adds the KL divergence of the token
    /// distributions from it (mean, median, p99, max) and top-1 agreement, same windows.
    #[arg(long, value_name = "PKG|DIR")]
    pub reference: Option<PathBuf>,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}
