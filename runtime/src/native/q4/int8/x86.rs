//! AVX2 and AVX512-VNNI kernels. Per group, the `G / 2` code bytes are split into their
//! low and high nibbles (`G / 32` vectors of 32 u8 in element order, "parts"), multiplied
//! with the matching 32 codes of each token, and the outputs' i32 vectors are reduced
//! together. The f32 part is the scalar `term` and sum, lane by lane, so every output has
//! the bits of the scalar reference.

use std::arch::x86_64::*;

use super::{bf16_to_f32, Acts, QRow, WRow, Q4_ZERO, TILE};

/// Whether every row has `groups` groups of `half` code bytes: the kernels read through
/// raw pointers within these lengths.
fn rows_fit(w: &[WRow<'_>], groups: usize, half: usize) -> bool {
    w.iter()
        .all(|w| w.scales.len() == groups && w.codes.len() == groups * half)
}

/// Whether a token has `groups` groups of `2 * half` codes.
fn token_fits(q: &QRow<'_>, groups: usize, half: usize) -> bool {
    q.codes.len() == groups * 2 * half && q.d.len() == groups && q.sums.len() == groups
}

/// Whether every token has `groups` groups of `2 * half` codes and the tiles are complete.
fn acts_fit(a: &Acts<'_>, groups: usize, half: usize) -> bool {
    a.groups == groups
        && a.cols == groups * 2 * half
        && a.codes.len() == a.n * a.cols
        && a.d.len() == a.n * groups
        && a.sums.len() == a.n * groups
        && a.tile_d.len() == a.n.div_ceil(TILE) * groups
        && a.tile_sums.len() == a.tile_d.len()
}

/// Part `p` (of `HALF / 16`) of the nibbles of one group (`HALF` bytes at `w`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn part<const HALF: usize>(w: *const u8, p: usize) -> __m256i {
    let m = _mm256_set1_epi8(0x0F);
    if HALF == 16 {
        let b = _mm_loadu_si128(w.cast());
        let m = _mm_set1_epi8(0x0F);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        return _mm256_set_m128i(hi, _mm_and_si128(b, m));
    }
    // HALF / 32 loads of 32 bytes: low nibbles first, then high nibbles.
    let loads = (HALF / 32).max(1);
    let b = _mm256_loadu_si256(w.add(32 * (p % loads)).cast());
    if p < loads {
        _mm256_and_si256(b, m)
    } else {
        _mm256_and_si256(_mm256_srli_epi16::<4>(b), m)
    }
}

/// Codes `32 p .. 32 p + 32` of one group of a token (at `q`).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codes(q: *const i8, p: usize) -> __m256i {
    _mm256_loadu_si256(q.add(32 * p).cast())
}

/// The lane sums of four vectors, in order.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce4(a: &[__m256i; TILE]) -> __m128i {
    let t = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t))
}

/// The lane sums of eight vectors, in order: `[a0 .. a3 | b0 .. b3]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn reduce8(a: &[__m256i; TILE], b: &[__m256i; TILE]) -> __m256i {
    let ka = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    let kb = _mm256_hadd_epi32(_mm256_hadd_epi32(b[0], b[1]), _mm256_hadd_epi32(b[2], b[3]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(ka, kb),
        _mm256_permute2x128_si256::<0x31>(ka, kb),
    )
}

/// `acc + (s * d) * (raw - 8 * sums)` lane by lane: the scalar `term` and sum.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate4(acc: __m128, raw: __m128i, sums: __m128i, s: __m128, d: __m128) -> __m128 {
    let dot = _mm_sub_epi32(raw, _mm_mullo_epi32(sums, _mm_set1_epi32(Q4_ZERO)));
    _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(s, d), _mm_cvtepi32_ps(dot)))
}

/// [`accumulate4`] on eight lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn accumulate8(acc: __m256, raw: __m256i, sums: __m256i, s: __m256, d: __m256) -> __m256 {
    let dot = _mm256_sub_epi32(raw, _mm256_mullo_epi32(sums, _mm256_set1_epi32(Q4_ZERO)));
    _mm256_add_ps(
        acc,
        _mm256_mul_ps(_mm256_mul_ps(s, d), _mm256_cvtepi32_ps(dot)),
    )
}

/// One step of a group dot for AVX2: u8 x i8 pair sums (`vpmaddubsw`, at most
/// `2 * 15 * 128 = 3840` in magnitude) added in i16; at most four steps per group, so the
/// i16 lanes stay within 15360 and nothing saturates.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn step(acc: __m256i, w: __m256i, q: __m256i) -> __m256i {
    _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, q))
}

/// The i16 sums of [`step`] widened to eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn finish(acc: __m256i) -> __m256i {
    _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
}

/// Generates the two kernels over one group-dot step (`$step`, `$finish`) and the target
/// features they need.
macro_rules! kernels {
    ($feat:literal, $step:ident, $finish:ident) => {
        /// Rows `w` against every token of `a`, two rows by four tokens at a time:
        /// `out[t * w.len() + i]` (`HALF = group / 2`).
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn rows_tokens<const HALF: usize>(
            w: &[WRow<'_>],
            a: &Acts<'_>,
            out: &mut [f32],
        ) {
            let (len, n, groups) = (w.len(), a.n, a.groups);
            assert!(rows_fit(w, groups, HALF) && acts_fit(a, groups, HALF) && out.len() == n * len);
            if len == 0 {
                return;
            }
            let parts = HALF / 16;
            for i in (0..len).step_by(2) {
                // An odd last row is paired with itself; the copy is dropped.
                let (w0, w1) = (&w[i], &w[(i + 1).min(len - 1)]);
                for t0 in (0..n).step_by(TILE) {
                    let tile = t0 / TILE;
                    let q: [*const i8; TILE] =
                        std::array::from_fn(|j| a.codes.as_ptr().add((t0 + j).min(n - 1) * a.cols));
                    let mut acc = _mm256_setzero_ps();
                    for g in 0..groups {
                        let (p0, p1) = (
                            w0.codes.as_ptr().add(g * HALF),
                            w1.codes.as_ptr().add(g * HALF),
                        );
                        let mut a0 = [_mm256_setzero_si256(); TILE];
                        let mut a1 = [_mm256_setzero_si256(); TILE];
                        for p in 0..parts {
                            let (x0, x1) = (part::<HALF>(p0, p), part::<HALF>(p1, p));
                            for j in 0..TILE {
                                let c = codes(q[j].add(g * 2 * HALF), p);
                                a0[j] = $step(a0[j], x0, c);
                                a1[j] = $step(a1[j], x1, c);
                            }
                        }
                        for j in 0..TILE {
                            a0[j] = $finish(a0[j]);
                            a1[j] = $finish(a1[j]);
                        }
                        let k = tile * groups + g;
                        let sums = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                            a.tile_sums[k].as_ptr().cast(),
                        ));
                        let d = _mm_loadu_ps(a.tile_d[k].as_ptr());
                        let d = _mm256_set_m128(d, d);
                        let s = _mm256_set_m128(
                            _mm_set1_ps(bf16_to_f32(w1.scales[g])),
                            _mm_set1_ps(bf16_to_f32(w0.scales[g])),
                        );
                        acc = accumulate8(acc, reduce8(&a0, &a1), sums, s, d);
                    }
                    let mut v = [0f32; 2 * TILE];
                    _mm256_storeu_ps(v.as_mut_ptr(), acc);
                    for j in 0..TILE.min(n - t0) {
                        out[(t0 + j) * len + i] = v[j];
                        if i + 1 < len {
                            out[(t0 + j) * len + i + 1] = v[TILE + j];
                        }
                    }
                }
            }
        }

        /// Rows `w` against one token, four rows at a time: `out[i]` (`HALF = group / 2`).
        #[target_feature(enable = $feat)]
        pub(crate) unsafe fn rows_token<const HALF: usize>(
            w: &[WRow<'_>],
            q: &QRow<'_>,
            out: &mut [f32],
        ) {
            let (len, groups) = (w.len(), q.d.len());
            assert!(rows_fit(w, groups, HALF) && token_fits(q, groups, HALF) && out.len() == len);
            let parts = HALF / 16;
            for (r0, out) in (0..len).step_by(TILE).zip(out.chunks_mut(TILE)) {
                // A short last tile repeats its last row; the extra lanes are dropped.
                let w: [&WRow<'_>; TILE] = std::array::from_fn(|i| &w[(r0 + i).min(len - 1)]);
                let mut acc = _mm_setzero_ps();
                for g in 0..groups {
                    let qg = q.codes.as_ptr().add(g * 2 * HALF);
                    let mut a = [_mm256_setzero_si256(); TILE];
                    for p in 0..parts {
                        let c = codes(qg, p);
                        for i in 0..TILE {
                            a[i] =
                                $step(a[i], part::<HALF>(w[i].codes.as_ptr().add(g * HALF), p), c);
                        }
                    }
                    for a in &mut a {
                        *a = $finish(*a);
                    }
                    let s = _mm_setr_ps(
                        bf16_to_f32(w[0].scales[g]),
                        bf16_to_f32(w[1].scales[g]),
                        bf16_to_f32(w[2].scales[g]),
                        bf16_to_f32(w[3].scales[g]),
                    );
                    let sums = _mm_set1_epi32(q.sums[g]);
                    acc = accumulate4(acc, reduce4(&a), sums, s, _mm_set1_ps(q.d[g]));
                }
                let mut v = [0f32; TILE];
                _mm_storeu_ps(v.as_mut_ptr(), acc);
                let n = out.len();
                out.copy_from_slice(&v[..n]);
            }
        }
    };
}

kernels!("avx2", step, finish);

pub(super) mod vnni {
    //! The same kernels with `vpdpbusd` (u8 x i8, four products summed into i32 lanes).

    use std::arch::x86_64::*;

    use super::super::{bf16_to_f32, Acts, QRow, WRow, TILE};
    use super::{accumulate4, accumulate8, codes, part, reduce4, reduce8};
    use super::{acts_fit, rows_fit, token_fits};

    /// One step of a group dot: `acc + ` the four-product sums of `w * q` per i32 lane
    /// (exact). `vpdpbusd` (EVEX: AVX512-VNNI + AVX512VL, detected by the caller) is
    /// written as assembly so that the crate keeps building with Rust 1.85, its declared
    /// MSRV (the AVX-512 intrinsics and target features are stable from 1.89).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn step(mut acc: __m256i, w: __m256i, q: __m256i) -> __m256i {
        std::arch::asm!(
            "vpdpbusd {acc}, {w}, {q}",
            acc = inout(ymm_reg) acc,
            w = in(ymm_reg) w,
            q = in(ymm_reg) q,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }

    /// The sums of [`step`] are i32 already.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn finish(acc: __m256i) -> __m256i {
        acc
    }

    kernels!("avx2", step, finish);
}
