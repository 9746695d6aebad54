//! `aon classify` and `aon eval`: run an mALBERT intent classifier (ONNX, float or INT8 QDQ)
//! on utterances and report intents, accuracy, macro-F1, latency and, with an out-of-scope
//! threshold (the archive's or `--threshold`), out-of-scope recall ([`ava_malbert::oos`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ava_malbert::data::{self, Encoder};
use ava_malbert::oos::{self, OosMetrics, Scored, OOS_LABEL};
use ava_passes::{eval, onnx, Graph};
use ava_runtime::albert::MODEL_FILES;
use serde::Serialize;

use crate::args::aon_int8::{ClassifyArgs, EvalArgs};
use crate::args::run::Backend as RunBackend;
use crate::ui::Ui;

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
    /// The archive's out-of-scope threshold (`stages.oos.threshold` of its manifest).
    pub oos_threshold: Option<f32>,
}

/// Intent probabilities of one utterance.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// Best intent, or `oos` when its score is below the out-of-scope threshold.
    pub intent: String,
    /// The best intent's probability.
    pub score: f32,
    /// The best intent, even when out of scope.
    pub best_intent: String,
    /// The out-of-scope threshold applied (none: every utterance is in scope).
    pub threshold: Option<f32>,
    /// Whether `score` is below `threshold`.
    pub out_of_scope: bool,
    /// The `top` best intents with probabilities.
    pub top: Vec<(String, f32)>,
    /// Token ids fed to the model.
    pub input_ids: Vec<i64>,
    /// Milliseconds spent (tokenizer + model).
    pub latency_ms: f64,
    /// Milliseconds spent in the model alone (no tokenizer).
    pub model_ms: f64,
    /// What ran it: `native` or `tvm` (`ava-runtime`'s kernels) or `evaluator`.
    pub backend: &'static str,
    /// Index of the best intent.
    #[serde(skip)]
    pub index: usize,
    /// Whether every logit was finite (NaN or infinite ones make the scores meaningless).
    #[serde(skip)]
    pub finite: bool,
}

/// Said once per run when a logit is NaN or infinite.
const NON_FINITE_WARNING: &str = "warning: the model computes NaN or infinite logits (its \
                                  weights hold NaN or infinity?); the scores are meaningless";

impl Classifier {
    /// Loads an archive, a model directory or an `.onnx` file: `ava-runtime` when it recognises
    /// the graph, the reference evaluator otherwise (never for archives).
    /// An archive's kernel library loads only when `trust` allows it (docs/security.md); a
    /// refused one is reported on stderr and the classifier runs native.
    pub fn open(
        model: &Path,
        backend: RunBackend,
        trust: &crate::args::TrustArgs,
        ui: &Ui,
    ) -> anyhow::Result<Self> {
        let policy = trust.policy(true)?;
        let opened =
            ava_runtime::albert::Classifier::open_with_policy(model, backend.into(), &policy);
        let runtime_err = match opened {
            Ok(c) => {
                if let Some(note) = c.kernel_note() {
                    ui.info(format!("note: running on the native backend: {note}"));
                }
                return Ok(Classifier {
                    labels: c.labels().to_vec(),
                    path: c.model_path().to_path_buf(),
                    oos_threshold: c.oos_threshold(),
                    backend: Backend::Runtime(Box::new(c)),
                });
            }
            Err(e) if backend == RunBackend::Tvm => {
                return Err(e).with_context(|| format!("opening {}", model.display()))
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
            oos_threshold: None,
        })
    }

    /// Class probabilities, token ids, milliseconds in the model and whether every logit was
    /// finite.
    fn probs(&self, text: &str) -> anyhow::Result<(Vec<f32>, Vec<i64>, f64, bool)> {
        match &self.backend {
            Backend::Runtime(c) => {
                let r = c.classify(text)?;
                let ids = r.input_ids.iter().map(|&i| i64::from(i)).collect();
                let finite = r.logits.iter().all(|x| x.is_finite());
                Ok((r.probs, ids, r.model_seconds * 1e3, finite))
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
                let finite = logits.iter().all(|x| x.is_finite());
                Ok((softmax(logits), ids, model_ms, finite))
            }
        }
    }

    /// What runs the model: `ava-runtime` on its `native` or `tvm` kernels, or the reference
    /// `evaluator`.
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Runtime(c) => c.encoder().backend_name(),
            Backend::Evaluator(_) => "evaluator",
        }
    }

    /// Threads the model runs on.
    pub fn threads(&self) -> usize {
        match &self.backend {
            Backend::Runtime(c) => c.threads().count(),
            Backend::Evaluator(_) => ava_runtime::Threads::default().count(),
        }
    }

    /// Classifies one utterance; below `threshold` its intent is `oos`.
    pub fn classify(
        &self,
        text: &str,
        top: usize,
        threshold: Option<f32>,
    ) -> anyhow::Result<Prediction> {
        let t0 = Instant::now();
        let (probs, input_ids, model_ms, finite) = self.probs(text)?;
        let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let name = |i: usize| self.labels.get(i).cloned().unwrap_or_else(|| i.to_string());
        let index = order.first().copied().unwrap_or(0);
        let score = probs.get(index).copied().unwrap_or(0.0);
        let out_of_scope = threshold.is_some_and(|t| score < t);
        Ok(Prediction {
            intent: if out_of_scope {
                OOS_LABEL.to_string()
            } else {
                name(index)
            },
            score,
            best_intent: name(index),
            threshold,
            out_of_scope,
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
            finite,
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
    let c = Classifier::open(&args.model, args.backend, &args.trust, ui)?;
    let threshold = args.threshold.or(c.oos_threshold);
    let text = crate::text_input::inline_or_stdin(&args.text, "--text")?;
    let p = c.classify(text.trim(), args.top.max(1), threshold)?;
    if !p.finite {
        ui.info(NON_FINITE_WARNING);
    }
    ui.result(&p, || {
        let mut s = match p.threshold.filter(|_| p.out_of_scope) {
            Some(t) => format!(
                "{} ({} < threshold {t}; best {})  [{:.2} ms, {}]\n",
                p.intent, p.score, p.best_intent, p.latency_ms, p.backend
            ),
            None => format!(
                "{} ({:.3})  [{:.2} ms, {}]\n",
                p.intent, p.score, p.latency_ms, p.backend
            ),
        };
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
    /// What ran it: `native` or `tvm` (`ava-runtime`'s kernels) or `evaluator`.
    pub backend: &'static str,
    /// Split scored.
    pub split: String,
    /// Utterances scored (those whose intent the model knows).
    pub utterances: usize,
    /// Utterances skipped (intent unknown to the model; out-of-scope ones without a
    /// threshold).
    pub skipped: usize,
    /// Accuracy on the in-scope utterances (best intent, no threshold).
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
    /// The out-of-scope threshold applied (`--threshold`, else the archive's).
    pub threshold: Option<f32>,
    /// Out-of-scope utterances scored (intent `oos`: the `oos_<split>` split of CLINC150).
    pub oos_utterances: usize,
    /// With a threshold: in-scope accuracy (right intent at or above it) and out-of-scope
    /// recall (scored below it).
    pub oos: Option<OosMetrics>,
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
    if let Some(p) = &args.predictions {
        crate::output::claim(p, crate::output::Expect::Predictions, args.force)?;
    }
    let c = Classifier::open(&args.model, args.backend, &args.trust, ui)?;
    let threshold = args.threshold.or(c.oos_threshold);
    let index: HashMap<&str, usize> = c
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let examples = oos::read_split_with_oos(&args.data, &args.split)?;
    let mut dump = Dump {
        labels: &c.labels,
        input_ids: vec![],
        gold: vec![],
        predicted: vec![],
    };
    let (mut lat, mut model_lat) = (Vec::new(), Vec::new());
    let (mut skipped, mut scored) = (0, Vec::new());
    // Gold intent of each usable utterance: `Some(index)`, or `None` for out of scope.
    let mut usable = Vec::new();
    let mut warned = false;
    for (text, intent) in &examples {
        if oos::is_oos(intent.as_deref(), &c.labels) && threshold.is_some() {
            usable.push((text, None));
        } else if let Some(&g) = intent.as_deref().and_then(|i| index.get(i)) {
            usable.push((text, Some(g)));
        } else {
            skipped += 1;
        }
    }
    let golds: Vec<Option<usize>> = usable.iter().map(|(_, g)| *g).collect();
    let chosen = match args.limit {
        Some(limit) => stratified(&golds, limit, args.seed),
        None => (0..usable.len()).collect(),
    };
    let out_of_scope = chosen.iter().filter(|&&i| golds[i].is_none()).count();
    for i in chosen {
        let (text, gold) = usable[i];
        let p = c.classify(text, 1, threshold)?;
        if !p.finite && !warned {
            ui.info(NON_FINITE_WARNING);
            warned = true;
        }
        lat.push(p.latency_ms);
        model_lat.push(p.model_ms);
        scored.push(Scored {
            gold,
            pred: p.index,
            score: p.score,
        });
        if let Some(g) = gold {
            dump.gold.push(g);
            dump.predicted.push(p.index);
            dump.input_ids.push(p.input_ids);
        }
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
        threshold,
        oos_utterances: out_of_scope,
        oos: threshold.map(|t| oos::metrics(&scored, t)),
    };
    if let Some(p) = &args.predictions {
        crate::output::write_file(p, &serde_json::to_vec(&dump)?)?;
    }
    ui.result(&report, || {
        let mut s = format!(
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
        );
        if let Some(m) = &report.oos {
            let recall = if m.oos == 0 {
                "no out-of-scope utterances".to_string()
            } else {
                format!(
                    "out-of-scope recall {:.2}% ({}/{})",
                    100.0 * m.oos_recall,
                    m.oos_detected,
                    m.oos
                )
            };
            s += &format!(
                "  threshold {}: in-scope accuracy {:.2}% ({}/{}), {recall}\n",
                m.threshold,
                100.0 * m.in_scope_accuracy,
                m.in_scope_correct,
                m.in_scope,
            );
        }
        s
    })
}

/// Indices of at most `limit` in-scope and `limit` out-of-scope utterances (`golds[i]` is the
/// intent of utterance `i`, `None` out of scope), spread over the intents: each intent's
/// utterances in a seeded random order, taken one per intent (intents in a seeded order) in
/// turn. In file order.
pub fn stratified(golds: &[Option<usize>], limit: usize, seed: u64) -> Vec<usize> {
    let mut groups: std::collections::BTreeMap<Option<usize>, Vec<usize>> = Default::default();
    for (i, g) in golds.iter().enumerate() {
        groups.entry(*g).or_default().push(i);
    }
    let mut rng = XorShift(seed ^ 0x9e37_79b9_7f4a_7c15);
    for members in groups.values_mut() {
        rng.shuffle(members);
    }
    let mut chosen = groups.remove(&None).unwrap_or_default();
    chosen.truncate(limit);
    // Intents in a seeded order too: a limit below their number takes a random subset.
    let mut in_scope: Vec<Vec<usize>> = groups.into_values().collect();
    rng.shuffle(&mut in_scope);
    let mut taken = 0;
    'rounds: for round in 0.. {
        let mut any = false;
        for members in &in_scope {
            if let Some(&i) = members.get(round) {
                if taken == limit {
                    break 'rounds;
                }
                chosen.push(i);
                taken += 1;
                any = true;
            }
        }
        if !any {
            break;
        }
    }
    chosen.sort_unstable();
    chosen
}

/// A small seeded generator (xorshift64*): the same sample on every machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        // Zero is xorshift's fixed point.
        if self.0 == 0 {
            self.0 = 0x2545_f491_4f6c_dd1d;
        }
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fisher-Yates.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_samples_cover_every_intent() {
        // 10 intents of 20 utterances each, sorted by intent as CLINC150 is; 15 out of scope.
        let golds: Vec<Option<usize>> = (0..200)
            .map(|i| Some(i / 20))
            .chain((0..15).map(|_| None))
            .collect();
        let pick = stratified(&golds, 30, 7);
        let in_scope: Vec<usize> = pick.iter().filter_map(|&i| golds[i]).collect();
        assert_eq!(in_scope.len(), 30);
        for intent in 0..10 {
            assert_eq!(
                in_scope.iter().filter(|&&g| g == intent).count(),
                3,
                "{intent}"
            );
        }
        assert_eq!(pick.iter().filter(|&&i| golds[i].is_none()).count(), 15);
        assert!(pick.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(pick, stratified(&golds, 30, 7));
        assert_ne!(pick, stratified(&golds, 30, 8));
        assert_eq!(stratified(&golds, 1000, 0).len(), golds.len());
    }
}
