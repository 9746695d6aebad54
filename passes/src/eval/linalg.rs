//! Matrix products: `MatMul` (batched, broadcast) and `Gemm`.

use rayon::prelude::*;

use super::*;

/// `[.., m, k] x [.., k, n]`: `b` either 2-D or with the same leading dims as `a`.
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> R {
    let (av, bv) = (f32s(a)?, f32s(b)?);
    let (ra, rb) = (a.dims.len(), b.dims.len());
    if ra < 2 || rb < 2 {
        return Err("MatMul needs rank >= 2".into());
    }
    let (m, k, n) = (a.dims[ra - 2], a.dims[ra - 1], b.dims[rb - 1]);
    if b.dims[rb - 2] != k || (rb > 2 && b.dims[..rb - 2] != a.dims[..ra - 2]) {
        return Err(format!("MatMul shapes {:?} x {:?}", a.dims, b.dims));
    }
    let mut dims = a.dims[..ra - 1].to_vec();
    dims.push(n);
    sized(&dims)?;
    let batch: usize = a.dims[..ra - 2].iter().product();
    let mut out = vec![0f32; batch * m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(row, o)| {
        let bi = row / m;
        let arow = &av[row * k..(row + 1) * k];
        let boff = if rb > 2 { bi * k * n } else { 0 };
        for (kk, &x) in arow.iter().enumerate() {
            let brow = &bv[boff + kk * n..boff + (kk + 1) * n];
            for (oj, &bj) in o.iter_mut().zip(brow) {
                *oj += x * bj;
            }
        }
    });
    Ok(Tensor::f32(dims, out))
}

pub(super) fn gemm(n: &Node, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> R {
    let a = if n.int("transA").unwrap_or(0) != 0 {
        transpose(a, None)?
    } else {
        a.clone()
    };
    let b = if n.int("transB").unwrap_or(0) != 0 {
        transpose(b, None)?
    } else {
        b.clone()
    };
    let alpha = n.float("alpha").unwrap_or(1.0);
    let beta = n.float("beta").unwrap_or(1.0);
    let mut y = matmul(&a, &b)?;
    if alpha != 1.0 {
        y = binary(&y, &Tensor::scalar(alpha), |p, q| p * q, |p, q| p * q)?;
    }
    match c {
        Some(c) => {
            let c = if beta != 1.0 {
                binary(c, &Tensor::scalar(beta), |p, q| p * q, |p, q| p * q)?
            } else {
                c.clone()
            };
            binary(&y, &c, |p, q| p + q, |p, q| p + q)
        }
        None => Ok(y),
    }
}
