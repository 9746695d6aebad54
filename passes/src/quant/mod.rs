//! Static INT8 quantization of encoder graphs: weights int8 symmetric (per output channel by
//! default), activations int8 asymmetric per tensor with calibrated ranges ([`calib`]). Two
//! [`Format`]s: QDQ (what onnxruntime's `quantize_static` writes by default: float operators
//! between `QuantizeLinear`/`DequantizeLinear` pairs) and QOperator (integer `MatMulInteger`
//! between explicit quantize/dequantize at the float boundaries, [`qoperator`]).
//!
//! A weight is quantized ONCE however many nodes read it: ALBERT's shared layer becomes one int8
//! initializer and one `DequantizeLinear` that all unrolled layers read (tools that quantize
//! every unrolled copy separately store it 12 times and lose accuracy, onnxruntime #11701).
//! Activation ranges are per value, so each unrolled layer keeps its own activation scale.

pub mod calib;
mod qoperator;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{Attr, Graph, Node, Tensor, TensorData};
use crate::passes::{DeadCode, Pass};

pub use calib::{calibrate, Method, Ranges};

/// Largest magnitude of a symmetric int8 weight.
pub const QMAX: f32 = 127.0;
/// Weight tables read by `Gather`/`Slice` (embeddings) are quantized per row from this size.
pub const MIN_TABLE_ELEMS: usize = 4096;
/// Suffixes of the values and initializers the quantizer adds.
pub const Q_SUFFIX: &str = "_quantized";
const SCALE_SUFFIX: &str = "_scale";
const ZP_SUFFIX: &str = "_zero_point";
const DQ_SUFFIX: &str = "_dequantized";

/// Operator format of the quantized graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// `QuantizeLinear`/`DequantizeLinear` pairs around the float linear nodes.
    #[default]
    Qdq,
    /// `MatMulInteger` on int8 inputs, dequantized from int32 (weights read int8 directly).
    QOperator,
}

/// How to quantize.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// One scale per output channel (else one per tensor).
    pub per_tensor: bool,
    /// Node names kept in float.
    pub exclude: BTreeSet<String>,
    /// Operator format.
    pub format: Format,
}

/// What quantization did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Linear nodes (MatMul/Gemm with a constant weight) quantized.
    pub nodes_quantized: Vec<String>,
    /// Linear nodes kept in float (`--exclude`, the accuracy gate, no QOperator form).
    pub nodes_float: Vec<String>,
    /// Weights quantized (each once).
    pub weights_quantized: usize,
    /// Activation values quantized (a Quantize/Dequantize pair in QDQ, a Quantize in QOperator).
    pub activations_quantized: usize,
    /// Initializer bytes before / after.
    pub weight_bytes_before: usize,
    /// Initializer bytes after.
    pub weight_bytes_after: usize,
}

/// A linear node: which input is the activation, which the constant weight, and the weight's
/// output-channel axis.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Node index.
    pub node: usize,
    /// Activation input value.
    pub activation: String,
    /// Weight initializer.
    pub weight: String,
    /// Output-channel axis of the weight.
    pub axis: usize,
}

/// The quantizable linear nodes: `MatMul(x, W)` and `Gemm(x, W[, b])` with a constant 2-D f32 `W`.
pub fn linear_nodes(g: &Graph) -> Vec<Linear> {
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            if !(n.is("MatMul") || n.is("Gemm")) || n.inputs.len() < 2 {
                return None;
            }
            let w = g.initializers.get(&n.inputs[1])?;
            if w.dims.len() != 2
                || w.as_f32().is_none()
                || g.initializers.contains_key(&n.inputs[0])
            {
                return None;
            }
            if n.is("Gemm") && n.int("transA").unwrap_or(0) != 0 {
                return None;
            }
            let trans_b = n.is("Gemm") && n.int("transB").unwrap_or(0) != 0;
            Some(Linear {
                node: i,
                activation: n.inputs[0].clone(),
                weight: n.inputs[1].clone(),
                axis: if trans_b { 0 } else { 1 },
            })
        })
        .collect()
}

/// Refuses weights no quantization can represent, naming the initializer: a NaN in any f32
/// initializer, or an infinite value in a linear node's weight (an infinite mask constant
/// elsewhere is legitimate).
pub fn check_weights(g: &Graph) -> Result<()> {
    let linear: HashSet<String> = linear_nodes(g).into_iter().map(|l| l.weight).collect();
    for (name, t) in &g.initializers {
        let Some(v) = t.as_f32() else { continue };
        let weight = linear.contains(name);
        if let Some(i) = v
            .iter()
            .position(|x| x.is_nan() || (weight && x.is_infinite()))
        {
            return Err(Error::Invalid(format!(
                "weight `{name}`: element {i} is {}; refusing to quantize it",
                v[i]
            )));
        }
    }
    Ok(())
}

/// Activation values that calibration must observe for these nodes.
pub fn activations(g: &Graph, exclude: &BTreeSet<String>) -> HashSet<String> {
    linear_nodes(g)
        .into_iter()
        .filter(|l| !exclude.contains(&g.nodes[l.node].name))
        .map(|l| l.activation)
        .collect()
}

/// Symmetric int8 of `w` (`dims` 2-D) with one scale per index of `axis` (or one in all).
fn quantize_weight(w: &[f32], dims: &[usize], axis: Option<usize>) -> (Vec<i8>, Vec<f32>) {
    let channels = axis.map_or(1, |a| dims[a]);
    let inner: usize = axis.map_or(1, |a| dims[a + 1..].iter().product());
    let chan = |i: usize| axis.map_or(0, |_| (i / inner) % channels);
    let mut amax = vec![0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = chan(i);
        amax[c] = amax[c].max(v.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&m| if m > 0.0 { m / QMAX } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v / scales[chan(i)]).round_ties_even().clamp(-QMAX, QMAX) as i8)
        .collect();
    (q, scales)
}

/// Scale and zero point of an asymmetric int8 activation with range `[lo, hi]` (0 included).
pub fn activation_params(lo: f32, hi: f32) -> (f32, i8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
    (scale, zp)
}

/// Rewrites `g` into QDQ or QOperator form ([`Format`]) using calibrated `ranges`, then drops
/// the float weights no node reads any more.
pub fn quantize(g: &mut Graph, ranges: &Ranges, opts: &Options) -> Result<Report> {
    check_weights(g)?;
    let mut report = Report {
        weight_bytes_before: g.weight_bytes(),
        ..Default::default()
    };
    let mut e = Edits::default();
    let mut weights: HashMap<String, QWeight> = HashMap::new();
    let mut acts: HashMap<String, QAct> = HashMap::new();
    let producers: HashMap<String, usize> = g
        .producers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for l in linear_nodes(g) {
        let node = &g.nodes[l.node];
        let name = node.name.clone();
        let range = ranges.get(&l.activation).copied();
        let qop = opts.format == Format::QOperator;
        let Some((lo, hi)) = range.filter(|_| !qop || qoperator::fits(node)) else {
            report.nodes_float.push(name);
            continue;
        };
        if opts.exclude.contains(&name) {
            report.nodes_float.push(name);
            continue;
        }
        let axis = (!opts.per_tensor).then_some(l.axis);
        weights
            .entry(l.weight.clone())
            .or_insert_with(|| QWeight::new(g, &l.weight, axis));
        let act = acts.entry(l.activation.clone()).or_insert_with(|| {
            let (scale, zp) = activation_params(lo, hi);
            let a = QAct::new(&l.activation, scale, zp);
            let mut nodes = vec![a.quantize_node(&l.activation)];
            if !qop {
                nodes.push(a.dequantize_node(&l.activation));
            }
            match producers.get(&l.activation) {
                Some(&p) => e
                    .after
                    .entry(g.nodes[p].outputs[0].clone())
                    .or_default()
                    .extend(nodes),
                None => e.front.extend(nodes),
            }
            a
        });
        let Some(w) = weights.get_mut(&l.weight) else {
            continue;
        };
        if qop {
            let n = g.nodes[l.node].clone();
            let nodes = qoperator::linear(g, &n, act, w);
            e.replace.insert(l.node, nodes);
        } else {
            e.rewrites.push((l.node, 0, act.dq.clone()));
            e.rewrites.push((l.node, 1, w.dequantized(&mut e.front)));
        }
        report.nodes_quantized.push(name);
    }
    // Embedding tables: weight-only int8, one scale per row (both formats).
    let tables: Vec<(usize, String)> = g
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| (n.is("Gather") || n.is("Slice")) && !opts.exclude.contains(&n.name))
        .filter_map(|(i, n)| {
            let t = g.initializers.get(n.inputs.first()?)?;
            (t.dims.len() == 2 && t.as_f32().is_some() && t.len() >= MIN_TABLE_ELEMS)
                .then(|| (i, n.inputs[0].clone()))
        })
        .collect();
    for (i, w) in tables {
        let qw = weights
            .entry(w.clone())
            .or_insert_with(|| QWeight::new(g, &w, Some(0)));
        e.rewrites.push((i, 0, qw.dequantized(&mut e.front)));
    }
    for w in weights.values() {
        w.store(g);
    }
    for a in acts.values() {
        a.store(g);
    }
    e.apply(g);
    DeadCode.run(g)?;
    g.validate()?;
    report.weights_quantized = weights.len();
    report.activations_quantized = acts.len();
    report.weight_bytes_after = g.weight_bytes();
    Ok(report)
}

/// Node edits collected while quantizing, applied at the end so node indices stay valid.
#[derive(Default)]
struct Edits {
    /// Nodes placed before all others (weight dequantization, graph-input quantization).
    front: Vec<Node>,
    /// Nodes placed right after the producer of a value.
    after: HashMap<String, Vec<Node>>,
    /// (node, input index, new value).
    rewrites: Vec<(usize, usize, String)>,
    /// Nodes replaced by a sequence of nodes (QOperator linears).
    replace: HashMap<usize, Vec<Node>>,
}

impl Edits {
    fn apply(mut self, g: &mut Graph) {
        for (node, input, value) in self.rewrites {
            g.nodes[node].inputs[input] = value;
        }
        let old = std::mem::take(&mut g.nodes);
        let mut nodes = self.front;
        for (i, n) in old.into_iter().enumerate() {
            let extra = n.outputs.first().and_then(|o| self.after.remove(o));
            match self.replace.remove(&i) {
                Some(r) => nodes.extend(r),
                None => nodes.push(n),
            }
            nodes.extend(extra.into_iter().flatten());
        }
        g.nodes = nodes;
    }
}

/// A weight quantized once: its int8 initializer, scales, and (QDQ) its dequantized value.
pub(crate) struct QWeight {
    name: String,
    /// `{name}_quantized`.
    pub(crate) q: String,
    /// Scale per channel (one: per tensor).
    pub(crate) scales: Vec<f32>,
    axis: Option<usize>,
    dims: Vec<usize>,
    values: Vec<i8>,
    dq: Option<String>,
}

impl QWeight {
    /// Symmetric int8 of initializer `w`.
    fn new(g: &Graph, w: &str, axis: Option<usize>) -> Self {
        let t = &g.initializers[w];
        let (values, scales) = quantize_weight(t.as_f32().unwrap_or(&[]), &t.dims, axis);
        QWeight {
            name: w.to_string(),
            q: format!("{w}{Q_SUFFIX}"),
            scales,
            axis,
            dims: t.dims.clone(),
            values,
            dq: None,
        }
    }

    /// The `DequantizeLinear` output of the weight, adding that node (to `front`) once.
    fn dequantized(&mut self, front: &mut Vec<Node>) -> String {
        if let Some(v) = &self.dq {
            return v.clone();
        }
        let w = &self.name;
        let (sn, zn, dqn) = (
            format!("{w}{SCALE_SUFFIX}"),
            format!("{w}{ZP_SUFFIX}"),
            format!("{w}{DQ_SUFFIX}"),
        );
        let mut dq = Node::new(
            format!("{w}/dequantize"),
            "DequantizeLinear",
            &[&self.q, &sn, &zn],
            &[&dqn],
        );
        if let Some(a) = self.axis {
            dq = dq.with("axis", Attr::Int(a as i64));
        }
        front.push(dq);
        self.dq = Some(dqn.clone());
        dqn
    }

    /// Adds the int8 initializer, and the scale and zero-point ones its dequantization reads.
    fn store(&self, g: &mut Graph) {
        let n = self.scales.len();
        let pdims = if self.axis.is_some() { vec![n] } else { vec![] };
        g.initializers.insert(
            self.q.clone(),
            Tensor {
                dims: self.dims.clone(),
                data: TensorData::I8(self.values.clone()),
            },
        );
        if self.dq.is_some() {
            let w = &self.name;
            g.initializers.insert(
                format!("{w}{SCALE_SUFFIX}"),
                Tensor::f32(pdims.clone(), self.scales.clone()),
            );
            g.initializers.insert(
                format!("{w}{ZP_SUFFIX}"),
                Tensor {
                    dims: pdims,
                    data: TensorData::I8(vec![0; n]),
                },
            );
        }
    }
}

/// An activation quantized per tensor: its `QuantizeLinear` output and parameters.
pub(crate) struct QAct {
    /// Quantized (int8) value.
    pub(crate) q: String,
    /// Its `DequantizeLinear` output (QDQ only).
    dq: String,
    /// Scale initializer.
    pub(crate) scale_name: String,
    /// Zero-point initializer.
    pub(crate) zp_name: String,
    /// Scale.
    pub(crate) scale: f32,
    zp: i8,
}

impl QAct {
    fn new(x: &str, scale: f32, zp: i8) -> Self {
        QAct {
            q: format!("{x}{Q_SUFFIX}"),
            dq: format!("{x}{DQ_SUFFIX}"),
            scale_name: format!("{x}{SCALE_SUFFIX}"),
            zp_name: format!("{x}{ZP_SUFFIX}"),
            scale,
            zp,
        }
    }

    fn quantize_node(&self, x: &str) -> Node {
        Node::new(
            format!("{x}/quantize"),
            "QuantizeLinear",
            &[x, &self.scale_name, &self.zp_name],
            &[&self.q],
        )
    }

    fn dequantize_node(&self, x: &str) -> Node {
        Node::new(
            format!("{x}/dequantize"),
            "DequantizeLinear",
            &[&self.q, &self.scale_name, &self.zp_name],
            &[&self.dq],
        )
    }

    fn store(&self, g: &mut Graph) {
        g.initializers
            .insert(self.scale_name.clone(), Tensor::scalar(self.scale));
        g.initializers.insert(
            self.zp_name.clone(),
            Tensor {
                dims: vec![],
                data: TensorData::I8(vec![self.zp]),
            },
        );
    }
}

/// Per linear node, the names of the shared weights it reads: for reports and sensitivity.
pub fn weight_users(g: &Graph) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in linear_nodes(g) {
        m.entry(l.weight)
            .or_default()
            .push(g.nodes[l.node].name.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval;
    use crate::ir::{DType, Dim, ValueInfo};

    /// x -> Gemm(W) -> Gemm(W) (one weight read twice, as ALBERT's layers do).
    fn shared_graph() -> Graph {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        g.inputs.push(ValueInfo {
            name: "x".into(),
            dtype: DType::F32,
            dims: vec![Dim::Param("n".into()), Dim::Fixed(4)],
        });
        let w: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 8.0).collect();
        g.initializers
            .insert("w".into(), Tensor::f32(vec![4, 4], w));
        g.initializers
            .insert("b".into(), Tensor::f32(vec![4], vec![0.1; 4]));
        g.nodes
            .push(Node::new("l0", "Gemm", &["x", "w", "b"], &["h"]));
        g.nodes
            .push(Node::new("l1", "Gemm", &["h", "w", "b"], &["y"]));
        g.outputs.push(ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            dims: vec![],
        });
        g
    }

    fn sample(v: f32) -> HashMap<String, Tensor> {
        HashMap::from([(
            "x".to_string(),
            Tensor::f32(vec![2, 4], vec![v, -v, 0.5 * v, 1.0, 0.0, v, -1.0, 0.25]),
        )])
    }

    #[test]
    fn shared_weight_is_quantized_once_and_outputs_stay_close() {
        let mut g = shared_graph();
        let samples = vec![sample(1.0), sample(-0.5)];
        let acts = activations(&g, &BTreeSet::new());
        assert_eq!(acts.len(), 2);
        let ranges = calibrate(&g, &samples, &acts, Method::MinMax).unwrap();
        let want = eval::run(&g, &samples[0]).unwrap();
        let r = quantize(&mut g, &ranges, &Options::default()).unwrap();
        assert_eq!(r.weights_quantized, 1);
        assert_eq!(r.nodes_quantized, vec!["l0", "l1"]);
        assert!(!g.initializers.contains_key("w"));
        let dq: Vec<&Node> = g
            .nodes
            .iter()
            .filter(|n| n.is("DequantizeLinear"))
            .collect();
        assert_eq!(dq.len(), 3, "one weight DQ + one per activation");
        let got = eval::run(&g, &samples[0]).unwrap();
        for (a, b) in want[0]
            .as_f32()
            .unwrap()
            .iter()
            .zip(got[0].as_f32().unwrap())
        {
            assert!((a - b).abs() < 0.05, "{a} vs {b}");
        }
    }

    #[test]
    fn excluded_nodes_stay_float() {
        let mut g = shared_graph();
        let samples = vec![sample(1.0)];
        let opts = Options {
            exclude: BTreeSet::from(["l1".to_string()]),
            ..Default::default()
        };
        let ranges = calibrate(
            &g,
            &samples,
            &activations(&g, &opts.exclude),
            Method::MinMax,
        )
        .unwrap();
        let r = quantize(&mut g, &ranges, &opts).unwrap();
        assert_eq!(r.nodes_float, vec!["l1"]);
        assert!(
            g.initializers.contains_key("w"),
            "l1 still reads the float weight"
        );
        assert_eq!(
            g.nodes.iter().find(|n| n.name == "l1").unwrap().inputs[1],
            "w"
        );
    }

    #[test]
    fn qoperator_matches_qdq_and_stores_weights_once() {
        let samples = vec![sample(1.0), sample(-0.5)];
        let g = shared_graph();
        let ranges = calibrate(
            &g,
            &samples,
            &activations(&g, &BTreeSet::new()),
            Method::MinMax,
        )
        .unwrap();
        let (mut qdq, mut qop) = (g.clone(), g);
        quantize(&mut qdq, &ranges, &Options::default()).unwrap();
        let opts = Options {
            format: Format::QOperator,
            ..Default::default()
        };
        let r = quantize(&mut qop, &ranges, &opts).unwrap();
        assert_eq!((r.nodes_quantized.len(), r.weights_quantized), (2, 1));
        let ops = qop.op_counts();
        assert_eq!(ops.get("MatMulInteger"), Some(&2), "{ops:?}");
        assert_eq!(ops.get("QuantizeLinear"), Some(&2), "{ops:?}");
        assert!(!ops.contains_key("Gemm"), "{ops:?}");
        let int8: Vec<&String> = qop
            .initializers
            .iter()
            .filter(|(_, t)| t.dtype() == crate::ir::DType::I8 && t.dims.len() == 2)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(int8, vec!["w_quantized"]);
        let (a, b) = (
            eval::run(&qdq, &samples[0]).unwrap(),
            eval::run(&qop, &samples[0]).unwrap(),
        );
        for (x, y) in a[0].as_f32().unwrap().iter().zip(b[0].as_f32().unwrap()) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn per_channel_scales_and_zero_points() {
        let (q, s) = quantize_weight(&[1.0, -0.5, 2.0, 0.25], &[2, 2], Some(1));
        assert_eq!(s, vec![2.0 / QMAX, 0.5 / QMAX]);
        assert_eq!(q, vec![64, -127, 127, 64]);
        let (scale, zp) = activation_params(-1.0, 3.0);
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, -64);
    }
}
