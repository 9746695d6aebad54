//! The 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`block_q4_0`... in ggml).

use std::mem::{align_of, size_of};

use super::{f16_le, Block};

/// Weights per Q4_0 / Q4_1 block.
pub const QK4_0: usize = 32;
/// Weights per Q5_0 / Q5_1 block.
pub const QK5_0: usize = 32;
/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;

/// `block_q4_0`: `d * (q - 8)`; byte `j` holds weight `j` (low nibble) and `j + 16` (high).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_0 {
    /// Scale, f16 little-endian.
    pub d: [u8; 2],
    /// Packed 4-bit codes.
    pub qs: [u8; QK4_0 / 2],
}

/// `block_q4_1`: `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// Packed 4-bit codes, as in Q4_0.
    pub qs: [u8; QK4_0 / 2],
}

/// `block_q5_0`: `d * (q - 16)`; bit `i` of `qh` is the fifth bit of weight `i`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// High bits, a little-endian u32.
    pub qh: [u8; 4],
    /// Low 4 bits, packed as in Q4_0.
    pub qs: [u8; QK5_0 / 2],
}

/// `block_q5_1`: `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5_1 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Minimum, f16.
    pub m: [u8; 2],
    /// High bits, a little-endian u32.
    pub qh: [u8; 4],
    /// Low 4 bits.
    pub qs: [u8; QK5_0 / 2],
}

/// `block_q8_0`: `d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    /// Scale, f16.
    pub d: [u8; 2],
    /// Signed 8-bit codes.
    pub qs: [u8; QK8_0],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18 && align_of::<BlockQ4_0>() == 1);
const _: () = assert!(size_of::<BlockQ4_1>() == 20 && align_of::<BlockQ4_1>() == 1);
const _: () = assert!(size_of::<BlockQ5_0>() == 22 && align_of::<BlockQ5_0>() == 1);
const _: () = assert!(size_of::<BlockQ5_1>() == 24 && align_of::<BlockQ5_1>() == 1);
const _: () = assert!(size_of::<BlockQ8_0>() == 34 && align_of::<BlockQ8_0>() == 1);

// SAFETY: each is `#[repr(C)]` over `u8` arrays only (asserted above: alignment 1).
unsafe impl Block for BlockQ4_0 {
    const WEIGHTS: usize = QK4_0;
}
unsafe impl Block for BlockQ4_1 {
    const WEIGHTS: usize = QK4_0;
}
unsafe impl Block for BlockQ5_0 {
    const WEIGHTS: usize = QK5_0;
}
unsafe impl Block for BlockQ5_1 {
    const WEIGHTS: usize = QK5_0;
}
unsafe impl Block for BlockQ8_0 {
    const WEIGHTS: usize = QK8_0;
}

const HALF: usize = QK4_0 / 2;

impl BlockQ4_0 {
    /// Writes the block's 32 weights to `y` (`dequantize_row_q4_0`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let d = f16_le(self.d);
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + HALF] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockQ4_1 {
    /// Writes the block's 32 weights to `y` (`dequantize_row_q4_1`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + HALF] = (q >> 4) as f32 * d + m;
        }
    }
}

/// The fifth bits of weights `j` and `j + 16`, in bit position 4.
#[inline]
fn high_bits(qh: u32, j: usize) -> (u8, u8) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (h0 as u8, h1 as u8)
}

impl BlockQ5_0 {
    /// Writes the block's 32 weights to `y` (`dequantize_row_q5_0`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let d = f16_le(self.d);
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let (h0, h1) = high_bits(qh, j);
            y[j] = (((q & 0x0F) | h0) as i32 - 16) as f32 * d;
            y[j + HALF] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

impl BlockQ5_1 {
    /// Writes the block's 32 weights to `y` (`dequantize_row_q5_1`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let (d, m) = (f16_le(self.d), f16_le(self.m));
        let qh = u32::from_le_bytes(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let (h0, h1) = high_bits(qh, j);
            y[j] = ((q & 0x0F) | h0) as f32 * d + m;
            y[j + HALF] = ((q >> 4) | h1) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    /// Writes the block's 32 weights to `y` (`dequantize_row_q8_0`).
    pub fn dequantize(&self, y: &mut [f32]) {
        let d = f16_le(self.d);
        for (y, &q) in y.iter_mut().zip(self.qs.iter()) {
            *y = q as i8 as f32 * d;
        }
    }
}
