//! Operators that move or select elements without arithmetic: `Gather`, `Slice`, `Concat`,
//! `Reshape`, `Expand`, `Transpose`, `Unsqueeze`, `Squeeze`.

use rayon::prelude::*;

use super::*;

pub(super) fn axis_of(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} out of range for rank {rank}"))
}

pub(super) fn take_rows<T: Copy>(
    v: &[T],
    outer: usize,
    rows: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &r in idx {
            let start = (o * rows + r) * inner;
            out.extend_from_slice(&v[start..start + inner]);
        }
    }
    out
}

pub(super) fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> R {
    let ax = axis_of(axis, data.dims.len())?;
    let rows = data.dims[ax];
    let idx: Vec<usize> = ints(indices)?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + rows as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < rows)
                .ok_or_else(|| format!("index {i} out of range 0..{rows}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let outer: usize = data.dims[..ax].iter().product();
    let inner: usize = data.dims[ax + 1..].iter().product();
    let mut dims = data.dims[..ax].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&data.dims[ax + 1..]);
    sized(&dims)?;
    let data = match &data.data {
        TensorData::F32(v) => TensorData::F32(take_rows(v, outer, rows, inner, &idx)),
        _ => TensorData::I64(take_rows(&ints(data)?, outer, rows, inner, &idx)),
    };
    Ok(Tensor { dims, data })
}

pub(super) fn slice(data: &Tensor, starts: &[i64], ends: &[i64], axes: Option<&Tensor>) -> R {
    let axes = match axes {
        Some(a) => ints(a)?,
        None => (0..starts.len() as i64).collect(),
    };
    let mut t = data.clone();
    for ((&s, &e), &a) in starts.iter().zip(ends).zip(&axes) {
        let ax = axis_of(a, t.dims.len())?;
        let n = t.dims[ax] as i64;
        let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
        let (s, e) = (clamp(s) as usize, clamp(e).max(clamp(s)) as usize);
        let idx: Vec<i64> = (s as i64..e as i64).collect();
        t = gather(&t, &Tensor::i64(vec![idx.len()], idx), ax as i64)?;
    }
    Ok(t)
}

pub(super) fn concat(args: &[Option<&Tensor>], axis: i64) -> R {
    let ts: Vec<&Tensor> = args.iter().flatten().copied().collect();
    let first = ts.first().ok_or("Concat of nothing")?;
    let ax = axis_of(axis, first.dims.len())?;
    let fits = |t: &&Tensor| {
        t.dims.len() == first.dims.len()
            && (t.dtype() == DType::F32) == (first.dtype() == DType::F32)
            && t.dims
                .iter()
                .zip(&first.dims)
                .enumerate()
                .all(|(i, (d, f))| i == ax || d == f)
    };
    if let Some(t) = ts.iter().find(|t| !fits(t)) {
        return Err(format!(
            "Concat of {:?} and {:?} along axis {ax}",
            first.dims, t.dims
        ));
    }
    let outer: usize = first.dims[..ax].iter().product();
    let mut dims = first.dims.clone();
    dims[ax] = ts
        .iter()
        .try_fold(0usize, |acc, t| acc.checked_add(t.dims[ax]))
        .ok_or("Concat result too large")?;
    sized(&dims)?;
    let chunk = |t: &Tensor| t.dims[ax..].iter().product::<usize>();
    if first.dtype() == DType::F32 {
        let mut out = Vec::new();
        for o in 0..outer {
            for t in &ts {
                let c = chunk(t);
                out.extend_from_slice(&f32s(t)?[o * c..(o + 1) * c]);
            }
        }
        return Ok(Tensor::f32(dims, out));
    }
    let mut out = Vec::new();
    for o in 0..outer {
        for t in &ts {
            let c = chunk(t);
            out.extend_from_slice(&ints(t)?[o * c..(o + 1) * c]);
        }
    }
    Ok(Tensor::i64(dims, out))
}

pub(super) fn reshape(a: &Tensor, shape: &[i64]) -> R {
    let mut dims: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            if d == 0 {
                a.dims.get(i).copied().unwrap_or(0)
            } else {
                d.max(0) as usize
            }
        })
        .collect();
    if shape.iter().any(|&d| d < -1) || shape.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(format!("Reshape to {shape:?}"));
    }
    let known = dims
        .iter()
        .zip(shape)
        .filter(|(_, &s)| s != -1)
        .try_fold(1usize, |acc, (d, _)| acc.checked_mul(*d));
    if let Some(p) = shape.iter().position(|&s| s == -1) {
        dims[p] = known.and_then(|k| a.len().checked_div(k)).unwrap_or(0);
    }
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if total != Some(a.len()) {
        return Err(format!("cannot reshape {:?} to {shape:?}", a.dims));
    }
    Ok(Tensor {
        dims,
        data: a.data.clone(),
    })
}

pub(super) fn expand(a: &Tensor, shape: &[i64]) -> R {
    let target: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    let out = broadcast_dims(&a.dims, &target)?;
    sized(&out)?;
    let off = broadcast_offsets(&a.dims, &out);
    Ok(match &a.data {
        TensorData::F32(v) => Tensor::f32(out, off.iter().map(|&i| v[i]).collect()),
        _ => Tensor::i64(
            out,
            off.iter()
                .map(|&i| ints(a).map(|v| v[i]).unwrap_or(0))
                .collect(),
        ),
    })
}

pub(super) fn transpose(a: &Tensor, perm: Option<&[i64]>) -> R {
    let rank = a.dims.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p
            .iter()
            .map(|&x| usize::try_from(x).unwrap_or(usize::MAX))
            .collect(),
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    let dims: Vec<usize> = perm.iter().map(|&p| a.dims[p]).collect();
    sized(&dims)?;
    let ist = strides(&a.dims);
    let ost = strides(&dims);
    let od = dims.clone();
    let map = |flat: usize| {
        perm.iter()
            .enumerate()
            .map(|(ax, &p)| ((flat / ost[ax]) % od[ax]) * ist[p])
            .sum::<usize>()
    };
    let total = a.len();
    Ok(match &a.data {
        TensorData::F32(v) => Tensor::f32(
            dims,
            (0..total).into_par_iter().map(|i| v[map(i)]).collect(),
        ),
        _ => {
            let v = ints(a)?;
            Tensor::i64(dims, (0..total).map(|i| v[map(i)]).collect())
        }
    })
}

pub(super) fn unsqueeze(a: &Tensor, axes: &[i64]) -> R {
    let rank = a.dims.len() + axes.len();
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&x| axis_of(x, rank))
        .collect::<std::result::Result<_, _>>()?;
    axes.sort_unstable();
    let mut dims = a.dims.clone();
    for ax in axes {
        dims.insert(ax, 1);
    }
    Ok(Tensor {
        dims,
        data: a.data.clone(),
    })
}

pub(super) fn squeeze(a: &Tensor, axes: Option<&Tensor>) -> R {
    let axes: Vec<usize> = match axes {
        Some(t) => ints(t)?
            .iter()
            .map(|&x| axis_of(x, a.dims.len()))
            .collect::<std::result::Result<_, _>>()?,
        None => (0..a.dims.len()).filter(|&i| a.dims[i] == 1).collect(),
    };
    if let Some(&ax) = axes.iter().find(|&&ax| a.dims[ax] != 1) {
        return Err(format!("Squeeze of axis {ax} of {:?}", a.dims));
    }
    let dims = a
        .dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    Ok(Tensor {
        dims,
        data: a.data.clone(),
    })
}
