//! GGML tensor types: their block layouts (`#[repr(C)]` structs with compile-time size checks)
//! and scalar reference dequantizers to f32.
//!
//! Source of truth: ggml `ggml-common.h` (layouts) and `ggml-quants.c` (`dequantize_row_*`).
//! Every dequantizer computes in f32 in the same order as ggml and gguf-py
//! (`gguf/quants.py`), so results match them bit for bit; Rust never fuses a multiply and an
//! add on its own, so no FMA changes the rounding.

mod kquants;
mod legacy;

pub use kquants::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};
pub use legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, QK4_0, QK5_0, QK8_0};

use std::fmt;

use crate::error::{Error, Result};

/// Types [`dequantize`] handles, for error messages.
pub const SUPPORTED_NAMES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K";

/// A GGML tensor type, by its id in `enum ggml_type`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// 32 weights, f16 scale, 4-bit codes minus 8.
    Q4_0,
    /// 32 weights, f16 scale and minimum, 4-bit codes.
    Q4_1,
    /// 32 weights, f16 scale, 5-bit codes minus 16.
    Q5_0,
    /// 32 weights, f16 scale and minimum, 5-bit codes.
    Q5_1,
    /// 32 weights, f16 scale, int8 codes.
    Q8_0,
    /// 256 weights in 8 sub-blocks, 6-bit scales and minimums, 4-bit codes.
    Q4K,
    /// 256 weights in 8 sub-blocks, 6-bit scales and minimums, 5-bit codes.
    Q5K,
    /// 256 weights in 16 sub-blocks, int8 scales, 6-bit codes minus 32.
    Q6K,
    /// 256 weights, f32 scale, int8 codes (plus partial sums).
    Q8K,
    /// A type this crate knows the size of but cannot dequantize.
    Other {
        /// The ggml id.
        id: u32,
        /// Its ggml name.
        name: &'static str,
        /// Weights per block.
        block_size: usize,
        /// Bytes per block.
        type_size: usize,
    },
}

/// ggml types we cannot dequantize: (id, name, weights per block, bytes per block), from
/// `ggml.c`'s type traits. Needed to bound-check a file that holds them.
const OTHER_TYPES: [(u32, &str, usize, usize); 22] = [
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// The type with ggml id `id`, or `None` for an id ggml does not define.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            _ => {
                let &(id, name, block_size, type_size) = OTHER_TYPES.iter().find(|t| t.0 == id)?;
                GgmlType::Other {
                    id,
                    name,
                    block_size,
                    type_size,
                }
            }
        })
    }

    /// The ggml id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Q8K => 15,
            GgmlType::BF16 => 30,
            GgmlType::Other { id, .. } => id,
        }
    }

    /// The ggml name (`Q4_K`, `BF16`...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::Other { name, .. } => name,
        }
    }

    /// Weights per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 => QK4_0,
            GgmlType::Q5_0 | GgmlType::Q5_1 => QK5_0,
            GgmlType::Q8_0 => QK8_0,
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K | GgmlType::Q8K => QK_K,
            GgmlType::Other { block_size, .. } => block_size,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        use std::mem::size_of;
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => size_of::<BlockQ4_0>(),
            GgmlType::Q4_1 => size_of::<BlockQ4_1>(),
            GgmlType::Q5_0 => size_of::<BlockQ5_0>(),
            GgmlType::Q5_1 => size_of::<BlockQ5_1>(),
            GgmlType::Q8_0 => size_of::<BlockQ8_0>(),
            GgmlType::Q4K => size_of::<BlockQ4K>(),
            GgmlType::Q5K => size_of::<BlockQ5K>(),
            GgmlType::Q6K => size_of::<BlockQ6K>(),
            GgmlType::Q8K => size_of::<BlockQ8K>(),
            GgmlType::Other { type_size, .. } => type_size,
        }
    }

    /// Whether [`dequantize`] handles this type.
    pub fn is_supported(self) -> bool {
        !matches!(self, GgmlType::Other { .. })
    }

    /// Bytes that `elements` weights take, or `None` when `elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        if elements % block != 0 {
            return None;
        }
        (elements / block).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A block struct that may be viewed in place inside a byte buffer.
///
/// # Safety
/// Implementors are `#[repr(C)]`, built only from `u8` arrays (alignment 1, no padding, every
/// bit pattern valid), so any `size_of::<Self>()` bytes are a valid value.
unsafe trait Block: Sized {
    /// Weights per block.
    const WEIGHTS: usize;
}

/// Views `bytes` as blocks; `None` unless the length is a whole number of blocks.
fn as_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if size == 0 || bytes.len() % size != 0 || std::mem::align_of::<B>() != 1 {
        return None;
    }
    // SAFETY: `B: Block` has alignment 1 and accepts any bytes; the length is a multiple of
    // its size, and the slice borrows `bytes`, so it lives no longer than the buffer.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) })
}

/// Dequantizes block type `B` from `bytes` into `out`, one block at a time.
fn dequantize_blocks<B: Block>(
    bytes: &[u8],
    out: &mut [f32],
    one: impl Fn(&B, &mut [f32]),
) -> Option<()> {
    let blocks = as_blocks::<B>(bytes)?;
    if blocks.len().checked_mul(B::WEIGHTS)? != out.len() {
        return None;
    }
    for (block, y) in blocks.iter().zip(out.chunks_exact_mut(B::WEIGHTS)) {
        one(block, y);
    }
    Some(())
}

/// An f16 stored little-endian, as f32 (exact).
#[inline]
fn f16_le(b: [u8; 2]) -> f32 {
    half::f16::from_le_bytes(b).to_f32()
}

/// Dequantizes `bytes` of type `ty` into `out` (its length is the element count).
///
/// Fails when `ty` is not supported or `bytes` does not hold exactly `out.len()` elements.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let done = match ty {
        GgmlType::F32 => plain(bytes, out, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }),
        GgmlType::F16 => plain(bytes, out, 2, |b| f16_le([b[0], b[1]])),
        GgmlType::BF16 => plain(bytes, out, 2, |b| {
            half::bf16::from_le_bytes([b[0], b[1]]).to_f32()
        }),
        GgmlType::Q4_0 => dequantize_blocks(bytes, out, BlockQ4_0::dequantize),
        GgmlType::Q4_1 => dequantize_blocks(bytes, out, BlockQ4_1::dequantize),
        GgmlType::Q5_0 => dequantize_blocks(bytes, out, BlockQ5_0::dequantize),
        GgmlType::Q5_1 => dequantize_blocks(bytes, out, BlockQ5_1::dequantize),
        GgmlType::Q8_0 => dequantize_blocks(bytes, out, BlockQ8_0::dequantize),
        GgmlType::Q4K => dequantize_blocks(bytes, out, BlockQ4K::dequantize),
        GgmlType::Q5K => dequantize_blocks(bytes, out, BlockQ5K::dequantize),
        GgmlType::Q6K => dequantize_blocks(bytes, out, BlockQ6K::dequantize),
        GgmlType::Q8K => dequantize_blocks(bytes, out, BlockQ8K::dequantize),
        GgmlType::Other { .. } => None,
    };
    done.ok_or(Error::BlockLength {
        ggml_type: ty.name(),
        bytes: bytes.len(),
        elements: out.len(),
    })
}

/// Dequantizes into a new vector of `elements` values.
pub fn dequantize_to_vec(ty: GgmlType, bytes: &[u8], elements: usize) -> Result<Vec<f32>> {
    let expected = ty.bytes_for(elements as u64);
    if !ty.is_supported() || expected != Some(bytes.len() as u64) {
        return Err(Error::BlockLength {
            ggml_type: ty.name(),
            bytes: bytes.len(),
            elements,
        });
    }
    let mut out = vec![0.0; elements];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

fn plain(bytes: &[u8], out: &mut [f32], width: usize, f: impl Fn(&[u8]) -> f32) -> Option<()> {
    if bytes.len() != out.len().checked_mul(width)? {
        return None;
    }
    for (b, y) in bytes.chunks_exact(width).zip(out.iter_mut()) {
        *y = f(b);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id, "{t}");
            }
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(u32::MAX), None);
    }

    #[test]
    fn sizes_match_ggml() {
        let expected = [
            (GgmlType::Q4_0, 32, 18),
            (GgmlType::Q4_1, 32, 20),
            (GgmlType::Q5_0, 32, 22),
            (GgmlType::Q5_1, 32, 24),
            (GgmlType::Q8_0, 32, 34),
            (GgmlType::Q4K, 256, 144),
            (GgmlType::Q5K, 256, 176),
            (GgmlType::Q6K, 256, 210),
            (GgmlType::Q8K, 256, 292),
            (GgmlType::BF16, 1, 2),
        ];
        for (t, block, size) in expected {
            assert_eq!((t.block_size(), t.type_size()), (block, size), "{t}");
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut out = [0.0; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], &mut out).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 68], &mut out).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], &mut out).is_ok());
        assert!(dequantize(GgmlType::F32, &[0; 127], &mut out).is_err());
        assert!(dequantize_to_vec(GgmlType::Q4K, &[0; 144], 255).is_err());
        let q2k = GgmlType::from_id(10).unwrap();
        assert!(dequantize(q2k, &[0; 84], &mut [0.0; 256]).is_err());
    }

    #[test]
    fn q8_0_by_hand() {
        let mut block = [0u8; 34];
        block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        block[2] = 4;
        block[3] = (-6i8) as u8;
        let y = dequantize_to_vec(GgmlType::Q8_0, &block, 32).unwrap();
        assert_eq!(&y[..3], &[2.0, -3.0, 0.0]);
    }
}
