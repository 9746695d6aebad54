//! A generated graph of 200k nodes goes through the full `onnxruntime` pipeline: every pass must
//! stay linear in the node count (this used to take minutes), and the result must compute the
//! same output as the input graph.

use std::collections::HashMap;

use ava_passes::{eval, onnx, DType, Dim, Graph, Node, Pipeline, Tensor, ValueInfo};

/// Nodes per generated block (see [`block`]).
const BLOCK_NODES: usize = 8;
/// Nodes of a block that the pipeline keeps.
const KEPT_PER_BLOCK: usize = 4;
/// Total nodes of the generated graph.
const NODES: usize = 200_000;
const WIDTH: usize = 4;

/// One block reading `prev`, returning its output. Of its eight nodes, the pipeline folds the
/// constant `Add`, drops the `Identity`, merges the two `Neg`s and drops the dead `Mul`.
fn block(g: &mut Graph, k: usize, prev: &str) -> String {
    let v = |s: &str| format!("{s}_{k}");
    let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
    let w: Vec<f32> = (0..WIDTH).map(|j| sign * (j as f32 + 1.0) / 64.0).collect();
    g.initializers.insert(v("w"), Tensor::f32(vec![WIDTH], w));
    let nodes = [
        Node::new(v("fold"), "Add", &[&v("w"), "one"], &[&v("c")]),
        Node::new(v("id"), "Identity", &[prev], &[&v("h")]),
        Node::new(v("bias"), "Add", &[&v("h"), &v("c")], &[&v("h2")]),
        Node::new(v("neg_a"), "Neg", &[&v("h2")], &[&v("n1")]),
        Node::new(v("neg_b"), "Neg", &[&v("h2")], &[&v("n2")]),
        Node::new(v("sum"), "Add", &[&v("n1"), &v("n2")], &[&v("d")]),
        Node::new(v("half"), "Mul", &[&v("d"), "neg_half"], &[&v("out")]),
        Node::new(v("dead"), "Mul", &[&v("h2"), &v("h2")], &[&v("unused")]),
    ];
    g.nodes.extend(nodes);
    v("out")
}

fn generated(blocks: usize) -> Graph {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    let info = |name: &str| ValueInfo {
        name: name.into(),
        dtype: DType::F32,
        dims: vec![Dim::Fixed(2), Dim::Fixed(WIDTH)],
    };
    g.inputs.push(info("x"));
    g.initializers.insert("one".into(), Tensor::scalar(1.0));
    g.initializers
        .insert("neg_half".into(), Tensor::scalar(-0.5));
    let mut prev = "x".to_string();
    for k in 0..blocks {
        prev = block(&mut g, k, &prev);
    }
    g.nodes
        .push(Node::new("final", "Identity", &[&prev], &["y"]));
    g.outputs.push(info("y"));
    g
}

fn run(g: &Graph) -> Vec<f32> {
    let x: Vec<f32> = (0..2 * WIDTH).map(|i| i as f32 / 8.0 - 0.5).collect();
    let inputs = HashMap::from([("x".to_string(), Tensor::f32(vec![2, WIDTH], x))]);
    let out = eval::run(g, &inputs).expect("evaluates").remove(0);
    out.as_f32().expect("f32 output").to_vec()
}

#[test]
fn a_200k_node_graph_optimizes_and_computes_the_same() {
    let blocks = NODES / BLOCK_NODES;
    let g = generated(blocks);
    assert_eq!(g.nodes.len(), blocks * BLOCK_NODES + 1);
    let want = run(&g);
    // Through ONNX bytes, as `aon optimize` does.
    let mut g = onnx::from_bytes(&onnx::to_bytes(&g)).expect("round trip");
    let report = Pipeline::parse("onnxruntime")
        .expect("pipeline")
        .run(&mut g)
        .expect("optimizes");
    assert_eq!(report.nodes_after, blocks * KEPT_PER_BLOCK + 1);
    assert_eq!(g.op_counts()["Neg"], blocks);
    assert!(!g.op_counts().contains_key("Identity") || g.op_counts()["Identity"] == 1);
    assert_eq!(run(&g), want);
}
