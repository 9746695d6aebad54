//! Quantizing whole `[rows, cols]` matrices into Q4BF16 / Q8BF16 planes, rows in parallel.
//!
//! Round-to-nearest per group (the scale from the group's extreme, `ava_core::quant`), with an
//! optional clip search: given per-input-channel importance (mean x² of the activations that
//! multiply each column), each group tries shrinking its range and keeps the ratio with the
//! least importance-weighted squared error.

use ava_core::quant::{
    bf16_to_f32, dequantize_q4_row, dequantize_q8_row, quantize_q4_group, quantize_q8_group,
    QuantFormat,
};
use rayon::prelude::*;

/// Clip ratios tried per group when importance is given.
pub const CLIP_RATIOS: [f32; 6] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75];

/// A matrix's planes.
#[derive(Clone, Debug, Default)]
pub struct Planes {
    /// Codes (`rows * row_bytes`).
    pub codes: Vec<u8>,
    /// bf16 scales (`rows * cols / group`).
    pub scales: Vec<u16>,
}

/// Shape and format of a quantized matrix.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// q4bf16 or q8bf16.
    pub format: QuantFormat,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Group size (divides `cols`).
    pub group: usize,
}

/// Quantizes `w` (`[rows, cols]`), searching clip ratios when `importance` (per column) is given.
pub fn quantize(w: &[f32], layout: Layout, importance: Option<&[f32]>) -> Planes {
    let Layout {
        format,
        rows,
        cols,
        group,
    } = layout;
    let rb = format.row_bytes(cols);
    let gb = format.row_bytes(group);
    let gpr = cols / group;
    let mut planes = Planes {
        codes: vec![0; rows * rb],
        scales: vec![0; rows * gpr],
    };
    planes
        .codes
        .par_chunks_mut(rb)
        .zip(planes.scales.par_chunks_mut(gpr))
        .zip(w.par_chunks(cols))
        .for_each(|((codes, scales), row)| {
            let mut tmp = vec![0u8; gb];
            for (g, (c, s)) in codes.chunks_mut(gb).zip(scales.iter_mut()).enumerate() {
                let x = &row[g * group..(g + 1) * group];
                let imp = importance.map(|i| &i[g * group..(g + 1) * group]);
                *s = quantize_group(format, x, imp, c, &mut tmp);
            }
        });
    planes
}

/// One group, with the clip search when `imp` is given; returns the scale.
fn quantize_group(
    format: QuantFormat,
    x: &[f32],
    imp: Option<&[f32]>,
    out: &mut [u8],
    tmp: &mut [u8],
) -> u16 {
    let Some(imp) = imp else {
        return quantize_one(format, x, 1.0, out);
    };
    let mut best = (f32::INFINITY, 0u16);
    let mut back = vec![0f32; x.len()];
    for ratio in CLIP_RATIOS {
        let s = quantize_one(format, x, ratio, tmp);
        dequantize_group(format, tmp, s, &mut back);
        let err: f32 = x
            .iter()
            .zip(&back)
            .zip(imp)
            .map(|((a, b), i)| (a - b) * (a - b) * i)
            .sum();
        if err < best.0 {
            best = (err, s);
            out.copy_from_slice(tmp);
        }
    }
    best.1
}

fn quantize_one(format: QuantFormat, x: &[f32], clip: f32, out: &mut [u8]) -> u16 {
    match format {
        QuantFormat::Q8Bf16 => quantize_q8_group(x, clip, bytemuck::cast_slice_mut(out)),
        _ => quantize_q4_group(x, clip, out),
    }
}

fn dequantize_group(format: QuantFormat, codes: &[u8], scale: u16, out: &mut [f32]) {
    let group = out.len();
    match format {
        QuantFormat::Q8Bf16 => dequantize_q8_row(bytemuck::cast_slice(codes), &[scale], group, out),
        _ => dequantize_q4_row(codes, &[scale], group, out),
    }
}

/// The values the planes stand for, `[rows, cols]`.
pub fn dequantize(planes: &Planes, layout: Layout) -> Vec<f32> {
    let Layout {
        format,
        rows,
        cols,
        group,
    } = layout;
    let rb = format.row_bytes(cols);
    let gpr = cols / group;
    let mut out = vec![0f32; rows * cols];
    out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
        let codes = &planes.codes[r * rb..(r + 1) * rb];
        let scales = &planes.scales[r * gpr..(r + 1) * gpr];
        match format {
            QuantFormat::Q8Bf16 => dequantize_q8_row(bytemuck::cast_slice(codes), scales, group, o),
            _ => dequantize_q4_row(codes, scales, group, o),
        }
    });
    out
}

/// Largest |scale| of the planes (for reports and tests).
pub fn max_scale(planes: &Planes) -> f32 {
    planes
        .scales
        .iter()
        .map(|&s| bf16_to_f32(s).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_search_never_worse_than_rtn() {
        let (rows, cols, group) = (4, 128, 32);
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 13 % 31) as f32 - 15.0) / 40.0)
            .collect();
        w[5] = 3.0; // an outlier that a clipped range serves better
        let imp: Vec<f32> = (0..cols).map(|c| 1.0 + (c % 3) as f32).collect();
        let layout = Layout {
            format: QuantFormat::Q4Bf16,
            rows,
            cols,
            group,
        };
        let err = |p: &Planes| -> f32 {
            let back = dequantize(p, layout);
            w.iter()
                .zip(&back)
                .enumerate()
                .map(|(i, (a, b))| (a - b).powi(2) * imp[i % cols])
                .sum()
        };
        let rtn = quantize(&w, layout, None);
        let clipped = quantize(&w, layout, Some(&imp));
        assert!(err(&clipped) <= err(&rtn) + 1e-6);
        assert!(max_scale(&rtn) > 0.0);
    }
}
