//! Identity and redundant reshape removal: `Identity` nodes, `Reshape` of a `Reshape` (only the
//! last shape matters, when it is a constant without `0`: a `0` copies the inner result's
//! dimension), and `Transpose` pairs that cancel.

use super::{Matcher, Pass};
use crate::error::Result;
use crate::ir::{Graph, Node};

/// Removes no-op data movement.
pub struct IdentityElimination;

impl Pass for IdentityElimination {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let mut changed = false;
        // Collapse chains first (they read through to the inner node's input).
        let edits: Vec<(usize, String)> = {
            let m = Matcher::new(g);
            g.nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| chain_source(&m, n).map(|src| (i, src)))
                .collect()
        };
        for (i, src) in edits {
            let n = &mut g.nodes[i];
            if n.is("Reshape") {
                n.inputs[0] = src;
            } else {
                n.op = "Identity".into();
                n.inputs = vec![src];
                n.attrs.clear();
            }
            changed = true;
        }
        let mut i = 0;
        while i < g.nodes.len() {
            let n = &g.nodes[i];
            if n.is("Identity") && !g.is_output(&n.outputs[0]) {
                let (from, to) = (n.outputs[0].clone(), n.inputs[0].clone());
                g.nodes.remove(i);
                g.replace_uses(&from, &to);
                changed = true;
            } else {
                i += 1;
            }
        }
        Ok(changed)
    }
}

/// For `Reshape(Reshape(x))` and cancelling `Transpose(Transpose(x))`: `x`.
fn chain_source(m: &Matcher<'_>, n: &Node) -> Option<String> {
    let inner_in = n.inputs.first()?;
    if n.is("Reshape") {
        let shape = m.constant(n.inputs.get(1)?)?.to_i64()?;
        if shape.contains(&0) && n.int("allowzero").unwrap_or(0) == 0 {
            return None;
        }
        return m
            .op(inner_in, "Reshape")
            .map(|inner| inner.inputs[0].clone());
    }
    if n.is("Transpose") {
        let inner = m.op(inner_in, "Transpose")?;
        let (p, q) = (n.ints("perm")?, inner.ints("perm")?);
        let identity = p.len() == q.len()
            && p.iter()
                .enumerate()
                .all(|(i, &pi)| q.get(pi as usize) == Some(&(i as i64)));
        return identity.then(|| inner.inputs[0].clone());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Tensor};
    use crate::passes::testutil::{graph, max_diff, run};
    use crate::passes::{DeadCode, Pass};

    #[test]
    fn removes_identities_and_chains() {
        let mut g = graph(&[2, 3]);
        g.initializers
            .insert("s1".into(), Tensor::i64(vec![1], vec![6]));
        g.initializers
            .insert("s2".into(), Tensor::i64(vec![2], vec![2, 3]));
        let tr = |n: &str, i: &str, o: &str| {
            Node::new(n, "Transpose", &[i], &[o]).with("perm", Attr::Ints(vec![1, 0]))
        };
        g.nodes.push(Node::new("id", "Identity", &["x"], &["a"]));
        g.nodes
            .push(Node::new("r1", "Reshape", &["a", "s1"], &["b"]));
        g.nodes
            .push(Node::new("r2", "Reshape", &["b", "s2"], &["c"]));
        g.nodes.push(tr("t1", "c", "d"));
        g.nodes.push(tr("t2", "d", "e"));
        g.nodes.push(Node::new("neg", "Neg", &["e"], &["y"]));
        let want = run(&g, &[2, 3]);
        assert!(IdentityElimination.run(&mut g).unwrap());
        DeadCode.run(&mut g).unwrap();
        assert_eq!(
            g.op_counts().into_iter().collect::<Vec<_>>(),
            vec![("Neg".to_string(), 1), ("Reshape".to_string(), 1)]
        );
        assert_eq!(max_diff(&run(&g, &[2, 3]), &want), 0.0);
    }

    #[test]
    fn keeps_a_reshape_that_copies_inner_dims() {
        let mut g = graph(&[2, 6]);
        g.initializers
            .insert("s1".into(), Tensor::i64(vec![3], vec![2, 2, 3]));
        g.initializers
            .insert("s2".into(), Tensor::i64(vec![2], vec![0, -1]));
        g.nodes
            .push(Node::new("r1", "Reshape", &["x", "s1"], &["a"]));
        g.nodes
            .push(Node::new("r2", "Reshape", &["a", "s2"], &["y"]));
        assert!(!IdentityElimination.run(&mut g).unwrap());
    }
}
