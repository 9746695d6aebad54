//! AWQ (activation-aware weight quantization, Lin et al. 2023): per input channel, scale the
//! weight columns by `s = mean|x|^alpha` before quantizing and divide the activations by `s`
//! (folded into the preceding RMSNorm or projection), with `alpha` searched per layer input to
//! minimise the output error `|X (W - Q(W s) / s)^T|²` on calibration rows.

use ava_core::quant::QuantFormat;
use ava_runtime::native::dot;
use rayon::prelude::*;

use crate::calib::SiteStats;
use crate::grouped::{dequantize, quantize, Layout};

/// Default grid of exponents searched: 0, 0.1, ..., 1.0.
pub const DEFAULT_GRID: usize = 11;
/// Smallest per-channel scale (keeps `1/s` finite for dead channels).
const MIN_SCALE: f32 = 1e-4;

/// The matrices that read one input (q/k/v, or gate/up), each `[rows, cols]` row-major.
pub struct Group<'a> {
    /// The weights.
    pub weights: Vec<(&'a [f32], usize)>,
    /// Input features.
    pub cols: usize,
}

/// The outcome of one search.
#[derive(Clone, Debug)]
pub struct Search {
    /// Per-channel scales (multiply weight columns, divide activations).
    pub scales: Vec<f32>,
    /// The exponent chosen.
    pub alpha: f32,
    /// Output error with `alpha = 0` (plain round-to-nearest).
    pub rtn_error: f64,
    /// Output error with the chosen scales.
    pub error: f64,
}

/// Searches `alpha` over `grid` points in [0, 1] for `group` quantized as `format`/`g`.
pub fn search(
    group: &Group<'_>,
    stats: &SiteStats,
    format: QuantFormat,
    g: usize,
    grid: usize,
) -> Search {
    if !ava_core::quant::group_fits(group.cols, g) {
        // Not quantized (the stage keeps it as bf16): nothing to scale.
        return Search {
            scales: vec![1.0; group.cols],
            alpha: 0.0,
            rtn_error: 0.0,
            error: 0.0,
        };
    }
    let mean_abs = stats.mean_abs();
    let mut best: Option<Search> = None;
    let mut rtn_error = 0.0;
    for step in 0..grid.max(1) {
        let alpha = if grid > 1 {
            step as f32 / (grid - 1) as f32
        } else {
            0.0
        };
        let scales = channel_scales(&mean_abs, alpha);
        let error = output_error(group, stats, &scales, format, g);
        if step == 0 {
            rtn_error = error;
        }
        if best.as_ref().is_none_or(|b| error < b.error) {
            best = Some(Search {
                scales,
                alpha,
                rtn_error,
                error,
            });
        }
    }
    let mut best = best.unwrap_or(Search {
        scales: vec![1.0; group.cols],
        alpha: 0.0,
        rtn_error,
        error: rtn_error,
    });
    best.rtn_error = rtn_error;
    best
}

/// `mean_abs^alpha`, normalised so that `sqrt(max * min) = 1` (as the reference does).
pub fn channel_scales(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
    let s: Vec<f32> = mean_abs
        .iter()
        .map(|a| a.max(MIN_SCALE).powf(alpha))
        .collect();
    let (lo, hi) = s
        .iter()
        .fold((f32::INFINITY, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt().max(f32::MIN_POSITIVE);
    s.into_iter().map(|v| (v / norm).max(MIN_SCALE)).collect()
}

/// `sum_t sum_r (x_t . (W_r - Q(W_r s)/s))²` over the kept calibration rows.
fn output_error(
    group: &Group<'_>,
    stats: &SiteStats,
    scales: &[f32],
    format: QuantFormat,
    g: usize,
) -> f64 {
    let cols = group.cols;
    let mut total = 0.0;
    for &(w, rows) in &group.weights {
        let scaled: Vec<f32> = w
            .par_chunks(cols)
            .flat_map_iter(|row| row.iter().zip(scales).map(|(v, s)| v * s))
            .collect();
        let layout = Layout {
            format,
            rows,
            cols,
            group: g,
        };
        let back = dequantize(&quantize(&scaled, layout, None), layout);
        total += w
            .par_chunks(cols)
            .zip(back.par_chunks(cols))
            .map_init(
                || vec![0f32; cols],
                |err, (row, q)| {
                    for (((e, a), b), s) in err.iter_mut().zip(row).zip(q).zip(scales) {
                        *e = a - b / s;
                    }
                    stats
                        .rows
                        .chunks_exact(cols)
                        .map(|x| f64::from(dot(x, err)).powi(2))
                        .sum::<f64>()
                },
            )
            .sum::<f64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_normalised() {
        let s = channel_scales(&[1.0, 4.0, 0.25], 1.0);
        assert!((s[1] * s[2] - 1.0).abs() < 1e-5);
        assert_eq!(channel_scales(&[3.0, 5.0], 0.0), vec![1.0, 1.0]);
    }
}
