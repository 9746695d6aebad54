//! The mALBERT encoder written out by hand: embeddings, factorized projection, the shared
//! layer run once per unrolled copy, pooler and classifier. Its pieces are found in the
//! exported graph by the value names `ava-passes` gives them (`embeddings/...`,
//! `layer.I.J/...`, `pooler/...`, `logits`), after the `standard` pipeline (fused `Gemm`s and
//! `LayerNormalization`). Weights stay int8 where the graph has them int8 (per-output-channel
//! scales, dequantized inside the dot product); activations are f32, passed through the
//! graph's `QuantizeLinear`/`DequantizeLinear` pairs where it has them, so the numbers follow
//! what onnxruntime computes on the same file.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use super::graph::{attr_f, attr_i, input, ActQuant, Matrix, OnnxGraph};
use super::kernels::EncoderKernels;
use super::ops::{EncoderOps, Heads, NativeOps};
use crate::error::{Error, Result};
use crate::native;

/// `LayerNormalization`'s default epsilon.
const LN_DEFAULT_EPS: f32 = 1e-5;
/// Initializer holding `[heads, head_dim]` (the tail of the attention reshape).
const HEADS_SHAPE: &str = "attention/heads_shape_tail";
/// Suffix of the query projection's output in every unrolled layer.
const QUERY_SUFFIX: &str = "/attention/query/add";

/// Linear weights stored `[out][in]`.
pub(super) enum Weights {
    F32(Vec<f32>),
    /// int8 with one scale and zero point per output channel.
    I8 {
        q: Vec<i8>,
        scale: Vec<f32>,
        zero_point: Vec<f32>,
    },
}

/// `y = x W + b` with an optional fake-quantized input.
pub(super) struct Linear {
    pub(super) input_quant: Option<ActQuant>,
    pub(super) weights: Arc<Weights>,
    pub(super) bias: Vec<f32>,
    pub(super) n_in: usize,
    pub(super) n_out: usize,
    pub(super) plan: Plan,
}

/// A kernel the encoder calls, with what the TVM driver needs to generate it.
enum KernelOp {
    QLinear { rows: usize, cols: usize },
    GemmF32 { rows: usize, cols: usize },
    LayerNorm { width: usize },
    AddLayerNorm { width: usize },
    Gelu { width: usize },
    Attention { heads: usize, head_dim: usize },
}

impl KernelOp {
    /// Driver op and parameters (`targets/driver/`).
    fn json(&self) -> Value {
        match *self {
            KernelOp::QLinear { rows, cols } => {
                json!({"op": "qlinear_i8", "rows": rows, "cols": cols})
            }
            KernelOp::GemmF32 { rows, cols } => {
                json!({"op": "gemm", "format": "f32", "rows": rows, "cols": cols})
            }
            KernelOp::LayerNorm { width } => json!({"op": "layer_norm", "width": width}),
            KernelOp::AddLayerNorm { width } => json!({"op": "add_layer_norm", "width": width}),
            KernelOp::Gelu { width } => json!({"op": "gelu", "width": width}),
            KernelOp::Attention { heads, head_dim } => {
                json!({"op": "attention_full", "heads": heads, "head_dim": head_dim})
            }
        }
    }
}

/// How a linear runs on a TVM kernel library (`super::kernels`).
pub(super) enum Plan {
    /// `qlinear_i8`: the input's int8 codes times the int8 weights, an exact int32 dot,
    /// `y = b + scale * (dot - zero_point * wsum)`. Needs symmetric weights and a quantized
    /// input: then it computes what the fake-quantized native path does, up to float rounding.
    Int8 {
        name: String,
        wsum: Vec<i32>,
        scale: Vec<f32>,
        quant: ActQuant,
    },
    /// `gemm_f32`, then the bias.
    F32 { name: String },
    /// Native only (int8 weights with zero points or without a quantized input).
    Native,
}

impl Plan {
    fn new(weights: &Weights, input_quant: Option<ActQuant>, n_in: usize, n_out: usize) -> Plan {
        match (weights, input_quant) {
            (
                Weights::I8 {
                    q,
                    scale,
                    zero_point,
                },
                Some(quant),
            ) if zero_point.iter().all(|&z| z == 0.0) => Plan::Int8 {
                name: format!("qlinear_i8_{n_out}x{n_in}"),
                wsum: q
                    .chunks_exact(n_in)
                    .map(|row| row.iter().map(|&v| i32::from(v)).sum())
                    .collect(),
                scale: scale.iter().map(|s| s * quant.scale).collect(),
                quant,
            },
            (Weights::F32(_), None) => Plan::F32 {
                name: format!("gemm_f32_{n_out}x{n_in}"),
            },
            _ => Plan::Native,
        }
    }

    /// Kernel name and op.
    fn kernel(&self, n_in: usize, n_out: usize) -> Option<(String, KernelOp)> {
        let (rows, cols) = (n_out, n_in);
        match self {
            Plan::Int8 { name, .. } => Some((name.clone(), KernelOp::QLinear { rows, cols })),
            Plan::F32 { name } => Some((name.clone(), KernelOp::GemmF32 { rows, cols })),
            Plan::Native => None,
        }
    }
}

pub(super) fn dot_f32(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (xc, wc) = (x.chunks_exact(8), w.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(wc) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl Linear {
    /// `rows` input rows of `n_in` values -> `rows` rows of `n_out`. Each weight row is
    /// dequantized once into a buffer and used for every token.
    pub(super) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut x = x.to_vec();
        if let Some(q) = &self.input_quant {
            q.fake_quant(&mut x);
        }
        let rows = x.len() / self.n_in;
        let mut y = vec![0f32; rows * self.n_out];
        let mut buf = vec![0f32; self.n_in];
        for o in 0..self.n_out {
            let range = o * self.n_in..(o + 1) * self.n_in;
            let w: &[f32] = match &*self.weights {
                Weights::F32(w) => &w[range],
                Weights::I8 {
                    q,
                    scale,
                    zero_point,
                } => {
                    let (s, z) = (scale[o], zero_point[o]);
                    for (b, &v) in buf.iter_mut().zip(&q[range]) {
                        *b = (f32::from(v) - z) * s;
                    }
                    &buf
                }
            };
            for (t, xr) in x.chunks_exact(self.n_in).enumerate() {
                y[t * self.n_out + o] = self.bias[o] + dot_f32(xr, w);
            }
        }
        y
    }
}

/// `LayerNormalization` over the last axis.
pub(super) struct LayerNorm {
    pub(super) gamma: Vec<f32>,
    pub(super) beta: Vec<f32>,
    pub(super) eps: f32,
}

impl LayerNorm {
    pub(super) fn forward(&self, x: &mut [f32]) {
        let n = self.gamma.len();
        for row in x.chunks_exact_mut(n) {
            let mean = row.iter().sum::<f32>() / n as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// One unrolled layer (its weights shared with the other copies of its group).
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    attention_norm: LayerNorm,
    ffn: Linear,
    ffn_output: Linear,
    norm: LayerNorm,
}

/// The whole classifier network.
pub struct Encoder {
    words: Matrix,
    positions: Matrix,
    types: Matrix,
    embedding_norm: LayerNorm,
    mapping: Linear,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    pooler: Linear,
    classifier: Linear,
    /// The archive's TVM kernels, when the encoder runs on them.
    kernels: Option<EncoderKernels>,
}

/// Builds the encoder's pieces, sharing weights read by several nodes.
struct Builder<'g> {
    g: &'g OnnxGraph,
    shared: HashMap<String, Arc<Weights>>,
}

impl Builder<'_> {
    fn weights(&mut self, value: &str) -> Result<(Arc<Weights>, usize, usize)> {
        let m = self.g.matrix(value)?;
        let [n_in, n_out] = m.dims();
        if let Some(w) = self.shared.get(value) {
            return Ok((w.clone(), n_in, n_out));
        }
        let w = match &m {
            Matrix::I8 {
                q,
                scale,
                zero_point,
                axis,
                ..
            } if *axis == 1 || scale.len() == 1 => {
                let mut t = vec![0i8; n_in * n_out];
                for i in 0..n_in {
                    for o in 0..n_out {
                        t[o * n_in + i] = q[i * n_out + o];
                    }
                }
                let per = |v: &[f32]| -> Vec<f32> {
                    (0..n_out)
                        .map(|o| v[if v.len() == 1 { 0 } else { o }])
                        .collect()
                };
                let zp: Vec<f32> = zero_point.iter().map(|&z| f32::from(z)).collect();
                Weights::I8 {
                    q: t,
                    scale: per(scale),
                    zero_point: per(&zp),
                }
            }
            _ => {
                let mut t = vec![0f32; n_in * n_out];
                for i in 0..n_in {
                    for o in 0..n_out {
                        t[o * n_in + i] = m.get(i, o);
                    }
                }
                Weights::F32(t)
            }
        };
        let w = Arc::new(w);
        self.shared.insert(value.to_string(), w.clone());
        Ok((w, n_in, n_out))
    }

    /// The linear producing `out`: `Gemm(A, W, b)`, `Add(MatMul(A, W), b)` or `MatMul(A, W)`.
    fn linear(&mut self, out: &str) -> Result<Linear> {
        let g = self.g;
        let n = g
            .producer(out)
            .ok_or_else(|| Error::Model(format!("{out}: not in the graph")))?;
        let (mm, bias) = match n.op_type.as_str() {
            "Gemm" => {
                if attr_i(n, "transA").unwrap_or(0) != 0 || attr_i(n, "transB").unwrap_or(0) != 0 {
                    return Err(Error::Model(format!("{out}: transposed Gemm")));
                }
                (n, n.input.get(2).filter(|s| !s.is_empty()))
            }
            "Add" => {
                let (a, b) = (input(n, 0)?, input(n, 1)?);
                let (m, bias) = if g.producer(a).is_some_and(|p| p.op_type == "MatMul") {
                    (a, b)
                } else {
                    (b, a)
                };
                (
                    g.producer_op(m, "MatMul")?,
                    Some(&n.input[if bias == a { 0 } else { 1 }]),
                )
            }
            "MatMul" => (n, None),
            op => return Err(Error::Model(format!("{out}: {op} is not a linear layer"))),
        };
        let (input_quant, _) = g.act_quant(input(mm, 0)?)?;
        let (weights, n_in, n_out) = self.weights(input(mm, 1)?)?;
        let bias = match bias {
            Some(b) => g.f32s(b)?.1,
            None => vec![0.0; n_out],
        };
        if bias.len() != n_out {
            return Err(Error::Model(format!(
                "{out}: bias of {} for {n_out} outputs",
                bias.len()
            )));
        }
        let plan = Plan::new(&weights, input_quant, n_in, n_out);
        Ok(Linear {
            input_quant,
            weights,
            bias,
            n_in,
            n_out,
            plan,
        })
    }

    fn layer_norm(&self, out: &str) -> Result<LayerNorm> {
        let n = self.g.producer_op(out, "LayerNormalization")?;
        Ok(LayerNorm {
            gamma: self.g.f32s(input(n, 1)?)?.1,
            beta: self.g.f32s(input(n, 2)?)?.1,
            eps: attr_f(n, "epsilon").unwrap_or(LN_DEFAULT_EPS),
        })
    }

    fn layer(&mut self, p: &str) -> Result<Layer> {
        Ok(Layer {
            query: self.linear(&format!("{p}/attention/query/add"))?,
            key: self.linear(&format!("{p}/attention/key/add"))?,
            value: self.linear(&format!("{p}/attention/value/add"))?,
            dense: self.linear(&format!("{p}/attention/dense/add"))?,
            attention_norm: self.layer_norm(&format!("{p}/attention/norm/add"))?,
            ffn: self.linear(&format!("{p}/ffn/add"))?,
            ffn_output: self.linear(&format!("{p}/ffn_output/add"))?,
            norm: self.layer_norm(&format!("{p}/norm/add"))?,
        })
    }
}

impl Encoder {
    /// Recognises the mALBERT classifier in `g`.
    pub fn from_graph(g: &OnnxGraph) -> Result<Self> {
        let mut b = Builder {
            g,
            shared: HashMap::new(),
        };
        let table = |out: &str, op: &str| -> Result<Matrix> {
            g.matrix(input(g.producer_op(out, op)?, 0)?)
        };
        let prefixes: Vec<String> = g
            .nodes()
            .iter()
            .filter_map(|n| {
                n.output
                    .first()?
                    .strip_suffix(QUERY_SUFFIX)
                    .map(String::from)
            })
            .collect();
        let layers = prefixes
            .iter()
            .map(|p| b.layer(p))
            .collect::<Result<Vec<_>>>()?;
        let hs = g.i64s(HEADS_SHAPE)?;
        let [heads, head_dim] = hs[..] else {
            return Err(Error::Model(format!("{HEADS_SHAPE}: {hs:?}")));
        };
        let enc = Encoder {
            words: table("embeddings/words", "Gather")?,
            positions: table("embeddings/positions", "Slice")?,
            types: table("embeddings/types", "Gather")?,
            embedding_norm: b.layer_norm("embeddings/norm/add")?,
            mapping: b.linear("embeddings/mapping_in/add")?,
            layers,
            heads: heads.max(1) as usize,
            head_dim: head_dim.max(1) as usize,
            pooler: b.linear("pooler/dense/add")?,
            classifier: b.linear("logits")?,
            kernels: None,
        };
        if enc.layers.is_empty() || enc.heads * enc.head_dim != enc.mapping.n_out {
            return Err(Error::Model("not an mALBERT classifier graph".into()));
        }
        Ok(enc)
    }

    /// Number of classes.
    pub fn num_labels(&self) -> usize {
        self.classifier.n_out
    }

    /// Longest input the position table allows.
    pub fn max_positions(&self) -> usize {
        self.positions.dims()[0]
    }

    /// The TVM kernels this encoder needs, by name, with their driver parameters (what
    /// `aon compile --target` builds, and what [`Encoder::use_kernels`] checks for).
    pub fn kernel_specs(&self) -> Vec<(String, Value)> {
        self.kernels_needed()
            .into_iter()
            .map(|(name, op)| (name, op.json()))
            .collect()
    }

    fn kernels_needed(&self) -> BTreeMap<String, KernelOp> {
        let mut out = BTreeMap::new();
        let linears = self
            .layers
            .iter()
            .flat_map(|l| [&l.query, &l.key, &l.value, &l.dense, &l.ffn, &l.ffn_output])
            .chain([&self.mapping, &self.pooler, &self.classifier]);
        for l in linears {
            if let Some((name, op)) = l.plan.kernel(l.n_in, l.n_out) {
                out.insert(name, op);
            }
        }
        let (e, h) = (self.words.dims()[1], self.mapping.n_out);
        out.insert(format!("layer_norm_{e}"), KernelOp::LayerNorm { width: e });
        out.insert(
            format!("add_layer_norm_{h}"),
            KernelOp::AddLayerNorm { width: h },
        );
        for l in &self.layers {
            let w = l.ffn.n_out;
            out.insert(format!("gelu_{w}"), KernelOp::Gelu { width: w });
        }
        out.insert(
            self.attention_name(),
            KernelOp::Attention {
                heads: self.heads,
                head_dim: self.head_dim,
            },
        );
        out
    }

    /// Runs on `kernels` from now on; fails, leaving the encoder native, when the library
    /// lacks a kernel this encoder needs (built for another model).
    pub fn use_kernels(&mut self, kernels: EncoderKernels) -> Result<()> {
        if let Some(name) = self.kernels_needed().into_keys().find(|n| !kernels.has(n)) {
            return Err(Error::Model(format!(
                "tvm: the kernel library has no {name} (recompile the archive for this model)"
            )));
        }
        self.kernels = Some(kernels);
        Ok(())
    }

    /// `tvm` when the encoder runs on a kernel library, else `native`.
    pub fn backend_name(&self) -> &'static str {
        if self.kernels.is_some() {
            "tvm"
        } else {
            "native"
        }
    }

    fn attention_name(&self) -> String {
        attention_kernel(self.heads, self.head_dim)
    }

    /// Logits of one sequence of token ids (`[CLS] ... [SEP]`, no padding).
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let n = ids.len();
        let vocab = self.words.dims()[0];
        if n == 0 || n > self.max_positions() {
            return Err(Error::Request(format!(
                "{n} tokens; the model takes 1 to {}",
                self.max_positions()
            )));
        }
        let e = self.words.dims()[1];
        let mut x = vec![0f32; n * e];
        for (t, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(e)).enumerate() {
            if id as usize >= vocab {
                return Err(Error::Request(format!(
                    "token id {id} outside the vocabulary"
                )));
            }
            self.words.add_row(id as usize, row);
            self.positions.add_row(t, row);
            self.types.add_row(0, row);
        }
        match &self.kernels {
            Some(k) => self.forward(k, x, n),
            None => self.forward(&NativeOps, x, n),
        }
    }

    /// The network after the embeddings, `x` being `[n, embedding width]`, over `k`'s ops.
    fn forward(&self, k: &impl EncoderOps, x: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let x = k.norm(&self.embedding_norm, x, None)?;
        let mut h = k.linear(&self.mapping, &x)?;
        for l in &self.layers {
            h = self.layer(k, l, &h, n)?;
        }
        let hidden = self.mapping.n_out;
        let mut pooled = k.linear(&self.pooler, &h[..hidden])?;
        pooled.iter_mut().for_each(|v| *v = native::tanh(*v));
        k.linear(&self.classifier, &pooled)
    }

    fn layer(&self, k: &impl EncoderOps, l: &Layer, h: &[f32], n: usize) -> Result<Vec<f32>> {
        let heads = Heads {
            n,
            heads: self.heads,
            head_dim: self.head_dim,
        };
        let (q, kk, v) = (
            k.linear(&l.query, h)?,
            k.linear(&l.key, h)?,
            k.linear(&l.value, h)?,
        );
        let ctx = k.attention([&q, &kk, &v], &heads)?;
        let a = k.linear(&l.dense, &ctx)?;
        let a = k.norm(&l.attention_norm, a, Some(h))?;
        let f = k.gelu(k.linear(&l.ffn, &a)?, l.ffn.n_out)?;
        let o = k.linear(&l.ffn_output, &f)?;
        k.norm(&l.norm, o, Some(&a))
    }
}

/// Name of the attention kernel of `heads` heads of `head_dim`.
pub(super) fn attention_kernel(heads: usize, head_dim: usize) -> String {
    format!("attention_full_{heads}x{head_dim}")
}
