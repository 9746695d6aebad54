//! Quantization operators: `QuantizeLinear`, `DequantizeLinear` (int8 and int32 inputs, per
//! tensor or per axis) and `MatMulInteger` (int8 x int8 -> int32), as the QDQ and QOperator
//! graphs of [`crate::quant`] use them.

use rayon::prelude::*;

use super::{axis_of, ints, R};
use crate::ir::{Tensor, TensorData};

/// Per element, the index into a per-axis parameter of length `params` (0 for per-tensor).
fn param_index(
    dims: &[usize],
    params: usize,
    axis: i64,
) -> std::result::Result<Vec<usize>, String> {
    let total: usize = dims.iter().product();
    if params <= 1 {
        return Ok(vec![0; total]);
    }
    let ax = axis_of(axis, dims.len())?;
    if dims[ax] != params {
        return Err(format!("{params} parameters for axis {ax} of {dims:?}"));
    }
    let inner: usize = dims[ax + 1..].iter().product();
    Ok((0..total).map(|i| (i / inner) % params).collect())
}

/// Scales and zero points (zeros when absent), checked to be the same length.
fn params(
    scale: &Tensor,
    zp: Option<&Tensor>,
) -> std::result::Result<(Vec<f32>, Vec<i64>), String> {
    let sv = super::f32s(scale)?.to_vec();
    let zv = match zp {
        Some(z) => ints(z)?,
        None => vec![0; sv.len()],
    };
    if sv.is_empty() || zv.len() != sv.len() {
        return Err(format!("{} scales and {} zero points", sv.len(), zv.len()));
    }
    Ok((sv, zv))
}

/// `saturate(round_half_even(x / scale) + zero_point)` to int8 (the only type produced here).
pub(super) fn quantize_linear(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis: i64) -> R {
    let xv = super::f32s(x)?;
    let (sv, zv) = params(scale, zp)?;
    let idx = param_index(&x.dims, sv.len(), axis)?;
    let q = xv
        .iter()
        .zip(&idx)
        .map(|(&v, &c)| ((v / sv[c]).round_ties_even() + zv[c] as f32).clamp(-128.0, 127.0) as i8)
        .collect();
    Ok(Tensor {
        dims: x.dims.clone(),
        data: TensorData::I8(q),
    })
}

/// `(x - zero_point) * scale`, for int8 and int32 (`MatMulInteger` accumulators) inputs.
pub(super) fn dequantize_linear(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, axis: i64) -> R {
    let xv = ints(x)?;
    let (sv, zv) = params(scale, zp)?;
    let idx = param_index(&x.dims, sv.len(), axis)?;
    let v = xv
        .iter()
        .zip(&idx)
        .map(|(&q, &c)| q.wrapping_sub(zv[c]) as f32 * sv[c])
        .collect();
    Ok(Tensor::f32(x.dims.clone(), v))
}

fn i8s(t: &Tensor) -> std::result::Result<&[i8], String> {
    match &t.data {
        TensorData::I8(v) => Ok(v),
        _ => Err(format!("expected int8, got {:?}", t.dtype())),
    }
}

/// `(A - a_zero_point) x (B - b_zero_point)` in int32: `A` int8 `[.., m, k]`, `B` int8
/// `[k, n]`, `a_zero_point` per tensor, `b_zero_point` per tensor or per column.
pub(super) fn matmul_integer(
    a: &Tensor,
    b: &Tensor,
    za: Option<&Tensor>,
    zb: Option<&Tensor>,
) -> R {
    let (av, bv) = (i8s(a)?, i8s(b)?);
    let ra = a.dims.len();
    let &[k, n] = b.dims.as_slice() else {
        return Err(format!("MatMulInteger: B must be 2-D, got {:?}", b.dims));
    };
    if ra < 2 || a.dims[ra - 1] != k {
        return Err(format!("MatMulInteger shapes {:?} x {:?}", a.dims, b.dims));
    }
    let za = match za.map(ints).transpose()?.as_deref() {
        None => 0,
        Some([z]) => *z as i32,
        Some(z) => return Err(format!("{} zero points for A (per tensor only)", z.len())),
    };
    let zb: Vec<i32> = match zb.map(ints).transpose()? {
        None => vec![0; n],
        Some(z) if z.len() == 1 => vec![z[0] as i32; n],
        Some(z) if z.len() == n => z.iter().map(|&v| v as i32).collect(),
        Some(z) => return Err(format!("{} zero points for B's {n} columns", z.len())),
    };
    let mut dims = a.dims[..ra - 1].to_vec();
    dims.push(n);
    let rows: usize = a.dims[..ra - 1].iter().product();
    super::sized(&dims)?;
    let mut out = vec![0i32; rows * n];
    out.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, o)| {
        for (kk, &x) in av[r * k..(r + 1) * k].iter().enumerate() {
            // Wrapping: a hostile zero point must not panic (real ones are int8).
            let x = i32::from(x).wrapping_sub(za);
            for ((oj, &w), &z) in o.iter_mut().zip(&bv[kk * n..(kk + 1) * n]).zip(&zb) {
                *oj = oj.wrapping_add(x.wrapping_mul(i32::from(w).wrapping_sub(z)));
            }
        }
    });
    Ok(Tensor {
        dims,
        data: TensorData::I32(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i8t(dims: Vec<usize>, v: Vec<i8>) -> Tensor {
        Tensor {
            dims,
            data: TensorData::I8(v),
        }
    }

    #[test]
    fn matmul_integer_subtracts_zero_points() {
        let a = i8t(vec![1, 2], vec![3, -1]);
        let b = i8t(vec![2, 2], vec![1, 2, 3, 4]);
        let za = i8t(vec![], vec![1]);
        let zb = i8t(vec![2], vec![0, 1]);
        let y = matmul_integer(&a, &b, Some(&za), Some(&zb)).unwrap();
        // (3-1, -1-1) x [[1, 1], [3, 3]] = [2 - 6, 2 - 6]
        assert_eq!(y.data, TensorData::I32(vec![-4, -4]));
        let f = dequantize_linear(&y, &Tensor::f32(vec![2], vec![0.5, 2.0]), None, 1).unwrap();
        assert_eq!(f.as_f32().unwrap(), &[-2.0, -8.0]);
    }

    #[test]
    fn mismatched_parameters_are_errors() {
        let x = Tensor::f32(vec![2, 2], vec![0.0; 4]);
        let s = Tensor::f32(vec![2], vec![1.0, 1.0]);
        assert!(quantize_linear(&x, &s, Some(&i8t(vec![1], vec![0])), 1).is_err());
        assert!(quantize_linear(&x, &Tensor::f32(vec![3], vec![1.0; 3]), None, 1).is_err());
    }
}
