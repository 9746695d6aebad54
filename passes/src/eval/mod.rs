//! A reference evaluator for the operators the encoder graphs use: constant folding runs nodes
//! through it, `aon convert` runs the frozen encoder with it to fit a head, and the pass tests
//! check that rewrites keep outputs equal. Plain f32/i64 loops; matrix products use rayon.
//! One module per operator family: [`elementwise`], [`shape`], [`linalg`], [`reduce`],
//! quantization in [`quant`], onnxruntime's fused attention in [`attention`].

mod attention;
mod elementwise;
mod linalg;
mod quant;
mod reduce;
mod shape;

use std::cell::Cell;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ir::{Attr, DType, Graph, Node, Tensor, TensorData, MS_DOMAIN};
use elementwise::*;
use linalg::*;
use reduce::*;
use shape::*;

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
