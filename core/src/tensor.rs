//! Tensor descriptions and borrowed views of tensor bytes, with conversion to f32.

use crate::dtype::DType;
use crate::error::{Error, Result};

/// Name, dtype and shape of a tensor, without its data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TensorInfo {
    /// Full tensor name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first (PyTorch order).
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
}

/// A tensor's little-endian bytes borrowed from a file or buffer.
///
/// `data` has no alignment guarantee: read it with `from_le_bytes`, never by casting.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// Full tensor name.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: &'a [usize],
    /// Raw little-endian element bytes, row-major.
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements (1 for a scalar); saturates instead of overflowing.
    pub fn numel(&self) -> usize {
        numel(self.shape)
    }

    /// An owned description of this tensor.
    pub fn info(&self) -> TensorInfo {
        TensorInfo {
            name: self.name.to_string(),
            dtype: self.dtype,
            shape: self.shape.to_vec(),
        }
    }

    /// Converts every element to f32 (integers and bools by value; f64 rounds).
    ///
    /// Fails when `data` is not exactly `numel * dtype size` bytes.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let size = self.dtype.size_in_bytes();
        let expected = self.numel().checked_mul(size);
        if expected != Some(self.data.len()) {
            return Err(Error::TensorData {
                name: self.name.to_string(),
                reason: format!(
                    "shape {:?} with dtype {} needs {} bytes, view holds {}",
                    self.shape,
                    self.dtype,
                    expected.map_or_else(|| "more than usize::MAX".into(), |n| n.to_string()),
                    self.data.len()
                ),
            });
        }
        Ok(decode_f32(self.dtype, self.data))
    }
}

/// Product of dimensions, saturating at `usize::MAX`.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// Decodes little-endian elements; `data.len()` must be a multiple of the dtype size.
fn decode_f32(dtype: DType, data: &[u8]) -> Vec<f32> {
    fn map<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        data.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect()
    }
    match dtype {
        DType::F64 => map(data, |b| f64::from_le_bytes(b) as f32),
        DType::F32 => map(data, f32::from_le_bytes),
        DType::F16 => map(data, |b| half::f16::from_le_bytes(b).to_f32()),
        DType::BF16 => map(data, |b| half::bf16::from_le_bytes(b).to_f32()),
        DType::I64 => map(data, |b| i64::from_le_bytes(b) as f32),
        DType::I32 => map(data, |b| i32::from_le_bytes(b) as f32),
        DType::I16 => map(data, |b| f32::from(i16::from_le_bytes(b))),
        DType::I8 => map(data, |b: [u8; 1]| f32::from(i8::from_le_bytes(b))),
        DType::U8 | DType::Bool => map(data, |b: [u8; 1]| f32::from(b[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(dtype: DType, shape: &'a [usize], data: &'a [u8]) -> TensorView<'a> {
        TensorView {
            name: "t",
            dtype,
            shape,
            data,
        }
    }

    #[test]
    fn decodes_each_dtype() -> Result<()> {
        let f16: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(view(DType::F16, &[2], &f16).to_f32_vec()?, vec![1.5, -2.0]);
        let bf16: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(
            view(DType::BF16, &[2], &bf16).to_f32_vec()?,
            vec![0.25, 3.0]
        );
        let f64b = (-0.5f64).to_le_bytes();
        assert_eq!(view(DType::F64, &[], &f64b).to_f32_vec()?, vec![-0.5]);
        assert_eq!(
            view(DType::I8, &[2], &[0xff, 7]).to_f32_vec()?,
            vec![-1.0, 7.0]
        );
        assert_eq!(view(DType::U8, &[1], &[200]).to_f32_vec()?, vec![200.0]);
        let i32b = (-70000i32).to_le_bytes();
        assert_eq!(
            view(DType::I32, &[1, 1], &i32b).to_f32_vec()?,
            vec![-70000.0]
        );
        Ok(())
    }

    #[test]
    fn unaligned_data_is_fine() -> Result<()> {
        let mut buf = vec![0u8];
        buf.extend_from_slice(&1.25f32.to_le_bytes());
        assert_eq!(view(DType::F32, &[1], &buf[1..]).to_f32_vec()?, vec![1.25]);
        Ok(())
    }

    #[test]
    fn wrong_length_is_an_error() {
        let err = view(DType::F32, &[2], &[0; 7]).to_f32_vec().unwrap_err();
        assert!(
            err.to_string().contains("needs 8 bytes, view holds 7"),
            "{err}"
        );
    }

    #[test]
    fn numel_saturates() {
        assert_eq!(numel(&[usize::MAX, 2]), usize::MAX);
        assert_eq!(numel(&[]), 1);
        assert_eq!(numel(&[3, 0]), 0);
    }
}
