//! Q4BF16 / Q8BF16 weights (`docs/formats/q4bf16.md`) and their fused dequantize-and-dot.
//!
//! The codes stay packed in memory; a row is widened to f32 one group at a time inside the
//! dot product, so no f32 copy of a weight matrix ever exists. The scalar reference is
//! `ava_core::quant::dequantize_q4_row`; the fast path below computes the same values and is
//! checked against it.
//!
//! [`QuantWeights::matmul_q8`] (in [`int8`]) is the q4bf16 x int8 product.

use ava_core::quant::{bf16_to_f32, dequantize_q4_row, dequantize_q8_row, QuantFormat};
use ava_core::quant::{group_fits, Q4_ZERO};
use ava_core::{DType, TensorView};

use std::sync::Arc;

use memmap2::Mmap;

use super::simd::dot;
use super::stored::Stored;
use crate::error::{Error, Result};

/// Largest group size: the per-group scratch buffer lives on the stack.
const MAX_GROUP: usize = 128;

/// A quantized `[rows, cols]` weight: packed codes plus one bf16 scale per group.
#[derive(Debug)]
pub struct QuantWeights {
    /// q4bf16 or q8bf16.
    pub format: QuantFormat,
    /// Elements per group along `cols`.
    pub group: usize,
    /// Code bytes, `rows * format.row_bytes(cols)`.
    codes: Stored<u8>,
    /// bf16 scales, `rows * cols / group`.
    scales: Stored<u16>,
}

impl QuantWeights {
    /// Copies the planes of a `[rows, cols]` weight; checks their dtypes and shapes.
    pub fn from_planes(
        format: QuantFormat,
        codes: &TensorView<'_>,
        scales: &TensorView<'_>,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let group = check_planes(format, codes, scales, rows, cols)?;
        Ok(QuantWeights {
            format,
            group,
            codes: codes.data.to_vec().into(),
            scales: scales
                .data
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect::<Vec<u16>>()
                .into(),
        })
    }

    /// Like [`QuantWeights::from_planes`], using the planes in place where `maps` (the
    /// mapping and offset of the codes, then of the scales) hold them aligned; else copied.
    pub fn from_mapped_planes(
        format: QuantFormat,
        codes: &TensorView<'_>,
        scales: &TensorView<'_>,
        (rows, cols): (usize, usize),
        maps: [(Arc<Mmap>, usize); 2],
    ) -> Result<Self> {
        let group = check_planes(format, codes, scales, rows, cols)?;
        let [(cmap, coff), (smap, soff)] = maps;
        let mapped = (
            Stored::mapped(cmap, coff, codes.data.len()),
            Stored::mapped(smap, soff, scales.data.len() / 2),
        );
        match mapped {
            (Some(codes), Some(scales)) => Ok(QuantWeights {
                format,
                group,
                codes,
                scales,
            }),
            _ => Self::from_planes(format, codes, scales, rows, cols),
        }
    }

    /// Whether the planes are used in place from a mapping.
    pub fn is_mapped(&self) -> bool {
        self.codes.is_mapped() && self.scales.is_mapped()
    }

    /// Bytes held (codes and scales).
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 2
    }

    fn row_parts(&self, r: usize, cols: usize) -> (&[u8], &[u16]) {
        let rb = self.format.row_bytes(cols);
        let gs = cols / self.group;
        (
            &self.codes[r * rb..(r + 1) * rb],
            &self.scales[r * gs..(r + 1) * gs],
        )
    }

    /// Row `r` dequantized into `out` (length `cols`), by the scalar reference.
    pub fn row_into(&self, r: usize, cols: usize, out: &mut [f32]) {
        let (codes, scales) = self.row_parts(r, cols);
        match self.format {
            QuantFormat::Q8Bf16 => {
                dequantize_q8_row(bytemuck::cast_slice(codes), scales, self.group, out)
            }
            _ => dequantize_q4_row(codes, scales, self.group, out),
        }
    }

    /// `sum_c W[r, c] * x[c]`, one group at a time: `scale * dot(codes - zero, x_group)`.
    pub fn row_dot(&self, r: usize, x: &[f32]) -> f32 {
        let cols = x.len();
        let (codes, scales) = self.row_parts(r, cols);
        let g = self.group;
        let mut buf = [0f32; MAX_GROUP];
        let buf = &mut buf[..g];
        let mut sum = 0f32;
        match self.format {
            QuantFormat::Q8Bf16 => {
                let codes: &[i8] = bytemuck::cast_slice(codes);
                for ((block, &s), xg) in codes.chunks_exact(g).zip(scales).zip(x.chunks_exact(g)) {
                    for (b, &c) in buf.iter_mut().zip(block) {
                        *b = f32::from(c);
                    }
                    sum += bf16_to_f32(s) * dot(buf, xg);
                }
            }
            _ => {
                let half = g / 2;
                for ((block, &s), xg) in codes.chunks_exact(half).zip(scales).zip(x.chunks_exact(g))
                {
                    let (lo, hi) = buf.split_at_mut(half);
                    for ((l, h), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(block) {
                        *l = (i32::from(b & 0x0F) - Q4_ZERO) as f32;
                        *h = (i32::from(b >> 4) - Q4_ZERO) as f32;
                    }
                    sum += bf16_to_f32(s) * dot(buf, xg);
                }
            }
        }
        sum
    }
}

/// Checks the planes of a `[rows, cols]` weight (dtypes, shapes, lengths); returns the group.
fn check_planes(
    format: QuantFormat,
    codes: &TensorView<'_>,
    scales: &TensorView<'_>,
    rows: usize,
    cols: usize,
) -> Result<usize> {
    let bad = |what: &str| Error::Model(format!("{}: {what}", codes.name));
    if codes.dtype != format.code_dtype() || codes.shape != format.code_shape(rows, cols) {
        return Err(bad("code plane of the wrong dtype or shape"));
    }
    let group = match scales.shape {
        [r, g] if *r == rows && *g > 0 && cols % g == 0 => cols / g,
        _ => return Err(bad("scales plane of the wrong shape")),
    };
    if scales.dtype != DType::BF16 || !group_fits(cols, group) || group > MAX_GROUP {
        return Err(bad(
            "scales must be bf16 with a group size of 32, 64 or 128",
        ));
    }
    if codes.data.len() != rows * format.row_bytes(cols)
        || scales.data.len() != rows * cols / group * 2
    {
        return Err(bad("plane data of the wrong length"));
    }
    Ok(group)
}

mod int8;

#[cfg(test)]
mod tests {
    use super::*;
    use ava_core::quant::{quantize_q4_group, quantize_q8_group};

    fn planes(format: QuantFormat, rows: usize, cols: usize, group: usize) -> QuantWeights {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let mut codes = vec![0u8; rows * format.row_bytes(cols)];
        let mut scales = Vec::new();
        let cb = format.row_bytes(group);
        for (xg, c) in w.chunks(group).zip(codes.chunks_mut(cb)) {
            scales.push(match format {
                QuantFormat::Q8Bf16 => quantize_q8_group(xg, 1.0, bytemuck::cast_slice_mut(c)),
                _ => quantize_q4_group(xg, 1.0, c),
            });
        }
        QuantWeights {
            format,
            group,
            codes: codes.into(),
            scales: scales.into(),
        }
    }

    #[test]
    fn fused_dot_matches_reference() {
        for format in [QuantFormat::Q4Bf16, QuantFormat::Q8Bf16] {
            for group in [32, 64, 128] {
                let (rows, cols) = (5, 256);
                let q = planes(format, rows, cols, group);
                let x: Vec<f32> = (0..cols).map(|i| (i % 11) as f32 / 5.0 - 1.0).collect();
                let mut row = vec![0f32; cols];
                for r in 0..rows {
                    q.row_into(r, cols, &mut row);
                    let want: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
                    let got = q.row_dot(r, &x);
                    assert!(
                        (want - got).abs() < 1e-3 * (1.0 + want.abs()),
                        "{want} {got}"
                    );
                }
            }
        }
    }
}
