//! LayerNorm fusion: the primitive-op spelling exporters write,
//! `Add(Mul(Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub, 2)), eps))), gamma), beta)`,
//! becomes one opset-17 `LayerNormalization(x, gamma, beta)` over the last axis.

use super::{replace_node, Matcher, Pass};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node};

/// Fuses decomposed LayerNorms.
pub struct LayerNormFusion;

impl Pass for LayerNormFusion {
    fn name(&self) -> &'static str {
        "layernorm"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let found: Vec<(usize, Node)> = {
            let m = Matcher::new(g);
            g.nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| matches(g, &m, n).map(|f| (i, f)))
                .collect()
        };
        let changed = !found.is_empty();
        for (i, n) in found {
            replace_node(g, i, n);
        }
        Ok(changed)
    }
}

fn last_axis_mean(n: &Node) -> bool {
    n.ints("axes") == Some(&[-1]) && n.int("keepdims").unwrap_or(1) == 1
}

fn matches(g: &Graph, m: &Matcher<'_>, add: &Node) -> Option<Node> {
    if !add.is("Add") {
        return None;
    }
    let is_vec = |v: &str| {
        g.initializers
            .get(v)
            .filter(|t| t.dims.len() == 1)
            .map(|_| v.to_string())
    };
    let (beta, mul_out) = m.split(add, is_vec)?;
    let mul = m.op(mul_out, "Mul")?;
    let (gamma, div_out) = m.split(mul, is_vec)?;
    let div = m.op(div_out, "Div")?;
    let sub = m.op(&div.inputs[0], "Sub")?;
    let mean = m.op(&sub.inputs[1], "ReduceMean")?;
    let x = &sub.inputs[0];
    if &mean.inputs[0] != x || !last_axis_mean(mean) {
        return None;
    }
    let sqrt = m.op(&div.inputs[1], "Sqrt")?;
    let add_eps = m.op(&sqrt.inputs[0], "Add")?;
    let (eps, var_out) = m.split(add_eps, |v| m.scalar(v))?;
    let var = m.op(var_out, "ReduceMean")?;
    let pow = m.op(&var.inputs[0], "Pow")?;
    if !last_axis_mean(var)
        || pow.inputs[0] != sub.outputs[0]
        || m.scalar(&pow.inputs[1]) != Some(2.0)
    {
        return None;
    }
    let mut n = Node::new(
        format!("{}/fused", add.name),
        "LayerNormalization",
        &[x, &gamma, &beta],
        &[],
    );
    n.attrs.insert("axis".into(), Attr::Int(-1));
    n.attrs.insert("epsilon".into(), Attr::Float(eps));
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use crate::passes::testutil::{graph, max_diff, run};
    use crate::passes::{DeadCode, Pass};

    /// The decomposed LayerNorm over `[rows, 4]`.
    pub fn decomposed() -> Graph {
        let mut g = graph(&[3, 4]);
        let last = |n: Node| {
            n.with("axes", Attr::Ints(vec![-1]))
                .with("keepdims", Attr::Int(1))
        };
        g.initializers.insert("two".into(), Tensor::scalar(2.0));
        g.initializers.insert("eps".into(), Tensor::scalar(1e-5));
        g.initializers
            .insert("g".into(), Tensor::f32(vec![4], vec![1.0, 0.5, 2.0, -1.0]));
        g.initializers
            .insert("b".into(), Tensor::f32(vec![4], vec![0.1, 0.2, 0.3, 0.4]));
        g.nodes
            .push(last(Node::new("mean", "ReduceMean", &["x"], &["m"])));
        g.nodes.push(Node::new("sub", "Sub", &["x", "m"], &["d"]));
        g.nodes.push(Node::new("pow", "Pow", &["d", "two"], &["p"]));
        g.nodes
            .push(last(Node::new("var", "ReduceMean", &["p"], &["v"])));
        g.nodes
            .push(Node::new("add_eps", "Add", &["v", "eps"], &["ve"]));
        g.nodes.push(Node::new("sqrt", "Sqrt", &["ve"], &["s"]));
        g.nodes.push(Node::new("div", "Div", &["d", "s"], &["n"]));
        g.nodes.push(Node::new("mul", "Mul", &["n", "g"], &["gn"]));
        g.nodes.push(Node::new("add", "Add", &["b", "gn"], &["y"]));
        g
    }

    #[test]
    fn fuses_to_one_node_with_same_output() {
        let mut g = decomposed();
        let want = run(&g, &[3, 4]);
        assert!(LayerNormFusion.run(&mut g).unwrap());
        DeadCode.run(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(g.nodes[0].op, "LayerNormalization");
        assert!(max_diff(&run(&g, &[3, 4]), &want) < 1e-5);
        assert!(!LayerNormFusion.run(&mut g).unwrap());
    }

    #[test]
    fn leaves_other_axes_alone() {
        let mut g = decomposed();
        g.nodes[0].attrs.insert("axes".into(), Attr::Ints(vec![0]));
        assert!(!LayerNormFusion.run(&mut g).unwrap());
    }
}
