//! Constant folding: a node whose inputs are all initializers is evaluated once and replaced by
//! an initializer holding its output.

use super::Pass;
use crate::error::Result;
use crate::eval;
use crate::ir::{Graph, Node, Tensor};

/// Results bigger than this many bytes beyond their inputs stay computed at run time.
pub const DEFAULT_MAX_GROWTH: usize = 1 << 16;

/// Evaluates constant subgraphs.
pub struct ConstantFolding {
    /// Skip a node whose output exceeds its inputs' bytes by more than this.
    pub max_growth: usize,
}

impl Default for ConstantFolding {
    fn default() -> Self {
        ConstantFolding {
            max_growth: DEFAULT_MAX_GROWTH,
        }
    }
}

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        // One walk in topological order: a folded node's output is an initializer by the time
        // its readers are looked at, so whole constant chains fold in one run. Kept nodes are
        // moved to a new list (removing them one by one would be quadratic).
        let nodes = std::mem::take(&mut g.nodes);
        let before = nodes.len();
        let mut kept = Vec::with_capacity(before);
        let mut nodes = nodes.into_iter();
        while let Some(n) = nodes.next() {
            match self.fold(g, &n) {
                Ok(Some(out)) => {
                    g.initializers.insert(n.outputs[0].clone(), out);
                }
                Ok(None) => kept.push(n),
                Err(e) => {
                    kept.push(n);
                    kept.extend(nodes);
                    g.nodes = kept;
                    return Err(e);
                }
            }
        }
        let changed = kept.len() != before;
        g.nodes = kept;
        Ok(changed)
    }
}

impl ConstantFolding {
    /// The value of `n` if it folds: an evaluable node of constants, not a graph output, whose
    /// result does not grow past the limit.
    fn fold(&self, g: &Graph, n: &Node) -> Result<Option<Tensor>> {
        let foldable = eval::supports(n)
            && n.outputs.len() == 1
            && !g.is_output(&n.outputs[0])
            && n.inputs
                .iter()
                .all(|v| v.is_empty() || g.initializers.contains_key(v));
        if !foldable {
            return Ok(None);
        }
        let args: Vec<Option<&Tensor>> = n.inputs.iter().map(|v| g.initializers.get(v)).collect();
        let in_bytes: usize = args.iter().flatten().map(|t| t.nbytes()).sum();
        // Every kept result has at most one element per byte it may take.
        let limit = in_bytes.saturating_add(self.max_growth);
        let Some(mut outs) = eval::eval_node_within(n, &args, limit)? else {
            return Ok(None);
        };
        let out = outs.remove(0);
        Ok((out.nbytes() <= in_bytes + self.max_growth).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Node};
    use crate::passes::testutil::{graph, run};

    #[test]
    fn folds_constant_chain() {
        let mut g = graph(&[2, 2]);
        g.initializers
            .insert("w".into(), Tensor::f32(vec![2, 2], vec![1., 2., 3., 4.]));
        g.initializers.insert("four".into(), Tensor::scalar(4.0));
        g.nodes.push(
            Node::new("t", "Transpose", &["w"], &["wt"]).with("perm", Attr::Ints(vec![1, 0])),
        );
        g.nodes.push(Node::new("s", "Sqrt", &["four"], &["two"]));
        g.nodes.push(Node::new("d", "Div", &["wt", "two"], &["wd"]));
        g.nodes
            .push(Node::new("mm", "MatMul", &["x", "wd"], &["y"]));
        let want = run(&g, &[2, 2]);
        assert!(ConstantFolding::default().run(&mut g).unwrap());
        assert_eq!(g.nodes.len(), 1);
        assert_eq!(
            g.initializers["wd"].as_f32().unwrap(),
            &[0.5, 1.5, 1.0, 2.0]
        );
        assert_eq!(run(&g, &[2, 2]), want);
    }
}
