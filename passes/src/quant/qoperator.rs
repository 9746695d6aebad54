//! QOperator form of a quantized linear node: integer operators between explicit
//! `QuantizeLinear` / `DequantizeLinear` at the float boundaries, as onnxruntime's quantizer
//! writes `MatMulInteger` graphs:
//!
//! ```text
//! x_q = QuantizeLinear(x, s_x, z_x)                  (once per activation)
//! acc = MatMulInteger(x_q, W_q, z_x)                 (int32; W_q symmetric, zero point 0)
//! y   = DequantizeLinear(acc, s_x * s_W, axis=-1)    (+ Add(y, bias) for a Gemm with bias)
//! ```
//!
//! `W_q` is the weight's one int8 initializer, read by every unrolled layer; only the small
//! combined scale `s_x * s_W` is per node. The product is exact in int32, so the result equals
//! the QDQ graph's `Dequantize(x_q) x Dequantize(W_q)` up to float rounding.

use super::{QAct, QWeight};
use crate::ir::{Attr, Graph, Node, Tensor};

/// Suffix of the per-node combined scale initializer.
const REQUANT_SUFFIX: &str = "/requant_scale";

/// Whether a linear node has a QOperator form here: `MatMul`, or a `Gemm` without `transB`,
/// `alpha` or `beta`.
pub(super) fn fits(n: &Node) -> bool {
    n.is("MatMul")
        || (n.is("Gemm")
            && n.int("transB").unwrap_or(0) == 0
            && n.float("alpha").unwrap_or(1.0) == 1.0
            && n.float("beta").unwrap_or(1.0) == 1.0)
}

/// The nodes replacing linear node `n` (same output), adding its combined scale to `g`.
pub(super) fn linear(g: &mut Graph, n: &Node, act: &QAct, w: &QWeight) -> Vec<Node> {
    let name = &n.name;
    let out = n.outputs.first().cloned().unwrap_or_default();
    let acc = format!("{name}/acc");
    let scale = format!("{name}{REQUANT_SUFFIX}");
    let combined: Vec<f32> = w.scales.iter().map(|s| s * act.scale).collect();
    let dims = if combined.len() == 1 {
        vec![]
    } else {
        vec![combined.len()]
    };
    g.initializers
        .insert(scale.clone(), Tensor::f32(dims, combined));
    let bias = n.inputs.get(2).filter(|b| !b.is_empty() && n.is("Gemm"));
    let dq_out = match bias {
        Some(_) => format!("{name}/dequantized"),
        None => out.clone(),
    };
    let mut nodes = vec![
        Node::new(
            format!("{name}/matmul_integer"),
            "MatMulInteger",
            &[&act.q, &w.q, &act.zp_name],
            &[&acc],
        ),
        Node::new(
            format!("{name}/dequantize"),
            "DequantizeLinear",
            &[&acc, &scale],
            &[&dq_out],
        )
        .with("axis", Attr::Int(-1)),
    ];
    if let Some(b) = bias {
        nodes.push(Node::new(
            format!("{name}/bias"),
            "Add",
            &[&dq_out, b],
            &[&out],
        ));
    }
    nodes
}
