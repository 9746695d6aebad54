//! Common subexpression elimination: two nodes with the same operator, inputs and attributes
//! compute the same value; the later one is dropped. This is what keeps ALBERT's shared layer
//! shared after folding: every unrolled layer's `Transpose(W)` becomes one node, folded once.

use std::collections::HashMap;

use super::Pass;
use crate::error::Result;
use crate::ir::Graph;

/// Merges duplicate nodes.
pub struct CommonSubexpressions;

impl Pass for CommonSubexpressions {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        let mut renames: HashMap<String, String> = HashMap::new();
        let mut drop = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter_mut().enumerate() {
            for inp in &mut n.inputs {
                if let Some(r) = renames.get(inp.as_str()) {
                    *inp = r.clone();
                }
            }
            let key = format!("{}|{}|{:?}|{:?}", n.domain, n.op, n.inputs, n.attrs);
            match seen.get(&key) {
                Some(prev)
                    if n.outputs
                        .iter()
                        .all(|o| !g.outputs.iter().any(|go| &go.name == o)) =>
                {
                    for (o, p) in n.outputs.iter().zip(prev) {
                        renames.insert(o.clone(), p.clone());
                    }
                    drop[i] = true;
                }
                Some(_) => {}
                None => {
                    seen.insert(key, n.outputs.clone());
                }
            }
        }
        let mut d = drop.iter();
        g.nodes.retain(|_| !d.next().copied().unwrap_or(false));
        Ok(!renames.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Node};
    use crate::passes::testutil::{graph, run};

    #[test]
    fn merges_identical_nodes() {
        let mut g = graph(&[2, 3]);
        let t = |name: &str, out: &str| {
            Node::new(name, "Transpose", &["x"], &[out]).with("perm", Attr::Ints(vec![1, 0]))
        };
        g.nodes.push(t("a", "ta"));
        g.nodes.push(t("b", "tb"));
        g.nodes.push(Node::new("add", "Add", &["ta", "tb"], &["y"]));
        let want = run(&g, &[2, 3]);
        assert!(CommonSubexpressions.run(&mut g).unwrap());
        assert_eq!(g.nodes.len(), 2);
        assert_eq!(g.nodes[1].inputs, vec!["ta", "ta"]);
        assert_eq!(run(&g, &[2, 3]), want);
    }
}
