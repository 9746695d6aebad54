//! The operations the encoder's forward pass ([`super::Encoder`]) is written over
//! ([`EncoderOps`]), one implementation per backend: [`NativeOps`] (plain Rust loops) and the
//! archive's TVM kernel library ([`EncoderKernels`]). The network, its weights and the order of
//! operations are the encoder's; how each operation is computed is the backend's.

use super::encoder::{attention_kernel, dot_f32, LayerNorm, Linear, Plan, Weights};
use super::kernels::{i32_arg, i8_arg, EncoderKernels};
use crate::error::Result;
use crate::native::gelu_tanh;
use crate::tvm::Arg;

/// The attention of one sequence: `n` tokens of `heads` heads of `head_dim` values.
pub(super) struct Heads {
    pub n: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// The operations of one backend. Activations are f32, row-major, one row per token.
pub(super) trait EncoderOps {
    /// `l` applied to every row of `x`.
    fn linear(&self, l: &Linear, x: &[f32]) -> Result<Vec<f32>>;
    /// `LayerNormalization(x + residual)` of every row.
    fn norm(&self, ln: &LayerNorm, x: Vec<f32>, residual: Option<&[f32]>) -> Result<Vec<f32>>;
    /// tanh GELU of `x`, rows of `width`.
    fn gelu(&self, x: Vec<f32>, width: usize) -> Result<Vec<f32>>;
    /// Bidirectional scaled dot-product attention of `[q, k, v]` (each `[n, heads * head_dim]`).
    fn attention(&self, qkv: [&[f32]; 3], h: &Heads) -> Result<Vec<f32>>;
}

/// The pure-Rust reference operations.
pub(super) struct NativeOps;

impl EncoderOps for NativeOps {
    fn linear(&self, l: &Linear, x: &[f32]) -> Result<Vec<f32>> {
        Ok(l.forward(x))
    }

    fn norm(&self, ln: &LayerNorm, mut x: Vec<f32>, residual: Option<&[f32]>) -> Result<Vec<f32>> {
        if let Some(r) = residual {
            x.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        ln.forward(&mut x);
        Ok(x)
    }

    fn gelu(&self, mut x: Vec<f32>, _width: usize) -> Result<Vec<f32>> {
        x.iter_mut().for_each(|v| *v = gelu_tanh(*v));
        Ok(x)
    }

    fn attention(&self, [q, k, v]: [&[f32]; 3], h: &Heads) -> Result<Vec<f32>> {
        let (n, hd, d) = (h.n, h.head_dim, h.heads * h.head_dim);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut ctx = vec![0f32; n * d];
        let mut p = vec![0f32; n];
        for head in 0..h.heads {
            let off = head * hd;
            for i in 0..n {
                let qi = &q[i * d + off..i * d + off + hd];
                for (j, pj) in p.iter_mut().enumerate() {
                    *pj = dot_f32(qi, &k[j * d + off..j * d + off + hd]) * scale;
                }
                let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                p.iter_mut().for_each(|x| *x = (*x - m).exp());
                let s: f32 = p.iter().sum();
                let out = &mut ctx[i * d + off..i * d + off + hd];
                for (j, pj) in p.iter().enumerate() {
                    let w = pj / s;
                    for (o, vv) in out.iter_mut().zip(&v[j * d + off..j * d + off + hd]) {
                        *o += w * vv;
                    }
                }
            }
        }
        Ok(ctx)
    }
}

impl EncoderOps for EncoderKernels {
    /// The linear's kernel when it has one ([`Plan`]), else the native computation.
    fn linear(&self, l: &Linear, x: &[f32]) -> Result<Vec<f32>> {
        let n = x.len() / l.n_in;
        let (rows, cols) = (l.n_out, l.n_in);
        let mut y = vec![0f32; n * rows];
        match (&l.plan, &*l.weights) {
            (
                Plan::Int8 {
                    name,
                    wsum,
                    scale,
                    quant,
                },
                Weights::I8 { q, .. },
            ) => {
                let codes = quant.codes(x);
                self.call(
                    name,
                    &[
                        i8_arg(&codes, &[n, cols]),
                        i8_arg(q, &[rows, cols]),
                        i32_arg(wsum, &[rows]),
                        Arg::f32(&l.bias, &[rows]),
                        Arg::f32(scale, &[rows]),
                        Arg::f32_out(&mut y, &[n, rows]),
                        Arg::Int(i64::from(quant.zero_point)),
                    ],
                )?;
            }
            (Plan::F32 { name }, Weights::F32(w)) => {
                self.call(
                    name,
                    &[
                        Arg::f32(x, &[n, cols]),
                        Arg::f32(w, &[rows, cols]),
                        Arg::f32_out(&mut y, &[n, rows]),
                    ],
                )?;
                for row in y.chunks_exact_mut(rows) {
                    row.iter_mut().zip(&l.bias).for_each(|(v, b)| *v += b);
                }
            }
            _ => return Ok(l.forward(x)),
        }
        Ok(y)
    }

    fn norm(&self, ln: &LayerNorm, x: Vec<f32>, residual: Option<&[f32]>) -> Result<Vec<f32>> {
        let w = ln.gamma.len();
        let n = x.len() / w;
        let mut y = vec![0f32; x.len()];
        let (g, b) = (Arg::f32(&ln.gamma, &[w]), Arg::f32(&ln.beta, &[w]));
        let (xa, ya, eps) = (
            Arg::f32(&x, &[n, w]),
            Arg::f32_out(&mut y, &[n, w]),
            Arg::Float(f64::from(ln.eps)),
        );
        match residual {
            Some(r) => self.call(
                &format!("add_layer_norm_{w}"),
                &[xa, Arg::f32(r, &[n, w]), g, b, eps, ya],
            )?,
            None => self.call(&format!("layer_norm_{w}"), &[xa, g, b, eps, ya])?,
        }
        Ok(y)
    }

    fn gelu(&self, x: Vec<f32>, width: usize) -> Result<Vec<f32>> {
        let n = x.len() / width;
        let mut y = vec![0f32; x.len()];
        self.call(
            &format!("gelu_{width}"),
            &[Arg::f32(&x, &[n, width]), Arg::f32_out(&mut y, &[n, width])],
        )?;
        Ok(y)
    }

    fn attention(&self, [q, k, v]: [&[f32]; 3], h: &Heads) -> Result<Vec<f32>> {
        let (n, d) = (h.n, h.heads * h.head_dim);
        let scale = 1.0 / (h.head_dim as f32).sqrt();
        let mut ctx = vec![0f32; n * d];
        self.call(
            &attention_kernel(h.heads, h.head_dim),
            &[
                Arg::f32(q, &[n, d]),
                Arg::f32(k, &[n, d]),
                Arg::f32(v, &[n, d]),
                Arg::f32_out(&mut ctx, &[n, d]),
                Arg::Float(f64::from(scale)),
            ],
        )?;
        Ok(ctx)
    }
}
