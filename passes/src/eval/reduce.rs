//! Reductions over an axis: `ReduceMean`, `Softmax`, `LayerNormalization`.

use rayon::prelude::*;

use super::*;

pub(super) fn reduce_mean(a: &Tensor, axes: &[i64], keep: bool) -> R {
    let rank = a.dims.len();
    let axes: Vec<usize> = axes
        .iter()
        .map(|&x| axis_of(x, rank))
        .collect::<std::result::Result<_, _>>()?;
    if rank == 0 || axes != [rank - 1] {
        return Err("ReduceMean: only the last axis is supported".into());
    }
    let d = a.dims[rank - 1];
    if d == 0 {
        return Err("ReduceMean over an empty axis".into());
    }
    let v: Vec<f32> = f32s(a)?
        .chunks(d)
        .map(|c| c.iter().sum::<f32>() / d as f32)
        .collect();
    let mut dims = a.dims.clone();
    if keep {
        dims[rank - 1] = 1;
    } else {
        dims.pop();
    }
    Ok(Tensor::f32(dims, v))
}

pub(super) fn softmax(a: &Tensor, axis: i64) -> R {
    if axis_of(axis, a.dims.len())? != a.dims.len() - 1 {
        return Err("Softmax: only the last axis is supported".into());
    }
    let d = *a.dims.last().unwrap_or(&1);
    let mut v = f32s(a)?.to_vec();
    v.par_chunks_mut(d.max(1)).for_each(|c| {
        let mx = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for x in c.iter_mut() {
            *x = (*x - mx).exp();
            s += *x;
        }
        c.iter_mut().for_each(|x| *x /= s);
    });
    Ok(Tensor::f32(a.dims.clone(), v))
}

pub(super) fn layer_norm(x: &Tensor, g: &Tensor, b: Option<&Tensor>, eps: f32) -> R {
    let d = *x.dims.last().unwrap_or(&1);
    let (gv, bv) = (f32s(g)?, b.map(f32s).transpose()?);
    if gv.len() != d || bv.is_some_and(|b| b.len() != d) {
        return Err(format!(
            "LayerNormalization: scale/bias of {:?} for a last axis of {d}",
            g.dims
        ));
    }
    let mut v = f32s(x)?.to_vec();
    v.par_chunks_mut(d.max(1)).for_each(|c| {
        let mean = c.iter().sum::<f32>() / d as f32;
        let var = c.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, x) in c.iter_mut().enumerate() {
            *x = (*x - mean) * inv * gv[j] + bv.map_or(0.0, |b| b[j]);
        }
    });
    Ok(Tensor::f32(x.dims.clone(), v))
}
