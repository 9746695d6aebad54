//! The aon quantize stage's entry point: static INT8 of an ONNX graph (QDQ, or QOperator) with
//! activation ranges calibrated in our own evaluator on the train split of the intents data,
//! and an optional accuracy gate that keeps the costliest linear nodes in float (see
//! `docs/aon.md`). `aon quantize` and `aon compile` both call [`quantize`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use ava_passes::quant::{self, Format, Method, Options, Report};
use ava_passes::{Graph, Tensor};
use serde::Serialize;

use crate::data::{self, Encoder};
use crate::error::{bail, Context};

/// Labelled utterances the sensitivity analysis scores each node on.
pub const SENSITIVITY_SAMPLES: usize = 100;

/// The aon quantize stage's options (`aon quantize` and `aon compile`).
pub struct QuantizeOptions<'a> {
    /// Calibration data file.
    pub calib: &'a Path,
    /// tokenizer.json.
    pub tokenizer: &'a Path,
    /// Calibration utterances.
    pub samples: usize,
    /// Range method.
    pub method: Method,
    /// Weight scales per tensor instead of per channel.
    pub per_tensor: bool,
    /// Nodes kept in float.
    pub exclude: BTreeSet<String>,
    /// Accuracy gate (points) and the labels it maps intents with.
    pub gate: Option<(f64, Vec<String>)>,
    /// Labelled utterances the gate uses.
    pub gate_samples: usize,
}

/// What quantization reports.
#[derive(Debug, Serialize)]
pub struct QuantizeReport {
    /// Rewrite counts and sizes.
    #[serde(flatten)]
    pub quant: Report,
    /// Calibration utterances used.
    pub calibration_samples: usize,
    /// Calibration method.
    pub method: String,
    /// Operator format (`qdq` or `qoperator`).
    pub format: Format,
    /// Gate: float and INT8 accuracy on the gate data, nodes the gate kept in float.
    pub gate: Option<Gate>,
}

/// Accuracy gate outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    /// Allowed drop in points.
    pub max_drop: f64,
    /// Labelled utterances.
    pub samples: usize,
    /// Float accuracy.
    pub float_accuracy: f64,
    /// INT8 accuracy of the written model.
    pub int8_accuracy: f64,
    /// INT8 accuracy before any node was kept in float.
    pub int8_accuracy_all: f64,
    /// Nodes kept in float, costliest first.
    pub kept_float: Vec<String>,
    /// Whether the gate passed.
    pub passed: bool,
}

/// Quantizes `graph` in place in operator format `format` (QDQ is what `aon compile`
/// packages: the runtime reads it).
pub fn quantize(
    g: &mut Graph,
    s: &QuantizeOptions<'_>,
    format: Format,
) -> crate::Result<QuantizeReport> {
    quant::check_weights(g)?;
    let enc = Encoder::new(s.tokenizer, g)?;
    let calib: Vec<HashMap<String, Tensor>> = data::read_split(s.calib, "train")?
        .iter()
        .take(s.samples)
        .map(|(t, _)| enc.inputs(t))
        .collect::<crate::Result<_>>()?;
    if calib.is_empty() {
        bail!("{}: no calibration utterances", s.calib.display());
    }
    let float = g.clone();
    let ranges = quant::calibrate(
        &float,
        &calib,
        &quant::activations(&float, &BTreeSet::new()),
        s.method,
    )
    .context("calibrating activation ranges")?;
    let opts = Options {
        per_tensor: s.per_tensor,
        exclude: s.exclude.clone(),
        format,
    };
    let run = |exclude: &BTreeSet<String>| -> crate::Result<(Graph, Report)> {
        let mut q = float.clone();
        let o = Options {
            exclude: exclude.clone(),
            ..opts.clone()
        };
        let r = quant::quantize(&mut q, &ranges, &o)?;
        Ok((q, r))
    };
    let (mut best, mut report) = run(&opts.exclude)?;
    let mut gate = None;
    if let Some((max_drop, labels)) = &s.gate {
        let (q, r, gr) = accuracy_gate(&float, &enc, s, labels, *max_drop, &run)?;
        (best, report) = (q, r);
        if !gr.passed {
            bail!(
                "INT8 loses {:.2} points (float {:.2}%, int8 {:.2}% with {} node(s) kept in float: {}); the gate allows {max_drop}",
                100.0 * (gr.float_accuracy - gr.int8_accuracy),
                100.0 * gr.float_accuracy,
                100.0 * gr.int8_accuracy,
                gr.kept_float.len(),
                gr.kept_float.join(", ")
            );
        }
        gate = Some(gr);
    }
    *g = best;
    Ok(QuantizeReport {
        quant: report,
        calibration_samples: calib.len(),
        method: format!("{:?}", s.method),
        format,
        gate,
    })
}

type Runner<'a> = dyn Fn(&BTreeSet<String>) -> crate::Result<(Graph, Report)> + 'a;

/// Keeps the nodes whose quantization costs most in float until the accuracy drop is within
/// `max_drop` points; sensitivity of a node = how much closer to the float logits the model
/// gets when that node alone stays float.
fn accuracy_gate(
    float: &Graph,
    enc: &Encoder,
    s: &QuantizeOptions<'_>,
    labels: &[String],
    max_drop: f64,
    run: &Runner<'_>,
) -> crate::Result<(Graph, Report, Gate)> {
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut inputs = Vec::new();
    let mut gold = Vec::new();
    for (t, intent) in data::read_split(s.calib, "val")?
        .into_iter()
        .take(s.gate_samples)
    {
        if let Some(&i) = intent.as_deref().and_then(|i| index.get(i)) {
            inputs.push(enc.inputs(&t)?);
            gold.push(i);
        }
    }
    if gold.is_empty() {
        bail!(
            "{}: the accuracy gate needs labelled validation utterances",
            s.calib.display()
        );
    }
    let predict = |g: &Graph, xs: &[HashMap<String, Tensor>]| -> crate::Result<Vec<Vec<f32>>> {
        data::logits(g, xs)
    };
    let acc = |l: &[Vec<f32>]| {
        data::accuracy(
            &l.iter().map(|v| data::argmax(v)).collect::<Vec<_>>(),
            &gold,
        )
    };
    let float_logits = predict(float, &inputs)?;
    let float_acc = acc(&float_logits);
    let mut exclude = s.exclude.clone();
    let (mut q, mut r) = run(&exclude)?;
    let all = acc(&predict(&q, &inputs)?);
    let mut gate = Gate {
        max_drop,
        samples: gold.len(),
        float_accuracy: float_acc,
        int8_accuracy: all,
        int8_accuracy_all: all,
        kept_float: vec![],
        passed: 100.0 * (float_acc - all) <= max_drop,
    };
    if gate.passed {
        return Ok((q, r, gate));
    }
    let few = &inputs[..inputs.len().min(SENSITIVITY_SAMPLES)];
    let reference = &float_logits[..few.len()];
    let err = |g: &Graph| -> crate::Result<f64> {
        let l = predict(g, few)?;
        Ok(l.iter()
            .zip(reference)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)))
            .sum())
    };
    let base = err(&q)?;
    let mut costs = Vec::new();
    for name in &r.nodes_quantized {
        let mut ex = exclude.clone();
        ex.insert(name.clone());
        costs.push((base - err(&run(&ex)?.0)?, name.clone()));
    }
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, name) in costs {
        exclude.insert(name.clone());
        gate.kept_float.push(name);
        (q, r) = run(&exclude)?;
        gate.int8_accuracy = acc(&predict(&q, &inputs)?);
        if 100.0 * (float_acc - gate.int8_accuracy) <= max_drop {
            gate.passed = true;
            break;
        }
    }
    Ok((q, r, gate))
}
