//! The `tvm` backend's [`Kernels`]: every op a call into the archive's kernel library, weights
//! bound in place as DLPack tensors over the mapped archive.

use std::path::PathBuf;

use ava_core::{DType, Gemma3Config, Target};

use super::library::{library_on_disk, missing_features, parse_table, Arg, Library, TempLibrary};
use super::{library_path, table_path};
use crate::error::{Error, Result};
use crate::gemma3::{Attention, Gemma3, Input, Kernels};
use crate::native::Rope;
use crate::source::ModelSource;

/// A weight matrix as kernel arguments.
pub struct TvmWeight {
    /// `f32`, `bf16`, `q4i8g{G}` or `q8bf16g{G}` (kernel name part, as `ava-targets` names it).
    format: String,
    /// Q4BF16 weights: the group their int8-quantized activations share
    /// (docs/formats/q4bf16.md#activations-at-run-time).
    act_group: Option<usize>,
    rows: usize,
    cols: usize,
    /// Bytes the arguments point at.
    bytes: usize,
    args: Vec<Arg>,
}

// SAFETY: the raw pointers in `args` point into the read-only mappings of the `ModelSource`
// the model holds (`Gemma3::hold`) as long as it holds the weight; kernels only read them.
unsafe impl Send for TvmWeight {}
// SAFETY: as above.
unsafe impl Sync for TvmWeight {}

/// The archive's TVM kernel library for this machine, with the shapes of the model it was
/// built for.
pub struct TvmKernels {
    lib: Library,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    _temp: Option<TempLibrary>,
}

/// Gemma 3 on the archive's TVM kernel library.
pub type Gemma3Tvm = Gemma3<TvmKernels>;

impl Gemma3<TvmKernels> {
    /// Whether `source` carries a kernel library for this machine.
    pub fn available(source: &ModelSource) -> bool {
        Target::host().is_some_and(|t| source.file(&table_path(t)).is_some())
    }

    /// Loads the kernel library for this machine from `source` and binds the weights in place.
    pub fn load_tvm(source: ModelSource, cfg: Gemma3Config) -> Result<Self> {
        let kernels = TvmKernels::open(&source, &cfg)?;
        let mut model = Gemma3::bind(&source, cfg, kernels)?;
        model.hold(source);
        Ok(model)
    }
}

impl TvmKernels {
    /// Opens the library of `source` for this machine.
    fn open(source: &ModelSource, cfg: &Gemma3Config) -> Result<Self> {
        let target = Target::host()
            .ok_or_else(|| Error::Model("tvm: no kernel target for this machine".into()))?;
        let table_label = source.label(&table_path(target));
        let table_bytes = source.file(&table_path(target)).ok_or_else(|| {
            Error::Model(format!(
                "tvm: {} has no kernel library for {target} (build one with `alc build --target {target}`)",
                source.label("").display()
            ))
        })?;
        let table = parse_table(&table_bytes, &table_label)?;
        let missing = missing_features(&table);
        if !missing.is_empty() {
            return Err(Error::Model(format!(
                "tvm: the {target} kernels need CPU features this machine lacks: {}",
                missing.join(", ")
            )));
        }
        let (path, temp) = library_file(source, target)?;
        Ok(TvmKernels {
            lib: Library::open(&path, &table)?,
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            intermediate: cfg.intermediate_size,
            _temp: temp,
        })
    }

    fn rope_name(&self, heads: usize) -> String {
        format!("rope_{heads}x{}", self.head_dim)
    }

    fn attention_name(&self) -> String {
        format!(
            "attention_{}x{}x{}",
            self.heads, self.kv_heads, self.head_dim
        )
    }

    fn call_rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<()> {
        let width = w.len();
        let rows = x.len() / width;
        self.lib.call(
            &format!("rms_norm_{width}"),
            &[
                Arg::f32(x, &[rows, width]),
                Arg::f32(w, &[width]),
                Arg::f32_out(out, &[rows, width]),
            ],
        )
    }
}

/// Rotary tables of one call: cos and sin, `[n, head_dim / 2]`.
pub struct TvmPositions {
    cos: Vec<f32>,
    sin: Vec<f32>,
    n: usize,
}

impl Kernels for TvmKernels {
    type Weight = TvmWeight;
    type Positions = TvmPositions;
    const NAME: &'static str = "tvm";

    fn weight(&self, source: &ModelSource, name: &str) -> Result<TvmWeight> {
        weight(source, name)
    }

    fn shape(w: &TvmWeight) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn weight_bytes(w: &TvmWeight) -> usize {
        w.bytes
    }

    fn is_mapped(_w: &TvmWeight) -> bool {
        true
    }

    /// Every kernel the forward pass calls must be in the library.
    fn check(&self, weights: &[&TvmWeight], embed: &TvmWeight, head: &TvmWeight) -> Result<()> {
        let mut names = vec![
            embed_name(embed),
            gemv(head),
            format!("rms_norm_{}", self.hidden),
            format!("rms_norm_{}", self.head_dim),
            format!("add_rms_norm_{}", self.hidden),
            format!("gelu_gate_{}", self.intermediate),
            self.rope_name(self.heads),
            self.rope_name(self.kv_heads),
            self.attention_name(),
        ];
        for w in weights {
            names.push(gemv(w));
            names.push(gemm(w));
        }
        match names.iter().find(|n| !self.lib.has(n)) {
            Some(n) => Err(Error::Model(format!(
                "tvm: the kernel library has no {n} (rebuild it for this model)"
            ))),
            None => Ok(()),
        }
    }

    fn embed(&self, w: &TvmWeight, tokens: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
        let n = tokens.len();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut args = vec![Arg::tensor(ids.as_ptr().cast(), 0, 32, &[n])];
        args.extend_from_slice(&w.args);
        args.push(Arg::Float(f64::from(scale)));
        args.push(Arg::f32_out(out, &[n, w.cols]));
        self.lib.call(&embed_name(w), &args)
    }

    /// The GEMV kernel for one token, GEMM for more. Q4BF16 weights take the input quantized
    /// to int8 per group, as the native backend does (the same quantizer, so both see the same
    /// codes).
    fn matmul(&self, w: &TvmWeight, input: &mut Input<'_>, out: &mut [f32]) -> Result<()> {
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

    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<()> {
        self.call_rms_norm(x, w, out)
    }

    /// `h += rms_norm(x) * (1 + w)`, one kernel.
    fn add_rms_norm(&self, x: &mut [f32], w: &[f32], h: &mut Vec<f32>) -> Result<()> {
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

    fn positions(&self, rope: &Rope, start: usize, n: usize) -> TvmPositions {
        let (cos, sin) = rope_tables(rope.inv_freq(), start, n);
        TvmPositions { cos, sin, n }
    }

    fn norm_rope(
        &self,
        x: &mut Vec<f32>,
        w: &[f32],
        heads: usize,
        pos: &TvmPositions,
    ) -> Result<()> {
        let (hd, n) = (self.head_dim, pos.n);
        let mut normed = vec![0f32; x.len()];
        self.call_rms_norm(x, w, &mut normed)?;
        self.lib.call(
            &self.rope_name(heads),
            &[
                Arg::f32(&normed, &[n, heads * hd]),
                Arg::f32(&pos.cos, &[n, hd / 2]),
                Arg::f32(&pos.sin, &[n, hd / 2]),
                Arg::f32_out(x, &[n, heads * hd]),
            ],
        )
    }

    fn attention(&self, a: &Attention<'_>, out: &mut [f32]) -> Result<()> {
        let (hd, width) = (self.head_dim, self.kv_heads * self.head_dim);
        let n = a.k.len() / width;
        let window = a.window.min(i32::MAX as usize) as i64;
        self.lib.call(
            &self.attention_name(),
            &[
                Arg::f32(a.q, &[n, self.heads * hd]),
                Arg::f32(a.k, &[n, width]),
                Arg::f32(a.v, &[n, width]),
                Arg::f32(a.cache_k, &[a.cap, width]),
                Arg::f32(a.cache_v, &[a.cap, width]),
                Arg::f32_out(out, &[n, self.heads * hd]),
                Arg::Int(a.start as i64),
                Arg::Int(window),
            ],
        )
    }

    fn gelu_gate(&self, gate: &mut Vec<f32>, up: &[f32]) -> Result<()> {
        let inter = self.intermediate;
        let n = gate.len() / inter;
        let mut act = vec![0f32; gate.len()];
        self.lib.call(
            &format!("gelu_gate_{inter}"),
            &[
                Arg::f32(gate, &[n, inter]),
                Arg::f32(up, &[n, inter]),
                Arg::f32_out(&mut act, &[n, inter]),
            ],
        )?;
        *gate = act;
        Ok(())
    }
}

fn embed_name(w: &TvmWeight) -> String {
    format!("embed_{}_{}x{}", w.format, w.rows, w.cols)
}

fn gemv(w: &TvmWeight) -> String {
    format!("gemv_{}_{}x{}", w.format, w.rows, w.cols)
}

fn gemm(w: &TvmWeight) -> String {
    format!("gemm_{}_{}x{}", w.format, w.rows, w.cols)
}

/// Binds weight `name` as kernel arguments: f32 / bf16 in place, or the quantized planes
/// `{name}.q4` (U8 `[rows, cols/2]`) / `{name}.q8` (I8 `[rows, cols]`) + `{name}.scales` (BF16
/// `[rows, cols/G]`), whose group `G` is part of the kernel names (`docs/formats/q4bf16.md`).
fn weight(source: &ModelSource, name: &str) -> Result<TvmWeight> {
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
        return Ok(TvmWeight {
            format: if four_bit {
                format!("q4i8g{group}")
            } else {
                format!("q8bf16g{group}")
            },
            act_group: four_bit.then_some(group),
            rows,
            cols,
            bytes: q.data.len() + s.data.len(),
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
    Ok(TvmWeight {
        format,
        act_group: None,
        rows,
        cols,
        bytes: t.data.len(),
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
