//! Arguments of `alc run`.

use std::path::PathBuf;

use clap::{ArgGroup, Args, ValueEnum};

/// Which kernels run the model.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// TVM kernels when the archive has a library for this machine, else native.
    Auto,
    /// The pure-Rust reference kernels.
    Native,
    /// The archive's TVM-compiled library (fails when there is none).
    Tvm,
}

impl From<Backend> for ava_runtime::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => ava_runtime::Backend::Auto,
            Backend::Native => ava_runtime::Backend::Native,
            Backend::Tvm => ava_runtime::Backend::Tvm,
        }
    }
}

/// How the KV cache stores keys and values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvCache {
    /// 32-bit floats (exact).
    F32,
    /// Half floats: half the memory, the same greedy tokens on the tested models.
    F16,
    /// int8 with one scale per head row: about a quarter of f32.
    Q8,
}

impl From<KvCache> for ava_runtime::KvDtype {
    fn from(k: KvCache) -> Self {
        match k {
            KvCache::F32 => ava_runtime::KvDtype::F32,
            KvCache::F16 => ava_runtime::KvDtype::F16,
            KvCache::Q8 => ava_runtime::KvDtype::Q8,
        }
    }
}

/// The model `run`, `chat` and `bench` load, and how.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// An archive (`.tar`), an unpacked archive, a checkpoint directory, or a hub repository
    /// id (`org/name[@REV]`, downloaded first).
    #[arg(value_name = "PKG|DIR|REPO_ID")]
    pub source: String,
    /// Kernel backend.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    #[command(flatten)]
    pub trust: super::TrustArgs,
    #[command(flatten)]
    pub hub: super::HubArgs,
}

/// `run PKG|DIR (--prompt TEXT | --prompt-file FILE | --prompt-ids IDS)`.
#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "prompt_ids"])))]
pub struct RunArgs {
    /// The prompt text (tokenized with the model's tokenizer, BOS added); `-` reads it from
    /// stdin.
    #[arg(long, value_name = "TEXT|-")]
    pub prompt: Option<String>,
    /// Read the prompt from a file (`-`: stdin), as `--prompt` takes it.
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// The prompt as token ids, comma-separated (used as given).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub prompt_ids: Option<Vec<u32>>,
    /// Wrap the prompt in the Gemma chat template (one user turn).
    #[arg(long, conflicts_with = "prompt_ids")]
    pub chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128, value_parser = crate::args::bounds::positive)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Generate past EOS and `<end_of_turn>` until --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Context length of the session (KV cache positions; default: 4096, or the model's
    /// maximum when that is smaller). More than the model's maximum is a usage error.
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub context: Option<usize>,
    /// How the KV cache stores keys and values.
    #[arg(long, value_enum, default_value_t = KvCache::F16)]
    pub kv_cache: KvCache,
    /// Write the last prompt position's logits as a float32 .npy vector.
    #[arg(long, value_name = "FILE.npy")]
    pub logits_out: Option<PathBuf>,
    /// Replace an existing `--logits-out` file that these tools did not write (another kind of
    /// file, a symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How tokens are picked (`run`, `chat`).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, value_parser = crate::args::bounds::non_negative)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0, value_parser = crate::args::bounds::open_unit)]
    pub top_p: f32,
    /// Drop tokens below P times the top probability (0: off).
    #[arg(long, default_value_t = 0.0, value_parser = crate::args::bounds::unit)]
    pub min_p: f32,
    /// Repetition penalty over the last 64 tokens (1: off).
    #[arg(long, default_value_t = 1.0, value_parser = crate::args::bounds::positive_f32)]
    pub repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The runtime's sampling parameters.
    pub fn params(&self) -> ava_runtime::SamplingParams {
        ava_runtime::SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..ava_runtime::SamplingParams::default()
        }
    }
}

/// `chat PKG|DIR`: one user turn a line from stdin until EOF.
#[derive(Args, Clone, Debug)]
pub struct ChatArgs {
    /// Text put before the first user message (Gemma has no system turn: it opens the first).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Most tokens of one reply.
    #[arg(long, default_value_t = 512, value_parser = crate::args::bounds::positive)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Context length of the conversation (KV cache positions; default: 4096, or the model's
    /// maximum when that is smaller).
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub context: Option<usize>,
    /// How the KV cache stores keys and values.
    #[arg(long, value_enum, default_value_t = KvCache::F16)]
    pub kv_cache: KvCache,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}
