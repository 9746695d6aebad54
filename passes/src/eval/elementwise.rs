//! Element-wise operators with NumPy broadcasting (arithmetic, comparison, `Where`, unary
//! functions, `FastGelu`, `Cast`).

use rayon::prelude::*;

use super::*;

pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        // Saturating: only an empty tensor's dims can overflow, and its strides are never used.
        s[i] = s[i + 1].saturating_mul(dims[i + 1]);
    }
    s
}

/// NumPy broadcast of two shapes.
pub(super) fn broadcast_dims(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// For each output element, the offset into an input of `dims` broadcast to `out`.
pub(super) fn broadcast_offsets(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let total: usize = out.iter().product();
    if dims == out {
        return (0..total).collect();
    }
    let pad = out.len() - dims.len();
    let st = strides(dims);
    let ost = strides(out);
    (0..total)
        .map(|flat| {
            let mut off = 0;
            for (ax, &os) in ost.iter().enumerate() {
                let idx = (flat / os) % out[ax];
                if ax >= pad && dims[ax - pad] != 1 {
                    off += idx * st[ax - pad];
                }
            }
            off
        })
        .collect()
}

pub(super) fn map2<T: Copy, U>(
    a: &[T],
    ad: &[usize],
    b: &[T],
    bd: &[usize],
    out: &[usize],
    f: impl Fn(T, T) -> U,
) -> Vec<U> {
    if ad == bd {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    if b.len() == 1 && ad == out {
        return a.iter().map(|&x| f(x, b[0])).collect();
    }
    let (oa, ob) = (broadcast_offsets(ad, out), broadcast_offsets(bd, out));
    oa.iter().zip(&ob).map(|(&i, &j)| f(a[i], b[j])).collect()
}

pub(super) fn binary(
    a: &Tensor,
    b: &Tensor,
    ff: impl Fn(f32, f32) -> f32,
    fi: impl Fn(i64, i64) -> i64,
) -> R {
    let out = broadcast_dims(&a.dims, &b.dims)?;
    sized(&out)?;
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            TensorData::F32(map2(x, &a.dims, y, &b.dims, &out, ff))
        }
        _ => TensorData::I64(map2(&ints(a)?, &a.dims, &ints(b)?, &b.dims, &out, fi)),
    };
    Ok(Tensor { dims: out, data })
}

pub(super) fn equal(a: &Tensor, b: &Tensor) -> R {
    let out = broadcast_dims(&a.dims, &b.dims)?;
    sized(&out)?;
    let data = match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            map2(x, &a.dims, y, &b.dims, &out, |p, q| p == q)
        }
        _ => map2(&ints(a)?, &a.dims, &ints(b)?, &b.dims, &out, |p, q| p == q),
    };
    Ok(Tensor {
        dims: out,
        data: TensorData::Bool(data),
    })
}

pub(super) fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> R {
    let cond: Vec<bool> = ints(c)?.iter().map(|&v| v != 0).collect();
    let (xv, yv) = (f32s(x)?, f32s(y)?);
    let out = broadcast_dims(&broadcast_dims(&c.dims, &x.dims)?, &y.dims)?;
    sized(&out)?;
    let (oc, ox, oy) = (
        broadcast_offsets(&c.dims, &out),
        broadcast_offsets(&x.dims, &out),
        broadcast_offsets(&y.dims, &out),
    );
    let v = (0..oc.len())
        .map(|i| if cond[oc[i]] { xv[ox[i]] } else { yv[oy[i]] })
        .collect();
    Ok(Tensor::f32(out, v))
}

pub(super) fn unary(a: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> R {
    Ok(Tensor::f32(
        a.dims.clone(),
        f32s(a)?.par_iter().map(|&x| f(x)).collect(),
    ))
}

pub(super) fn fast_gelu(a: &Tensor, bias: Option<&Tensor>) -> R {
    let x = match bias {
        Some(b) => binary(a, b, |p, q| p + q, |p, q| p + q)?,
        None => a.clone(),
    };
    unary(&x, |v| {
        0.5 * v * (1.0 + (GELU_TANH_C * (v + GELU_TANH_K * v * v * v)).tanh())
    })
}

pub(super) fn cast(a: &Tensor, to: i64) -> R {
    let dims = a.dims.clone();
    Ok(match (to, &a.data) {
        (1, TensorData::F32(v)) => Tensor::f32(dims, v.clone()),
        (1, _) => Tensor::f32(dims, ints(a)?.iter().map(|&x| x as f32).collect()),
        (7, TensorData::F32(v)) => Tensor::i64(dims, v.iter().map(|&x| x as i64).collect()),
        (7, _) => Tensor::i64(dims, ints(a)?),
        (6, _) => Tensor {
            dims,
            data: TensorData::I32(
                ints(a)
                    .or_else(|_| f32s(a).map(|v| v.iter().map(|&x| x as i64).collect()))?
                    .iter()
                    .map(|&x| x as i32)
                    .collect(),
            ),
        },
        (9, _) => Tensor {
            dims,
            data: TensorData::Bool(
                ints(a)
                    .or_else(|_| f32s(a).map(|v| v.iter().map(|&x| x as i64).collect()))?
                    .iter()
                    .map(|&x| x != 0)
                    .collect(),
            ),
        },
        _ => return Err(format!("Cast to type {to} not supported")),
    })
}
