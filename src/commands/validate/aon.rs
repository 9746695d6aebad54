//! `aon validate`: classify utterances on the device with `ava-runner --classify` and compare
//! every prediction with a host run of the same archive (token ids and label exact, logits and
//! score within [`LOGIT_TOLERANCE`] / [`SCORE_TOLERANCE`]); the memory estimate (weights +
//! activations at the longest input) is checked against the device's RAM first.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use anyhow::{bail, Context};
use ava_core::footprint;
use ava_malbert::data as aon_data;
use ava_runtime::albert::{graph::OnnxGraph, Classifier, FAMILY, MODEL_FILES, TOKENIZER_FILE};
use ava_runtime::runner_report::{Classified, ClassifyReport, DeviceFacts};
use ava_runtime::Package;
use serde::Serialize;
use serde_json::Value;

use super::report::{finite, finite_one, fits_check, human_head, percentile, runner_report};
use super::report::{on_threads, Check, Outcome};
use super::runner::{DeviceArgs, Start, Verb};
use crate::args::validate::AonValidateArgs;
use crate::ui::{human_bytes, Ui};

/// The utterances file pushed next to the runner (one utterance a line).
const UTTERANCES_FILE: &str = "utterances.txt";
/// Largest difference of a logit between device and host accepted. The device runs the same
/// code; what may differ is the libm (`exp`, `tanh`) of another OS or architecture, by an ulp
/// or two, and the summation order is fixed, so real differences are far below this.
const LOGIT_TOLERANCE: f32 = 1e-3;
/// Largest difference of the best class's softmax score accepted.
const SCORE_TOLERANCE: f32 = 1e-4;
/// Live f32 activations per token, in units of the hidden size: the layer input, query, key,
/// value, attention context, attention output and layer output, plus the input copy a linear
/// layer makes.
const HIDDEN_ROWS: usize = 8;
/// Live f32 activations per token in units of the FFN width (its output and the copy its
/// second linear layer makes) and of the embedding size (embeddings and their copy).
const WIDE_ROWS: usize = 2;
/// The exporter's name of the `[heads, head_dim]` initializer.
const HEADS_SHAPE: &str = "attention/heads_shape_tail";
/// Suffix of the FFN's first linear layer in every unrolled layer.
const FFN_SUFFIX: &str = "/ffn/add";
/// FFN width relative to the hidden size when the graph does not say (ALBERT's default).
const DEFAULT_FFN_RATIO: usize = 4;

/// One utterance and, when labelled, its intent.
struct Utterance {
    text: String,
    intent: Option<String>,
}

#[derive(Serialize)]
struct AonMemory {
    /// The model entry: the weights as the runtime holds them (int8 stays int8).
    weights_bytes: u64,
    /// The decoded ONNX graph, alive with the encoder's weights while the archive loads.
    load_copy_bytes: u64,
    activation_bytes: u64,
    scratch_bytes: u64,
    estimate_bytes: u64,
    device_mem_total_bytes: Option<u64>,
    max_seq_len: usize,
}

/// Where the device's prediction first differs from the host's.
#[derive(Serialize)]
struct Divergence {
    utterance: usize,
    text: String,
    /// `missing`, `tokens`, `label`, `logits` or `score`.
    field: &'static str,
    expected: Value,
    got: Value,
}

#[derive(Serialize, Default)]
struct Timings {
    load_ms: Option<f64>,
    latency_ms: Vec<f64>,
    latency_ms_p50: Option<f64>,
    latency_ms_p95: Option<f64>,
    model_ms_p50: Option<f64>,
    model_ms_p95: Option<f64>,
}

#[derive(Serialize)]
struct Accuracy {
    /// Utterances whose intent is one of the archive's labels.
    labelled: usize,
    device: f64,
    host: f64,
}

#[derive(Serialize)]
struct Tolerance {
    logits: f32,
    score: f32,
}

/// The report printed with `--json`.
#[derive(Serialize)]
pub(super) struct AonReport {
    ok: bool,
    archive: String,
    target: String,
    device: String,
    runner: String,
    utterances: usize,
    /// Kernels the device ran (`native`, or `tvm` with the archive's library for it).
    backend: Option<String>,
    /// Kernels of the host reference run.
    host_backend: &'static str,
    /// `data` (`--data`) or `labels` (the archive's label names).
    utterance_source: &'static str,
    predictions_match: Option<bool>,
    max_logit_diff: Option<f32>,
    tolerance: Tolerance,
    first_divergence: Option<Divergence>,
    accuracy: Option<Accuracy>,
    memory: AonMemory,
    timings: Timings,
    peak_rss_bytes: Option<u64>,
    /// Threads the runner computed on (its report's figure).
    threads: Option<usize>,
    device_facts: DeviceFacts,
    checks: Vec<Check>,
}

impl Outcome for AonReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn human(&self) -> String {
        let mut s = human_head(
            &self.archive,
            &self.device,
            &self.target,
            self.ok,
            &self.checks,
        );
        let t = &self.timings;
        if let (Some(load), Some(p50), Some(p95)) = (t.load_ms, t.latency_ms_p50, t.latency_ms_p95)
        {
            s.push_str(&format!(
                "  load {load:.0} ms, latency p50 {p50:.2} ms, p95 {p95:.2} ms per utterance{}\n",
                on_threads(self.threads)
            ));
        }
        if let Some(a) = &self.accuracy {
            s.push_str(&format!(
                "  accuracy {:.2}% on {} labelled utterances (host {:.2}%)\n",
                100.0 * a.device,
                a.labelled,
                100.0 * a.host
            ));
        }
        if let Some(rss) = self.peak_rss_bytes {
            s.push_str(&format!("  peak RSS {}\n", human_bytes(rss)));
        }
        s
    }
}

/// One prediction, from the host or the device.
#[derive(Clone, Debug, PartialEq)]
struct Predicted {
    tokens: Vec<u32>,
    index: usize,
    score: f32,
    logits: Vec<f32>,
}

/// The archives `aon validate` runs.
const VERB: Verb = Verb {
    family: FAMILY,
    runs: "`aon validate` runs mALBERT classifier archives",
    other: "alc validate",
};

pub(super) fn validate(args: &AonValidateArgs, ui: &Ui) -> anyhow::Result<AonReport> {
    let start = Start::new(
        DeviceArgs {
            archive: &args.archive,
            device: &args.device,
            runner: &args.runner,
            trust: &args.trust,
        },
        &VERB,
        ui,
    )?;

    let host = Classifier::open(&args.archive)
        .with_context(|| format!("loading {} on the host", args.archive.display()))?;
    let (utterances, utterance_source) = read_utterances(args, host.labels())?;
    let mut memory = estimate(&args.archive, &host)?;
    let text: String = utterances.iter().map(|u| format!("{}\n", u.text)).collect();
    let files = [(UTTERANCES_FILE, text)];
    let mut device = start.transport(&files)?;
    let facts = device.facts()?;
    memory.device_mem_total_bytes = facts.mem_total_bytes;
    let mut report = AonReport {
        ok: false,
        archive: args.archive.display().to_string(),
        target: start.target.name().to_string(),
        device: device.label(),
        runner: start.runner.display().to_string(),
        utterances: utterances.len(),
        backend: None,
        host_backend: host.encoder().backend_name(),
        utterance_source,
        predictions_match: None,
        max_logit_diff: None,
        tolerance: Tolerance {
            logits: LOGIT_TOLERANCE,
            score: SCORE_TOLERANCE,
        },
        first_divergence: None,
        accuracy: None,
        memory,
        timings: Timings::default(),
        peak_rss_bytes: None,
        threads: None,
        device_facts: facts,
        checks: Vec::new(),
    };
    let m = &report.memory;
    let breakdown = format!(
        "weights {} (+ {} while loading), activations {} at {} tokens, scratch {}",
        human_bytes(m.weights_bytes),
        human_bytes(m.load_copy_bytes),
        human_bytes(m.activation_bytes),
        m.max_seq_len,
        human_bytes(m.scratch_bytes)
    );
    let fits = fits_check(m.estimate_bytes, m.device_mem_total_bytes, &breakdown);
    let fits_ok = fits.ok;
    report.checks.push(fits);
    if fits_ok {
        ui.info(format!(
            "reference: {} utterances on the host",
            utterances.len()
        ));
        let expected = utterances
            .iter()
            .map(|u| {
                let r = host.classify(&u.text)?;
                Ok(Predicted {
                    tokens: r.input_ids,
                    index: r.index,
                    score: r.probs.get(r.index).copied().unwrap_or(0.0),
                    logits: r.logits,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut argv = vec!["--classify".to_string(), UTTERANCES_FILE.to_string()];
        argv.extend(args.runner.threads_argv());
        let out = start.run(device, &argv, ui)?;
        read_run(&mut report, out, &expected, &utterances, host.labels());
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    Ok(report)
}

/// `--data` (the split, evenly spaced), else the archive's label names as utterances
/// (`what_is_your_name` -> "what is your name", labelled with themselves).
fn read_utterances(
    args: &AonValidateArgs,
    labels: &[String],
) -> anyhow::Result<(Vec<Utterance>, &'static str)> {
    let (all, source): (Vec<Utterance>, _) = match &args.data {
        Some(path) => (
            aon_data::read_split(path, &args.split)?
                .into_iter()
                .map(|(text, intent)| Utterance { text, intent })
                .collect(),
            "data",
        ),
        None => (
            labels
                .iter()
                .map(|l| Utterance {
                    text: l.replace('_', " "),
                    intent: Some(l.clone()),
                })
                .collect(),
            "labels",
        ),
    };
    // One utterance a line on the device: line breaks become spaces, blank ones are dropped.
    let all: Vec<Utterance> = all
        .into_iter()
        .map(|u| Utterance {
            text: u.text.replace(['\n', '\r'], " ").trim().to_string(),
            ..u
        })
        .filter(|u| !u.text.is_empty())
        .collect();
    if all.is_empty() || args.max_utterances == 0 {
        bail!("no utterances to classify");
    }
    let stride = all.len().div_ceil(args.max_utterances);
    Ok((all.into_iter().step_by(stride).collect(), source))
}

/// Weights (and the decoded graph while loading) + activations at the longest input + the
/// tokenizer and a fixed base.
fn estimate(archive: &Path, host: &Classifier) -> anyhow::Result<AonMemory> {
    let pkg = Package::open(archive)?;
    let model = MODEL_FILES
        .iter()
        .find_map(|f| pkg.entry(f))
        .context("the archive has no model.onnx")?;
    let tokenizer = pkg.entry(TOKENIZER_FILE).map_or(0, <[u8]>::len) as u64;
    let g = OnnxGraph::parse(model)?;
    let heads = g.i64s(HEADS_SHAPE)?;
    let hidden = heads.iter().product::<i64>().max(1) as usize;
    let embedding = g
        .producer_op("embeddings/words", "Gather")
        .ok()
        .and_then(|n| g.matrix(n.input.first()?).ok())
        .map_or(hidden, |m| m.dims()[1]);
    let ffn = g
        .nodes()
        .iter()
        .find(|n| n.op_type == "Gemm" && n.output.iter().any(|o| o.ends_with(FFN_SUFFIX)))
        .and_then(|n| g.matrix(n.input.get(1)?).ok())
        .map_or(DEFAULT_FFN_RATIO * hidden, |m| m.dims()[1]);
    let len = host.encoder().max_positions();
    let per_token = HIDDEN_ROWS * hidden + WIDE_ROWS * (ffn + embedding);
    let activation = (len * per_token * size_of::<f32>()) as u64;
    let weights = model.len() as u64;
    let scratch = footprint::WORKSPACE_BASE_BYTES + tokenizer * footprint::TOKENIZER_EXPANSION;
    Ok(AonMemory {
        weights_bytes: weights,
        load_copy_bytes: weights,
        activation_bytes: activation,
        scratch_bytes: scratch,
        estimate_bytes: 2 * weights + activation + scratch,
        device_mem_total_bytes: None,
        max_seq_len: len,
    })
}

/// Reads the runner's output into the report: the `runner` and `predictions` checks, timings
/// and accuracy.
fn read_run(
    report: &mut AonReport,
    out: Output,
    expected: &[Predicted],
    utterances: &[Utterance],
    labels: &[String],
) {
    let run: ClassifyReport = match runner_report(&out) {
        Ok(v) => v,
        Err(detail) => {
            report.checks.push(Check {
                name: "runner",
                ok: false,
                detail,
            });
            return;
        }
    };
    report.backend = Some(run.backend.clone());
    report.checks.push(Check {
        name: "runner",
        ok: true,
        detail: format!("classified {} utterances", run.utterances.len()),
    });
    report.peak_rss_bytes = run.peak_rss_bytes;
    report.threads = run.threads;
    report.timings = timings(&run);
    let got: Vec<Option<Predicted>> = run.utterances.iter().map(predicted).collect();
    report.max_logit_diff = expected
        .iter()
        .zip(&got)
        .filter_map(|(e, g)| Some(max_diff(&e.logits, &g.as_ref()?.logits)))
        .reduce(f32::max);
    let divergence = first_divergence(expected, &got, utterances, labels);
    report.predictions_match = Some(divergence.is_none());
    report.checks.push(Check {
        name: "predictions",
        ok: divergence.is_none(),
        detail: match &divergence {
            None => format!(
                "{} labels identical to the host, logits within {LOGIT_TOLERANCE} (max {:.2e})",
                got.len(),
                report.max_logit_diff.unwrap_or(0.0)
            ),
            Some(d) => format!(
                "utterance {} ({:?}): {} differ: expected {}, got {}",
                d.utterance, d.text, d.field, d.expected, d.got
            ),
        },
    });
    report.first_divergence = divergence;
    report.accuracy = accuracy(expected, &got, utterances, labels);
}

/// A row of the runner's report; `None` (a missing prediction) when a score or logit was not
/// a finite number.
fn predicted(row: &Classified) -> Option<Predicted> {
    let finite = row.score.is_finite() && row.logits.iter().all(|x| x.is_finite());
    finite.then(|| Predicted {
        tokens: row.tokens.clone(),
        index: row.index,
        score: row.score,
        logits: row.logits.clone(),
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The first utterance whose device prediction differs from the host's.
fn first_divergence(
    expected: &[Predicted],
    got: &[Option<Predicted>],
    utterances: &[Utterance],
    labels: &[String],
) -> Option<Divergence> {
    let label = |i: usize| Value::from(labels.get(i).cloned().unwrap_or_else(|| i.to_string()));
    for (i, e) in expected.iter().enumerate() {
        let (field, expected, got) = match got.get(i).and_then(Option::as_ref) {
            None => ("missing", label(e.index), Value::Null),
            Some(g) if g.tokens != e.tokens => (
                "tokens",
                Value::from(e.tokens.clone()),
                Value::from(g.tokens.clone()),
            ),
            Some(g) if g.index != e.index => ("label", label(e.index), label(g.index)),
            Some(g) if max_diff(&e.logits, &g.logits) > LOGIT_TOLERANCE => (
                "logits",
                Value::from(e.logits.clone()),
                Value::from(g.logits.clone()),
            ),
            Some(g) if (g.score - e.score).abs() > SCORE_TOLERANCE => {
                ("score", Value::from(e.score), Value::from(g.score))
            }
            Some(_) => continue,
        };
        return Some(Divergence {
            utterance: i,
            text: utterances
                .get(i)
                .map_or_else(String::new, |u| u.text.clone()),
            field,
            expected,
            got,
        });
    }
    (got.len() > expected.len()).then(|| Divergence {
        utterance: expected.len(),
        text: String::new(),
        field: "missing",
        expected: Value::Null,
        got: Value::from("an extra prediction"),
    })
}

/// Accuracy on the utterances whose intent is one of the labels, device and host.
fn accuracy(
    expected: &[Predicted],
    got: &[Option<Predicted>],
    utterances: &[Utterance],
    labels: &[String],
) -> Option<Accuracy> {
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let (mut n, mut device, mut host) = (0, 0, 0);
    for (i, u) in utterances.iter().enumerate() {
        let Some(&gold) = u.intent.as_deref().and_then(|l| index.get(l)) else {
            continue;
        };
        n += 1;
        host += usize::from(expected.get(i).is_some_and(|p| p.index == gold));
        device += usize::from(
            got.get(i)
                .and_then(Option::as_ref)
                .is_some_and(|p| p.index == gold),
        );
    }
    (n > 0).then(|| Accuracy {
        labelled: n,
        device: device as f64 / n as f64,
        host: host as f64 / n as f64,
    })
}

fn timings(run: &ClassifyReport) -> Timings {
    let latency = finite(run.utterances.iter().map(|u| u.ms));
    let model = finite(run.utterances.iter().map(|u| u.model_ms));
    Timings {
        load_ms: finite_one(run.load_ms),
        latency_ms_p50: percentile(&latency, 50),
        latency_ms_p95: percentile(&latency, 95),
        model_ms_p50: percentile(&model, 50),
        model_ms_p95: percentile(&model, 95),
        latency_ms: latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(index: usize, logits: &[f32]) -> Predicted {
        Predicted {
            tokens: vec![2, 7, 3],
            index,
            score: 0.5,
            logits: logits.to_vec(),
        }
    }

    #[test]
    fn divergence_names_the_field() {
        let u = [
            Utterance {
                text: "a".into(),
                intent: None,
            },
            Utterance {
                text: "b".into(),
                intent: None,
            },
        ];
        let labels = ["x".to_string(), "y".to_string()];
        let e = [p(0, &[1.0, 0.0]), p(1, &[0.0, 1.0])];
        let same = [Some(e[0].clone()), Some(e[1].clone())];
        assert!(first_divergence(&e, &same, &u, &labels).is_none());
        let close = [Some(p(0, &[1.0005, 0.0])), Some(e[1].clone())];
        assert!(first_divergence(&e, &close, &u, &labels).is_none());
        let far = [Some(e[0].clone()), Some(p(1, &[0.0, 1.01]))];
        let d = first_divergence(&e, &far, &u, &labels).unwrap();
        assert_eq!((d.utterance, d.field), (1, "logits"));
        let wrong = [Some(p(1, &[1.0, 0.0])), None];
        let d = first_divergence(&e, &wrong, &u, &labels).unwrap();
        assert_eq!(
            (d.field, d.expected.as_str(), d.got.as_str()),
            ("label", Some("x"), Some("y"))
        );
        let d = first_divergence(&e, &same[..1], &u, &labels).unwrap();
        assert_eq!((d.utterance, d.field), (1, "missing"));
    }
}
