//! Dead code elimination: drops nodes whose outputs nobody reads and unread initializers.

use std::collections::HashSet;

use super::Pass;
use crate::error::Result;
use crate::ir::Graph;

/// Removes unused nodes and initializers.
pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let mut live: HashSet<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(n.inputs.iter().cloned());
            }
        }
        let before = (g.nodes.len(), g.initializers.len());
        let mut k = keep.into_iter();
        g.nodes.retain(|_| k.next().unwrap_or(true));
        g.initializers.retain(|name, _| live.contains(name));
        Ok(before != (g.nodes.len(), g.initializers.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, Tensor};
    use crate::passes::testutil::graph;

    #[test]
    fn removes_unused_nodes_and_weights() {
        let mut g = graph(&[2]);
        g.initializers.insert("w".into(), Tensor::scalar(2.0));
        g.initializers.insert("unused".into(), Tensor::scalar(3.0));
        g.nodes.push(Node::new("dead", "Mul", &["x", "w"], &["d"]));
        g.nodes.push(Node::new("live", "Neg", &["x"], &["y"]));
        assert!(DeadCode.run(&mut g).unwrap());
        assert_eq!(g.nodes.len(), 1);
        assert!(g.initializers.is_empty());
        assert!(!DeadCode.run(&mut g).unwrap());
    }
}
