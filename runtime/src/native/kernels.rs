//! The native backend's [`Kernels`]: weights as [`Matrix`] (f32 / bf16 / f16 in place or
//! copied, q4bf16 / q8bf16 planes) and the ops of this module, run on the rayon pool.

use ava_core::quant::{QuantFormat, SCALES_SUFFIX};
use ava_core::Gemma3Config;
use rayon::prelude::*;

use super::{
    add_in_place, dot, gelu_tanh_gate, rms_norm_rows, softmax_in_place, Matrix, QuantWeights, Rope,
};
use crate::error::{Error, Result};
use crate::gemma3::{Attention, Input, Kernels};
use crate::source::ModelSource;

/// The pure-Rust kernels, parameterised by the model's attention shape and norm epsilon.
#[derive(Clone, Debug)]
pub struct NativeKernels {
    eps: f32,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// `query_pre_attn_scalar^-0.5`.
    scale: f32,
}

impl NativeKernels {
    /// Kernels for `cfg`'s shapes.
    pub fn new(cfg: &Gemma3Config) -> Self {
        NativeKernels {
            eps: cfg.rms_norm_eps as f32,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
            scale: cfg.query_pre_attn_scalar.powf(-0.5) as f32,
        }
    }
}

/// Positions of one call: the RoPE and the first position (rotations computed in place).
pub struct NativePositions {
    rope: Rope,
    start: usize,
}

impl Kernels for NativeKernels {
    type Weight = Matrix;
    type Positions = NativePositions;
    const NAME: &'static str = "native";

    fn weight(&self, source: &ModelSource, name: &str) -> Result<Matrix> {
        if let Some(m) = quantized_matrix(source, name)? {
            return Ok(m);
        }
        let view = tensor(source, name)?;
        match source.mapping_of(view.data) {
            Some((map, offset)) => Matrix::from_mapped(&view, map, offset),
            None => Matrix::from_view(&view),
        }
    }

    fn shape(w: &Matrix) -> (usize, usize) {
        (w.rows, w.cols)
    }

    fn weight_bytes(w: &Matrix) -> usize {
        w.bytes()
    }

    fn is_mapped(w: &Matrix) -> bool {
        w.is_mapped()
    }

    fn check(&self, _weights: &[&Matrix], _embed: &Matrix, _head: &Matrix) -> Result<()> {
        Ok(())
    }

    fn embed(&self, w: &Matrix, tokens: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
        for (row, &id) in out.chunks_mut(w.cols).zip(tokens) {
            w.row_into(id as usize, row);
            row.iter_mut().for_each(|v| *v *= scale);
        }
        Ok(())
    }

    fn matmul(&self, w: &Matrix, x: &mut Input<'_>, out: &mut [f32]) -> Result<()> {
        w.matmul(x.x, x.n, out);
        Ok(())
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(x);
        rms_norm_rows(out, w, self.eps);
        Ok(())
    }

    fn add_rms_norm(&self, x: &mut [f32], w: &[f32], h: &mut Vec<f32>) -> Result<()> {
        rms_norm_rows(x, w, self.eps);
        add_in_place(h, x);
        Ok(())
    }

    fn positions(&self, rope: &Rope, start: usize, _n: usize) -> NativePositions {
        NativePositions {
            rope: rope.clone(),
            start,
        }
    }

    fn norm_rope(
        &self,
        x: &mut Vec<f32>,
        w: &[f32],
        heads: usize,
        pos: &NativePositions,
    ) -> Result<()> {
        rms_norm_rows(x, w, self.eps);
        let width = heads * self.head_dim;
        for (t, row) in x.chunks_mut(width).enumerate() {
            pos.rope.apply(row, pos.start + t);
        }
        Ok(())
    }

    fn attention(&self, a: &Attention<'_>, out: &mut [f32]) -> Result<()> {
        attend(self, a, out);
        Ok(())
    }

    fn gelu_gate(&self, gate: &mut Vec<f32>, up: &[f32]) -> Result<()> {
        gelu_tanh_gate(gate, up);
        Ok(())
    }
}

/// Scaled dot-product attention of every (token, head) over the keys it may see: the
/// chunk's own keys and, before the chunk, the cached ones.
fn attend(k: &NativeKernels, a: &Attention<'_>, out: &mut [f32]) {
    let (hd, heads) = (k.head_dim, k.heads);
    let group = heads / k.kv_heads;
    let width = k.kv_heads * hd;
    out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
        let (t, head) = (idx / heads, idx % heads);
        let g = head / group;
        let pos = a.start + t;
        let lo = (pos + 1).saturating_sub(a.window);
        let qh = &a.q[idx * hd..(idx + 1) * hd];
        // Where position j's key/value row is: in the chunk's fresh rows or the cache.
        let locate = |j: usize| -> (usize, bool) {
            if j >= a.start {
                ((j - a.start) * width + g * hd, true)
            } else {
                ((j % a.cap) * width + g * hd, false)
            }
        };
        let mut scores: Vec<f32> = (lo..=pos)
            .map(|j| {
                let (at, fresh) = locate(j);
                let src = if fresh { a.k } else { a.cache_k };
                dot(qh, &src[at..at + hd]) * k.scale
            })
            .collect();
        softmax_in_place(&mut scores);
        o.fill(0.0);
        for (j, p) in (lo..=pos).zip(&scores) {
            let (at, fresh) = locate(j);
            let src = if fresh { a.v } else { a.cache_v };
            for (acc, val) in o.iter_mut().zip(&src[at..at + hd]) {
                *acc += p * val;
            }
        }
    });
}

fn tensor<'a>(source: &'a ModelSource, name: &str) -> Result<ava_core::TensorView<'a>> {
    source.tensor(name).ok_or_else(|| {
        Error::Model(format!(
            "{}: tensor {name:?} not found",
            source.label("").display()
        ))
    })
}

/// A weight stored as Q4BF16 / Q8BF16 planes (`docs/formats/q4bf16.md`), if it is.
fn quantized_matrix(source: &ModelSource, name: &str) -> Result<Option<Matrix>> {
    if source.tensor(name).is_some() {
        return Ok(None);
    }
    let Some(format) = QuantFormat::detect(name, |n| source.tensor(n).is_some()) else {
        return Ok(None);
    };
    let codes = tensor(source, &format!("{name}{}", format.code_suffix()))?;
    let scales = tensor(source, &format!("{name}{SCALES_SUFFIX}"))?;
    let (rows, cols) = match (codes.shape, format) {
        ([r, c], QuantFormat::Q4Bf16) => (*r, c * 2),
        ([r, c], _) => (*r, *c),
        _ => return Err(Error::Model(format!("{name}: code plane is not 2-D"))),
    };
    let maps = (
        source.mapping_of(codes.data),
        source.mapping_of(scales.data),
    );
    let weights = match maps {
        (Some(c), Some(s)) => {
            QuantWeights::from_mapped_planes(format, &codes, &scales, (rows, cols), [c, s])?
        }
        _ => QuantWeights::from_planes(format, &codes, &scales, rows, cols)?,
    };
    Ok(Some(Matrix::from_quantized(weights, rows, cols)))
}
