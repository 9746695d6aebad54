//! Arguments of `alc convert`.

use std::path::PathBuf;

use ava_quantize::{ConvertOptions, OutDtype};
use clap::{Args, ValueEnum};

/// `convert FILE.gguf -o DIR`, or `convert REPO_ID|DIR --gguf FILE.gguf -o DIR`.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Only llama.cpp `gemma3` GGUF files are understood. Quantized tensors (Q4_0, \
Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K) are dequantized; norm weights lose llama.cpp's +1. \
The 5-local:1-global layer pattern, local RoPE theta 10000 and query_pre_attn_scalar = head_dim \
are assumed, as llama.cpp does, since the file does not record them."
)]
pub struct ConvertArgs {
    /// The GGUF file to convert, or with --gguf the hub repository id (`org/name[@REV]`) or
    /// directory holding it.
    #[arg(value_name = "FILE.gguf|REPO_ID|DIR")]
    pub input: String,
    /// The GGUF file of INPUT to convert (e.g. `gemma-3-270m-it-Q4_K_M.gguf`): only it and
    /// the repository's tokenizer.json are downloaded.
    #[arg(long, value_name = "FILE.gguf")]
    pub gguf: Option<String>,
    /// Output checkpoint directory (must not exist; written under a temporary name first).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Element type of the written weights.
    #[arg(long, value_enum, default_value_t = ConvertDtype::F32)]
    pub dtype: ConvertDtype,
    /// A tokenizer.json to copy into the checkpoint (default with --gguf: the repository's,
    /// when it has one).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub hub: super::HubArgs,
}

/// `--dtype`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertDtype {
    /// float32: the dequantized values exactly.
    F32,
    /// bfloat16, rounded to nearest even: half the size.
    Bf16,
}

impl ConvertArgs {
    /// The convert stage's options, with `found` (the GGUF repository's tokenizer.json) when
    /// no `--tokenizer` is given.
    pub fn options(&self, found: Option<PathBuf>) -> ConvertOptions {
        ConvertOptions {
            dtype: match self.dtype {
                ConvertDtype::F32 => OutDtype::F32,
                ConvertDtype::Bf16 => OutDtype::BF16,
            },
            tokenizer: self.tokenizer.clone().or(found),
        }
    }
}
