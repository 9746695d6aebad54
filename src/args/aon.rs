//! Options of the `aon`-only verbs: `convert` (ALBERT -> mALBERT), `export`, `optimize`.

use std::path::PathBuf;

use clap::Args;

use super::HubArgs;

/// `aon convert`'s default sequence cap.
pub const DEFAULT_MAX_SEQ_LEN: usize = 128;

/// `aon convert ALBERT_DIR|REPO -o DIR`.
#[derive(Args, Clone, Debug)]
pub struct AonConvertArgs {
    /// ALBERT checkpoint directory (AlbertModel or AlbertForSequenceClassification) or hub repo id.
    pub checkpoint: String,
    /// Output directory (config.json, model.safetensors, tokenizer.json, labels.json).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    /// Labelled utterances: CLINC150's JSON layout (`{"train": [[text, intent], ...], "val": ...}`)
    /// or JSONL of `{"text", "intent"}`. Fits a new logistic-regression head on the frozen encoder.
    #[arg(long, value_name = "FILE")]
    pub intents: Option<PathBuf>,
    /// Extra text (one utterance a line) whose tokens vocabulary pruning keeps.
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Drop vocabulary pieces that the corpus and intent texts never produce.
    #[arg(long)]
    pub prune_vocab: bool,
    /// Longest input in tokens ([CLS] and [SEP] included); position embeddings are cut to it.
    #[arg(long, default_value_t = DEFAULT_MAX_SEQ_LEN, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub max_seq_len: usize,
    /// L2 penalty of the fitted head.
    #[arg(long, default_value_t = 1e-4, value_name = "L2")]
    pub l2: f32,
    /// Hub options.
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// `aon export DIR -o model.onnx`.
#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// ALBERT checkpoint directory (e.g. `aon convert`'s output).
    pub dir: PathBuf,
    /// Output ONNX file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    /// Pipeline (`none`, `standard`, `onnxruntime` alias `ort`) or comma-separated pass names.
    #[arg(long, default_value = "standard", value_name = "LIST")]
    pub passes: String,
}

/// `aon optimize IN.onnx -o OUT.onnx`.
#[derive(Args, Clone, Debug)]
pub struct OptimizeArgs {
    /// Input ONNX file.
    pub input: PathBuf,
    /// Output ONNX file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    /// Pipeline (`none`, `standard`, `onnxruntime` alias `ort`) or comma-separated pass names.
    #[arg(long, default_value = "standard", value_name = "LIST")]
    pub passes: String,
}
