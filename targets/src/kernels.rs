//! The kernels a Gemma 3 forward pass needs, derived from its config and weight formats.
//!
//! Names encode op, format and shape; the runtime's `tvm` backend derives the same names from
//! the same config (`runtime/src/tvm/gemma3.rs`), and the kernel table checks both agree.

use std::collections::BTreeSet;

use ava_core::{Checkpoint, DType, Gemma3Config};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WeightFormat {
    /// 32-bit floats.
    F32,
    /// bfloat16 (passed to kernels as its uint16 bit pattern).
    Bf16,
    /// 4-bit codes in groups along the input dimension, one bf16 scale per group
    /// (`docs/formats/q4bf16.md`).
    Q4bf16 {
        /// Elements per group.
        group: usize,
    },
    /// 8-bit codes with one bf16 scale per group.
    Q8bf16 {
        /// Elements per group.
        group: usize,
    },
}

impl WeightFormat {
    /// The name used in kernel names: `f32`, `bf16`, `q4bf16g128`, `q8bf16g32`, ...
    pub fn name(self) -> String {
        match self {
            WeightFormat::Q4bf16 { group } | WeightFormat::Q8bf16 { group } => {
                format!("{}g{group}", self.kind())
            }
            _ => self.kind().to_string(),
        }
    }

    /// The format without its parameters, as the driver spec names it.
    pub fn kind(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q4bf16 { .. } => "q4bf16",
            WeightFormat::Q8bf16 { .. } => "q8bf16",
        }
    }

    /// Driver parameters of a `[rows, cols]` matrix in this format.
    fn params(self, rows: usize, cols: usize) -> Value {
        let mut v = json!({"rows": rows, "cols": cols, "format": self.kind()});
        if let WeightFormat::Q4bf16 { group } | WeightFormat::Q8bf16 { group } = self {
            v["group"] = json!(group);
        }
        v
    }
}

/// One kernel to generate: its name and the op parameters handed to the driver.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpec {
    /// Kernel (and `global_symbol`) name.
    pub name: String,
    /// Driver op and parameters as JSON (`{"name", "op", ...}`).
    pub json: Value,
}

impl KernelSpec {
    /// A kernel named `name` of the driver op and parameters in `params` (`{"op", ...}`).
    pub fn new(name: impl Into<String>, params: Value) -> Self {
        let name = name.into();
        let mut json = params;
        json["name"] = json!(name);
        KernelSpec { name, json }
    }
}

/// The storage format of weight `name` in `ckpt`: a plain tensor, or planes `{name}.q4` /
/// `{name}.q8` + `{name}.scales` whose group is `cols / scales.cols`.
pub fn weight_format(ckpt: &Checkpoint, name: &str) -> Result<WeightFormat> {
    for (suffix, four_bit) in [("q4", true), ("q8", false)] {
        let plane = format!("{name}.{suffix}");
        if !ckpt.contains(&plane) {
            continue;
        }
        let codes = ckpt.tensor(&plane)?;
        let scales = ckpt.tensor(&format!("{name}.scales"))?;
        let bad = || Error::Unsupported(format!("{name}: quantized planes of unexpected shape"));
        let (&[_, c], &[_, groups]) = (codes.shape, scales.shape) else {
            return Err(bad());
        };
        let cols = if four_bit { c * 2 } else { c };
        if groups == 0 || cols % groups != 0 {
            return Err(bad());
        }
        let group = cols / groups;
        return Ok(if four_bit {
            WeightFormat::Q4bf16 { group }
        } else {
            WeightFormat::Q8bf16 { group }
        });
    }
    let view = ckpt.tensor(name)?;
    match view.dtype {
        DType::F32 => Ok(WeightFormat::F32),
        DType::BF16 => Ok(WeightFormat::Bf16),
        other => Err(Error::Unsupported(format!(
            "{name}: weights in {other} have no TVM kernels (f32, bf16, q4bf16, q8bf16)"
        ))),
    }
}

/// The kernels of a Gemma 3 model whose matrices are stored as `formats` says.
pub fn gemma3_kernels(cfg: &Gemma3Config, ckpt: &Checkpoint) -> Result<Vec<KernelSpec>> {
    let p = &cfg.weight_prefix;
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let (heads, kvh, inter) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
    );
    let eps = cfg.rms_norm_eps;
    let mut mats = BTreeSet::new();
    for i in 0..cfg.num_hidden_layers {
        let l = format!("{p}layers.{i}.");
        for (name, rows, cols) in [
            ("self_attn.q_proj", heads * hd, h),
            ("self_attn.k_proj", kvh * hd, h),
            ("self_attn.v_proj", kvh * hd, h),
            ("self_attn.o_proj", h, heads * hd),
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ] {
            let fmt = weight_format(ckpt, &format!("{l}{name}.weight"))?;
            mats.insert((fmt, rows, cols));
        }
    }
    let embed_fmt = weight_format(ckpt, &format!("{p}embed_tokens.weight"))?;
    let vocab = cfg.vocab_size;
    let mut out = Vec::new();
    let mut push = |name: String, mut v: Value| {
        v["name"] = json!(name);
        out.push(KernelSpec { name, json: v });
    };
    for (fmt, rows, cols) in &mats {
        let params = fmt.params(*rows, *cols);
        let (gemv_op, gemm_op) = matmul_ops(*fmt);
        push(gemv_name(*fmt, *rows, *cols), with_op(&params, gemv_op));
        push(gemm_name(*fmt, *rows, *cols), with_op(&params, gemm_op));
    }
    let embed_params = embed_fmt.params(vocab, h);
    if !mats.contains(&(embed_fmt, vocab, h)) {
        push(
            gemv_name(embed_fmt, vocab, h),
            with_op(&embed_params, matmul_ops(embed_fmt).0),
        );
    }
    push(
        format!("embed_{}_{vocab}x{h}", embed_fmt.name()),
        with_op(&embed_params, "embed"),
    );
    for width in [h, hd] {
        push(
            format!("rms_norm_{width}"),
            json!({"op": "rms_norm", "width": width, "eps": eps}),
        );
    }
    push(
        format!("add_rms_norm_{h}"),
        json!({"op": "add_rms_norm", "width": h, "eps": eps}),
    );
    push(
        format!("gelu_gate_{inter}"),
        json!({"op": "gelu_gate", "width": inter}),
    );
    for nh in BTreeSet::from([heads, kvh]) {
        push(
            format!("rope_{nh}x{hd}"),
            json!({"op": "rope", "heads": nh, "head_dim": hd}),
        );
    }
    push(
        format!("attention_{heads}x{kvh}x{hd}"),
        json!({"op": "attention", "heads": heads, "kv_heads": kvh, "head_dim": hd,
               "scale": cfg.query_pre_attn_scalar.powf(-0.5)}),
    );
    Ok(out)
}

fn with_op(params: &Value, op: &str) -> Value {
    let mut v = params.clone();
    v["op"] = json!(op);
    v
}

/// Driver ops of the decode and prefill products with weights in `fmt`: Q4BF16 weights
/// multiply activations quantized to int8 per group (`gemv_q4i8`/`gemm_q4i8`,
/// docs/formats/q4bf16.md#activations-at-run-time), the other formats f32 activations.
fn matmul_ops(fmt: WeightFormat) -> (&'static str, &'static str) {
    match fmt {
        WeightFormat::Q4bf16 { .. } => ("gemv_q4i8", "gemm_q4i8"),
        _ => ("gemv", "gemm"),
    }
}

/// Kernel-name part of the products with weights in `fmt` (`q4i8g128` for Q4BF16 weights
/// times int8 activations, else the format's name).
fn matmul_kind(fmt: WeightFormat) -> String {
    match fmt {
        WeightFormat::Q4bf16 { group } => format!("q4i8g{group}"),
        _ => fmt.name(),
    }
}

/// Name of the decode (one token) matrix-vector kernel.
pub fn gemv_name(fmt: WeightFormat, rows: usize, cols: usize) -> String {
    format!("gemv_{}_{rows}x{cols}", matmul_kind(fmt))
}

/// Name of the prefill (many tokens) matrix-matrix kernel.
pub fn gemm_name(fmt: WeightFormat, rows: usize, cols: usize) -> String {
    format!("gemm_{}_{rows}x{cols}", matmul_kind(fmt))
}
