//! The 256-weight "K" super-block formats: Q4_K, Q5_K, Q6_K, Q8_K (`block_q4_K`... in ggml).

use std::mem::{align_of, size_of};

use super::{f16_le, Block};

/// Weights per K super-block.
pub const QK_K: usize = 256;
/// Bytes of the packed 6-bit scales and minimums of Q4_K / Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// `block_q4_K`: 8 sub-blocks of 32, weight `d * sc * q - dmin * m`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    /// Super-block scale of the scales, f16.
    pub d: [u8; 2],
    /// Super-block scale of the minimums, f16.
    pub dmin: [u8; 2],
    /// 8 scales and 8 minimums, 6 bits each.
    pub scales: [u8; K_SCALE_SIZE],
    /// 4-bit codes: each 32 bytes hold two sub-blocks (low nibbles, then high).
    pub qs: [u8; QK_K / 2],
}

/// `block_q5_K`: Q4_K plus a fifth bit per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    /// Super-block scale of the scales, f16.
    pub d: [u8; 2],
    /// Super-block scale of the minimums, f16.
    pub dmin: [u8; 2],
    /// 8 scales and 8 minimums, 6 bits each.
    pub scales: [u8; K_SCALE_SIZE],
    /// Fifth bits: bit `k` of byte `l` belongs to weight `l` of sub-block `k`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, as in Q4_K.
    pub qs: [u8; QK_K / 2],
}

/// `block_q6_K`: 16 sub-blocks of 16, weight `d * scale * (q - 32)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    /// Low 4 bits of the codes.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the codes.
    pub qh: [u8; QK_K / 4],
    /// Signed 8-bit sub-block scales.
    pub scales: [u8; QK_K / 16],
    /// Super-block scale, f16.
    pub d: [u8; 2],
}

/// `block_q8_K`: weight `d * q` (the partial sums serve dot products only).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    /// Scale, f32 little-endian.
    pub d: [u8; 4],
    /// Signed 8-bit codes.
    pub qs: [u8; QK_K],
    /// Sums of each group of 16 codes, i16 little-endian.
    pub bsums: [u8; QK_K / 16 * 2],
}

const _: () = assert!(size_of::<BlockQ4K>() == 144 && align_of::<BlockQ4K>() == 1);
const _: () = assert!(size_of::<BlockQ5K>() == 176 && align_of::<BlockQ5K>() == 1);
const _: () = assert!(size_of::<BlockQ6K>() == 210 && align_of::<BlockQ6K>() == 1);
const _: () = assert!(size_of::<BlockQ8K>() == 292 && align_of::<BlockQ8K>() == 1);

// SAFETY: each is `#[repr(C)]` over `u8` arrays only (asserted above: alignment 1).
unsafe impl Block for BlockQ4K {
    const WEIGHTS: usize = QK_K;
}
unsafe impl Block for BlockQ5K {
    const WEIGHTS: usize = QK_K;
}
unsafe impl Block for BlockQ6K {
    const WEIGHTS: usize = QK_K;
}
unsafe impl Block for BlockQ8K {
    const WEIGHTS: usize = QK_K;
}

/// Scale and minimum of sub-block `j` (`get_scale_min_k4`).
#[inline]
fn scale_min(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// Per-sub-block multipliers `(d * sc, dmin * m)` of Q4_K / Q5_K.
#[inline]
fn sub_scales(d: [u8; 2], dmin: [u8; 2], scales: &[u8; K_SCALE_SIZE], j: usize) -> (f32, f32) {
    let (sc, m) = scale_min(j, scales);
    (f16_le(d) * sc as f32, f16_le(dmin) * m as f32)
}

impl BlockQ4K {
    /// Writes the block's 256 weights to `y` (`dequantize_row_q4_K`).
    pub fn dequantize(&self, y: &mut [f32]) {
        for (pair, (q, y)) in self
            .qs
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = sub_scales(self.d, self.dmin, &self.scales, 2 * pair);
            let (d2, m2) = sub_scales(self.d, self.dmin, &self.scales, 2 * pair + 1);
            for (l, &q) in q.iter().enumerate() {
                y[l] = d1 * (q & 0x0F) as f32 - m1;
                y[l + 32] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

impl BlockQ5K {
    /// Writes the block's 256 weights to `y` (`dequantize_row_q5_K`).
    pub fn dequantize(&self, y: &mut [f32]) {
        for (pair, (q, y)) in self
            .qs
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = sub_scales(self.d, self.dmin, &self.scales, 2 * pair);
            let (d2, m2) = sub_scales(self.d, self.dmin, &self.scales, 2 * pair + 1);
            let (u1, u2) = (1u8 << (2 * pair), 1u8 << (2 * pair + 1));
            for (l, &q) in q.iter().enumerate() {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * ((q & 0x0F) + h1) as f32 - m1;
                y[l + 32] = d2 * ((q >> 4) + h2) as f32 - m2;
            }
        }
    }
}

impl BlockQ6K {
    /// Writes the block's 256 weights to `y` (`dequantize_row_q6_K`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let d = f16_le(self.d);
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * (half + 1)];
            let qh = &self.qh[32 * half..32 * (half + 1)];
            let sc = &self.scales[8 * half..8 * (half + 1)];
            let y = &mut y[128 * half..128 * (half + 1)];
            for l in 0..32 {
                let is = l / 16;
                let code = |low: u8, shift: u8| (low | ((qh[l] >> shift) & 3) << 4) as i32 - 32;
                let q1 = code(ql[l] & 0x0F, 0);
                let q2 = code(ql[l + 32] & 0x0F, 2);
                let q3 = code(ql[l] >> 4, 4);
                let q4 = code(ql[l + 32] >> 4, 6);
                let scale = |k: usize| d * sc[is + k] as i8 as f32;
                y[l] = scale(0) * q1 as f32;
                y[l + 32] = scale(2) * q2 as f32;
                y[l + 64] = scale(4) * q3 as f32;
                y[l + 96] = scale(6) * q4 as f32;
            }
        }
    }
}

impl BlockQ8K {
    /// Writes the block's 256 weights to `y` (`dequantize_row_q8_K`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let d = f32::from_le_bytes(self.d);
        for (y, &q) in y.iter_mut().zip(self.qs.iter()) {
            *y = d * q as i8 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacks_high_bits() {
        let mut q = [0u8; K_SCALE_SIZE];
        q[0] = 0b11_000001; // sc0 = 1, high bits of sc4 = 3
        q[4] = 0b10_000010; // m0 = 2, high bits of m4 = 2
        q[8] = 0x5A; // sc4 low = 0xA, m4 low = 0x5
        assert_eq!(scale_min(0, &q), (1, 2));
        assert_eq!(scale_min(4, &q), (0xA | (3 << 4), 0x5 | (2 << 4)));
    }
}
