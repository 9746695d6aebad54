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
pub const MODEL_FILES: [&str; 2] = ["model.int8.onnx", "model.onnx"];

/// A loaded classifier: graph, tokenizer and labels.
pub struct Classifier {
    graph: Graph,
    enc: Encoder,
    /// Label names by class index.
    pub labels: Vec<String>,
    /// The ONNX file it came from.
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
    /// Index of the best intent.
    #[serde(skip)]
    pub index: usize,
}

impl Classifier {
    /// Loads a model file or directory.
    pub fn open(model: &Path) -> anyhow::Result<Self> {
        let path = if model.is_dir() {
            MODEL_FILES
                .iter()
                .map(|f| model.join(f))
                .find(|p| p.is_file())
                .with_context(|| format!("{}: no model.onnx", model.display()))?
        } else {
            model.to_path_buf()
        };
        let graph = onnx::load(&path).with_context(|| format!("reading {}", path.display()))?;
        let enc = Encoder::new(&data::tokenizer_next_to(&path), &graph)?;
        let labels = data::labels_next_to(&path)?;
        Ok(Classifier {
            graph,
            enc,
            labels,
            path,
        })
    }

    /// Classifies one utterance.
    pub fn classify(&self, text: &str, top: usize) -> anyhow::Result<Prediction> {
        let t0 = Instant::now();
        let inputs = self.enc.inputs(text)?;
        let out = eval::run(&self.graph, &inputs)?;
        let logits = out[0].as_f32().context("logits are not f32")?;
        let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
        let probs = softmax(logits);
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
            input_ids: inputs
                .get(ava_passes::albert::INPUT_IDS)
                .and_then(|t| t.to_i64())
                .unwrap_or_default(),
            latency_ms,
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
        let mut s = format!("{} ({:.3})  [{:.2} ms]\n", p.intent, p.score, p.latency_ms);
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
    let mut lat = Vec::new();
    let mut skipped = 0;
    for (text, intent) in examples.iter().take(args.limit.unwrap_or(usize::MAX)) {
        let Some(&g) = intent.as_deref().and_then(|i| index.get(i)) else {
            skipped += 1;
            continue;
        };
        let p = c.classify(text, 1)?;
        lat.push(p.latency_ms);
        dump.gold.push(g);
        dump.predicted.push(p.index);
        dump.input_ids.push(p.input_ids);
    }
    let report = EvalReport {
        model: c.path.clone(),
        split: args.split.clone(),
        utterances: dump.gold.len(),
        skipped,
        accuracy: data::accuracy(&dump.predicted, &dump.gold),
        macro_f1: data::macro_f1(&dump.predicted, &dump.gold),
        latency_p50_ms: data::percentile(&mut lat, 50.0),
        latency_p95_ms: data::percentile(&mut lat, 95.0),
    };
    if let Some(p) = &args.predictions {
        std::fs::write(p, serde_json::to_vec(&dump)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    ui.result(&report, || {
        format!(
            "{} ({} split, {} utterances{}): accuracy {:.2}%, macro-F1 {:.4}, latency p50 {:.2} ms, p95 {:.2} ms\n",
            report.model.display(),
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
