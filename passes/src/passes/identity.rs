//! Identity and redundant reshape removal: `Identity` nodes, `Reshape` of a `Reshape` (only the
//! last shape matters, when it is a constant without `0`: a `0` copies the inner result's
//! dimension), and `Transpose` pairs that cancel.

use std::collections::{HashMap, HashSet};

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
        // Drop identities in one sweep and rename their readers once at the end: removing and
        // renaming node by node would be quadratic in the graph size.
        let mut renames: HashMap<String, String> = HashMap::new();
        let outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
        let mut kept = Vec::with_capacity(g.nodes.len());
        for n in std::mem::take(&mut g.nodes) {
            if n.is("Identity") && !outputs.contains(n.outputs[0].as_str()) {
                // Topological order: the input's own rename (a chain of identities) is known.
                let to = renames.get(&n.inputs[0]).unwrap_or(&n.inputs[0]).clone();
                renames.insert(n.outputs[0].clone(), to);
            } else {
                kept.push(n);
            }
        }
        g.nodes = kept;
        if !renames.is_empty() {
            for input in g.nodes.iter_mut().flat_map(|n| n.inputs.iter_mut()) {
                if let Some(to) = renames.get(input.as_str()) {
                    *input = to.clone();
                }
            }
            changed = true;
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
