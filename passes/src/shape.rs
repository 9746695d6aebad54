//! Rank inference: how many dimensions each value has, where the operators say so. Passes
//! that are only valid for some ranks (`MatMul` + `Add` -> `Gemm` needs 2-D) ask here.
//!
//! The rank of a `Reshape` is the length of its shape input, so the lengths of 1-D integer
//! values are tracked too: an initializer's, `Shape(x)` (the rank of `x`) and `Concat`s of
//! those. That is how the pooler's `Reshape(h, Concat(Shape(input_ids), [hidden]))` is known
//! to be 3-D, its `Gather` of the `[CLS]` row 2-D, and the pooler and classifier become `Gemm`s.

use std::collections::HashMap;

use crate::ir::{Graph, Node};

/// Rank of every value whose rank follows from the graph inputs and initializers.
pub fn ranks(graph: &Graph) -> HashMap<String, usize> {
    let mut r: HashMap<String, usize> = HashMap::new();
    // Lengths of 1-D integer values (shape tensors).
    let mut len: HashMap<String, usize> = HashMap::new();
    for i in &graph.inputs {
        r.insert(i.name.clone(), i.dims.len());
    }
    for (name, t) in &graph.initializers {
        r.insert(name.clone(), t.dims.len());
        if let [n] = t.dims[..] {
            len.insert(name.clone(), n);
        }
    }
    for n in &graph.nodes {
        let rank = node_rank(n, &r, &len);
        if let Some(l) = shape_len(n, &r, &len) {
            for o in &n.outputs {
                len.insert(o.clone(), l);
            }
        }
        if let Some(k) = rank {
            for o in &n.outputs {
                r.insert(o.clone(), k);
            }
        }
    }
    r
}

/// Length of `n`'s output if it is a 1-D value whose length is known.
fn shape_len(n: &Node, r: &HashMap<String, usize>, len: &HashMap<String, usize>) -> Option<usize> {
    match n.op.as_str() {
        "Shape" if n.attrs.is_empty() => r.get(n.inputs.first()?).copied(),
        "Concat" => n
            .inputs
            .iter()
            .map(|i| len.get(i).copied())
            .sum::<Option<usize>>(),
        "Cast" | "Identity" => len.get(n.inputs.first()?).copied(),
        _ => None,
    }
}

fn node_rank(n: &Node, r: &HashMap<String, usize>, len: &HashMap<String, usize>) -> Option<usize> {
    let ins: Vec<Option<usize>> = n.inputs.iter().map(|i| r.get(i).copied()).collect();
    let first = ins.first().copied().flatten();
    let all = || {
        ins.iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().max().unwrap_or(0))
    };
    let input_len = |i: usize| n.inputs.get(i).and_then(|v| len.get(v)).copied();
    match n.op.as_str() {
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Where" | "Equal" | "MatMul" => all(),
        "Gemm" => Some(2),
        "Shape" => Some(1),
        "Reshape" => input_len(1),
        "Gather" => first
            .zip(ins.get(1).copied().flatten())
            .and_then(|(a, b)| (a + b).checked_sub(1)),
        "Unsqueeze" => first.zip(input_len(1)).map(|(a, b)| a + b),
        "ReduceMean" if n.int("keepdims") == Some(0) => first.map(|a| a.saturating_sub(1)),
        "Squeeze" => None,
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, DType, Dim, Tensor, ValueInfo};

    #[test]
    fn reshape_to_a_concatenated_shape_has_its_length() {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "ids".into(),
            dtype: DType::I64,
            dims: vec![Dim::Param("b".into()), Dim::Param("s".into())],
        });
        g.initializers
            .insert("h".into(), Tensor::i64(vec![1], vec![4]));
        g.initializers
            .insert("zero".into(), Tensor::i64(vec![], vec![0]));
        g.nodes.push(Node::new("s", "Shape", &["ids"], &["s"]));
        g.nodes
            .push(Node::new("c", "Concat", &["s", "h"], &["c"]).with("axis", Attr::Int(0)));
        g.nodes.push(Node::new("r", "Reshape", &["x", "c"], &["r"]));
        g.nodes
            .push(Node::new("g", "Gather", &["r", "zero"], &["cls"]).with("axis", Attr::Int(1)));
        let r = ranks(&g);
        assert_eq!((r["c"], r["r"], r["cls"]), (1, 3, 2));
    }
}
