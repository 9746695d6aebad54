//! [`QuantWeights::matmul_q8`]: the q4bf16 x int8 product (activations quantized per group by
//! [`QuantActs`]): integer dots per group, scaled and summed in f32, with fast paths per
//! instruction set (AVX2, AVX512-VNNI, NEON, NEON dotprod) that give the scalar reference's
//! results bit for bit.

use std::cell::Cell;

use ava_core::quant::{bf16_to_f32, group_fits, QuantFormat, Q4_ZERO};
use rayon::prelude::*;

use super::{QuantWeights, MAX_GROUP};
use crate::native::act::QuantActs;
use crate::native::matrix::ROWS_PER_TASK;

/// Tokens per tile of the prefill kernels, and rows per tile of the decode kernels.
const TILE: usize = 4;

/// Multiply-adds below which a parallel task is not worth its overhead.
const TASK_MACS: usize = 1 << 16;

/// Multiply-adds up to which a product stays on the calling thread (waking the pool costs
/// more than the work).
const INLINE_MACS: usize = 1 << 19;

/// Largest scratch buffer (f32 values) kept for the next product; a larger one (a q4bf16 head
/// over many positions) is freed.
const SCRATCH_KEEP: usize = 1 << 22;

impl QuantWeights {
    /// The q4bf16 x int8 product: `out[t, r] = sum_g S[r, g] * d[t, g] * dot(r, t, g)` for
    /// every token `t` of `a` and row `r < rows`, with
    /// `dot = sum_{k in g} nibble(r, k) * q[t, k] - 8 * sum[t, g]` exact in i32 and the
    /// groups summed in increasing order in f32, each term `(S * d) * dot`
    /// (`docs/formats/q4bf16.md`, "Activations at run time"). `out` is `[a.n(), rows]`.
    /// Rows are split across threads; every instruction set gives the same bits.
    ///
    /// # Panics
    /// If the weights are not q4bf16, `a` was quantized with another group size, or the
    /// lengths do not fit (`a.cols()` columns, `rows` rows, `out.len() == a.n() * rows`): caller
    /// bugs, the shapes come from a checked model.
    pub fn matmul_q8(&self, a: &QuantActs, rows: usize, out: &mut [f32]) {
        let (n, cols, group) = (a.n(), a.cols(), self.group);
        assert!(
            self.format == QuantFormat::Q4Bf16
                && a.group() == group
                && group_fits(cols, group)
                && group <= MAX_GROUP
                && self.codes.len() == rows * cols / 2
                && self.scales.len() == rows * (cols / group)
                && out.len() == n * rows,
            "matmul_q8: {:?} [{rows}, {cols}] in groups of {group} against [{n}, {cols}] in \
             groups of {} into {} values",
            self.format,
            a.group(),
            out.len()
        );
        if n == 0 || rows == 0 {
            return;
        }
        let isa = Isa::detect();
        let acts = Acts::of(a);
        // Rows per task: at least ROWS_PER_TASK, and enough work to be worth a task.
        let per_task = (TASK_MACS.div_ceil(n * cols).max(ROWS_PER_TASK)).next_multiple_of(TILE);
        let inline = n * rows * cols <= INLINE_MACS;
        let rows_of = |task: usize, len: usize| -> Vec<WRow<'_>> {
            (task * per_task..task * per_task + len)
                .map(|r| self.q4_row(r, cols))
                .collect()
        };
        if n == 1 {
            let q = acts.token(0);
            let task = |(task, o): (usize, &mut [f32])| {
                rows_token(isa, group, &rows_of(task, o.len()), &q, o);
            };
            if inline {
                out.chunks_mut(per_task).enumerate().for_each(task);
            } else {
                out.par_chunks_mut(per_task).enumerate().for_each(task);
            }
            return;
        }
        // Many tokens: a task computes `len` rows for every token into its block of the scratch
        // buffer, token-major (`[t][i]`), so that the copy into `out` moves runs of `len`.
        thread_local! {
            static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
        }
        let mut scratch = SCRATCH.take();
        scratch.resize(n * rows, 0.0);
        let task = |(task, block): (usize, &mut [f32])| {
            rows_tokens(isa, group, &rows_of(task, block.len() / n), &acts, block);
        };
        // Token `t`'s outputs: run `t` of every task's block.
        let copy = |scratch: &[f32], t: usize, out: &mut [f32]| {
            for (o, block) in out.chunks_mut(per_task).zip(scratch.chunks(per_task * n)) {
                let len = o.len();
                o.copy_from_slice(&block[t * len..(t + 1) * len]);
            }
        };
        if inline {
            scratch.chunks_mut(per_task * n).enumerate().for_each(task);
            for (t, o) in out.chunks_mut(rows).enumerate() {
                copy(&scratch, t, o);
            }
        } else {
            scratch
                .par_chunks_mut(per_task * n)
                .enumerate()
                .for_each(task);
            out.par_chunks_mut(rows)
                .enumerate()
                .for_each(|(t, o)| copy(&scratch, t, o));
        }
        if scratch.capacity() <= SCRATCH_KEEP {
            SCRATCH.set(scratch);
        }
    }

    fn q4_row(&self, r: usize, cols: usize) -> WRow<'_> {
        let (codes, scales) = self.row_parts(r, cols);
        WRow { codes, scales }
    }
}

/// One q4bf16 weight row: `group / 2` code bytes and one bf16 scale per group.
#[derive(Clone, Copy)]
struct WRow<'a> {
    codes: &'a [u8],
    scales: &'a [u16],
}

/// One token of quantized activations: `group` codes, a scale and a code sum per group.
#[derive(Clone, Copy)]
struct QRow<'a> {
    codes: &'a [i8],
    d: &'a [f32],
    sums: &'a [i32],
}

/// Every token of quantized activations (the buffers of a [`QuantActs`]); for the x86
/// kernels also the scales and sums of each tile of `TILE` tokens side by side
/// (`[tile][group][TILE]`, the last tile padded with its last token), loaded as one vector.
struct Acts<'a> {
    codes: &'a [i8],
    d: &'a [f32],
    sums: &'a [i32],
    n: usize,
    cols: usize,
    groups: usize,
    #[cfg(target_arch = "x86_64")]
    tile_d: Vec<[f32; TILE]>,
    #[cfg(target_arch = "x86_64")]
    tile_sums: Vec<[i32; TILE]>,
}

impl<'a> Acts<'a> {
    fn of(a: &'a QuantActs) -> Self {
        Acts {
            codes: a.codes(),
            d: a.scales(),
            sums: a.sums(),
            n: a.n(),
            cols: a.cols(),
            groups: a.groups(),
            #[cfg(target_arch = "x86_64")]
            tile_d: tiled(a.scales(), a.n(), a.groups()),
            #[cfg(target_arch = "x86_64")]
            tile_sums: tiled(a.sums(), a.n(), a.groups()),
        }
    }

    /// Token `t` (panics past the end).
    #[inline]
    fn token(&self, t: usize) -> QRow<'a> {
        let (cols, groups) = (self.cols, self.groups);
        QRow {
            codes: &self.codes[t * cols..(t + 1) * cols],
            d: &self.d[t * groups..(t + 1) * groups],
            sums: &self.sums[t * groups..(t + 1) * groups],
        }
    }
}

/// `v` (`[n, groups]`) as `[tile][group][TILE]`, the last tile padded with its last token.
#[cfg(target_arch = "x86_64")]
fn tiled<T: Copy>(v: &[T], n: usize, groups: usize) -> Vec<[T; TILE]> {
    let mut out = Vec::with_capacity(n.div_ceil(TILE) * groups);
    for t0 in (0..n).step_by(TILE) {
        for g in 0..groups {
            out.push(std::array::from_fn(|j| v[(t0 + j).min(n - 1) * groups + g]));
        }
    }
    out
}

/// The instruction set of the q4 x int8 kernels, picked at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// The reference (LLVM vectorises it for the baseline).
    Scalar,
    /// `vpmaddubsw` + `vpmaddwd`.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// `vpdpbusd` on 256-bit registers.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// `smull` + `sadalp`.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// `sdot`.
    #[cfg(target_arch = "aarch64")]
    DotProd,
}

impl Isa {
    fn detect() -> Isa {
        *Self::available().last().unwrap_or(&Isa::Scalar)
    }

    /// Every path this CPU can run, slowest first.
    fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                v.push(Isa::Avx2);
                if std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    v.push(Isa::Vnni);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            v.push(Isa::Neon);
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                v.push(Isa::DotProd);
            }
        }
        v
    }
}

/// Picks the kernel for `isa` and the group size (32, 64 or 128, checked by the caller).
macro_rules! dispatch {
    ($isa:expr, $group:expr, $kernel:ident, $generic:ident, ($($arg:expr),*)) => {
        match ($isa, $group) {
            // SAFETY (all arms): `Isa::available` detected the features; the kernels check
            // the lengths they read and write through raw pointers.
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, 32) => unsafe { x86::$kernel::<16>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, 64) => unsafe { x86::$kernel::<32>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Avx2, _) => unsafe { x86::$kernel::<64>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Vnni, 32) => unsafe { x86::vnni::$kernel::<16>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Vnni, 64) => unsafe { x86::vnni::$kernel::<32>($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            (Isa::Vnni, _) => unsafe { x86::vnni::$kernel::<64>($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            (Isa::Neon, g) => $generic(g / 2, $($arg),*, arm::group_dot_neon),
            #[cfg(target_arch = "aarch64")]
            (Isa::DotProd, g) => unsafe { arm::$kernel(g / 2, $($arg),*) },
            (_, g) => $generic(g / 2, $($arg),*, group_dot_scalar),
        }
    };
}

/// Rows `w` against every token of `a`: `out[t * w.len() + i]` for row `i`, token `t`.
fn rows_tokens(isa: Isa, group: usize, w: &[WRow<'_>], a: &Acts<'_>, out: &mut [f32]) {
    dispatch!(isa, group, rows_tokens, rows_tokens_with, (w, a, out))
}

/// Rows `w` against one token: `out[i]` for row `i`.
fn rows_token(isa: Isa, group: usize, w: &[WRow<'_>], q: &QRow<'_>, out: &mut [f32]) {
    dispatch!(isa, group, rows_token, rows_token_with, (w, q, out))
}

/// One group's integer dot without the zero point: `sum_j lo(w[j]) * q[j] + hi(w[j]) *
/// q[j + half]` for `half = w.len()` (the reference for the fast paths).
#[inline(always)]
fn group_dot_scalar(w: &[u8], q: &[i8]) -> i32 {
    let (lo, hi) = q.split_at(w.len());
    w.iter()
        .zip(lo)
        .zip(hi)
        .map(|((&b, &l), &h)| i32::from(b & 0x0F) * i32::from(l) + i32::from(b >> 4) * i32::from(h))
        .sum()
}

/// The term group `g` adds to an output: `(S * d) * (raw - 8 * sum)`.
#[inline(always)]
fn term(s: u16, d: f32, raw: i32, sum: i32) -> f32 {
    bf16_to_f32(s) * d * (raw - Q4_ZERO * sum) as f32
}

/// `out = sum_g term(...)` for one (row, token) pair, groups in increasing order.
#[inline(always)]
fn pair_with(half: usize, w: &WRow<'_>, q: &QRow<'_>, raw: impl Fn(&[u8], &[i8]) -> i32) -> f32 {
    let mut acc = 0f32;
    for (g, ((wg, qg), &s)) in w
        .codes
        .chunks_exact(half)
        .zip(q.codes.chunks_exact(2 * half))
        .zip(w.scales)
        .enumerate()
    {
        acc += term(s, q.d[g], raw(wg, qg), q.sums[g]);
    }
    acc
}

/// [`rows_tokens`] one pair at a time, over a group dot `raw`.
#[inline(always)]
fn rows_tokens_with(
    half: usize,
    w: &[WRow<'_>],
    a: &Acts<'_>,
    out: &mut [f32],
    raw: impl Fn(&[u8], &[i8]) -> i32 + Copy,
) {
    if w.is_empty() {
        return;
    }
    for (t, out) in out.chunks_exact_mut(w.len()).enumerate().take(a.n) {
        let q = a.token(t);
        for (o, w) in out.iter_mut().zip(w) {
            *o = pair_with(half, w, &q, raw);
        }
    }
}

/// [`rows_token`] one pair at a time, over a group dot `raw`.
#[inline(always)]
fn rows_token_with(
    half: usize,
    w: &[WRow<'_>],
    q: &QRow<'_>,
    out: &mut [f32],
    raw: impl Fn(&[u8], &[i8]) -> i32 + Copy,
) {
    for (o, w) in out.iter_mut().zip(w) {
        *o = pair_with(half, w, q, raw);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
mod arm;

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: deterministic test data without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// Random q4 weights: `kind` 0 random bytes, 1 all nibbles 15, 2 all nibbles 0, 3 mixed
    /// extremes; random bf16 scales of both signs.
    fn random_weights(
        rng: &mut Rng,
        rows: usize,
        cols: usize,
        group: usize,
        kind: u64,
    ) -> QuantWeights {
        let codes: Vec<u8> = (0..rows * cols / 2)
            .map(|_| match kind {
                1 => 0xFF,
                2 => 0x00,
                3 => [0x0F, 0xF0, 0xFF, 0x00][(rng.next() % 4) as usize],
                _ => rng.next() as u8,
            })
            .collect();
        let scales: Vec<u16> = (0..rows * cols / group)
            .map(|_| ava_core::quant::f32_to_bf16((rng.unit() - 0.5) * 0.1))
            .collect();
        QuantWeights {
            format: QuantFormat::Q4Bf16,
            group,
            codes: codes.into(),
            scales: scales.into(),
        }
    }

    /// Random activations, quantized; `kind` 1 makes every code +-127 (and -128 is not a code).
    fn random_acts(rng: &mut Rng, n: usize, cols: usize, group: usize, kind: u64) -> QuantActs {
        let x: Vec<f32> = (0..n * cols)
            .map(|_| match kind {
                1 => [-3.0, 3.0][(rng.next() % 2) as usize],
                2 => -3.0,
                _ => (rng.unit() - 0.5) * 6.0,
            })
            .collect();
        let mut a = QuantActs::new();
        a.quantize(&x, n, cols, group);
        a
    }

    /// The scalar reference of `matmul_q8`, one (row, token) pair at a time.
    fn reference_q8(w: &QuantWeights, a: &QuantActs, rows: usize) -> Vec<f32> {
        let mut out = vec![0f32; a.n() * rows];
        for t in 0..a.n() {
            for r in 0..rows {
                let (w, q) = (w.q4_row(r, a.cols()), Acts::of(a).token(t));
                out[t * rows + r] =
                    pair_with(w.codes.len() / w.scales.len(), &w, &q, group_dot_scalar);
            }
        }
        out
    }

    /// Activations whose codes are given integers: with a +-127 in every group, `d` is 1 and
    /// the codes come back unchanged.
    fn acts_of_codes(codes: &[i8], n: usize, cols: usize, group: usize) -> QuantActs {
        let mut x: Vec<f32> = codes.iter().map(|&c| f32::from(c)).collect();
        for g in x.chunks_mut(group) {
            g[group / 2 + 1] = if g[0] < 0.0 { -127.0 } else { 127.0 };
        }
        let mut a = QuantActs::new();
        a.quantize(&x, n, cols, group);
        assert!(a.scales().iter().all(|&d| d == 1.0));
        assert_eq!(
            a.codes(),
            &x.iter().map(|&v| v as i8).collect::<Vec<_>>()[..]
        );
        a
    }

    #[test]
    fn integer_dots_of_every_path_match_the_scalar_reference() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let one = ava_core::quant::f32_to_bf16(1.0);
        for isa in Isa::available() {
            for group in [32, 64, 128] {
                for kind in 0..4 {
                    let (groups, half) = (3, group / 2);
                    let cols = group * groups;
                    // Unit weight scales and unit activation scales: every output is the
                    // exact sum of the integer dots (far below 2^24).
                    let mut w = random_weights(&mut rng, TILE, cols, group, kind);
                    w.scales = vec![one; w.scales.len()].into();
                    let codes: Vec<i8> = (0..TILE * cols)
                        .map(|_| match kind {
                            1 => [-127, 127][(rng.next() % 2) as usize],
                            2 => -127,
                            3 => 127,
                            _ => (rng.next() % 255) as i8,
                        })
                        .map(|c: i8| c.max(-127))
                        .collect();
                    let a = acts_of_codes(&codes, TILE, cols, group);
                    let wr: [WRow<'_>; TILE] = std::array::from_fn(|r| w.q4_row(r, cols));
                    let acts = Acts::of(&a);
                    let qr: [QRow<'_>; TILE] = std::array::from_fn(|t| acts.token(t));
                    let want = |r: usize, t: usize| -> f32 {
                        let (w, q) = (&wr[r], &qr[t]);
                        (0..groups)
                            .map(|g| {
                                let raw = group_dot_scalar(
                                    &w.codes[g * half..(g + 1) * half],
                                    &q.codes[g * group..(g + 1) * group],
                                );
                                // The same dot from the definition: (nibble - 8) * code.
                                let signed: i32 = (0..group)
                                    .map(|k| {
                                        let b = w.codes[g * half + k % half];
                                        let nib = if k < half { b & 0x0F } else { b >> 4 };
                                        (i32::from(nib) - 8) * i32::from(q.codes[g * group + k])
                                    })
                                    .sum();
                                assert_eq!(raw - 8 * q.sums[g], signed);
                                signed
                            })
                            .sum::<i32>() as f32
                    };
                    let mut all = [0f32; TILE * TILE];
                    rows_tokens(isa, group, &wr, &acts, &mut all);
                    for (t, q) in qr.iter().enumerate() {
                        let mut one = [0f32; TILE];
                        rows_token(isa, group, &wr, q, &mut one);
                        for r in 0..TILE {
                            assert_eq!(
                                all[t * TILE + r],
                                want(r, t),
                                "{isa:?} G{group} kind {kind}"
                            );
                            assert_eq!(one[r], want(r, t), "{isa:?} G{group} kind {kind}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_path_gives_the_reference_bits() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for group in [32, 64, 128] {
            for kind in 0..4 {
                let (rows, cols) = (37, group * 5);
                let w = random_weights(&mut rng, rows, cols, group, kind);
                for n in [1, 2, 5, 9] {
                    let a = random_acts(&mut rng, n, cols, group, kind % 3);
                    let want = reference_q8(&w, &a, rows);
                    let acts = Acts::of(&a);
                    for (isa, block) in Isa::available()
                        .into_iter()
                        .zip([1, 2, 3, 5, 8, 37].iter().cycle())
                    {
                        // Blocks of `block` rows (the last one shorter), as the tasks see them.
                        let (mut one, mut all) =
                            (vec![f32::NAN; n * rows], vec![f32::NAN; n * rows]);
                        for r0 in (0..rows).step_by(*block) {
                            let wr: Vec<_> = (r0..rows.min(r0 + block))
                                .map(|r| w.q4_row(r, cols))
                                .collect();
                            let len = wr.len();
                            for t in 0..n {
                                rows_token(
                                    isa,
                                    group,
                                    &wr,
                                    &acts.token(t),
                                    &mut one[t * rows + r0..][..len],
                                );
                            }
                            let mut v = vec![f32::NAN; n * len];
                            rows_tokens(isa, group, &wr, &acts, &mut v);
                            for t in 0..n {
                                all[t * rows + r0..][..len].copy_from_slice(&v[t * len..][..len]);
                            }
                        }
                        assert_eq!(
                            bits(&one),
                            bits(&want),
                            "{isa:?} one token G{group} n{n} block {block}"
                        );
                        assert_eq!(
                            bits(&all),
                            bits(&want),
                            "{isa:?} all tokens G{group} n{n} block {block}"
                        );
                    }
                    let mut out = vec![0f32; n * rows];
                    w.matmul_q8(&a, rows, &mut out);
                    assert_eq!(bits(&out), bits(&want), "matmul_q8 G{group} n{n}");
                }
            }
        }
    }

    #[test]
    fn parallel_matmul_gives_the_reference_bits() {
        // Above INLINE_MACS: the tasks run on the pool, rows and tokens not multiples of the
        // tile or task sizes.
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        let (rows, cols, group) = (613, 1024, 128);
        let w = random_weights(&mut rng, rows, cols, group, 0);
        for n in [1, 3, 6] {
            assert!(n * rows * cols > INLINE_MACS);
            let a = random_acts(&mut rng, n, cols, group, 0);
            let mut out = vec![0f32; n * rows];
            w.matmul_q8(&a, rows, &mut out);
            assert_eq!(bits(&out), bits(&reference_q8(&w, &a, rows)), "n{n}");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn matmul_q8_matches_f64_of_the_dequantized_operands() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for group in [32, 64, 128] {
            let (rows, cols) = (19, group * 4);
            let w = random_weights(&mut rng, rows, cols, group, 0);
            let mut wf = vec![0f32; cols];
            for n in [1, 4, 7] {
                let a = random_acts(&mut rng, n, cols, group, 0);
                let mut out = vec![0f32; n * rows];
                w.matmul_q8(&a, rows, &mut out);
                for r in 0..rows {
                    w.row_into(r, cols, &mut wf);
                    for t in 0..n {
                        let (mut want, mut mag) = (0f64, 0f64);
                        let codes = &a.codes()[t * cols..(t + 1) * cols];
                        for (k, (&w, &q)) in wf.iter().zip(codes).enumerate() {
                            let x = f64::from(q)
                                * f64::from(a.scales()[t * (cols / group) + k / group]);
                            want += f64::from(w) * x;
                            mag += (f64::from(w) * x).abs();
                        }
                        let got = f64::from(out[t * rows + r]);
                        assert!(
                            (got - want).abs() <= 1e-6 * mag + 1e-12,
                            "G{group} t{t} r{r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_q8_of_zero_tokens_or_zero_activations() {
        let mut rng = Rng(7);
        let w = random_weights(&mut rng, 5, 64, 32, 0);
        let mut a = QuantActs::new();
        a.quantize(&[], 0, 64, 32);
        w.matmul_q8(&a, 5, &mut []);
        a.quantize(&[0.0; 128], 2, 64, 32);
        let mut out = vec![1f32; 10];
        w.matmul_q8(&a, 5, &mut out);
        assert!(out.iter().all(|&v| v == 0.0));
    }
}
