//! Arguments of `alc bench` and `aon bench`.

use std::path::PathBuf;

use clap::Args;

use super::run::{Backend, KvCache, ModelArgs};

/// `alc bench PKG|DIR [-p N,..] [-n N,..] [-r N]`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Prompt sizes to time prefill with (comma-separated or repeated; 0 skips prefill).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N,..",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation sizes to time decoding with (comma-separated or repeated; 0 skips decoding).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "N,..",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Timed repetitions of each test (after one untimed warm-up run).
    #[arg(short = 'r', long, default_value_t = 5, value_parser = crate::args::bounds::positive)]
    pub repetitions: usize,
    /// How the KV cache stores keys and values.
    #[arg(long, value_enum, default_value_t = KvCache::F16)]
    pub kv_cache: KvCache,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `aon bench PKG|DIR|MODEL.onnx [--data FILE] [-r N]`.
#[derive(Args, Clone, Debug)]
pub struct AonBenchArgs {
    /// Model, as `aon classify` takes it.
    pub model: PathBuf,
    /// Utterances: CLINC150 JSON or JSONL `{"text", ...}` (the `--split` is used), a JSON array
    /// of strings, or text lines (default: the model's intent names as utterances).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Split of a CLINC150 JSON `--data` file.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Most utterances to time (the first N).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = crate::args::bounds::positive)]
    pub limit: usize,
    /// Timed passes over the utterances (after one untimed warm-up pass).
    #[arg(short = 'r', long, default_value_t = 3, value_parser = crate::args::bounds::positive)]
    pub repetitions: usize,
    /// Kernels, as `aon classify --backend`.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
    #[command(flatten)]
    pub trust: super::TrustArgs,
}
