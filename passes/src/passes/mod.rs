//! Graph passes: each a small type with a name whose `run` rewrites a [`Graph`] in place and
//! says whether it changed anything. [`crate::pipeline`] runs named lists of them.

mod attention;
mod cse;
mod dce;
mod fold;
mod gelu;
mod identity;
mod layernorm;
mod matmul_add;

use std::collections::HashMap;

pub use attention::AttentionFusion;
pub use cse::CommonSubexpressions;
pub use dce::DeadCode;
pub use fold::ConstantFolding;
pub use gelu::GeluFusion;
pub use identity::IdentityElimination;
pub use layernorm::LayerNormFusion;
pub use matmul_add::MatMulAddFusion;

use crate::error::Result;
use crate::ir::{Graph, Node, Tensor};

/// One graph rewrite.
pub trait Pass {
    /// Short name, as `--passes` takes it.
    fn name(&self) -> &'static str;
    /// Rewrites `graph`; returns whether it changed.
    fn run(&self, graph: &mut Graph) -> Result<bool>;
}

/// Names of every pass, in a sensible order.
pub const ALL: [&str; 8] = [
    "cse",
    "fold",
    "identity",
    "layernorm",
    "gelu",
    "matmul-add",
    "attention",
    "dce",
];

/// The pass called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn Pass>> {
    Some(match name {
        "cse" => Box::new(CommonSubexpressions),
        "fold" => Box::new(ConstantFolding::default()),
        "identity" => Box::new(IdentityElimination),
        "layernorm" => Box::new(LayerNormFusion),
        "gelu" => Box::new(GeluFusion),
        "matmul-add" => Box::new(MatMulAddFusion),
        "attention" => Box::new(AttentionFusion),
        "dce" => Box::new(DeadCode),
        _ => return None,
    })
}

/// Pattern-matching view of a graph: who produces a value and how often it is read.
pub(crate) struct Matcher<'g> {
    g: &'g Graph,
    producers: HashMap<&'g str, usize>,
}

impl<'g> Matcher<'g> {
    pub(crate) fn new(g: &'g Graph) -> Self {
        Matcher {
            g,
            producers: g.producers(),
        }
    }

    /// The standard-domain node producing `value`, if its operator is `op`.
    pub(crate) fn op(&self, value: &str, op: &str) -> Option<&'g Node> {
        let n = &self.g.nodes[*self.producers.get(value)?];
        n.is(op).then_some(n)
    }

    /// The initializer `value`.
    pub(crate) fn constant(&self, value: &str) -> Option<&'g Tensor> {
        self.g.initializers.get(value)
    }

    /// The value of a one-element f32 initializer.
    pub(crate) fn scalar(&self, value: &str) -> Option<f32> {
        self.g.initializers.get(value)?.scalar_f32()
    }

    /// Of a commutative binary node, the input other than the one `pick` accepts, with it.
    pub(crate) fn split<T>(
        &self,
        n: &'g Node,
        pick: impl Fn(&'g str) -> Option<T>,
    ) -> Option<(T, &'g str)> {
        let (a, b) = (n.inputs.first()?.as_str(), n.inputs.get(1)?.as_str());
        pick(a).map(|t| (t, b)).or_else(|| pick(b).map(|t| (t, a)))
    }
}

/// Replaces node `idx` by `new` (same outputs), leaving orphans for dead-code elimination.
pub(crate) fn replace_node(g: &mut Graph, idx: usize, mut new: Node) {
    new.outputs = g.nodes[idx].outputs.clone();
    g.nodes[idx] = new;
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::collections::HashMap;

    use crate::ir::{DType, Dim, Graph, Tensor, ValueInfo};

    /// A graph with one f32 input `x` of `dims` and output `y`.
    pub fn graph(dims: &[usize]) -> Graph {
        let mut g = Graph::default();
        g.opsets.insert(String::new(), 17);
        let d = dims.iter().map(|&n| Dim::Fixed(n)).collect::<Vec<_>>();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            dtype: DType::F32,
            dims: d.clone(),
        });
        g.outputs.push(ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            dims: d,
        });
        g
    }

    /// Runs `g` on a deterministic input of `dims`.
    pub fn run(g: &Graph, dims: &[usize]) -> Vec<f32> {
        let n: usize = dims.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        let inputs = HashMap::from([("x".to_string(), Tensor::f32(dims.to_vec(), x))]);
        crate::eval::run(g, &inputs)
            .unwrap()
            .remove(0)
            .as_f32()
            .unwrap()
            .to_vec()
    }

    /// Max absolute difference.
    pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
