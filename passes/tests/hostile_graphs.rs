//! Hostile graphs through `onnx::from_bytes` and the `onnxruntime` pipeline (what `aon optimize`
//! runs): each must give a graph or an error, never a panic or an allocation its tensors do
//! not justify. The first cases are what fuzzing (`fuzz/fuzz_targets/onnx_reader.rs`) found.

use ava_passes::{onnx, Attr, DType, Dim, Graph, Node, Pipeline, Tensor, TensorData, ValueInfo};

fn graph(nodes: Vec<Node>, inits: Vec<(&str, Tensor)>) -> Graph {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.inputs.push(ValueInfo {
        name: "x".into(),
        dtype: DType::F32,
        dims: vec![Dim::Fixed(2), Dim::Fixed(2)],
    });
    g.outputs.push(ValueInfo {
        name: "y".into(),
        dtype: DType::F32,
        dims: vec![],
    });
    for (name, t) in inits {
        g.initializers.insert(name.into(), t);
    }
    g.nodes = nodes;
    g
}

/// Encodes, decodes and optimizes `g`; returns whether it got through.
fn optimize(g: &Graph) -> bool {
    let Ok(mut g) = onnx::from_bytes(&onnx::to_bytes(g)) else {
        return false;
    };
    Pipeline::parse("onnxruntime").unwrap().run(&mut g).is_ok()
}

fn w() -> Tensor {
    Tensor::f32(vec![2, 2], vec![1., 2., 3., 4.])
}

/// `op(w, extra...)` folded into `c`, read by `Add(x, c) -> y`.
fn folded(op: Node, inits: Vec<(&str, Tensor)>) -> Graph {
    let mut all = vec![("w", w())];
    all.extend(inits);
    graph(vec![op, Node::new("add", "Add", &["x", "c"], &["y"])], all)
}

#[test]
fn transpose_with_a_repeated_axis_is_an_error() {
    for perm in [vec![0, 0], vec![1, 2], vec![-1, 0], vec![0]] {
        let t = Node::new("t", "Transpose", &["w"], &["c"]).with("perm", Attr::Ints(perm.clone()));
        assert!(!optimize(&folded(t, vec![])), "{perm:?}");
    }
}

#[test]
fn nodes_without_the_inputs_they_need_are_refused() {
    for (op, inputs) in [
        ("Identity", &[][..]),
        ("Add", &["w"][..]),
        ("Reshape", &["w"][..]),
        ("Where", &["w", "w"][..]),
    ] {
        let n = Node::new("n", op, inputs, &["c"]);
        let err = onnx::from_bytes(&onnx::to_bytes(&folded(n, vec![]))).unwrap_err();
        assert!(err.to_string().contains("inputs"), "{op}: {err}");
    }
}

#[test]
fn shape_mismatches_and_overflows_are_errors() {
    let i64s = |v: Vec<i64>| Tensor::i64(vec![v.len()], v);
    let cases = [
        // Concat of ranks or dims that do not fit.
        (
            Node::new("n", "Concat", &["w", "v"], &["c"]).with("axis", Attr::Int(0)),
            ("v", Tensor::f32(vec![3], vec![0.; 3])),
        ),
        (
            Node::new("n", "Concat", &["w", "v"], &["c"]).with("axis", Attr::Int(1)),
            ("v", Tensor::f32(vec![3, 1], vec![0.; 3])),
        ),
        // Reshape whose dims overflow, or with two -1.
        (
            Node::new("n", "Reshape", &["w", "v"], &["c"]),
            ("v", i64s(vec![1 << 40, 1 << 40, 0, 4])),
        ),
        (
            Node::new("n", "Reshape", &["w", "v"], &["c"]),
            ("v", i64s(vec![-1, -1])),
        ),
        // LayerNormalization with a scale of the wrong length.
        (
            Node::new("n", "LayerNormalization", &["w", "v"], &["c"]),
            ("v", Tensor::f32(vec![3], vec![1.; 3])),
        ),
        // Squeeze of an axis that is not 1.
        (
            Node::new("n", "Squeeze", &["w", "v"], &["c"]),
            ("v", i64s(vec![0])),
        ),
        // ReduceMean of a scalar.
        (
            Node::new("n", "ReduceMean", &["v"], &["c"]).with("axes", Attr::Ints(vec![-1])),
            ("v", Tensor::scalar(1.0)),
        ),
    ];
    for (node, init) in cases {
        let op = node.op.clone();
        assert!(!optimize(&folded(node, vec![init])), "{op}");
    }
}

#[test]
fn a_huge_constant_result_is_left_to_run_time_not_allocated() {
    // Expand of a 4-element weight to 2^42 elements: not folded, never allocated.
    let shape = Tensor::i64(vec![3], vec![1 << 40, 2, 2]);
    let n = Node::new("n", "Expand", &["w", "s"], &["c"]);
    let mut g = onnx::from_bytes(&onnx::to_bytes(&folded(n, vec![("s", shape)]))).unwrap();
    Pipeline::parse("standard").unwrap().run(&mut g).unwrap();
    assert!(g.nodes.iter().any(|n| n.op == "Expand"));
    // A broadcast product that would be 2^24 times its inputs stays too.
    let a = Tensor::f32(vec![1 << 12, 1], vec![1.; 1 << 12]);
    let b = Tensor::f32(vec![1, 1 << 12], vec![1.; 1 << 12]);
    let n = Node::new("n", "Mul", &["a", "b"], &["c"]);
    let mut g = graph(
        vec![n, Node::new("add", "Add", &["x", "c"], &["y"])],
        vec![("a", a), ("b", b)],
    );
    Pipeline::parse("standard").unwrap().run(&mut g).unwrap();
    assert!(g.nodes.iter().any(|n| n.op == "Mul"));
}

#[test]
fn integer_overflow_wraps_instead_of_panicking() {
    let big = |v: i64| Tensor::i64(vec![1], vec![v]);
    for (op, a, b) in [
        ("Div", i64::MIN, -1),
        ("Mul", i64::MAX, 2),
        ("Add", i64::MAX, 1),
        ("Sub", i64::MIN, 1),
        ("Pow", 3, 1 << 40),
        ("Pow", 3, -1),
    ] {
        let n = Node::new("n", op, &["a", "b"], &["c"]);
        let cast = Node::new("cast", "Cast", &["c"], &["cf"]).with("to", Attr::Int(1));
        let mut g = graph(
            vec![n, cast, Node::new("add", "Add", &["x", "cf"], &["y"])],
            vec![("a", big(a)), ("b", big(b))],
        );
        Pipeline::parse("standard").unwrap().run(&mut g).unwrap();
        let folded = g.initializers.get("cf").map(|t| t.data.clone());
        assert!(matches!(folded, Some(TensorData::F32(_))), "{op}");
    }
}

#[test]
fn empty_tensors_with_huge_dims_are_not_folded() {
    // Found by fuzzing: an empty initializer of [0, 2^40, 2^40] transposed (its strides
    // overflowed). Its other dimensions bound no data, so they must not bound loops either.
    let empty = Tensor::f32(vec![0, 1 << 40, 1 << 40], vec![]);
    for (op, perm) in [("Transpose", vec![1, 2, 0]), ("Transpose", vec![2, 1, 0])] {
        let t = Node::new("t", op, &["e"], &["c"]).with("perm", Attr::Ints(perm));
        let mut g = graph(
            vec![t, Node::new("add", "Add", &["x", "c"], &["y"])],
            vec![("e", empty.clone())],
        );
        Pipeline::parse("standard").unwrap().run(&mut g).unwrap();
        assert!(g.nodes.iter().any(|n| n.op == "Transpose"));
    }
    let idx = Tensor::i64(vec![0], vec![]);
    let n = Node::new("g", "Gather", &["e", "i"], &["c"]).with("axis", Attr::Int(0));
    let mut g = graph(
        vec![n, Node::new("add", "Add", &["x", "c"], &["y"])],
        vec![("e", empty), ("i", idx)],
    );
    Pipeline::parse("standard").unwrap().run(&mut g).unwrap();
    assert!(g.nodes.iter().any(|n| n.op == "Gather"));
}
