//! Options of the `aon` INT8 verbs: `quantize` (static INT8 of an ONNX graph), `classify`,
//! `eval`, `compile`.

use std::path::PathBuf;

use ava_core::Target;
use ava_malbert::oos::OosRule;
use ava_passes::quant::{self, Format, Method};

use super::run::Backend;

use clap::{Args, ValueEnum};

/// Default number of calibration utterances.
pub const DEFAULT_CALIB_SAMPLES: usize = 512;
/// Default number of labelled utterances the accuracy gate checks.
pub const DEFAULT_GATE_SAMPLES: usize = 600;

/// Calibration method of `aon quantize`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CalibMethod {
    /// Smallest and largest activation seen.
    Minmax,
    /// Clip at the 99.999th percentile of each side.
    Percentile,
    /// Clip where the KL divergence to the 8-bit distribution is least.
    Entropy,
}

/// Operator format of the quantized graph.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QuantFormat {
    /// QuantizeLinear/DequantizeLinear pairs around float operators (what `aon compile`
    /// packages and the runtime reads).
    Qdq,
    /// Integer operators (MatMulInteger, int32 -> DequantizeLinear) between explicit
    /// QuantizeLinear/DequantizeLinear at the float boundaries; onnxruntime and the reference
    /// evaluator run it, the runtime classifier does not.
    Qoperator,
}

impl From<CalibMethod> for Method {
    fn from(m: CalibMethod) -> Method {
        match m {
            CalibMethod::Minmax => Method::MinMax,
            CalibMethod::Percentile => Method::Percentile(quant::calib::DEFAULT_PERCENTILE),
            CalibMethod::Entropy => Method::Entropy,
        }
    }
}

impl From<QuantFormat> for Format {
    fn from(f: QuantFormat) -> Format {
        match f {
            QuantFormat::Qdq => Format::Qdq,
            QuantFormat::Qoperator => Format::QOperator,
        }
    }
}

/// `aon quantize IN.onnx --calib FILE -o OUT.onnx`.
#[derive(Args, Clone, Debug)]
pub struct QuantizeOnnxArgs {
    /// Float ONNX model (`aon export` output).
    pub input: PathBuf,
    /// Calibration utterances: CLINC150 JSON (train split used), a JSON array of strings,
    /// JSONL `{"text", ...}` or text lines; other JSON is an error.
    #[arg(long, value_name = "FILE")]
    pub calib: PathBuf,
    /// Output ONNX file.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    /// Calibration utterances used (the first N).
    #[arg(long, default_value_t = DEFAULT_CALIB_SAMPLES, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub samples: usize,
    /// How activation ranges are chosen.
    #[arg(long, value_enum, default_value_t = CalibMethod::Minmax)]
    pub method: CalibMethod,
    /// One weight scale per output channel (the default; `--per-channel false` for per tensor).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub per_channel: bool,
    /// Operator format.
    #[arg(long, value_enum, default_value_t = QuantFormat::Qdq)]
    pub format: QuantFormat,
    /// Node names kept in float (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    pub exclude: Vec<String>,
    /// Keep the costliest nodes in float until INT8 loses at most P accuracy points on the
    /// labelled validation split of `--calib` (fails with a report otherwise).
    #[arg(long, value_name = "P")]
    pub max_accuracy_drop: Option<f64>,
    /// Labelled utterances the accuracy gate uses (the first N of the validation split).
    #[arg(long, default_value_t = DEFAULT_GATE_SAMPLES, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub gate_samples: usize,
    /// tokenizer.json (default: next to the input model).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// `aon classify PKG|DIR|MODEL.onnx --text TEXT`.
#[derive(Args, Clone, Debug)]
pub struct ClassifyArgs {
    /// Model: an archive (`aon compile`), an `.onnx` file (tokenizer.json and labels.json beside
    /// it) or a directory holding `model.onnx`, tokenizer.json and labels.json.
    pub model: PathBuf,
    /// Utterance to classify; `-` reads it from stdin.
    #[arg(long, value_name = "TEXT|-")]
    pub text: String,
    /// How many intents to list.
    #[arg(long, default_value_t = 3, value_name = "K", value_parser = crate::args::bounds::positive)]
    pub top: usize,
    /// Out-of-scope threshold: below it the intent is `oos` (default: the archive's).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Kernels: the archive's TVM library for this machine when it has one (`auto`), the
    /// native ones, or the TVM library (an error without one).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    #[command(flatten)]
    pub trust: super::TrustArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// `aon eval PKG|DIR|MODEL.onnx --data FILE`.
#[derive(Args, Clone, Debug)]
pub struct EvalArgs {
    /// Model, as `aon classify` takes it.
    pub model: PathBuf,
    /// Labelled utterances (CLINC150 JSON or JSONL).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Split to score.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Score at most N utterances (and N out-of-scope ones), sampled across all intents: each
    /// intent's utterances in a seeded random order, one per intent in turn.
    #[arg(long, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub limit: Option<usize>,
    /// Seed of the `--limit` sample.
    #[arg(long, default_value_t = 0, requires = "limit")]
    pub seed: u64,
    /// Write token ids, gold and predicted labels as JSON (for comparisons with onnxruntime).
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
    /// Replace an existing `--predictions` file that these tools did not write (another kind
    /// of file, a symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    /// Out-of-scope threshold (default: the archive's): reports in-scope accuracy and the
    /// recall of the out-of-scope utterances (`oos_<split>` of CLINC150 JSON, or intent `oos`).
    #[arg(long, value_name = "T")]
    pub threshold: Option<f32>,
    /// Kernels, as `aon classify --backend`.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    #[command(flatten)]
    pub trust: super::TrustArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}

/// Weight format `aon compile` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompileQuant {
    /// Static INT8 (QDQ), calibrated on the training split.
    Int8,
    /// Float only.
    F32,
}

/// `aon compile SOURCE --intents FILE -o OUT`.
#[derive(Args, Clone, Debug)]
pub struct CompileArgs {
    /// ALBERT checkpoint directory (`AlbertModel` or `AlbertForSequenceClassification`), or a
    /// hub repository id (`org/name[@REV]`) when no such path exists.
    #[arg(value_name = "DIR|REPO_ID")]
    pub source: String,
    /// Labelled intents (CLINC150 JSON or JSONL): head fitting and calibration use the train
    /// split, validation the `val` split (never `test`).
    #[arg(long, value_name = "FILE")]
    pub intents: PathBuf,
    /// Weight format.
    #[arg(long, value_enum, default_value = "int8")]
    pub quant: CompileQuant,
    /// Keep the checkpoint's own classifier and labels instead of fitting a head on `--intents`.
    #[arg(long)]
    pub keep_head: bool,
    /// Sequence cap (position embeddings cut to N).
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub max_seq_len: usize,
    /// Calibration utterances (first N of the train split).
    #[arg(long, default_value_t = DEFAULT_CALIB_SAMPLES, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub samples: usize,
    /// Validation utterances (first N of the `val` split) scored in float and in the result.
    #[arg(long, default_value_t = DEFAULT_GATE_SAMPLES, value_name = "N", value_parser = crate::args::bounds::positive)]
    pub val_samples: usize,
    /// Fail if the result loses more than P accuracy points against float on validation.
    #[arg(long, value_name = "P")]
    pub max_accuracy_drop: Option<f64>,
    /// Out-of-scope threshold stored in the archive: a softmax score, or `auto` to choose
    /// it on the validation split (`val` and `oos_val`) for the best mean of in-scope
    /// accuracy and out-of-scope recall.
    #[arg(long, value_name = "T|auto")]
    pub oos_threshold: Option<OosRule>,
    /// Also compile the encoder's kernels with Apache TVM for this target (android-arm64,
    /// linux-arm64, linux-x86_64): the archive then carries `lib/<target>/libmodel.so`, which
    /// the runtime uses on a matching machine (the manifest names the target).
    #[arg(long, value_name = "TARGET")]
    pub target: Option<Target>,
    /// CPU preset the kernels are tuned for (e.g. cortex-a76, cascadelake; default: per
    /// target). Needs `--target`.
    #[arg(long, value_name = "CPU", requires = "target")]
    pub cpu: Option<String>,
    /// Archive name (default: the source directory's or repository's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Output: a directory (the archive is named by the naming scheme; created when missing
    /// if written with a trailing `/`) or an archive path.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Version of the archive: a number, or `auto` (one above the highest version of the same
    /// name in the output directory).
    #[arg(long = "package-version", value_name = "N|auto", default_value = "1")]
    pub package_version: crate::commands::archive_identity::PackageVersion,
    #[command(flatten)]
    pub sign: super::SignKeyArgs,
    /// Replace an existing output that these tools did not write (another kind of file, a
    /// symlink, a FIFO or a device).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub hub: super::HubArgs,
    #[command(flatten)]
    pub threads: super::ThreadsArgs,
}
