//! GELU fusion: the tanh approximation (`gelu_new`) spelled out,
//! `Mul(Mul(x, 0.5), Add(Tanh(Mul(Add(x, Mul(Pow(x, 3), 0.044715)), sqrt(2/pi))), 1))`,
//! becomes onnxruntime's contrib op `com.microsoft.FastGelu(x)`. Opset 17 has no GELU, so only
//! the `onnxruntime` pipeline runs this pass.

use super::{replace_node, Matcher, Pass};
use crate::error::Result;
use crate::eval::{GELU_TANH_C, GELU_TANH_K};
use crate::ir::{Graph, Node, MS_DOMAIN};

/// Relative tolerance on the pattern's constants.
const TOL: f32 = 1e-4;

/// Fuses the tanh GELU into `FastGelu`.
pub struct GeluFusion;

impl Pass for GeluFusion {
    fn name(&self) -> &'static str {
        "gelu"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let found: Vec<(usize, Node)> = {
            let m = Matcher::new(g);
            g.nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| matches(&m, n).map(|f| (i, f)))
                .collect()
        };
        if found.is_empty() {
            return Ok(false);
        }
        g.opsets.entry(MS_DOMAIN.to_string()).or_insert(1);
        for (i, n) in found {
            replace_node(g, i, n);
        }
        Ok(true)
    }
}

fn near(v: Option<f32>, want: f32) -> Option<()> {
    v.filter(|v| (v - want).abs() <= TOL * want.abs().max(1.0))
        .map(|_| ())
}

fn matches(m: &Matcher<'_>, root: &Node) -> Option<Node> {
    if !root.is("Mul") {
        return None;
    }
    // One side is Mul(x, 0.5), the other Add(Tanh(..), 1).
    let (half, other) = m.split(root, |v| {
        m.op(v, "Mul")
            .filter(|n| m.split(n, |c| near(m.scalar(c), 0.5)).is_some())
    })?;
    let (_, x) = m.split(half, |c| near(m.scalar(c), 0.5))?;
    let add1 = m.op(other, "Add")?;
    let (tanh, one) = m.split(add1, |v| m.op(v, "Tanh"))?;
    near(m.scalar(one), 1.0)?;
    let mul_c = m.op(&tanh.inputs[0], "Mul")?;
    let (_, inner) = m.split(mul_c, |c| near(m.scalar(c), GELU_TANH_C))?;
    let add_x = m.op(inner, "Add")?;
    let (kc, x2) = m.split(add_x, |v| m.op(v, "Mul"))?;
    let (_, cube) = m.split(kc, |c| near(m.scalar(c), GELU_TANH_K))?;
    let pow = m.op(cube, "Pow")?;
    if x2 != x || pow.inputs[0] != x || near(m.scalar(&pow.inputs[1]), 3.0).is_none() {
        return None;
    }
    let mut n = Node::new(format!("{}/fused", root.name), "FastGelu", &[x], &[]);
    n.domain = MS_DOMAIN.to_string();
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;
    use crate::passes::testutil::{graph, max_diff, run};
    use crate::passes::{DeadCode, Pass};

    fn decomposed() -> Graph {
        let mut g = graph(&[2, 5]);
        for (k, v) in [
            ("three", 3.0),
            ("k", GELU_TANH_K),
            ("c", GELU_TANH_C),
            ("one", 1.0),
            ("half", 0.5),
        ] {
            g.initializers.insert(k.into(), Tensor::scalar(v));
        }
        g.nodes
            .push(Node::new("pow", "Pow", &["x", "three"], &["p"]));
        g.nodes.push(Node::new("mk", "Mul", &["p", "k"], &["pk"]));
        g.nodes.push(Node::new("ax", "Add", &["x", "pk"], &["a"]));
        g.nodes.push(Node::new("mc", "Mul", &["a", "c"], &["ac"]));
        g.nodes.push(Node::new("tanh", "Tanh", &["ac"], &["t"]));
        g.nodes.push(Node::new("a1", "Add", &["t", "one"], &["t1"]));
        g.nodes
            .push(Node::new("mh", "Mul", &["x", "half"], &["hx"]));
        g.nodes.push(Node::new("mul", "Mul", &["hx", "t1"], &["y"]));
        g
    }

    #[test]
    fn fuses_tanh_gelu() {
        let mut g = decomposed();
        let want = run(&g, &[2, 5]);
        assert!(GeluFusion.run(&mut g).unwrap());
        DeadCode.run(&mut g).unwrap();
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(
            (g.nodes[0].domain.as_str(), g.nodes[0].op.as_str()),
            (MS_DOMAIN, "FastGelu")
        );
        assert!(max_diff(&run(&g, &[2, 5]), &want) < 1e-6);
    }

    #[test]
    fn wrong_constant_is_not_gelu() {
        let mut g = decomposed();
        g.initializers.insert("c".into(), Tensor::scalar(0.7));
        assert!(!GeluFusion.run(&mut g).unwrap());
    }
}
