//! `aon classify` and `aon eval`: run an mALBERT intent classifier (ONNX, float or INT8 QDQ)
//! on utterances and report intents, accuracy, macro-F1 and latency.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ava_passes::{eval, onnx, Graph};
use serde::Serialize;

use super::aon_data::{self as data, Encoder};
use crate::args::aon_int8::{ClassifyArgs, EvalArgs};
use crate::ui::Ui;

/// Model file looked for inside a model directory, INT8 first.
pub const MODEL_FILES: [&str; 2] = ava_runtime::albert::MODEL_FILES;

/// What runs the model.
enum Backend {
    /// `ava-runtime`'s mALBERT encoder (archives, directories, optimized `.onnx` files).
    Runtime(Box<ava_runtime::albert::Classifier>),
    /// `ava-passes`' reference evaluator, for graphs the runtime does not recognise (e.g.
    /// exported with `--passes none`).
    Evaluator(Box<(Graph, Encoder)>),
}

/// A loaded classifier: backend, tokenizer and labels.
pub struct Classifier {
    backend: Backend,
    /// Label names by class index.
    pub labels: Vec<String>,
    /// The model it came from.
    pub path: PathBuf,
}

/// Intent probabilities of one utterance.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// Best intent.
    pub intent: String,
    /// Its probability.
    pub score: f32,
    /// The `top` best intents with probabilities.
    pub top: Vec<(String, f32)>,
    /// Token ids fed to the model.
    pub input_ids: Vec<i64>,
    /// Milliseconds spent (tokenizer + model).
    pub latency_ms: f64,
    /// Milliseconds spent in the model alone (no tokenizer).
    pub model_ms: f64,
    /// What ran it: `runtime` or `evaluator`.
    pub backend: &'static str,
    /// Index of the best intent.
    #[serde(skip)]
    pub index: usize,
}

impl Classifier {
    /// Loads an archive, a model directory or an `.onnx` file: `ava-runtime` when it recognises
    /// the graph, the reference evaluator otherwise (never for archives).
    pub fn open(model: &Path) -> anyhow::Result<Self> {
        let runtime_err = match ava_runtime::albert::Classifier::open(model) {
            Ok(c) => {
                return Ok(Classifier {
                    labels: c.labels().to_vec(),
                    path: c.model_path().to_path_buf(),
                    backend: Backend::Runtime(Box::new(c)),
                })
            }
            Err(e) => e,
        };
        let path = if model.is_dir() {
            MODEL_FILES
                .iter()
                .map(|f| model.join(f))
                .find(|p| p.is_file())
        } else {
            model
                .extension()
                .is_some_and(|e| e == "onnx")
                .then(|| model.to_path_buf())
        };
        let Some(path) = path else {
            return Err(runtime_err).with_context(|| format!("opening {}", model.display()));
        };
        let graph = onnx::load(&path).with_context(|| format!("reading {}", path.display()))?;
        let enc = Encoder::new(&data::tokenizer_next_to(&path), &graph)?;
        let labels = data::labels_next_to(&path)?;
        Ok(Classifier {
            backend: Backend::Evaluator(Box::new((graph, enc))),
            labels,
            path,
        })
    }

    /// Class probabilities, token ids and the name of the backend.
    fn probs(&self, text: &str) -> anyhow::Result<(Vec<f32>, Vec<i64>, f64)> {
        match &self.backend {
            Backend::Runtime(c) => {
                let r = c.classify(text)?;
                let ids = r.input_ids.iter().map(|&i| i64::from(i)).collect();
                Ok((r.probs, ids, r.model_seconds * 1e3))
            }
            Backend::Evaluator(ge) => {
                let (graph, enc) = &**ge;
                let inputs = enc.inputs(text)?;
                let t0 = Instant::now();
                let out = eval::run(graph, &inputs)?;
                let model_ms = t0.elapsed().as_secs_f64() * 1e3;
                let logits = out[0].as_f32().context("logits are not f32")?;
                let ids = inputs
                    .get(ava_passes::albert::INPUT_IDS)
                    .and_then(|t| t.to_i64())
                    .unwrap_or_default();
                Ok((softmax(logits), ids, model_ms))
            }
        }
    }

    /// What runs the model: `runtime` or `evaluator`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Runtime(_) => "runtime",
            Backend::Evaluator(_) => "evaluator",
        }
    }

    /// Classifies one utterance.
    pub fn classify(&self, text: &str, top: usize) -> anyhow::Result<Prediction> {
        let t0 = Instant::now();
        let (probs, input_ids, model_ms) = self.probs(text)?;
        let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let name = |i: usize| self.labels.get(i).cloned().unwrap_or_else(|| i.to_string());
        let index = order.first().copied().unwrap_or(0);
        Ok(Prediction {
            intent: name(index),
            score: probs.get(index).copied().unwrap_or(0.0),
            top: order
                .iter()
                .take(top)
                .map(|&i| (name(i), probs[i]))
                .collect(),
            input_ids,
            latency_ms,
            model_ms,
            backend: self.backend(),
            index,
        })
    }
}

fn softmax(v: &[f32]) -> Vec<f32> {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = v.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// Runs `aon classify`.
pub fn run_classify(args: &ClassifyArgs, ui: &Ui) -> anyhow::Result<()> {
    let c = Classifier::open(&args.model)?;
    let p = c.classify(&args.text, args.top.max(1))?;
    ui.result(&p, || {
        let mut s = format!(
            "{} ({:.3})  [{:.2} ms, {}]\n",
            p.intent, p.score, p.latency_ms, p.backend
        );
        for (l, sc) in p.top.iter().skip(1) {
            s += &format!("  {l} ({sc:.3})\n");
        }
        s
    })
}

/// What `aon eval` reports.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    /// Model file.
    pub model: PathBuf,
    /// What ran it: `runtime` or `evaluator`.
    pub backend: &'static str,
    /// Split scored.
    pub split: String,
    /// Utterances scored (those whose intent the model knows).
    pub utterances: usize,
    /// Utterances skipped (intent unknown to the model).
    pub skipped: usize,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro-averaged F1.
    pub macro_f1: f64,
    /// Median per-utterance latency, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile latency, ms.
    pub latency_p95_ms: f64,
    /// Median latency of the model alone (no tokenizer), ms.
    pub model_latency_p50_ms: f64,
    /// 95th percentile latency of the model alone, ms.
    pub model_latency_p95_ms: f64,
}

#[derive(Serialize)]
struct Dump<'a> {
    labels: &'a [String],
    input_ids: Vec<Vec<i64>>,
    gold: Vec<usize>,
    predicted: Vec<usize>,
}

/// Runs `aon eval`.
pub fn run_eval(args: &EvalArgs, ui: &Ui) -> anyhow::Result<()> {
    let c = Classifier::open(&args.model)?;
    let index: HashMap<&str, usize> = c
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let examples = data::read_split(&args.data, &args.split)?;
    let mut dump = Dump {
        labels: &c.labels,
        input_ids: vec![],
        gold: vec![],
        predicted: vec![],
    };
    let (mut lat, mut model_lat) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for (text, intent) in examples.iter().take(args.limit.unwrap_or(usize::MAX)) {
        let Some(&g) = intent.as_deref().and_then(|i| index.get(i)) else {
            skipped += 1;
            continue;
        };
        let p = c.classify(text, 1)?;
        lat.push(p.latency_ms);
        model_lat.push(p.model_ms);
        dump.gold.push(g);
        dump.predicted.push(p.index);
        dump.input_ids.push(p.input_ids);
    }
    let report = EvalReport {
        model: c.path.clone(),
        backend: c.backend(),
        split: args.split.clone(),
        utterances: dump.gold.len(),
        skipped,
        accuracy: data::accuracy(&dump.predicted, &dump.gold),
        macro_f1: data::macro_f1(&dump.predicted, &dump.gold),
        latency_p50_ms: data::percentile(&mut lat, 50.0),
        latency_p95_ms: data::percentile(&mut lat, 95.0),
        model_latency_p50_ms: data::percentile(&mut model_lat, 50.0),
        model_latency_p95_ms: data::percentile(&mut model_lat, 95.0),
    };
    if let Some(p) = &args.predictions {
        std::fs::write(p, serde_json::to_vec(&dump)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    ui.result(&report, || {
        format!(
            "{} ({}, {} split, {} utterances{}): accuracy {:.2}%, macro-F1 {:.4}, latency p50 {:.2} ms, p95 {:.2} ms\n",
            report.model.display(),
            report.backend,
            report.split,
            report.utterances,
            if skipped > 0 { format!(", {skipped} skipped") } else { String::new() },
            100.0 * report.accuracy,
            report.macro_f1,
            report.latency_p50_ms,
            report.latency_p95_ms
        )
    })
}
