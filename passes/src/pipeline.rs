//! Named pipelines: ordered lists of passes, run to a fixed point.
//!
//! - `none`: nothing.
//! - `standard` (alias `default`): standard opset-17 ops only, for any ONNX runtime: merge
//!   duplicates, fold constants, drop identities, fuse LayerNorm, fold bias adds into `Gemm`,
//!   drop dead code.
//! - `onnxruntime` (alias `ort`): `standard` plus fusions into onnxruntime's contrib ops
//!   (`FastGelu`, `MultiHeadAttention`). Other runtimes do not know these operators.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::passes::{self, Pass};

/// Rounds over the pass list before giving up on reaching a fixed point.
pub const MAX_ROUNDS: usize = 8;
/// Pipeline names.
pub const NAMES: [&str; 5] = ["none", "standard", "default", "onnxruntime", "ort"];

/// A named list of passes.
pub struct Pipeline {
    /// Name (or the comma-separated pass list it was built from).
    pub name: String,
    /// Passes in order.
    pub passes: Vec<Box<dyn Pass>>,
}

/// What running a pipeline did.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    /// Pipeline name.
    pub pipeline: String,
    /// Nodes before.
    pub nodes_before: usize,
    /// Nodes after.
    pub nodes_after: usize,
    /// Initializer bytes before.
    pub weight_bytes_before: usize,
    /// Initializer bytes after.
    pub weight_bytes_after: usize,
    /// Rounds run.
    pub rounds: usize,
    /// Passes that changed the graph, with how many rounds they did.
    pub changed: Vec<(String, usize)>,
    /// Node count per operator after.
    pub ops_after: std::collections::BTreeMap<String, usize>,
}

const STANDARD: [&str; 6] = ["cse", "fold", "identity", "layernorm", "matmul-add", "dce"];
const ONNXRUNTIME: [&str; 8] = [
    "cse",
    "fold",
    "identity",
    "layernorm",
    "gelu",
    "matmul-add",
    "attention",
    "dce",
];

impl Pipeline {
    /// A named pipeline, or a comma-separated list of pass names.
    pub fn parse(spec: &str) -> Result<Self> {
        let names: Vec<&str> = match spec {
            "none" => vec![],
            "standard" | "default" => STANDARD.to_vec(),
            "onnxruntime" | "ort" => ONNXRUNTIME.to_vec(),
            list => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect(),
        };
        let passes = names
            .iter()
            .map(|n| {
                passes::by_name(n).ok_or_else(|| {
                    Error::UnknownPass(
                        n.to_string(),
                        format!("{}; {}", NAMES.join(", "), passes::ALL.join(", ")),
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok(Pipeline {
            name: spec.to_string(),
            passes,
        })
    }

    /// Runs the passes in order, repeating until a whole round changes nothing.
    pub fn run(&self, g: &mut Graph) -> Result<PipelineReport> {
        let (nodes_before, weight_bytes_before) = (g.nodes.len(), g.weight_bytes());
        let mut changed: Vec<(String, usize)> = Vec::new();
        let mut rounds = 0;
        while rounds < MAX_ROUNDS {
            rounds += 1;
            let mut any = false;
            for p in &self.passes {
                if p.run(g)? {
                    any = true;
                    match changed.iter_mut().find(|(n, _)| n == p.name()) {
                        Some((_, k)) => *k += 1,
                        None => changed.push((p.name().to_string(), 1)),
                    }
                }
            }
            if !any {
                break;
            }
        }
        g.validate()?;
        Ok(PipelineReport {
            pipeline: self.name.clone(),
            nodes_before,
            nodes_after: g.nodes.len(),
            weight_bytes_before,
            weight_bytes_after: g.weight_bytes(),
            rounds,
            changed,
            ops_after: g.op_counts(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        for n in NAMES {
            Pipeline::parse(n).unwrap();
        }
        assert_eq!(Pipeline::parse("dce, fold").unwrap().passes.len(), 2);
        assert!(Pipeline::parse("nope").is_err());
        let names = |p: &str| -> Vec<&str> {
            Pipeline::parse(p)
                .unwrap()
                .passes
                .iter()
                .map(|x| x.name())
                .collect()
        };
        // The portable pipeline never emits contrib ops.
        assert!(!names("standard").contains(&"attention") && !names("standard").contains(&"gelu"));
        assert!(names("ort").contains(&"attention"));
    }
}
