//! NEON kernels: the nibbles of 16 code bytes against 32 codes at a time.

use std::arch::aarch64::*;

use super::{pair_with, Acts, QRow, WRow};

/// The low and high halves of one group's codes, 16 at a time, with the code bytes.
fn blocks<'a>(w: &'a [u8], q: &'a [i8]) -> impl Iterator<Item = ((&'a [u8], &'a [i8]), &'a [i8])> {
    let (lo, hi) = q.split_at(w.len());
    w.chunks_exact(16)
        .zip(lo.chunks_exact(16))
        .zip(hi.chunks_exact(16))
}

/// One group's dot without the zero point (`w.len()` a multiple of 16, `q` twice as long):
/// two i8 products (at most 2 * 15 * 128 = 3840) summed in i16, pairs widened into i32.
#[inline]
pub(super) fn group_dot_neon(w: &[u8], q: &[i8]) -> i32 {
    // SAFETY: NEON is part of the aarch64 baseline; every load reads one 16-element chunk.
    unsafe {
        let m = vdupq_n_u8(0x0F);
        let mut acc = vdupq_n_s32(0);
        for ((b, ql), qh) in blocks(w, q) {
            let b = vld1q_u8(b.as_ptr());
            let lo = vreinterpretq_s8_u8(vandq_u8(b, m));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(b));
            let (ql, qh) = (vld1q_s8(ql.as_ptr()), vld1q_s8(qh.as_ptr()));
            let p = vmull_s8(vget_low_s8(lo), vget_low_s8(ql));
            acc = vpadalq_s16(acc, vmlal_s8(p, vget_low_s8(hi), vget_low_s8(qh)));
            acc = vpadalq_s16(acc, vmlal_high_s8(vmull_high_s8(lo, ql), hi, qh));
        }
        vaddvq_s32(acc)
    }
}

/// `acc + ` four-product sums of `a * b` per i32 lane (`vdotq_s32`, written as assembly:
/// the intrinsic is not stable in Rust).
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags),
    );
    acc
}

/// [`group_dot_neon`] with `sdot`.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn group_dot_dot(w: &[u8], q: &[i8]) -> i32 {
    let m = vdupq_n_u8(0x0F);
    let mut acc = vdupq_n_s32(0);
    for ((b, ql), qh) in blocks(w, q) {
        let b = vld1q_u8(b.as_ptr());
        let lo = vreinterpretq_s8_u8(vandq_u8(b, m));
        let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(b));
        acc = sdot(acc, lo, vld1q_s8(ql.as_ptr()));
        acc = sdot(acc, hi, vld1q_s8(qh.as_ptr()));
    }
    vaddvq_s32(acc)
}

/// [`super::rows_tokens`] with `sdot`.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn rows_tokens(half: usize, w: &[WRow<'_>], a: &Acts<'_>, out: &mut [f32]) {
    super::rows_tokens_with(half, w, a, out, |w, q| group_dot_dot(w, q));
}

/// [`super::rows_token`] with `sdot`.
#[target_feature(enable = "dotprod")]
pub(super) unsafe fn rows_token(half: usize, w: &[WRow<'_>], q: &QRow<'_>, out: &mut [f32]) {
    for (o, w) in out.iter_mut().zip(w) {
        *o = pair_with(half, w, q, |w, q| group_dot_dot(w, q));
    }
}
