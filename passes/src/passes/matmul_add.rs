//! MatMul + Add folding: `Add(MatMul(A, W), b)` with a constant 2-D `W`, a constant 1-D `b`
//! and a 2-D `A` becomes one `Gemm(A, W, b)` (the bias add happens inside the product).

use super::{replace_node, Matcher, Pass};
use crate::error::Result;
use crate::ir::{Graph, Node};
use crate::shape::ranks;

/// Folds bias adds into `Gemm`.
pub struct MatMulAddFusion;

impl Pass for MatMulAddFusion {
    fn name(&self) -> &'static str {
        "matmul-add"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let ranks = ranks(g);
        let found: Vec<(usize, Node)> = {
            let m = Matcher::new(g);
            let uses = g.use_counts();
            g.nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.is("Add"))
                .filter_map(|(i, add)| {
                    let is_bias = |v: &str| {
                        g.initializers
                            .get(v)
                            .filter(|t| t.dims.len() == 1)
                            .map(|_| v.to_string())
                    };
                    let (bias, mm_out) = m.split(add, is_bias)?;
                    let mm = m.op(mm_out, "MatMul")?;
                    let w = g
                        .initializers
                        .get(&mm.inputs[1])
                        .filter(|t| t.dims.len() == 2)?;
                    let fits = ranks.get(&mm.inputs[0]) == Some(&2)
                        && w.dims[1] == g.initializers[&bias].dims[0];
                    (fits && uses.get(mm_out) == Some(&1)).then(|| {
                        (
                            i,
                            Node::new(
                                format!("{}/gemm", mm.name),
                                "Gemm",
                                &[&mm.inputs[0], &mm.inputs[1], &bias],
                                &[],
                            ),
                        )
                    })
                })
                .collect()
        };
        let changed = !found.is_empty();
        for (i, n) in found {
            replace_node(g, i, n);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use crate::passes::testutil::{graph, max_diff, run};
    use crate::passes::{DeadCode, Pass};

    fn linear(rows: usize) -> Graph {
        let mut g = graph(&[rows, 3]);
        g.outputs[0].dims.truncate(1);
        g.initializers.insert(
            "w".into(),
            Tensor::f32(vec![3, 2], vec![1., 2., 3., 4., 5., 6.]),
        );
        g.initializers
            .insert("b".into(), Tensor::f32(vec![2], vec![0.5, -0.5]));
        g.nodes.push(Node::new("mm", "MatMul", &["x", "w"], &["m"]));
        g.nodes.push(Node::new("add", "Add", &["m", "b"], &["y"]));
        g
    }

    #[test]
    fn folds_into_gemm() {
        let mut g = linear(4);
        let want = run(&g, &[4, 3]);
        assert!(MatMulAddFusion.run(&mut g).unwrap());
        DeadCode.run(&mut g).unwrap();
        assert_eq!(g.op_counts().keys().collect::<Vec<_>>(), vec!["Gemm"]);
        assert!(max_diff(&run(&g, &[4, 3]), &want) < 1e-6);
    }

    #[test]
    fn needs_two_dimensional_input() {
        let mut g = linear(4);
        g.inputs[0].dims.insert(0, crate::ir::Dim::Fixed(1));
        assert!(!MatMulAddFusion.run(&mut g).unwrap());
    }
}
