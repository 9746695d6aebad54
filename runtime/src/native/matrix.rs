//! Weight matrices in their stored float format, and the matrix product against activations.

use ava_core::{DType, TensorView};
use rayon::prelude::*;

use super::simd::dot;
use crate::error::{Error, Result};

/// Rows computed per parallel task.
const ROWS_PER_TASK: usize = 16;

/// Weight values as stored: f32, or 16-bit floats widened on the fly.
#[derive(Debug)]
#[non_exhaustive]
pub enum WeightData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// bfloat16 bit patterns.
    Bf16(Vec<u16>),
    /// IEEE half bit patterns.
    F16(Vec<u16>),
}

/// A row-major `[rows, cols]` weight matrix (PyTorch's `[out, in]` layout).
#[derive(Debug)]
pub struct Matrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    data: WeightData,
}

impl Matrix {
    /// Copies a 2-D (or 1-D, as one row) float tensor into a matrix.
    pub fn from_view(view: &TensorView<'_>) -> Result<Self> {
        let (rows, cols) = match view.shape {
            [r, c] => (*r, *c),
            [c] => (1, *c),
            other => {
                return Err(Error::Model(format!(
                    "{}: expected a matrix, got shape {other:?}",
                    view.name
                )))
            }
        };
        let pairs = |bytes: &[u8]| -> Vec<u16> {
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        let data = match view.dtype {
            DType::F32 => WeightData::F32(view.to_f32_vec()?),
            DType::BF16 => WeightData::Bf16(pairs(view.data)),
            DType::F16 => WeightData::F16(pairs(view.data)),
            other => {
                return Err(Error::Model(format!(
                    "{}: unsupported weight dtype {other}",
                    view.name
                )))
            }
        };
        Ok(Matrix { rows, cols, data })
    }

    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        match &self.data {
            WeightData::F32(v) => v.len() * 4,
            WeightData::Bf16(v) | WeightData::F16(v) => v.len() * 2,
        }
    }

    /// The dtype the weights are stored in.
    pub fn dtype(&self) -> DType {
        match self.data {
            WeightData::F32(_) => DType::F32,
            WeightData::Bf16(_) => DType::BF16,
            WeightData::F16(_) => DType::F16,
        }
    }

    /// Writes row `r` widened to f32 into `out` (length `cols`).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let range = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            WeightData::F32(v) => out.copy_from_slice(&v[range]),
            WeightData::Bf16(v) => {
                for (o, b) in out.iter_mut().zip(&v[range]) {
                    *o = f32::from_bits(u32::from(*b) << 16);
                }
            }
            WeightData::F16(v) => {
                for (o, b) in out.iter_mut().zip(&v[range]) {
                    *o = half::f16::from_bits(*b).to_f32();
                }
            }
        }
    }

    /// `out[t, r] = sum_c x[t, c] * W[r, c]` for `n` rows of activations `x` (`[n, cols]`),
    /// giving `out` as `[n, rows]`. Rows of `W` are split across threads.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), n * self.cols);
        debug_assert_eq!(out.len(), n * self.rows);
        if n == 1 {
            out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each_init(
                || vec![0f32; self.cols],
                |buf, (task, chunk)| {
                    for (i, o) in chunk.iter_mut().enumerate() {
                        *o = self.row_dot(task * ROWS_PER_TASK + i, x, buf);
                    }
                },
            );
            return;
        }
        // Many tokens: each task streams its weight rows once and keeps them transposed.
        let mut transposed = vec![0f32; n * self.rows];
        transposed
            .par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each_init(
                || vec![0f32; self.cols],
                |buf, (task, chunk)| {
                    for (i, row_out) in chunk.chunks_mut(n).enumerate() {
                        let r = task * ROWS_PER_TASK + i;
                        let w = self.row_slice(r, buf);
                        for (t, o) in row_out.iter_mut().enumerate() {
                            *o = dot(w, &x[t * self.cols..(t + 1) * self.cols]);
                        }
                    }
                },
            );
        for r in 0..self.rows {
            for t in 0..n {
                out[t * self.rows + r] = transposed[r * n + t];
            }
        }
    }

    /// Row `r` as f32: borrowed for f32 weights, widened into `buf` otherwise.
    fn row_slice<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        match &self.data {
            WeightData::F32(v) => &v[r * self.cols..(r + 1) * self.cols],
            _ => {
                self.row_into(r, buf);
                buf
            }
        }
    }

    fn row_dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        dot(self.row_slice(r, buf), x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Matrix {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
            .collect();
        Matrix {
            rows,
            cols,
            data: WeightData::F32(v),
        }
    }

    #[test]
    fn matmul_matches_naive() {
        let m = matrix(37, 19);
        for n in [1, 3] {
            let x: Vec<f32> = (0..n * 19).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut out = vec![0f32; n * 37];
            m.matmul(&x, n, &mut out);
            let WeightData::F32(w) = &m.data else {
                unreachable!()
            };
            for t in 0..n {
                for r in 0..37 {
                    let want: f32 = (0..19).map(|c| x[t * 19 + c] * w[r * 19 + c]).sum();
                    assert!((out[t * 37 + r] - want).abs() < 1e-4, "{t} {r}");
                }
            }
        }
    }

    #[test]
    fn bf16_rows_widen_exactly() {
        let bits: Vec<u16> = [1.0f32, -2.5, 0.15625]
            .iter()
            .map(|v| (v.to_bits() >> 16) as u16)
            .collect();
        let m = Matrix {
            rows: 1,
            cols: 3,
            data: WeightData::Bf16(bits),
        };
        let mut row = [0f32; 3];
        m.row_into(0, &mut row);
        assert_eq!(row, [1.0, -2.5, 0.15625]);
    }
}
