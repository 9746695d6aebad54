//! Rank inference: how many dimensions each value has, where the operators say so. Passes
//! that are only valid for some ranks (`MatMul` + `Add` -> `Gemm` needs 2-D) ask here.

use std::collections::HashMap;

use crate::ir::Graph;

/// Rank of every value whose rank follows from the graph inputs and initializers.
pub fn ranks(graph: &Graph) -> HashMap<String, usize> {
    let mut r: HashMap<String, usize> = HashMap::new();
    for i in &graph.inputs {
        r.insert(i.name.clone(), i.dims.len());
    }
    for (name, t) in &graph.initializers {
        r.insert(name.clone(), t.dims.len());
    }
    for n in &graph.nodes {
        let ins: Vec<Option<usize>> = n.inputs.iter().map(|i| r.get(i).copied()).collect();
        let first = ins.first().copied().flatten();
        let all = || {
            ins.iter()
                .copied()
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().max().unwrap_or(0))
        };
        let const_len = |i: usize| {
            n.inputs
                .get(i)
                .and_then(|v| graph.initializers.get(v))
                .map(|t| t.len())
        };
        let rank = match n.op.as_str() {
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "MatMul" => all(),
            "Gemm" => Some(2),
            "Shape" => Some(1),
            "Reshape" => const_len(1),
            "Gather" => first
                .zip(ins.get(1).copied().flatten())
                .map(|(a, b)| a + b - 1),
            "Unsqueeze" => first.zip(const_len(1)).map(|(a, b)| a + b),
            "ReduceMean" if n.int("keepdims") == Some(0) => first.map(|a| a.saturating_sub(1)),
            "Squeeze" => None,
            _ => first,
        };
        if let Some(k) = rank {
            for o in &n.outputs {
                r.insert(o.clone(), k);
            }
        }
    }
    r
}
