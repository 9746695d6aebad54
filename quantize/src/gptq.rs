//! GPTQ (Frantar et al. 2022): rounds a weight matrix column by column and spreads each
//! column's rounding error over the columns not yet rounded, weighted by the inverse Hessian
//! `H = 2 XᵀX` of the layer's calibration inputs, so that the layer's *output* error
//! `|X (W - Q)ᵀ|²` is small rather than each weight's.
//!
//! - Damping: `H += damp * mean(diag H) * I` (1% by default); a channel never active
//!   (`H[i, i] = 0`) gets `H[i, i] = 1` and no coupling.
//! - Act-order with static groups: columns are visited in decreasing `H[i, i]` (the most
//!   active inputs first, while there is the most freedom left to compensate), but every
//!   group's bf16 scale is fixed beforehand in the original column order (`grouped`: RTN or
//!   the clip search). The codes are put back in the original order, so the stored layout is
//!   the runtime's: groups of `G` along the input dimension, one scale each.
//! - Lazy batches: the error of a block of [`BLOCK`] columns is applied inside the block
//!   column by column, and to the rest of the matrix once per block, as one matrix product
//!   with the upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = UᵀU`).
//!
//! Rows are independent given `U`, so they are split over all cores (rayon); the factor is
//! computed once per layer input and shared by the matrices that read it (q/k/v, gate/up).
//! Array math uses `ndarray`; the factorizations `faer` (pure Rust, f64).

use ava_core::quant::{bf16_to_f32, QuantFormat, Q4_ZERO};
use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::grouped::{Layout, Planes};

/// Default damping, as a fraction of the mean of the Hessian's diagonal.
pub const DEFAULT_DAMP: f64 = 0.01;
/// Columns per lazy batch.
pub const BLOCK: usize = 128;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = 32;
/// Times the damping is multiplied by 10 when the Cholesky factorization fails.
const DAMP_RETRIES: usize = 4;
/// Largest q4 code magnitude above zero (codes are -8 ..= 7).
const Q4_POS: i32 = 7;
/// Largest q8 code magnitude.
const Q8_MAX: i32 = 127;

/// GPTQ settings.
#[derive(Clone, Copy, Debug)]
pub struct GptqOptions {
    /// Damping fraction of the mean diagonal.
    pub damp: f64,
    /// Visit columns in decreasing Hessian diagonal (act-order).
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp: DEFAULT_DAMP,
            act_order: true,
        }
    }
}

/// One layer input's Hessian, ready for GPTQ: the column order and `U` (in that order).
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `perm[k]`: the original column visited k-th.
    pub perm: Vec<usize>,
    /// Upper Cholesky factor of the damped `H⁻¹`, rows and columns permuted, `[cols, cols]`.
    pub u: Array2<f32>,
    /// The damping actually used (after retries).
    pub damp: f64,
}

impl Prepared {
    /// Input features.
    pub fn cols(&self) -> usize {
        self.perm.len()
    }
}

/// Prepares `h` (`[cols, cols]`, symmetric, e.g. `XᵀX`) for inputs divided by `col_scale`
/// (AWQ: the weight's columns are multiplied by it, so `H' = S⁻¹ H S⁻¹`).
pub fn prepare(
    h: ArrayView2<'_, f32>,
    col_scale: Option<&[f32]>,
    opts: &GptqOptions,
) -> Result<Prepared> {
    let n = h.nrows();
    if h.ncols() != n || col_scale.is_some_and(|s| s.len() != n) {
        return Err(Error::Quantize(format!(
            "GPTQ: Hessian {:?} does not match {} scales",
            h.shape(),
            col_scale.map_or(n, <[f32]>::len)
        )));
    }
    let inv = |i: usize| col_scale.map_or(1.0, |s| 1.0 / f64::from(s[i]));
    let diag: Vec<f64> = (0..n)
        .map(|i| f64::from(h[[i, i]]) * inv(i) * inv(i))
        .collect();
    let mut perm: Vec<usize> = (0..n).collect();
    if opts.act_order {
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]));
    }
    let mean = diag.iter().sum::<f64>() / n.max(1) as f64;
    let mut damp = opts.damp;
    for _ in 0..=DAMP_RETRIES {
        let lambda = (damp * mean).max(f64::MIN_POSITIVE);
        let hp = Mat::from_fn(n, n, |a, b| {
            let (i, j) = (perm[a], perm[b]);
            if i == j {
                return if diag[i] > 0.0 { diag[i] + lambda } else { 1.0 };
            }
            if diag[i] <= 0.0 || diag[j] <= 0.0 {
                return 0.0;
            }
            f64::from(h[[i, j]]) * inv(i) * inv(j)
        });
        if let Some(u) = inverse_upper_factor(&hp) {
            return Ok(Prepared { perm, u, damp });
        }
        damp *= 10.0;
    }
    Err(Error::Quantize(format!(
        "GPTQ: the Hessian ({n} x {n}) is not positive definite even with damping {damp}"
    )))
}

/// `U` upper with `Uᵀ U = H⁻¹`, or `None` when `H` is not positive definite.
fn inverse_upper_factor(h: &Mat<f64>) -> Option<Array2<f32>> {
    let hinv = h.llt(Side::Lower).ok()?.inverse();
    let l = hinv.llt(Side::Lower).ok()?;
    let l = l.L();
    let n = h.nrows();
    let u = Array2::from_shape_fn((n, n), |(i, j)| if j >= i { l[(j, i)] as f32 } else { 0.0 });
    u.iter().all(|v| v.is_finite()).then_some(u)
}

/// Rounds `w` (`[rows, cols]`, original column order) with GPTQ onto the grid of the given
/// group scales (`scales`: bf16 bits, `[rows, cols / group]`, fixed beforehand); returns the
/// planes in the runtime's layout.
pub fn quantize(w: &[f32], scales: &[u16], layout: Layout, prep: &Prepared) -> Result<Planes> {
    let Layout {
        format,
        rows,
        cols,
        group,
    } = layout;
    let gpr = cols / group.max(1);
    if prep.cols() != cols || w.len() != rows * cols || scales.len() != rows * gpr {
        return Err(Error::Quantize(format!(
            "GPTQ: a [{rows}, {cols}] weight with {} scales does not match a Hessian of {} columns",
            scales.len(),
            prep.cols()
        )));
    }
    let rb = format.row_bytes(cols);
    let mut planes = Planes {
        codes: vec![0; rows * rb],
        scales: scales.to_vec(),
    };
    let task_rows = ROWS_PER_TASK;
    planes
        .codes
        .par_chunks_mut(task_rows * rb)
        .zip(w.par_chunks(task_rows * cols))
        .zip(scales.par_chunks(task_rows * gpr))
        .for_each(|((out, w), sc)| {
            let n = w.len() / cols;
            let codes = round_rows(w, sc, (n, cols, group), format, prep);
            pack(&codes, (n, cols, group), format, out);
        });
    Ok(planes)
}

/// GPTQ on `n` rows; returns the signed codes in the original column order, `[n, cols]`.
fn round_rows(
    w: &[f32],
    scales: &[u16],
    (n, cols, group): (usize, usize, usize),
    format: QuantFormat,
    prep: &Prepared,
) -> Vec<i8> {
    let gpr = cols / group;
    let perm = &prep.perm;
    // Working copy in visiting order, plus each visited column's scale per row (as 1/d and d).
    let mut wp = Array2::from_shape_fn((n, cols), |(r, k)| w[r * cols + perm[k]]);
    let scale = Array2::from_shape_fn((n, cols), |(r, k)| {
        bf16_to_f32(scales[r * gpr + perm[k] / group])
    });
    let (lo, hi) = code_range(format);
    let mut codes = vec![0i8; n * cols];
    let mut err = Array2::<f32>::zeros((n, BLOCK));
    for i1 in (0..cols).step_by(BLOCK) {
        let i2 = (i1 + BLOCK).min(cols);
        for i in i1..i2 {
            let d = prep.u[[i, i]];
            let u_row = prep.u.slice(s![i, i + 1..i2]);
            for r in 0..n {
                let x = wp[[r, i]];
                let sc = scale[[r, i]];
                let inv = if sc == 0.0 { 0.0 } else { 1.0 / sc };
                let c = round_half_away(x * inv).clamp(lo, hi);
                codes[r * cols + perm[i]] = c as i8;
                let e = (x - c as f32 * sc) / d;
                err[[r, i - i1]] = e;
                let mut tail = wp.slice_mut(s![r, i + 1..i2]);
                tail.zip_mut_with(&u_row, |t, &u| *t -= e * u);
            }
        }
        if i2 < cols {
            let e = err.slice(s![.., ..i2 - i1]);
            let u = prep.u.slice(s![i1..i2, i2..]);
            let mut rest: ArrayViewMut2<'_, f32> = wp.slice_mut(s![.., i2..]);
            ndarray::linalg::general_mat_mul(-1.0, &e, &u, 1.0, &mut rest);
        }
    }
    codes
}

/// The signed code range of a format.
fn code_range(format: QuantFormat) -> (i32, i32) {
    match format {
        QuantFormat::Q8Bf16 => (-Q8_MAX, Q8_MAX),
        _ => (-Q4_ZERO, Q4_POS),
    }
}

/// `f32::round` (half away from zero) as an integer, as `ava_core::quant` rounds.
#[inline]
fn round_half_away(v: f32) -> i32 {
    (v + 0.5f32.copysign(v)) as i32
}

/// Packs signed codes (`[n, cols]`) into the format's code plane rows.
fn pack(
    codes: &[i8],
    (n, cols, group): (usize, usize, usize),
    format: QuantFormat,
    out: &mut [u8],
) {
    let rb = format.row_bytes(cols);
    for r in 0..n {
        let src = &codes[r * cols..(r + 1) * cols];
        let dst = &mut out[r * rb..(r + 1) * rb];
        match format {
            QuantFormat::Q8Bf16 => dst
                .iter_mut()
                .zip(src)
                .for_each(|(d, &c)| *d = c.to_ne_bytes()[0]),
            _ => {
                let half = group / 2;
                for (g, bytes) in dst.chunks_mut(half).enumerate() {
                    let x = &src[g * group..(g + 1) * group];
                    for (j, b) in bytes.iter_mut().enumerate() {
                        let lo = (i32::from(x[j]) + Q4_ZERO) as u8;
                        let hi = (i32::from(x[j + half]) + Q4_ZERO) as u8;
                        *b = lo | (hi << 4);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouped;
    use crate::test_util::noise;

    /// `X` with a few outlier channels, and correlated channels (as real activations are).
    fn activations(n: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, cols), |(t, c)| {
            let shared = noise(t * 7 + 3);
            let base = noise(t * cols + c + 1_000_000) + 0.7 * shared;
            if c % 37 == 5 {
                base * 20.0
            } else {
                base
            }
        })
    }

    fn output_error(x: &Array2<f32>, w: &[f32], q: &[f32], rows: usize, cols: usize) -> f64 {
        let d = Array2::from_shape_fn((rows, cols), |(r, c)| w[r * cols + c] - q[r * cols + c]);
        x.dot(&d.t()).iter().map(|v| f64::from(*v).powi(2)).sum()
    }

    fn run(format: QuantFormat, act_order: bool) -> (f64, f64) {
        let (rows, cols, group, n) = (48, 256, 32, 512);
        let x = activations(n, cols);
        let w: Vec<f32> = (0..rows * cols).map(|i| noise(i) * 0.05).collect();
        let layout = Layout {
            format,
            rows,
            cols,
            group,
        };
        let h = x.t().dot(&x);
        let rtn = grouped::quantize(&w, layout, None);
        let opts = GptqOptions {
            act_order,
            ..GptqOptions::default()
        };
        let prep = prepare(h.view(), None, &opts).unwrap();
        let gptq = quantize(&w, &rtn.scales, layout, &prep).unwrap();
        let (q_rtn, q_gptq) = (
            grouped::dequantize(&rtn, layout),
            grouped::dequantize(&gptq, layout),
        );
        // The codes are back in the original column order: the weights themselves stay close
        // (a permuted layout would put every value in the wrong column).
        let frob = |q: &[f32]| w.iter().zip(q).map(|(a, b)| (a - b).powi(2)).sum::<f32>();
        let norm: f32 = w.iter().map(|v| v * v).sum();
        let (f_rtn, f_gptq) = (frob(&q_rtn) / norm, frob(&q_gptq) / norm);
        assert!(
            f_gptq < 0.15,
            "{format:?} {act_order}: {f_gptq} (RTN {f_rtn})"
        );
        let e_rtn = output_error(&x, &w, &q_rtn, rows, cols);
        let e_gptq = output_error(&x, &w, &q_gptq, rows, cols);
        (e_rtn, e_gptq)
    }

    #[test]
    fn gptq_lowers_output_error_against_rtn_with_outlier_channels() {
        for format in [QuantFormat::Q4Bf16, QuantFormat::Q8Bf16] {
            for act_order in [false, true] {
                let (rtn, gptq) = run(format, act_order);
                assert!(
                    gptq < 0.7 * rtn,
                    "{format:?} act_order {act_order}: GPTQ {gptq} vs RTN {rtn}"
                );
            }
        }
    }

    #[test]
    fn a_diagonal_hessian_gives_round_to_nearest() {
        let (rows, cols, group) = (4, 64, 32);
        let w: Vec<f32> = (0..rows * cols).map(noise).collect();
        let layout = Layout {
            format: QuantFormat::Q4Bf16,
            rows,
            cols,
            group,
        };
        let rtn = grouped::quantize(&w, layout, None);
        let prep = prepare(Array2::eye(cols).view(), None, &GptqOptions::default()).unwrap();
        let gptq = quantize(&w, &rtn.scales, layout, &prep).unwrap();
        assert_eq!(gptq.codes, rtn.codes);
        assert_eq!(gptq.scales, rtn.scales);
    }

    #[test]
    fn act_order_visits_active_channels_first_and_rejects_bad_shapes() {
        let mut h = Array2::<f32>::eye(4);
        h[[2, 2]] = 9.0;
        h[[1, 1]] = 0.0;
        let prep = prepare(
            h.view(),
            Some(&[1.0, 1.0, 1.0, 0.5]),
            &GptqOptions::default(),
        )
        .unwrap();
        assert_eq!(prep.perm[..2], [2, 3]);
        assert!(prep.u.iter().all(|v| v.is_finite()));
        let bad = Array2::<f32>::zeros((3, 4));
        assert!(prepare(bad.view(), None, &GptqOptions::default()).is_err());
    }
}
