//! onnxruntime's contrib op `com.microsoft.MultiHeadAttention`, the subset the `attention` pass
//! emits and a little more: 3-D query, key and value (`[batch, sequence, hidden]`), an optional
//! packed bias `[Hq + Hk + Hv]`, an optional int32 `key_padding_mask` (`[batch, kv_sequence]`,
//! 0 = padding, or `[batch]` key lengths) and an optional additive `attention_bias`
//! (`[batch or 1, heads or 1, sequence, kv_sequence]`). As in onnxruntime's CPU kernel, a
//! padded key gets `mask_filter_value` (default -10000) added to its score, and the scores are
//! `scale * Q K^T` with `scale` defaulting to `1 / sqrt(head_size)`. Packed QKV, past key/value
//! and `unidirectional` are refused.

use rayon::prelude::*;

use super::{binary, f32s, ints, R};
use crate::ir::{Node, Tensor};

/// `mask_filter_value`'s default in onnxruntime.
pub const DEFAULT_MASK_FILTER: f32 = -10_000.0;
/// Inputs from this index on (past key/value, ...) are not supported.
const FIRST_UNSUPPORTED_INPUT: usize = 6;

/// Which keys each batch row may attend to.
enum KeyMask {
    None,
    /// `[batch, kv_sequence]`, nonzero = keep.
    Padding(Vec<i64>),
    /// `[batch]` key lengths.
    Lengths(Vec<i64>),
}

impl KeyMask {
    fn keep(&self, b: usize, j: usize, t: usize) -> bool {
        match self {
            KeyMask::None => true,
            KeyMask::Padding(m) => m[b * t + j] != 0,
            KeyMask::Lengths(l) => (j as i64) < l[b],
        }
    }
}

/// `[batch, sequence, hidden]` of a 3-D input.
fn dims3(t: &Tensor, what: &str) -> std::result::Result<[usize; 3], String> {
    match t.dims[..] {
        [b, s, h] => Ok([b, s, h]),
        _ => Err(format!("{what} must be 3-D, got {:?}", t.dims)),
    }
}

/// Evaluates `MultiHeadAttention` on its inputs (absent optional ones `None`).
pub(super) fn multi_head_attention(n: &Node, args: &[Option<&Tensor>]) -> R {
    let arg = |i: usize| args.get(i).copied().flatten();
    if args
        .iter()
        .skip(FIRST_UNSUPPORTED_INPUT)
        .any(Option::is_some)
    {
        return Err("past key/value inputs are not supported".into());
    }
    if n.int("unidirectional").unwrap_or(0) != 0 {
        return Err("unidirectional attention is not supported".into());
    }
    let (Some(q), Some(k), Some(v)) = (arg(0), arg(1), arg(2)) else {
        return Err("query, key and value are all needed (packed QKV is not supported)".into());
    };
    let [bq, s, hq] = dims3(q, "query")?;
    let [bk, t, hk] = dims3(k, "key")?;
    let [bv, tv, hv] = dims3(v, "value")?;
    let heads = usize::try_from(n.int("num_heads").unwrap_or(0))
        .ok()
        .filter(|&h| h > 0)
        .ok_or("num_heads must be positive")?;
    if bq != bk || bk != bv || t != tv || hq != hk || hq % heads != 0 || hv % heads != 0 {
        return Err(format!(
            "query {:?}, key {:?}, value {:?} do not fit {heads} heads",
            q.dims, k.dims, v.dims
        ));
    }
    let (q, k, v) = add_bias(q, k, v, arg(3))?;
    let (qv, kv, vv) = (f32s(&q)?, f32s(&k)?, f32s(&v)?);
    let mask = key_mask(arg(4), bq, t)?;
    let (attn_bias, bias_dims) = match arg(5) {
        Some(a) => (Some(f32s(a)?), attention_bias_dims(a, bq, heads, s, t)?),
        None => (None, [0; 4]),
    };
    let (dq, dv) = (hq / heads, hv / heads);
    let scale = n.float("scale").unwrap_or(1.0 / (dq as f32).sqrt());
    let filter = n.float("mask_filter_value").unwrap_or(DEFAULT_MASK_FILTER);
    let mut out = vec![0f32; bq * s * hv];
    out.par_chunks_mut(hv.max(1))
        .enumerate()
        .for_each(|(row, o)| {
            let (b, i) = (row / s, row % s);
            let mut p = vec![0f32; t];
            for h in 0..heads {
                let qi = &qv[(b * s + i) * hq + h * dq..][..dq];
                for (j, pj) in p.iter_mut().enumerate() {
                    let kj = &kv[(b * t + j) * hq + h * dq..][..dq];
                    let mut x = scale * qi.iter().zip(kj).map(|(a, c)| a * c).sum::<f32>();
                    if !mask.keep(b, j, t) {
                        x += filter;
                    }
                    if let Some(ab) = attn_bias {
                        let [b0, h0, _, _] = bias_dims;
                        let bb = if b0 == 1 { 0 } else { b };
                        let hh = if h0 == 1 { 0 } else { h };
                        x += ab[((bb * h0 + hh) * s + i) * t + j];
                    }
                    *pj = x;
                }
                let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                p.iter_mut().for_each(|x| *x = (*x - m).exp());
                let sum: f32 = p.iter().sum();
                let oh = &mut o[h * dv..(h + 1) * dv];
                for (j, pj) in p.iter().enumerate() {
                    let vj = &vv[(b * t + j) * hv + h * dv..][..dv];
                    for (ox, &x) in oh.iter_mut().zip(vj) {
                        *ox += pj / sum * x;
                    }
                }
            }
        });
    Ok(Tensor::f32(vec![bq, s, hv], out))
}

/// Q, K and V with their parts of the packed bias added.
fn add_bias(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> std::result::Result<(Tensor, Tensor, Tensor), String> {
    let Some(bias) = bias else {
        return Ok((q.clone(), k.clone(), v.clone()));
    };
    let (hq, hv) = (q.dims[2], v.dims[2]);
    let bv = f32s(bias)?;
    if bv.len() != 2 * hq + hv {
        return Err(format!(
            "bias of {} for hidden sizes {hq}, {hq}, {hv}",
            bv.len()
        ));
    }
    let part = |x: &Tensor, r: std::ops::Range<usize>| {
        let b = Tensor::f32(vec![r.len()], bv[r].to_vec());
        binary(x, &b, |p, c| p + c, |p, c| p + c)
    };
    Ok((
        part(q, 0..hq)?,
        part(k, hq..2 * hq)?,
        part(v, 2 * hq..2 * hq + hv)?,
    ))
}

fn key_mask(m: Option<&Tensor>, batch: usize, t: usize) -> std::result::Result<KeyMask, String> {
    let Some(m) = m else {
        return Ok(KeyMask::None);
    };
    match m.dims[..] {
        [b, tt] if b == batch && tt == t => Ok(KeyMask::Padding(ints(m)?)),
        [b] if b == batch => Ok(KeyMask::Lengths(ints(m)?)),
        _ => Err(format!(
            "key_padding_mask {:?}: [batch, kv_sequence] or [batch] supported",
            m.dims
        )),
    }
}

fn attention_bias_dims(
    a: &Tensor,
    batch: usize,
    heads: usize,
    s: usize,
    t: usize,
) -> std::result::Result<[usize; 4], String> {
    match a.dims[..] {
        [b, h, ss, tt]
            if (b == 1 || b == batch) && (h == 1 || h == heads) && ss == s && tt == t =>
        {
            Ok([b, h, ss, tt])
        }
        _ => Err(format!("attention_bias {:?} does not fit", a.dims)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, TensorData};

    fn mha(heads: i64) -> Node {
        let mut n =
            Node::new("mha", "MultiHeadAttention", &[], &["y"]).with("num_heads", Attr::Int(heads));
        n.domain = crate::ir::MS_DOMAIN.into();
        n
    }

    #[test]
    fn padded_keys_are_ignored() {
        // One batch row, two tokens, one head of size 2; the second key is padding.
        let q = Tensor::f32(vec![1, 2, 2], vec![1., 0., 0., 1.]);
        let k = Tensor::f32(vec![1, 2, 2], vec![1., 0., 5., 5.]);
        let v = Tensor::f32(vec![1, 2, 2], vec![1., 2., 30., 40.]);
        let m = Tensor {
            dims: vec![1, 2],
            data: TensorData::I32(vec![1, 0]),
        };
        let y =
            multi_head_attention(&mha(1), &[Some(&q), Some(&k), Some(&v), None, Some(&m)]).unwrap();
        assert_eq!(y.dims, vec![1, 2, 2]);
        for (a, b) in y.as_f32().unwrap().iter().zip([1., 2., 1., 2.]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        let unmasked = multi_head_attention(&mha(1), &[Some(&q), Some(&k), Some(&v)]).unwrap();
        assert!(unmasked.as_f32().unwrap()[0] > 20.0);
    }

    #[test]
    fn heads_must_divide_hidden() {
        let x = Tensor::f32(vec![1, 1, 3], vec![0.; 3]);
        assert!(multi_head_attention(&mha(2), &[Some(&x), Some(&x), Some(&x)]).is_err());
    }
}
