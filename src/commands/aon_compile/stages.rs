//! The cached stages of `aon compile`: convert -> export -> optimize -> quantize, each writing
//! an entry of the stage cache ([`ava_packaging::cache`]), `CACHE_DIR/aon/<stage>/<key>/`, where
//! the key is the sha256 of the stage's input (the previous stage's key, or the source's
//! content) and the options it reads.
//! A finished stage's directory is reused as it is, so a re-run skips it and a changed option
//! redoes only the stages downstream of it (the scheme of `alc compile`, docs/aon.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ava_core::checkpoint::{LABELS_FILE, ONNX_MODEL_FILE};
use ava_core::{Checkpoint, TOKENIZER_FILE};
use ava_malbert::{self as malbert, Options, QuantizeOptions};
use ava_packaging::cache::{hash_dir, KeyHasher, Lookup, StageCache};
use ava_passes::quant::Format;
use ava_passes::{albert, onnx, Pipeline};
use serde::Serialize;

use crate::args::aon_int8::CompileArgs;
use crate::ui::{CountBar, Ui};
use crate::TOOL_ID;

/// This pipeline's folder in the stage cache.
pub const CACHE_FOLDER: &str = "aon";
/// Graph pipeline run before quantization (what the runtime recognises).
pub const PIPELINE: &str = "standard";
/// The quantization report the quantize stage keeps beside its model.
pub const QUANTIZE_REPORT: &str = "quantize.json";
/// The convert report (vocabulary, positions, the fitted head) beside the checkpoint.
pub const CONVERT_REPORT: &str = "convert.json";
/// Head solver, part of the convert key (a cached head from another solver is refitted).
const HEAD_SOLVER: &str = "lbfgs";
/// The converted checkpoint inside the convert stage's directory.
const CHECKPOINT_DIR: &str = "malbert";
/// Default L2 of the fitted head (as `aon convert`).
const HEAD_L2: f32 = 1e-4;

/// One stage as `aon compile --json` reports it.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// `convert`, `export`, `optimize` or `quantize`.
    pub stage: &'static str,
    /// The stage key (sha256, hex).
    pub key: String,
    /// Whether the cached result was used.
    pub cached: bool,
    /// Seconds spent (0 when cached).
    pub seconds: f64,
    /// The stage's directory.
    pub output: PathBuf,
}

/// A finished stage: its key and directory.
pub struct Artifact {
    key: String,
    /// The stage's directory.
    pub dir: PathBuf,
}

impl Artifact {
    /// The converted checkpoint (convert stage).
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_DIR)
    }

    /// The ONNX model (export, optimize, quantize stages).
    pub fn model(&self) -> PathBuf {
        self.dir.join(ONNX_MODEL_FILE)
    }
}

/// The cache and the stages run so far.
pub struct Stages<'a> {
    cache: StageCache,
    ui: &'a Ui,
    /// One entry per stage, in order.
    pub reports: Vec<StageReport>,
}

impl<'a> Stages<'a> {
    /// Stages cached in `cache` (`CACHE_DIR/aon`).
    pub fn new(cache: StageCache, ui: &'a Ui) -> Self {
        Stages {
            cache,
            ui,
            reports: Vec::new(),
        }
    }

    /// ALBERT checkpoint -> mALBERT (`malbert::convert`): a fitted head, or the checkpoint's.
    pub fn convert(&mut self, args: &CompileArgs, source: &Path) -> anyhow::Result<Artifact> {
        let mut h = KeyHasher::new("aon convert", &TOOL_ID);
        h.text(&hash_dir(source, &TOOL_ID)?);
        h.text(&format!(
            "keep_head {} max_seq_len {} l2 {HEAD_L2} solver {HEAD_SOLVER}",
            args.keep_head, args.max_seq_len
        ));
        if !args.keep_head {
            h.file(&args.intents)?;
        }
        let progress = self.ui.count_progress("encoding");
        self.run("convert", h, |out| {
            let opts = Options {
                intents: (!args.keep_head).then_some(args.intents.as_path()),
                corpus: None,
                prune_vocab: false,
                max_seq_len: args.max_seq_len,
                l2: HEAD_L2,
                progress: &CountBar(&progress),
            };
            let report = malbert::convert(source, &out.join(CHECKPOINT_DIR), &opts)?;
            std::fs::write(
                out.join(CONVERT_REPORT),
                serde_json::to_vec_pretty(&report)?,
            )
            .context("writing the convert report")
        })
    }

    /// Checkpoint -> ONNX, as the exporter writes it (no passes).
    pub fn export(&mut self, conv: &Artifact) -> anyhow::Result<Artifact> {
        let mut h = KeyHasher::new("aon export", &TOOL_ID);
        h.text(&conv.key);
        self.run("export", h, |out| {
            let ckpt =
                Checkpoint::open(&conv.checkpoint()).context("reading the converted checkpoint")?;
            let graph = albert::build(&ckpt)?;
            onnx::save(&graph, &out.join(ONNX_MODEL_FILE))?;
            Ok(())
        })
    }

    /// The [`PIPELINE`] passes: the float model that is validated and quantized.
    pub fn optimize(&mut self, export: &Artifact) -> anyhow::Result<Artifact> {
        let mut h = KeyHasher::new("aon optimize", &TOOL_ID);
        h.text(&export.key);
        h.text(PIPELINE);
        self.run("optimize", h, |out| {
            let mut graph = onnx::load(&export.model())?;
            Pipeline::parse(PIPELINE)?.run(&mut graph)?;
            onnx::save(&graph, &out.join(ONNX_MODEL_FILE))?;
            Ok(())
        })
    }

    /// Static INT8 (minmax, per channel) calibrated on the train split of `--intents`, with
    /// the accuracy gate when `--max-accuracy-drop` is given. Keeps the report beside the model.
    pub fn quantize(
        &mut self,
        optimized: &Artifact,
        conv: &Artifact,
        args: &CompileArgs,
    ) -> anyhow::Result<Artifact> {
        let mut h = KeyHasher::new("aon quantize", &TOOL_ID);
        h.text(&optimized.key);
        h.file(&args.intents)?;
        h.text(&format!(
            "minmax per-channel samples {} gate {:?} gate_samples {}",
            args.samples,
            args.max_accuracy_drop,
            if args.max_accuracy_drop.is_some() {
                args.val_samples
            } else {
                0
            }
        ));
        self.run("quantize", h, |out| {
            let ckpt = conv.checkpoint();
            let gate = match args.max_accuracy_drop {
                Some(p) => {
                    let labels =
                        std::fs::read(ckpt.join(LABELS_FILE)).context("reading labels.json")?;
                    Some((p, serde_json::from_slice(&labels)?))
                }
                None => None,
            };
            let opts = QuantizeOptions {
                calib: &args.intents,
                tokenizer: &ckpt.join(TOKENIZER_FILE),
                samples: args.samples,
                method: ava_passes::quant::Method::MinMax,
                per_tensor: false,
                exclude: BTreeSet::new(),
                gate,
                gate_samples: args.val_samples,
            };
            let mut graph = onnx::load(&optimized.model())?;
            let report = malbert::quantize(&mut graph, &opts, Format::Qdq)?;
            onnx::save(&graph, &out.join(ONNX_MODEL_FILE))?;
            std::fs::write(
                out.join(QUANTIZE_REPORT),
                serde_json::to_vec_pretty(&report)?,
            )?;
            Ok(())
        })
    }

    /// Runs `work` into a fresh directory that becomes the cache entry `<stage>/<key>` when
    /// it succeeds, unless a sound entry already exists (then `work` is skipped).
    fn run(
        &mut self,
        stage: &'static str,
        hasher: KeyHasher,
        work: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Artifact> {
        let key = hasher.finish();
        let t = Instant::now();
        let (dir, cached) = match self.cache.lookup(stage, &key, &|m| self.ui.info(m))? {
            Lookup::Hit(dir) => {
                self.ui.info(format!("{stage}: cached"));
                (dir, true)
            }
            Lookup::Miss(pending) => {
                self.ui.info(format!("{stage}..."));
                work(pending.path()).with_context(|| format!("aon compile: {stage}"))?;
                (pending.commit()?, false)
            }
        };
        let seconds = t.elapsed().as_secs_f64();
        self.reports.push(StageReport {
            stage,
            key: key.clone(),
            cached,
            seconds,
            output: dir.clone(),
        });
        Ok(Artifact { key, dir })
    }
}
