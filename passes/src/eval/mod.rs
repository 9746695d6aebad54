//! A reference evaluator for the operators the encoder graphs use: constant folding runs nodes
//! through it, `aon convert` runs the frozen encoder with it to fit a head, and the pass tests
//! check that rewrites keep outputs equal. Plain f32/i64 loops; matrix products use rayon.
//! Quantization operators are in [`quant`], onnxruntime's fused attention in [`attention`].

mod attention;
mod quant;

use std::cell::Cell;
use std::collections::HashMap;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ir::{Attr, DType, Graph, Node, Tensor, TensorData, MS_DOMAIN};

/// sqrt(2 / pi), the constant of the tanh GELU approximation.
pub const GELU_TANH_C: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh GELU approximation.
pub const GELU_TANH_K: f32 = 0.044_715;

/// Runs `graph` on `inputs` and returns its outputs in order.
pub fn run(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
    run_observed(graph, inputs, &mut |_, _| {})
}

/// [`run`], showing every node output to `observe` (value name, tensor) as it is computed:
/// calibration collects activation ranges this way.
pub fn run_observed(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    observe: &mut dyn FnMut(&str, &Tensor),
) -> Result<Vec<Tensor>> {
    let mut env: HashMap<&str, Tensor> = HashMap::new();
    let uses = graph.use_counts();
    let mut left: HashMap<&str, usize> = uses.clone();
    for n in &graph.nodes {
        let args: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|i| {
                env.get(i.as_str())
                    .or_else(|| inputs.get(i))
                    .or_else(|| graph.initializers.get(i))
            })
            .collect();
        let outs = eval_node(n, &args)?;
        for (name, t) in n.outputs.iter().zip(outs) {
            observe(name, &t);
            env.insert(name, t);
        }
        for i in &n.inputs {
            if let Some(c) = left.get_mut(i.as_str()) {
                *c -= 1;
                if *c == 0 && !graph.is_output(i) {
                    env.remove(i.as_str());
                }
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|o| {
            env.get(o.name.as_str())
                .or_else(|| inputs.get(&o.name))
                .or_else(|| graph.initializers.get(&o.name))
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("output {} not computed", o.name)))
        })
        .collect()
}

/// Whether [`eval_node`] implements `node`'s operator.
pub fn supports(node: &Node) -> bool {
    const OPS: [&str; 30] = [
        "QuantizeLinear",
        "DequantizeLinear",
        "MatMulInteger",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Tanh",
        "Neg",
        "Cast",
        "Shape",
        "Gather",
        "Slice",
        "Concat",
        "Reshape",
        "Transpose",
        "Unsqueeze",
        "Squeeze",
        "MatMul",
        "Gemm",
        "ReduceMean",
        "Softmax",
        "LayerNormalization",
        "Identity",
        "Constant",
        "Where",
        "Equal",
        "Expand",
    ];
    if node.domain == MS_DOMAIN {
        return matches!(node.op.as_str(), "FastGelu" | "MultiHeadAttention");
    }
    node.domain.is_empty() && OPS.contains(&node.op.as_str())
}

/// Most elements one evaluated tensor may have (1 GiB of f32).
pub const MAX_ELEMENTS: usize = 1 << 28;

thread_local! {
    /// The element limit of the evaluation running on this thread (see [`eval_node_within`]),
    /// and whether it was hit.
    static LIMIT: Cell<(usize, bool)> = const { Cell::new((MAX_ELEMENTS, false)) };
}

/// Element count of a result of `dims`, checked against the running evaluation's limit before
/// anything of that size is allocated.
fn sized(dims: &[usize]) -> std::result::Result<usize, String> {
    let (limit, _) = LIMIT.with(Cell::get);
    let n = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match n {
        Some(n) if n <= limit => Ok(n),
        _ => {
            LIMIT.with(|l| l.set((limit, true)));
            Err(format!(
                "a result of shape {dims:?} exceeds {limit} elements"
            ))
        }
    }
}

/// [`eval_node`], refusing any result of more than `max_elements` elements before allocating
/// it: `Ok(None)` then. Constant folding passes the size it would keep.
pub fn eval_node_within(
    n: &Node,
    args: &[Option<&Tensor>],
    max_elements: usize,
) -> Result<Option<Vec<Tensor>>> {
    let before = LIMIT.with(|l| l.replace((max_elements.min(MAX_ELEMENTS), false)));
    let out = eval_node(n, args);
    let (_, hit) = LIMIT.with(|l| l.replace(before));
    match out {
        Err(_) if hit => Ok(None),
        out => out.map(Some),
    }
}

/// Evaluates one node on its (present) inputs.
pub fn eval_node(n: &Node, args: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let err = |msg: String| Error::Eval {
        node: n.name.clone(),
        op: n.op.clone(),
        msg,
    };
    if !supports(n) {
        return Err(err("operator not supported by the evaluator".into()));
    }
    // An empty input's other dimensions bound the loops over it: they must fit the limit too.
    for t in args.iter().flatten() {
        let nonzero: Vec<usize> = t.dims.iter().copied().filter(|&d| d != 0).collect();
        sized(&nonzero).map_err(err)?;
    }
    dispatch(n, args).map(|t| vec![t]).map_err(err)
}

fn dispatch(n: &Node, args: &[Option<&Tensor>]) -> R {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} missing"))
    };
    match n.op.as_str() {
        // Integer arithmetic wraps (ONNX leaves overflow undefined); it never panics.
        "Add" => binary(arg(0)?, arg(1)?, |a, b| a + b, i64::wrapping_add),
        "Sub" => binary(arg(0)?, arg(1)?, |a, b| a - b, i64::wrapping_sub),
        "Mul" => binary(arg(0)?, arg(1)?, |a, b| a * b, i64::wrapping_mul),
        "Div" => binary(
            arg(0)?,
            arg(1)?,
            |a, b| a / b,
            |a, b| if b == 0 { 0 } else { a.wrapping_div(b) },
        ),
        "Pow" => binary(arg(0)?, arg(1)?, pow, |a, b| {
            u32::try_from(b).map_or(0, |b| a.wrapping_pow(b))
        }),
        "Equal" => equal(arg(0)?, arg(1)?),
        "Sqrt" => unary(arg(0)?, f32::sqrt),
        "Tanh" => unary(arg(0)?, f32::tanh),
        "Neg" => unary(arg(0)?, |x| -x),
        "FastGelu" => fast_gelu(arg(0)?, args.get(1).copied().flatten()),
        "MultiHeadAttention" => attention::multi_head_attention(n, args),
        "MatMulInteger" => quant::matmul_integer(
            arg(0)?,
            arg(1)?,
            args.get(2).copied().flatten(),
            args.get(3).copied().flatten(),
        ),
        "Identity" => Ok(arg(0)?.clone()),
        "QuantizeLinear" => quant::quantize_linear(
            arg(0)?,
            arg(1)?,
            args.get(2).copied().flatten(),
            n.int("axis").unwrap_or(1),
        ),
        "DequantizeLinear" => quant::dequantize_linear(
            arg(0)?,
            arg(1)?,
            args.get(2).copied().flatten(),
            n.int("axis").unwrap_or(1),
        ),
        "Constant" => match n.attrs.get("value") {
            Some(Attr::Tensor(t)) => Ok(t.clone()),
            _ => Err("Constant without a tensor `value`".into()),
        },
        "Cast" => cast(arg(0)?, n.int("to").unwrap_or(1)),
        "Shape" => Ok(Tensor::i64(
            vec![arg(0)?.dims.len()],
            arg(0)?.dims.iter().map(|&d| d as i64).collect(),
        )),
        "Gather" => gather(arg(0)?, arg(1)?, n.int("axis").unwrap_or(0)),
        "Slice" => slice(
            arg(0)?,
            &ints(arg(1)?)?,
            &ints(arg(2)?)?,
            args.get(3).copied().flatten(),
        ),
        "Concat" => concat(args, n.int("axis").unwrap_or(0)),
        "Reshape" => reshape(arg(0)?, &ints(arg(1)?)?),
        "Expand" => expand(arg(0)?, &ints(arg(1)?)?),
        "Transpose" => transpose(arg(0)?, n.ints("perm")),
        "Unsqueeze" => unsqueeze(arg(0)?, &ints(arg(1)?)?),
        "Squeeze" => squeeze(arg(0)?, args.get(1).copied().flatten()),
        "MatMul" => matmul(arg(0)?, arg(1)?),
        "Gemm" => gemm(n, arg(0)?, arg(1)?, args.get(2).copied().flatten()),
        "ReduceMean" => reduce_mean(
            arg(0)?,
            n.ints("axes").unwrap_or(&[]),
            n.int("keepdims").unwrap_or(1) != 0,
        ),
        "Softmax" => softmax(arg(0)?, n.int("axis").unwrap_or(-1)),
        "Where" => where_(arg(0)?, arg(1)?, arg(2)?),
        "LayerNormalization" => layer_norm(
            arg(0)?,
            arg(1)?,
            args.get(2).copied().flatten(),
            n.float("epsilon").unwrap_or(1e-5),
        ),
        _ => Err("unreachable".into()),
    }
}

type R = std::result::Result<Tensor, String>;

fn pow(a: f32, b: f32) -> f32 {
    match b {
        2.0 => a * a,
        3.0 => a * a * a,
        _ => a.powf(b),
    }
}

fn ints(t: &Tensor) -> std::result::Result<Vec<i64>, String> {
    t.to_i64()
        .ok_or_else(|| "expected an integer tensor".to_string())
}

fn f32s(t: &Tensor) -> std::result::Result<&[f32], String> {
    t.as_f32()
        .ok_or_else(|| format!("expected f32, got {:?}", t.dtype()))
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        // Saturating: only an empty tensor's dims can overflow, and its strides are never used.
        s[i] = s[i + 1].saturating_mul(dims[i + 1]);
    }
    s
}

/// NumPy broadcast of two shapes.
fn broadcast_dims(a: &[usize], b: &[usize]) -> std::result::Result<Vec<usize>, String> {
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
fn broadcast_offsets(dims: &[usize], out: &[usize]) -> Vec<usize> {
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

fn map2<T: Copy, U>(
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

fn binary(a: &Tensor, b: &Tensor, ff: impl Fn(f32, f32) -> f32, fi: impl Fn(i64, i64) -> i64) -> R {
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

fn equal(a: &Tensor, b: &Tensor) -> R {
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

fn where_(c: &Tensor, x: &Tensor, y: &Tensor) -> R {
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

fn unary(a: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> R {
    Ok(Tensor::f32(
        a.dims.clone(),
        f32s(a)?.par_iter().map(|&x| f(x)).collect(),
    ))
}

fn fast_gelu(a: &Tensor, bias: Option<&Tensor>) -> R {
    let x = match bias {
        Some(b) => binary(a, b, |p, q| p + q, |p, q| p + q)?,
        None => a.clone(),
    };
    unary(&x, |v| {
        0.5 * v * (1.0 + (GELU_TANH_C * (v + GELU_TANH_K * v * v * v)).tanh())
    })
}

fn cast(a: &Tensor, to: i64) -> R {
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

fn axis_of(axis: i64, rank: usize) -> std::result::Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| format!("axis {axis} out of range for rank {rank}"))
}

fn take_rows<T: Copy>(v: &[T], outer: usize, rows: usize, inner: usize, idx: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &r in idx {
            let start = (o * rows + r) * inner;
            out.extend_from_slice(&v[start..start + inner]);
        }
    }
    out
}

fn gather(data: &Tensor, indices: &Tensor, axis: i64) -> R {
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

fn slice(data: &Tensor, starts: &[i64], ends: &[i64], axes: Option<&Tensor>) -> R {
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

fn concat(args: &[Option<&Tensor>], axis: i64) -> R {
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

fn reshape(a: &Tensor, shape: &[i64]) -> R {
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

fn expand(a: &Tensor, shape: &[i64]) -> R {
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

fn transpose(a: &Tensor, perm: Option<&[i64]>) -> R {
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

fn unsqueeze(a: &Tensor, axes: &[i64]) -> R {
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

fn squeeze(a: &Tensor, axes: Option<&Tensor>) -> R {
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

/// `[.., m, k] x [.., k, n]`: `b` either 2-D or with the same leading dims as `a`.
fn matmul(a: &Tensor, b: &Tensor) -> R {
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

fn gemm(n: &Node, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> R {
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

fn reduce_mean(a: &Tensor, axes: &[i64], keep: bool) -> R {
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

fn softmax(a: &Tensor, axis: i64) -> R {
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

fn layer_norm(x: &Tensor, g: &Tensor, b: Option<&Tensor>, eps: f32) -> R {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(op: &str, args: &[&Tensor]) -> Tensor {
        let n = Node::new("n", op, &[], &["y"]);
        let args: Vec<Option<&Tensor>> = args.iter().map(|t| Some(*t)).collect();
        eval_node(&n, &args).unwrap().remove(0)
    }

    #[test]
    fn broadcasting_add() {
        let a = Tensor::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let b = Tensor::f32(vec![3], vec![10., 20., 30.]);
        assert_eq!(
            eval("Add", &[&a, &b]).as_f32().unwrap(),
            &[10., 21., 32., 13., 24., 35.]
        );
        let c = Tensor::f32(vec![2, 1], vec![1., 2.]);
        assert_eq!(
            eval("Mul", &[&a, &c]).as_f32().unwrap(),
            &[0., 1., 2., 6., 8., 10.]
        );
    }

    #[test]
    fn matmul_and_transpose() {
        let a = Tensor::f32(vec![2, 2], vec![1., 2., 3., 4.]);
        let b = Tensor::f32(vec![2, 2], vec![5., 6., 7., 8.]);
        assert_eq!(
            eval("MatMul", &[&a, &b]).as_f32().unwrap(),
            &[19., 22., 43., 50.]
        );
        assert_eq!(
            eval("Transpose", &[&a]).as_f32().unwrap(),
            &[1., 3., 2., 4.]
        );
    }

    #[test]
    fn reshape_infers_minus_one() {
        let a = Tensor::f32(vec![2, 3], vec![0.; 6]);
        assert_eq!(
            eval("Reshape", &[&a, &Tensor::i64(vec![2], vec![-1, 2])]).dims,
            vec![3, 2]
        );
    }

    #[test]
    fn softmax_and_layer_norm() {
        let a = Tensor::f32(vec![1, 2], vec![0., 0.]);
        assert_eq!(eval("Softmax", &[&a]).as_f32().unwrap(), &[0.5, 0.5]);
        let x = Tensor::f32(vec![1, 2], vec![1., 3.]);
        let g = Tensor::f32(vec![2], vec![1., 1.]);
        let y = eval("LayerNormalization", &[&x, &g]);
        assert!((y.as_f32().unwrap()[0] + 1.0).abs() < 1e-3);
    }
}
