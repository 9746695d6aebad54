//! Activations quantized to int8 per group, the input side of the q4bf16 x int8 matmul
//! (`docs/formats/q4bf16.md`, "Activations at run time").
//!
//! For each token `t` and group `g` of `G` consecutive columns: `amax` is the largest `|x|`
//! of the group; if it is 0 every code is 0 and `d = 0`, else `d = amax / 127` and
//! `q = round(x * (127 / amax))` (half away from zero, as `f32::round`), clamped to
//! `[-127, 127]`. `sum` is the sum of the group's codes. Both backends use this code, so
//! they see the same int8 activations.

use rayon::prelude::*;

/// Largest code magnitude.
const Q_MAX: f32 = 127.0;

/// The largest f32 below 0.5: `trunc(v + copysign(HALF_DOWN, v)) == v.round()` for every
/// finite `v` (the lowering LLVM itself uses for `round`), and unlike `f32::round` it
/// vectorises on every target (checked exhaustively over `[-128, 128]`).
const HALF_DOWN: f32 = 0.499_999_97;

/// Elements below which a quantization stays on the calling thread.
const PAR_ELEMENTS: usize = 1 << 16;

/// Lanes of the max and sum accumulators (one AVX2 register of f32 / i32).
const LANES: usize = 8;

/// Activations quantized to int8 per group (the q4bf16 x int8 path).
///
/// The buffers are kept between calls to [`QuantActs::quantize`], so one value can be reused
/// for every matmul input.
#[derive(Clone, Debug, Default)]
pub struct QuantActs {
    codes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    n: usize,
    cols: usize,
    group: usize,
}

impl QuantActs {
    /// Empty; the buffers grow on the first [`QuantActs::quantize`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes `x` (`[n, cols]`, row-major) in groups of `group` columns.
    ///
    /// # Panics
    /// If `x.len() != n * cols`, `group == 0` or `cols % group != 0` (caller bugs: the shapes
    /// come from a checked model, never from input data).
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize, group: usize) {
        assert!(
            group > 0 && cols % group == 0 && x.len() == n * cols,
            "QuantActs::quantize: x has {} values for [{n}, {cols}] in groups of {group}",
            x.len()
        );
        let groups = cols / group;
        self.n = n;
        self.cols = cols;
        self.group = group;
        self.codes.resize(n * cols, 0);
        self.scales.resize(n * groups, 0.0);
        self.sums.resize(n * groups, 0);
        if n == 0 || cols == 0 {
            return;
        }
        if n > 1 && n * cols >= PAR_ELEMENTS {
            let min_len = PAR_ELEMENTS.div_ceil(cols).max(1);
            x.par_chunks_exact(cols)
                .zip(self.codes.par_chunks_exact_mut(cols))
                .zip(self.scales.par_chunks_exact_mut(groups))
                .zip(self.sums.par_chunks_exact_mut(groups))
                .with_min_len(min_len)
                .for_each(|(((x, q), d), s)| quantize_row(x, group, q, d, s));
        } else {
            for (((x, q), d), s) in x
                .chunks_exact(cols)
                .zip(self.codes.chunks_exact_mut(cols))
                .zip(self.scales.chunks_exact_mut(groups))
                .zip(self.sums.chunks_exact_mut(groups))
            {
                quantize_row(x, group, q, d, s);
            }
        }
    }

    /// The codes, `[n, cols]`.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The scales `d`, `[n, cols / group]`: a code stands for `code * d`.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The sum of each group's codes, `[n, cols / group]`.
    pub fn sums(&self) -> &[i32] {
        &self.sums
    }

    /// Tokens (rows of activations).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns per token.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Columns per group.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Groups per token (`cols / group`; 0 before the first quantization).
    pub fn groups(&self) -> usize {
        self.cols.checked_div(self.group).unwrap_or(0)
    }
}

/// One token: picks the widest code path the CPU has (the results are the same on all).
fn quantize_row(x: &[f32], group: usize, q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature this function is compiled for was just detected.
            return unsafe { quantize_row_avx2(x, group, q, d, s) };
        }
    }
    quantize_row_portable(x, group, q, d, s)
}

/// [`quantize_row_portable`] compiled for AVX2 (LLVM vectorises it 8 lanes wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(x: &[f32], group: usize, q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    quantize_row_portable(x, group, q, d, s)
}

/// The group sizes of q4bf16 get loops of known length (unrolled, no remainders).
#[inline(always)]
fn quantize_row_portable(x: &[f32], group: usize, q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    match group {
        32 => quantize_groups::<32>(x, q, d, s),
        64 => quantize_groups::<64>(x, q, d, s),
        128 => quantize_groups::<128>(x, q, d, s),
        _ => {
            for (((xg, qg), d), s) in x
                .chunks_exact(group)
                .zip(q.chunks_exact_mut(group))
                .zip(d.iter_mut())
                .zip(s.iter_mut())
            {
                (*d, *s) = quantize_group(xg, qg);
            }
        }
    }
}

#[inline(always)]
fn quantize_groups<const G: usize>(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [i32]) {
    for (((xg, qg), d), s) in x
        .chunks_exact(G)
        .zip(q.chunks_exact_mut(G))
        .zip(d.iter_mut())
        .zip(s.iter_mut())
    {
        let (Ok(xg), Ok(qg)) = (<&[f32; G]>::try_from(xg), <&mut [i8; G]>::try_from(qg)) else {
            unreachable!("chunks_exact gives chunks of G")
        };
        (*d, *s) = quantize_group(xg, qg);
    }
}

/// Quantizes one group into `q` (same length); returns its scale `d` and code sum.
#[inline(always)]
fn quantize_group(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let mut m = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let a = c[l].abs();
            m[l] = if a > m[l] { a } else { m[l] };
        }
    }
    let amax = m
        .iter()
        .chain(rest.iter())
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    if amax == 0.0 {
        q.fill(0);
        return (0.0, 0);
    }
    let inv = Q_MAX / amax;
    let mut sum = [0i32; LANES];
    let mut qc = q.chunks_exact_mut(LANES);
    for (c, o) in x.chunks_exact(LANES).zip(&mut qc) {
        for l in 0..LANES {
            let v = code(c[l] * inv);
            o[l] = v as i8;
            sum[l] += v;
        }
    }
    let mut total: i32 = sum.iter().sum();
    for (&v, o) in rest.iter().zip(qc.into_remainder()) {
        let v = code(v * inv);
        *o = v as i8;
        total += v;
    }
    (amax / Q_MAX, total)
}

/// `round(v)` (half away from zero) clamped to `[-127, 127]`; NaN gives 0 (as `f32::round(v)
/// as i8` would).
#[inline(always)]
fn code(v: f32) -> i32 {
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-Q_MAX, Q_MAX)
    };
    // SAFETY: `v` is finite with `|v| <= 127`, so the sum is within (-128, 128) and fits an
    // i32. (The checked `as i32` would keep LLVM from vectorising the conversion.)
    unsafe { (v + HALF_DOWN.copysign(v)).to_int_unchecked::<i32>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract, written as plainly as possible.
    fn reference(x: &[f32], group: usize) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
        let (mut q, mut d, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for g in x.chunks(group) {
            let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                q.extend(std::iter::repeat_n(0i8, g.len()));
                d.push(0.0);
                s.push(0);
                continue;
            }
            let codes: Vec<i8> = g
                .iter()
                .map(|v| (v * (127.0 / amax)).round().clamp(-127.0, 127.0) as i8)
                .collect();
            s.push(codes.iter().map(|&c| i32::from(c)).sum());
            d.push(amax / 127.0);
            q.extend(codes);
        }
        (q, d, s)
    }

    fn check(x: &[f32], n: usize, cols: usize, group: usize) -> QuantActs {
        let mut a = QuantActs::new();
        a.quantize(x, n, cols, group);
        let (q, d, s) = reference(x, group);
        assert_eq!(a.codes(), &q[..]);
        assert_eq!(a.scales(), &d[..]);
        assert_eq!(a.sums(), &s[..]);
        assert_eq!((a.n(), a.cols(), a.group()), (n, cols, group));
        assert_eq!(a.groups(), cols / group);
        a
    }

    #[test]
    fn rounding_cases() {
        // amax = 127: codes are the values themselves, ties go away from zero.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 1.5;
        x[4] = -2.5;
        x[5] = 0.499_999_97;
        x[6] = -0.499_999_97;
        x[7] = 126.5;
        x[8] = -126.5;
        x[9] = -127.0;
        x[10] = 2.5000002;
        let a = check(&x, 1, 32, 32);
        assert_eq!(
            &a.codes()[..11],
            &[127, 1, -1, 2, -3, 0, 0, 127, -127, -127, 3]
        );
        assert_eq!(a.scales(), &[1.0]);
        assert_eq!(a.sums(), &[127 + 1 - 1 + 2 - 3 + 127 - 127 - 127 + 3]);
    }

    #[test]
    fn zero_and_negative_groups() {
        // Group 0 all zero, group 1 all negative (the extreme is negative), group 2 one value.
        let mut x = vec![0f32; 96];
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = -(i as f32) / 7.0 - 0.01;
        }
        x[70] = 1e-30;
        let a = check(&x, 1, 96, 32);
        assert!(a.codes()[..32].iter().all(|&c| c == 0));
        assert_eq!(a.scales()[0], 0.0);
        assert_eq!(a.sums()[0], 0);
        assert_eq!(a.codes()[63], -127);
        assert!(a.codes()[32..64].iter().all(|&c| c <= 0));
        assert_eq!(a.codes()[70], 127);
        assert_eq!(a.sums()[2], 127);
    }

    #[test]
    fn clamps_and_odd_values() {
        // Huge and tiny magnitudes, infinities; a NaN group is not specified beyond "no panic".
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 1e30).collect();
        x[5] = f32::MAX;
        x[6] = -f32::MAX;
        for v in &mut x[32..] {
            *v *= 1e-70;
        }
        let a = check(&x, 1, 64, 32);
        assert_eq!((a.codes()[5], a.codes()[6]), (127, -127));
        let mut x = vec![1f32; 32];
        x[3] = f32::INFINITY;
        let mut a = QuantActs::new();
        a.quantize(&x, 1, 32, 32);
        x[3] = f32::NAN;
        a.quantize(&x, 1, 32, 32);
    }

    #[test]
    fn random_rows_match_reference_and_reuse_buffers() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
        };
        let mut a = QuantActs::new();
        for (n, cols, group) in [(3, 256, 32), (1, 640, 128), (130, 1024, 64), (2, 40, 20)] {
            let mut x: Vec<f32> = (0..n * cols).map(|_| next()).collect();
            // Exact ties after scaling: amax = 127 * 2^-3.
            x[0] = 15.875;
            x[1] = 0.0625;
            x[2] = -0.1875;
            let b = check(&x, n, cols, group);
            a.quantize(&x, n, cols, group);
            assert_eq!(a.codes(), b.codes());
            assert_eq!(a.scales(), b.scales());
            assert_eq!(a.sums(), b.sums());
        }
        a.quantize(&[], 0, 64, 32);
        assert!(a.codes().is_empty() && a.scales().is_empty());
    }
}
