//! The Q4BF16 / Q8BF16 weight formats shared by the quantizer and the runtime: plane names,
//! code blocks (`#[repr(C)]`, size-checked), and the scalar reference quantizer and
//! dequantizer. The layout is specified in `docs/formats/q4bf16.md`.
//!
//! A quantized `[rows, cols]` weight `name` is stored as planes `{name}.q4` (U8
//! `[rows, cols/2]`) or `{name}.q8` (I8 `[rows, cols]`), plus `{name}.scales` (BF16
//! `[rows, cols/G]`). Within a q4 group of `G` elements, byte `j` holds element `j` in its low
//! nibble and element `j + G/2` in its high nibble; `value = (nibble - 8) * scale`.

use crate::dtype::DType;

/// Suffix of the 4-bit code plane.
pub const Q4_SUFFIX: &str = ".q4";
/// Suffix of the 8-bit code plane.
pub const Q8_SUFFIX: &str = ".q8";
/// Suffix of the bf16 group-scale plane.
pub const SCALES_SUFFIX: &str = ".scales";
/// Group sizes the formats allow.
pub const GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// The default group size.
pub const DEFAULT_GROUP_SIZE: usize = 128;
/// The zero point of symmetric 4-bit codes.
pub const Q4_ZERO: i32 = 8;
/// Largest 4-bit code.
const Q4_MAX: i32 = 15;
/// Largest magnitude of an 8-bit code (symmetric: -127 ..= 127).
const Q8_MAX: f32 = 127.0;
/// Version of this layout, written into `ava-stage.json`.
pub const FORMAT_VERSION: u32 = 1;

/// The codes of one q4 group of `2 * HALF` weights.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Q4Block<const HALF: usize> {
    /// Byte `j`: element `j` (low nibble) and element `j + HALF` (high nibble).
    pub qs: [u8; HALF],
}

/// A q4 group of 32.
pub type Q4Block32 = Q4Block<16>;
/// A q4 group of 64.
pub type Q4Block64 = Q4Block<32>;
/// A q4 group of 128 (the default).
pub type Q4Block128 = Q4Block<64>;
const _: () = assert!(std::mem::size_of::<Q4Block32>() == 16);
const _: () = assert!(std::mem::size_of::<Q4Block64>() == 32);
const _: () = assert!(std::mem::size_of::<Q4Block128>() == 64);

/// The codes of one q8 group of `N` weights.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Q8Block<const N: usize> {
    /// Signed codes.
    pub qs: [i8; N],
}

/// A q8 group of 128.
pub type Q8Block128 = Q8Block<128>;
const _: () = assert!(std::mem::size_of::<Q8Block128>() == 128);

/// A grouped integer weight format.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 4-bit symmetric codes, bf16 group scales.
    Q4Bf16,
    /// 8-bit symmetric codes, bf16 group scales.
    Q8Bf16,
}

impl QuantFormat {
    /// `q4bf16` / `q8bf16`.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q4Bf16 => "q4bf16",
            QuantFormat::Q8Bf16 => "q8bf16",
        }
    }

    /// Suffix of the code plane.
    pub fn code_suffix(self) -> &'static str {
        match self {
            QuantFormat::Q4Bf16 => Q4_SUFFIX,
            QuantFormat::Q8Bf16 => Q8_SUFFIX,
        }
    }

    /// Element type of the code plane.
    pub fn code_dtype(self) -> DType {
        match self {
            QuantFormat::Q4Bf16 => DType::U8,
            QuantFormat::Q8Bf16 => DType::I8,
        }
    }

    /// Shape of the code plane of a `[rows, cols]` weight.
    pub fn code_shape(self, rows: usize, cols: usize) -> Vec<usize> {
        match self {
            QuantFormat::Q4Bf16 => vec![rows, cols / 2],
            QuantFormat::Q8Bf16 => vec![rows, cols],
        }
    }

    /// Code bytes per row.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            QuantFormat::Q4Bf16 => cols / 2,
            QuantFormat::Q8Bf16 => cols,
        }
    }

    /// The format whose code plane of `name` exists according to `has`, with the weight name.
    pub fn detect(name: &str, has: impl Fn(&str) -> bool) -> Option<QuantFormat> {
        [QuantFormat::Q4Bf16, QuantFormat::Q8Bf16]
            .into_iter()
            .find(|f| has(&format!("{name}{}", f.code_suffix())))
    }
}

/// Shape of the scales plane of a `[rows, cols]` weight in groups of `group`.
pub fn scales_shape(rows: usize, cols: usize, group: usize) -> Vec<usize> {
    vec![rows, cols / group]
}

/// Whether `group` is an allowed group size that divides `cols`.
pub fn group_fits(cols: usize, group: usize) -> bool {
    GROUP_SIZES.contains(&group) && cols % group == 0
}

/// bf16 bits to f32 (exact).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bf16 bits, rounded to nearest even.
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// Scalar reference: dequantizes one q4 row (`codes`: `cols/2` bytes, `scales`: `cols/G`).
pub fn dequantize_q4_row(codes: &[u8], scales: &[u16], group: usize, out: &mut [f32]) {
    let half = group / 2;
    for ((block, &s), o) in codes
        .chunks_exact(half)
        .zip(scales)
        .zip(out.chunks_exact_mut(group))
    {
        let d = bf16_to_f32(s);
        for (j, &b) in block.iter().enumerate() {
            o[j] = (i32::from(b & 0x0F) - Q4_ZERO) as f32 * d;
            o[j + half] = (i32::from(b >> 4) - Q4_ZERO) as f32 * d;
        }
    }
}

/// Scalar reference: dequantizes one q8 row.
pub fn dequantize_q8_row(codes: &[i8], scales: &[u16], group: usize, out: &mut [f32]) {
    for ((block, &s), o) in codes
        .chunks_exact(group)
        .zip(scales)
        .zip(out.chunks_exact_mut(group))
    {
        let d = bf16_to_f32(s);
        for (v, &c) in o.iter_mut().zip(block) {
            *v = f32::from(c) * d;
        }
    }
}

/// Quantizes one q4 group of `x.len()` (even) values into `codes` (`x.len()/2` bytes) with
/// the extreme scaled by `clip` (1.0: none). Returns the bf16 scale.
pub fn quantize_q4_group(x: &[f32], clip: f32, codes: &mut [u8]) -> u16 {
    let extreme = x
        .iter()
        .copied()
        .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
    let scale = f32_to_bf16(extreme * clip / -(Q4_ZERO as f32));
    let d = bf16_to_f32(scale);
    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
    let half = x.len() / 2;
    let code = |v: f32| (round_half_away(v * inv) + Q4_ZERO).clamp(0, Q4_MAX) as u8;
    for (j, c) in codes.iter_mut().enumerate().take(half) {
        *c = code(x[j]) | (code(x[j + half]) << 4);
    }
    scale
}

/// Quantizes one q8 group into `codes`, the largest magnitude scaled by `clip`. Returns the
/// bf16 scale.
pub fn quantize_q8_group(x: &[f32], clip: f32, codes: &mut [i8]) -> u16 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = f32_to_bf16(amax * clip / Q8_MAX);
    let d = bf16_to_f32(scale);
    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = round_half_away(v * inv).clamp(-(Q8_MAX as i32), Q8_MAX as i32) as i8;
    }
    scale
}

/// `f32::round` (half away from zero) as an integer, without the libm call `round` becomes
/// on baseline x86_64; out-of-range values saturate (the callers clamp).
#[inline]
fn round_half_away(v: f32) -> i32 {
    (v + 0.5f32.copysign(v)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    #[test]
    fn q4_round_trip_within_a_step() {
        for group in GROUP_SIZES {
            let x = values(group * 3);
            let mut codes = vec![0u8; x.len() / 2];
            let scales: Vec<u16> = x
                .chunks(group)
                .zip(codes.chunks_mut(group / 2))
                .map(|(g, c)| quantize_q4_group(g, 1.0, c))
                .collect();
            let mut back = vec![0f32; x.len()];
            dequantize_q4_row(&codes, &scales, group, &mut back);
            for (g, (xs, bs)) in x.chunks(group).zip(back.chunks(group)).enumerate() {
                let d = bf16_to_f32(scales[g]).abs();
                for (a, b) in xs.iter().zip(bs) {
                    // Half a step, except the opposite extreme, clamped at code 15 (as Q4_0).
                    assert!((a - b).abs() <= d + 1e-6 + a.abs() * 4e-3, "{a} {b}");
                }
            }
        }
    }

    #[test]
    fn q4_nibble_order() {
        let mut x = vec![0f32; 32];
        x[0] = -8.0;
        x[16] = 7.0;
        let mut codes = [0u8; 16];
        let s = quantize_q4_group(&x, 1.0, &mut codes);
        assert_eq!(bf16_to_f32(s), 1.0);
        assert_eq!(codes[0], 0x0F << 4);
        assert_eq!(codes[1], 0x88);
    }

    #[test]
    fn rounding_matches_std() {
        for v in [-2.5f32, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5, 7.4999] {
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
    }

    #[test]
    fn q8_round_trip() {
        let x = values(256);
        let mut codes = vec![0i8; 256];
        let scales: Vec<u16> = x
            .chunks(128)
            .zip(codes.chunks_mut(128))
            .map(|(g, c)| quantize_q8_group(g, 1.0, c))
            .collect();
        let mut back = vec![0f32; 256];
        dequantize_q8_row(&codes, &scales, 128, &mut back);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 0.03, "{a} {b}");
        }
    }
}
