//! The Gemma 3 forward pass on TVM kernels: the same computation as `crate::gemma3` (which stays
//! the reference), with every op a call into the archive's kernel library. The KV cache,
//! sampling and sessions are shared with the native backend.

use std::path::PathBuf;

use ava_core::{DType, Gemma3Config, LayerKind, RopeScaling, Target};

use super::library::{library_on_disk, Arg, KernelTable, Library, TempLibrary};
use super::{library_path, table_path};
use crate::error::{Error, Result};
use crate::gemma3::KvCache;
use crate::native::QuantActs;
use crate::source::ModelSource;

/// A weight matrix as kernel arguments.
struct Weight {
    /// `f32`, `bf16`, `q4i8g{G}` or `q8bf16g{G}` (kernel name part, as `ava-targets` names it).
    format: String,
    /// Q4BF16 weights: the group their int8-quantized activations share
    /// (docs/formats/q4bf16.md#activations-at-run-time).
    act_group: Option<usize>,
    rows: usize,
    cols: usize,
    args: Vec<Arg>,
}

struct Layer {
    kind: LayerKind,
    q: Weight,
    k: Weight,
    v: Weight,
    o: Weight,
    gate: Weight,
    up: Weight,
    down: Weight,
    norms: [Vec<f32>; 6],
}

/// Indices into `Layer::norms`.
const Q_NORM: usize = 0;
const K_NORM: usize = 1;
const INPUT_NORM: usize = 2;
const POST_ATTENTION_NORM: usize = 3;
const PRE_FEEDFORWARD_NORM: usize = 4;
const POST_FEEDFORWARD_NORM: usize = 5;

/// Gemma 3 on the archive's TVM kernel library.
pub struct Gemma3Tvm {
    cfg: Gemma3Config,
    lib: Library,
    embed: Weight,
    embed_scale: f32,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: [Vec<f32>; 2],
    /// Keeps the mapped weights the kernel arguments point into.
    _source: ModelSource,
    _temp: Option<TempLibrary>,
}

// SAFETY: the raw pointers in `Arg`s point into `_source`'s read-only mappings, owned by this
// value; kernels only read them.
unsafe impl Send for Gemma3Tvm {}
// SAFETY: as above; calls take `&self` and write only into caller-provided buffers.
unsafe impl Sync for Gemma3Tvm {}

impl Gemma3Tvm {
    /// Whether `source` carries a kernel library for this machine.
    pub fn available(source: &ModelSource) -> bool {
        Target::host().is_some_and(|t| source.file(&table_path(t)).is_some())
    }

    /// Loads the kernel library for this machine from `source` and binds the weights.
    pub fn load(source: ModelSource, cfg: &Gemma3Config) -> Result<Self> {
        let target = Target::host()
            .ok_or_else(|| Error::Model("tvm: no kernel target for this machine".into()))?;
        let table_label = source.label(&table_path(target));
        let table_bytes = source.file(&table_path(target)).ok_or_else(|| {
            Error::Model(format!(
                "tvm: {} has no kernel library for {target} (build one with `alc build --target {target}`)",
                source.label("").display()
            ))
        })?;
        let table = KernelTable::parse(&table_bytes, &table_label)?;
        let missing = table.missing_features();
        if !missing.is_empty() {
            return Err(Error::Model(format!(
                "tvm: the {target} kernels need CPU features this machine lacks: {}",
                missing.join(", ")
            )));
        }
        let (path, temp) = library_file(&source, target)?;
        let lib = Library::open(&path, &table)?;
        let mut m = Self::bind(source, cfg, lib)?;
        m._temp = temp;
        m.check_kernels()?;
        Ok(m)
    }

    fn bind(source: ModelSource, cfg: &Gemma3Config, lib: Library) -> Result<Self> {
        let p = cfg.weight_prefix.clone();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, kind) in cfg.layer_types.iter().enumerate() {
            let l = format!("{p}layers.{i}.");
            let w = |n: &str| weight(&source, &format!("{l}{n}.weight"));
            let v = |n: &str| vector(&source, &format!("{l}{n}.weight"));
            layers.push(Layer {
                kind: *kind,
                q: w("self_attn.q_proj")?,
                k: w("self_attn.k_proj")?,
                v: w("self_attn.v_proj")?,
                o: w("self_attn.o_proj")?,
                gate: w("mlp.gate_proj")?,
                up: w("mlp.up_proj")?,
                down: w("mlp.down_proj")?,
                norms: [
                    v("self_attn.q_norm")?,
                    v("self_attn.k_norm")?,
                    v("input_layernorm")?,
                    v("post_attention_layernorm")?,
                    v("pre_feedforward_layernorm")?,
                    v("post_feedforward_layernorm")?,
                ],
            });
        }
        let embed_name = format!("{p}embed_tokens.weight");
        let embed = weight(&source, &embed_name)?;
        let embed_dtype = source.tensor(&embed_name).map(|t| t.dtype);
        Ok(Gemma3Tvm {
            embed_scale: embed_scale(cfg.hidden_size, embed_dtype),
            final_norm: vector(&source, &format!("{p}norm.weight"))?,
            inv_freq: [
                inv_freq(cfg, LayerKind::Sliding)?,
                inv_freq(cfg, LayerKind::Full)?,
            ],
            cfg: cfg.clone(),
            lib,
            embed,
            layers,
            _source: source,
            _temp: None,
        })
    }

    /// Every kernel the forward pass calls must be in the library.
    fn check_kernels(&self) -> Result<()> {
        let mut names = vec![
            self.embed_name(),
            gemv(&self.embed),
            format!("rms_norm_{}", self.cfg.hidden_size),
            format!("rms_norm_{}", self.cfg.head_dim),
            format!("add_rms_norm_{}", self.cfg.hidden_size),
            format!("gelu_gate_{}", self.cfg.intermediate_size),
            self.rope_name(self.cfg.num_attention_heads),
            self.rope_name(self.cfg.num_key_value_heads),
            self.attention_name(),
        ];
        for l in &self.layers {
            for w in [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down] {
                names.push(gemv(w));
                names.push(gemm(w));
            }
        }
        match names.iter().find(|n| !self.lib.has(n)) {
            Some(n) => Err(Error::Model(format!(
                "tvm: the kernel library has no {n} (rebuild it for this model)"
            ))),
            None => Ok(()),
        }
    }

    fn embed_name(&self) -> String {
        format!(
            "embed_{}_{}x{}",
            self.embed.format, self.embed.rows, self.embed.cols
        )
    }

    fn rope_name(&self, heads: usize) -> String {
        format!("rope_{heads}x{}", self.cfg.head_dim)
    }

    fn attention_name(&self) -> String {
        let c = &self.cfg;
        format!(
            "attention_{}x{}x{}",
            c.num_attention_heads, c.num_key_value_heads, c.head_dim
        )
    }

    /// Runs `tokens` from the cache's position and returns the last token's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let c = &self.cfg;
        check_request(c, tokens, cache)?;
        let (n, hidden, start) = (tokens.len(), c.hidden_size, cache.position());
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut h = vec![0f32; n * hidden];
        let mut args = vec![Arg::tensor(ids.as_ptr().cast(), 0, 32, &[n])];
        args.extend_from_slice(&self.embed.args);
        args.push(Arg::Float(f64::from(self.embed_scale)));
        args.push(Arg::f32_out(&mut h, &[n, hidden]));
        self.lib.call(&self.embed_name(), &args)?;
        let tables = [
            rope_tables(&self.inv_freq[0], start, n),
            rope_tables(&self.inv_freq[1], start, n),
        ];
        for (i, layer) in self.layers.iter().enumerate() {
            let rope = &tables[usize::from(layer.kind != LayerKind::Sliding)];
            self.attention_block(layer, &mut h, rope, cache, i)?;
            self.mlp_block(layer, &mut h, n)?;
        }
        cache.advance(n);
        let last = &h[(n - 1) * hidden..];
        let mut normed = vec![0f32; hidden];
        self.rms_norm(last, &self.final_norm, &mut normed, 1)?;
        let mut logits = vec![0f32; self.embed.rows];
        self.matmul(&self.embed, &mut Input::new(&normed, 1), &mut logits)?;
        Ok(logits)
    }

    fn attention_block(
        &self,
        layer: &Layer,
        h: &mut Vec<f32>,
        rope: &(Vec<f32>, Vec<f32>),
        cache: &mut KvCache,
        index: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let (hd, heads, kvh) = (c.head_dim, c.num_attention_heads, c.num_key_value_heads);
        let n = h.len() / c.hidden_size;
        let start = cache.position();
        let mut x = vec![0f32; h.len()];
        self.rms_norm(h, &layer.norms[INPUT_NORM], &mut x, n)?;
        let (mut q, mut k, mut v) = (
            vec![0f32; n * heads * hd],
            vec![0f32; n * kvh * hd],
            vec![0f32; n * kvh * hd],
        );
        let mut input = Input::new(&x, n);
        self.matmul(&layer.q, &mut input, &mut q)?;
        self.matmul(&layer.k, &mut input, &mut k)?;
        self.matmul(&layer.v, &mut input, &mut v)?;
        let q = self.head_norm_rope(&q, &layer.norms[Q_NORM], heads, n, rope)?;
        let k = self.head_norm_rope(&k, &layer.norms[K_NORM], kvh, n, rope)?;
        let window = match layer.kind {
            LayerKind::Sliding => c.sliding_window.min(i32::MAX as usize) as i64,
            _ => i64::from(i32::MAX),
        };
        let lc = &mut cache.layers[index];
        let width = kvh * hd;
        let mut attn = vec![0f32; n * heads * hd];
        self.lib.call(
            &self.attention_name(),
            &[
                Arg::f32(&q, &[n, heads * hd]),
                Arg::f32(&k, &[n, width]),
                Arg::f32(&v, &[n, width]),
                Arg::f32(&lc.k, &[lc.cap, width]),
                Arg::f32(&lc.v, &[lc.cap, width]),
                Arg::f32_out(&mut attn, &[n, heads * hd]),
                Arg::Int(start as i64),
                Arg::Int(window),
            ],
        )?;
        lc.store(start, &k, &v, width);
        let mut out = vec![0f32; n * c.hidden_size];
        self.matmul(&layer.o, &mut Input::new(&attn, n), &mut out)?;
        self.add_rms_norm(&out, &layer.norms[POST_ATTENTION_NORM], h)
    }

    fn mlp_block(&self, layer: &Layer, h: &mut Vec<f32>, n: usize) -> Result<()> {
        let inter = self.cfg.intermediate_size;
        let mut x = vec![0f32; h.len()];
        self.rms_norm(h, &layer.norms[PRE_FEEDFORWARD_NORM], &mut x, n)?;
        let (mut gate, mut up, mut act) = (
            vec![0f32; n * inter],
            vec![0f32; n * inter],
            vec![0f32; n * inter],
        );
        let mut input = Input::new(&x, n);
        self.matmul(&layer.gate, &mut input, &mut gate)?;
        self.matmul(&layer.up, &mut input, &mut up)?;
        self.lib.call(
            &format!("gelu_gate_{inter}"),
            &[
                Arg::f32(&gate, &[n, inter]),
                Arg::f32(&up, &[n, inter]),
                Arg::f32_out(&mut act, &[n, inter]),
            ],
        )?;
        let mut down = vec![0f32; h.len()];
        self.matmul(&layer.down, &mut Input::new(&act, n), &mut down)?;
        self.add_rms_norm(&down, &layer.norms[POST_FEEDFORWARD_NORM], h)
    }

    /// Per-head RMSNorm, then RoPE, of `x` (`[n, heads * head_dim]`).
    fn head_norm_rope(
        &self,
        x: &[f32],
        norm: &[f32],
        heads: usize,
        n: usize,
        rope: &(Vec<f32>, Vec<f32>),
    ) -> Result<Vec<f32>> {
        let hd = self.cfg.head_dim;
        let mut normed = vec![0f32; x.len()];
        self.rms_norm(x, norm, &mut normed, n * heads)?;
        let mut out = vec![0f32; x.len()];
        self.lib.call(
            &self.rope_name(heads),
            &[
                Arg::f32(&normed, &[n, heads * hd]),
                Arg::f32(&rope.0, &[n, hd / 2]),
                Arg::f32(&rope.1, &[n, hd / 2]),
                Arg::f32_out(&mut out, &[n, heads * hd]),
            ],
        )?;
        Ok(out)
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32], rows: usize) -> Result<()> {
        let width = w.len();
        self.lib.call(
            &format!("rms_norm_{width}"),
            &[
                Arg::f32(x, &[rows, width]),
                Arg::f32(w, &[width]),
                Arg::f32_out(out, &[rows, width]),
            ],
        )
    }

    /// `h += rms_norm(x) * (1 + w)`.
    fn add_rms_norm(&self, x: &[f32], w: &[f32], h: &mut Vec<f32>) -> Result<()> {
        let width = w.len();
        let rows = x.len() / width;
        let mut out = vec![0f32; h.len()];
        self.lib.call(
            &format!("add_rms_norm_{width}"),
            &[
                Arg::f32(x, &[rows, width]),
                Arg::f32(w, &[width]),
                Arg::f32(h, &[rows, width]),
                Arg::f32_out(&mut out, &[rows, width]),
            ],
        )?;
        *h = out;
        Ok(())
    }

    /// `out[t, r] = sum_c x[t, c] * W[r, c]`: the GEMV kernel for one token, GEMM for more.
    /// Q4BF16 weights take the input quantized to int8 per group, as the native backend
    /// does (the same quantizer, so both see the same codes).
    fn matmul(&self, w: &Weight, input: &mut Input<'_>, out: &mut [f32]) -> Result<()> {
        let n = input.n;
        let name = if n == 1 { gemv(w) } else { gemm(w) };
        let mut args = Vec::with_capacity(w.args.len() + 4);
        match w.act_group {
            Some(group) => {
                let q = input.quantized(w.cols, group);
                let groups = w.cols / group;
                args.push(Arg::tensor(q.codes().as_ptr().cast(), 0, 8, &[n, w.cols]));
                args.push(Arg::f32(q.scales(), &[n, groups]));
                args.push(Arg::tensor(q.sums().as_ptr().cast(), 0, 32, &[n, groups]));
            }
            None => args.push(Arg::f32(input.x, &[n, w.cols])),
        }
        args.extend_from_slice(&w.args);
        args.push(Arg::f32_out(out, &[n, w.rows]));
        self.lib.call(&name, &args)
    }
}

/// The input of one or more matrix products: `n` rows of `x`, quantized to int8 on first use
/// by a Q4BF16 weight and reused by the next ones (q, k and v share one input, gate and up
/// another).
struct Input<'a> {
    x: &'a [f32],
    n: usize,
    quantized: Option<QuantActs>,
}

impl<'a> Input<'a> {
    fn new(x: &'a [f32], n: usize) -> Self {
        Input {
            x,
            n,
            quantized: None,
        }
    }

    /// `x` quantized per `group` (`cols` per row).
    fn quantized(&mut self, cols: usize, group: usize) -> &QuantActs {
        let fresh = self
            .quantized
            .as_ref()
            .is_some_and(|q| q.group() == group && q.cols() == cols && q.n() == self.n);
        if !fresh {
            let mut q = QuantActs::new();
            q.quantize(self.x, self.n, cols, group);
            self.quantized = Some(q);
        }
        self.quantized.get_or_insert_with(QuantActs::new)
    }
}

fn gemv(w: &Weight) -> String {
    format!("gemv_{}_{}x{}", w.format, w.rows, w.cols)
}

fn gemm(w: &Weight) -> String {
    format!("gemm_{}_{}x{}", w.format, w.rows, w.cols)
}

/// The same checks as the native forward pass, before anything runs.
fn check_request(c: &Gemma3Config, tokens: &[u32], cache: &KvCache) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Request("no tokens to run".into()));
    }
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(Error::Request(format!(
            "token id {bad} is outside the vocabulary ({})",
            c.vocab_size
        )));
    }
    let needed = cache.position() + tokens.len();
    if needed > cache.max_context() {
        return Err(Error::ContextFull {
            needed,
            max: cache.max_context(),
        });
    }
    Ok(())
}

/// Binds weight `name` as kernel arguments: f32 / bf16 in place, or the quantized planes
/// `{name}.q4` (U8 `[rows, cols/2]`) / `{name}.q8` (I8 `[rows, cols]`) + `{name}.scales` (BF16
/// `[rows, cols/G]`), whose group `G` is part of the kernel names (`docs/formats/q4bf16.md`).
fn weight(source: &ModelSource, name: &str) -> Result<Weight> {
    let missing = || Error::Model(format!("tvm: tensor {name:?} not found"));
    for (kind, per_byte, code) in [("q4", 2, 1u8), ("q8", 1, 0u8)] {
        let Some(q) = source.tensor(&format!("{name}.{kind}")) else {
            continue;
        };
        let s = source
            .tensor(&format!("{name}.scales"))
            .ok_or_else(missing)?;
        let (rows, width) = dims(q.shape, name)?;
        let (_, groups) = dims(s.shape, name)?;
        let cols = width * per_byte;
        let sizes_ok = q.data.len() == rows * width && s.data.len() == rows * groups * 2;
        if groups == 0 || cols % groups != 0 || !sizes_ok {
            return Err(Error::Model(format!(
                "tvm: {name}: quantized planes do not match their shapes"
            )));
        }
        let group = cols / groups;
        let four_bit = kind == "q4";
        return Ok(Weight {
            format: if four_bit {
                format!("q4i8g{group}")
            } else {
                format!("q8bf16g{group}")
            },
            act_group: four_bit.then_some(group),
            rows,
            cols,
            args: vec![
                Arg::tensor(q.data.as_ptr(), code, 8, &[rows, width]),
                Arg::tensor(s.data.as_ptr(), 1, 16, &[rows, groups]),
            ],
        });
    }
    let t = source.tensor(name).ok_or_else(missing)?;
    let (rows, cols) = dims(t.shape, name)?;
    let (format, code, bits) = match t.dtype {
        DType::F32 => ("f32".to_string(), 2, 32),
        DType::BF16 => ("bf16".to_string(), 1, 16),
        other => {
            return Err(Error::Model(format!(
                "tvm: {name}: no kernels for {other} weights (f32, bf16, q4bf16)"
            )))
        }
    };
    if t.data.len() != rows * cols * usize::from(bits / 8) {
        return Err(Error::Model(format!(
            "tvm: {name}: size does not match shape"
        )));
    }
    Ok(Weight {
        format,
        act_group: None,
        rows,
        cols,
        args: vec![Arg::tensor(t.data.as_ptr(), code, bits, &[rows, cols])],
    })
}

fn dims(shape: &[usize], name: &str) -> Result<(usize, usize)> {
    match shape {
        [r, c] => Ok((*r, *c)),
        other => Err(Error::Model(format!(
            "tvm: {name}: expected a matrix, got {other:?}"
        ))),
    }
}

fn vector(source: &ModelSource, name: &str) -> Result<Vec<f32>> {
    source
        .tensor(name)
        .ok_or_else(|| Error::Model(format!("tvm: tensor {name:?} not found")))?
        .to_f32_vec()
        .map_err(Error::from)
}

/// `sqrt(hidden)` rounded to the embedding's dtype, as the native backend computes it.
fn embed_scale(hidden: usize, dtype: Option<DType>) -> f32 {
    let s = (hidden as f32).sqrt();
    match dtype {
        Some(DType::BF16) => half::bf16::from_f32(s).to_f32(),
        Some(DType::F16) => half::f16::from_f32(s).to_f32(),
        _ => s,
    }
}

/// RoPE frequencies, computed as `native::Rope` does.
fn inv_freq(cfg: &Gemma3Config, kind: LayerKind) -> Result<Vec<f32>> {
    let params = cfg.rope(kind);
    let factor = match params.scaling {
        RopeScaling::None => 1.0,
        RopeScaling::Linear { factor } => factor,
        ref other => return Err(Error::Model(format!("unsupported rope scaling {other:?}"))),
    };
    let hd = cfg.head_dim;
    Ok((0..hd / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / hd as f32;
            1.0 / (params.theta as f32).powf(exponent) / factor as f32
        })
        .collect())
}

/// cos and sin tables `[n, head_dim / 2]` for positions `start..start + n`.
fn rope_tables(inv_freq: &[f32], start: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::with_capacity(n * inv_freq.len());
    let mut sin = Vec::with_capacity(n * inv_freq.len());
    for t in 0..n {
        for f in inv_freq {
            let (s, c) = ((start + t) as f32 * f).sin_cos();
            cos.push(c);
            sin.push(s);
        }
    }
    (cos, sin)
}

/// A path `dlopen` can use for the kernel library, when the native-code policy allows it
/// (`docs/security.md`).
fn library_file(source: &ModelSource, target: Target) -> Result<(PathBuf, Option<TempLibrary>)> {
    library_on_disk(source.library_entry(&library_path(target))?)
}
