//! Weight matrices in their stored float format, and the matrix product against activations.

use std::cell::Cell;
use std::sync::Arc;

use ava_core::quant::QuantFormat;
use ava_core::{DType, TensorView};
use memmap2::Mmap;
use rayon::prelude::*;

use super::act::QuantActs;
use super::q4::QuantWeights;
use super::simd::dot;
use crate::error::{Error, Result};

/// Rows computed per parallel task.
pub(super) const ROWS_PER_TASK: usize = 16;

/// Where weight values live: copied into memory, or in place in a mapped archive.
#[derive(Debug)]
#[non_exhaustive]
pub enum WeightData {
    /// Owned 32-bit floats.
    F32(Vec<f32>),
    /// Owned 16-bit patterns (bf16 or f16, as `Matrix::dtype` says).
    Half(Vec<u16>),
    /// In place: `len` bytes at `offset` of a read-only mapping (checked aligned for the dtype).
    Mapped {
        /// The mapping; it lives as long as the matrix.
        map: Arc<Mmap>,
        /// Byte offset of the first value.
        offset: usize,
        /// Byte length.
        len: usize,
    },
    /// Q4BF16 / Q8BF16 codes and scales, dequantized inside the matmul (`q4.rs`).
    Quantized(QuantWeights),
}

/// A row-major `[rows, cols]` weight matrix (PyTorch's `[out, in]` layout).
#[derive(Debug)]
pub struct Matrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    dtype: DType,
    data: WeightData,
}

impl Matrix {
    /// Copies a 2-D (or 1-D, as one row) float tensor into a matrix.
    pub fn from_view(view: &TensorView<'_>) -> Result<Self> {
        let (rows, cols) = shape_of(view)?;
        let data = match view.dtype {
            DType::F32 => WeightData::F32(view.to_f32_vec()?),
            DType::BF16 | DType::F16 => WeightData::Half(
                view.data
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            other => return Err(unsupported(view, other)),
        };
        Ok(Matrix {
            rows,
            cols,
            dtype: view.dtype,
            data,
        })
    }

    /// Uses the tensor in place inside `map` (its bytes start at `offset`), falling back to a
    /// copy when they are not aligned for their dtype or the target is big-endian.
    pub fn from_mapped(view: &TensorView<'_>, map: Arc<Mmap>, offset: usize) -> Result<Self> {
        let (rows, cols) = shape_of(view)?;
        let aligned = match view.dtype {
            DType::F32 => bytemuck::try_cast_slice::<u8, f32>(view.data).is_ok(),
            DType::BF16 | DType::F16 => bytemuck::try_cast_slice::<u8, u16>(view.data).is_ok(),
            other => return Err(unsupported(view, other)),
        };
        if !aligned
            || cfg!(target_endian = "big")
            || view.data.len() != rows * cols * view.dtype.size_in_bytes()
        {
            return Self::from_view(view);
        }
        let data = WeightData::Mapped {
            map,
            offset,
            len: view.data.len(),
        };
        Ok(Matrix {
            rows,
            cols,
            dtype: view.dtype,
            data,
        })
    }

    /// A matrix over quantized planes (`docs/formats/q4bf16.md`); `dtype` reports bf16.
    pub fn from_quantized(weights: QuantWeights, rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            dtype: DType::BF16,
            data: WeightData::Quantized(weights),
        }
    }

    /// The quantized weights, when the matrix holds codes rather than floats.
    pub fn quantized(&self) -> Option<&QuantWeights> {
        match &self.data {
            WeightData::Quantized(q) => Some(q),
            _ => None,
        }
    }

    /// Whether the weights are used in place from a mapping.
    pub fn is_mapped(&self) -> bool {
        match &self.data {
            WeightData::Mapped { .. } => true,
            WeightData::Quantized(q) => q.is_mapped(),
            _ => false,
        }
    }

    fn bytes_slice(&self) -> &[u8] {
        match &self.data {
            WeightData::F32(v) => bytemuck::cast_slice(v),
            WeightData::Half(v) => bytemuck::cast_slice(v),
            WeightData::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            WeightData::Quantized(_) => &[],
        }
    }

    /// The values as f32 (only for f32 matrices; alignment was checked at construction).
    fn f32s(&self) -> &[f32] {
        bytemuck::cast_slice(self.bytes_slice())
    }

    /// The values as 16-bit patterns (bf16 / f16 matrices).
    fn u16s(&self) -> &[u16] {
        bytemuck::cast_slice(self.bytes_slice())
    }

    /// Bytes the weights occupy.
    pub fn bytes(&self) -> usize {
        if let Some(q) = self.quantized() {
            return q.bytes();
        }
        self.rows * self.cols * self.dtype.size_in_bytes()
    }

    /// The dtype the weights are stored in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Writes row `r` widened to f32 into `out` (length `cols`).
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        if let Some(q) = self.quantized() {
            return q.row_into(r, self.cols, out);
        }
        let range = r * self.cols..(r + 1) * self.cols;
        match self.dtype {
            DType::F32 => out.copy_from_slice(&self.f32s()[range]),
            DType::BF16 => {
                for (o, b) in out.iter_mut().zip(&self.u16s()[range]) {
                    *o = f32::from_bits(u32::from(*b) << 16);
                }
            }
            _ => {
                for (o, b) in out.iter_mut().zip(&self.u16s()[range]) {
                    *o = half::f16::from_bits(*b).to_f32();
                }
            }
        }
    }

    /// `out[t, r] = sum_c x[t, c] * W[r, c]` for `n` rows of activations `x` (`[n, cols]`),
    /// giving `out` as `[n, rows]`. Rows of `W` are split across threads.
    ///
    /// q4bf16 weights multiply `x` quantized to int8 per group instead
    /// ([`QuantWeights::matmul_q8`], `docs/formats/q4bf16.md`); every other format multiplies
    /// the f32 activations.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        debug_assert_eq!(x.len(), n * self.cols);
        debug_assert_eq!(out.len(), n * self.rows);
        if let Some(q) = self.quantized() {
            if q.format == QuantFormat::Q4Bf16 {
                return self.matmul_q4(q, x, n, out);
            }
        }
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

    /// q4bf16 x int8: quantizes `x` into this thread's reused buffers, then multiplies.
    fn matmul_q4(&self, q: &QuantWeights, x: &[f32], n: usize, out: &mut [f32]) {
        thread_local! {
            static ACTS: Cell<QuantActs> = Cell::new(QuantActs::new());
        }
        // Taken out rather than borrowed: a nested call on this thread (rayon may run other
        // work while it waits) then finds an empty value and allocates its own.
        let mut acts = ACTS.take();
        acts.quantize(x, n, self.cols, q.group);
        q.matmul_q8(&acts, self.rows, out);
        ACTS.set(acts);
    }

    /// Row `r` as f32: borrowed for f32 weights, widened into `buf` otherwise.
    fn row_slice<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        match self.dtype {
            DType::F32 if self.quantized().is_none() => {
                &self.f32s()[r * self.cols..(r + 1) * self.cols]
            }
            _ => {
                self.row_into(r, buf);
                buf
            }
        }
    }

    fn row_dot(&self, r: usize, x: &[f32], buf: &mut [f32]) -> f32 {
        if let Some(q) = self.quantized() {
            return q.row_dot(r, x);
        }
        dot(self.row_slice(r, buf), x)
    }
}

fn shape_of(view: &TensorView<'_>) -> Result<(usize, usize)> {
    match view.shape {
        [r, c] => Ok((*r, *c)),
        [c] => Ok((1, *c)),
        other => Err(Error::Model(format!(
            "{}: expected a matrix, got shape {other:?}",
            view.name
        ))),
    }
}

fn unsupported(view: &TensorView<'_>, dtype: DType) -> Error {
    Error::Model(format!("{}: unsupported weight dtype {dtype}", view.name))
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
            dtype: DType::F32,
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
            let w = m.f32s();
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
            dtype: DType::BF16,
            data: WeightData::Half(bits),
        };
        let mut row = [0f32; 3];
        m.row_into(0, &mut row);
        assert_eq!(row, [1.0, -2.5, 0.15625]);
    }

    /// A q4bf16 `[rows, cols]` matrix in groups of 32, quantized from a fixed pattern.
    fn q4_matrix(rows: usize, cols: usize) -> Matrix {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let mut codes = vec![0u8; rows * cols / 2];
        let mut scales = Vec::new();
        for (xg, c) in w.chunks(32).zip(codes.chunks_mut(16)) {
            scales.extend(ava_core::quant::quantize_q4_group(xg, 1.0, c).to_le_bytes());
        }
        let (cs, ss) = ([rows, cols / 2], [rows, cols / 32]);
        let view = |name, dtype, shape, data| TensorView {
            name,
            dtype,
            shape,
            data,
        };
        let q = QuantWeights::from_planes(
            QuantFormat::Q4Bf16,
            &view("w.q4", DType::U8, &cs[..], &codes[..]),
            &view("w.scales", DType::BF16, &ss[..], &scales[..]),
            rows,
            cols,
        )
        .unwrap();
        Matrix::from_quantized(q, rows, cols)
    }

    #[test]
    fn q4_matmul_uses_int8_activations() {
        let (rows, cols) = (21, 96);
        let m = q4_matrix(rows, cols);
        let q = m.quantized().unwrap();
        let mut wf = vec![0f32; rows * cols];
        for (r, row) in wf.chunks_mut(cols).enumerate() {
            m.row_into(r, row);
        }
        for n in [1, 6] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 13 % 31) as f32 - 15.0) / 7.0)
                .collect();
            let mut out = vec![0f32; n * rows];
            m.matmul(&x, n, &mut out);
            // Exactly the int8 path ...
            let mut acts = QuantActs::new();
            acts.quantize(&x, n, cols, 32);
            let mut want = vec![0f32; n * rows];
            q.matmul_q8(&acts, rows, &mut want);
            assert_eq!(out, want);
            // ... which is close to the f32 product of the dequantized weights.
            for t in 0..n {
                for r in 0..rows {
                    let f: f32 = (0..cols).map(|c| x[t * cols + c] * wf[r * cols + c]).sum();
                    let mag: f32 = (0..cols)
                        .map(|c| (x[t * cols + c] * wf[r * cols + c]).abs())
                        .sum();
                    assert!((out[t * rows + r] - f).abs() < 0.01 * mag, "{t} {r}");
                }
            }
        }
    }
}
