//! Unit tests of the attention fusion on a two-head toy block (batch 2, sequence 3, hidden 4).

use std::collections::HashMap;

use super::*;
use crate::eval;
use crate::ir::{DType, Dim, ValueInfo};
use crate::passes::testutil::max_diff;
use crate::passes::{DeadCode, Pass};

const B: usize = 2;
const S: usize = 3;
const H: usize = 4;

/// What to get wrong.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Exact,
    /// Scale by `Mul(scores, 1/c)` instead of `Div(scores, c)`.
    MulScale,
    /// K split like Q (no `K^T`).
    WrongKeyPerm,
    /// No scale at all.
    NoScale,
    /// The mask is an arbitrary additive input, not built from a 0/1 padding mask.
    FloatMask,
    /// The probabilities are also a graph output.
    SharedProbs,
}

fn input(name: &str, dtype: DType, dims: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dtype,
        dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
    }
}

fn block(variant: Variant) -> Graph {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.inputs.push(input("x", DType::F32, &[B * S, H]));
    g.inputs.push(input("attention_mask", DType::I64, &[B, S]));
    g.inputs.push(input("bias", DType::F32, &[B, 1, 1, S]));
    g.outputs.push(input("y", DType::F32, &[B * S, H]));
    let init = |g: &mut Graph, name: &str, t: Tensor| {
        g.initializers.insert(name.into(), t);
    };
    for (k, name) in ["wq", "wk", "wv"].iter().enumerate() {
        let w = (0..H * H)
            .map(|i| (((i * 7 + k * 3) % 11) as f32 - 5.0) / 4.0)
            .collect();
        init(&mut g, name, Tensor::f32(vec![H, H], w));
    }
    init(&mut g, "tail", Tensor::i64(vec![2], vec![2, 2]));
    init(&mut g, "rows", Tensor::i64(vec![2], vec![-1, H as i64]));
    init(&mut g, "c", Tensor::scalar(2f32.sqrt()));
    init(&mut g, "inv_c", Tensor::scalar(1.0 / 2f32.sqrt()));
    init(&mut g, "one", Tensor::scalar(1.0));
    init(&mut g, "min", Tensor::scalar(f32::MIN));
    init(&mut g, "axes", Tensor::i64(vec![2], vec![1, 2]));
    let mut op = |name: &str, op: &str, ins: &[&str]| {
        g.nodes.push(Node::new(name, op, ins, &[name]));
    };
    op("bs", "Shape", &["attention_mask"]);
    op("hs", "Concat", &["bs", "tail"]);
    op("mask_f", "Cast", &["attention_mask"]);
    op("inv", "Sub", &["one", "mask_f"]);
    op("scaled_mask", "Mul", &["inv", "min"]);
    op("mask", "Unsqueeze", &["scaled_mask", "axes"]);
    for (p, w) in [("q", "wq"), ("k", "wk"), ("v", "wv")] {
        op(p, "MatMul", &["x", w]);
        op(&format!("{p}_split"), "Reshape", &[p, "hs"]);
        op(&format!("{p}_heads"), "Transpose", &[&format!("{p}_split")]);
    }
    op("scores", "MatMul", &["q_heads", "k_heads"]);
    let scaled = match variant {
        Variant::NoScale => "scores",
        Variant::MulScale => {
            op("scaled", "Mul", &["inv_c", "scores"]);
            "scaled"
        }
        _ => {
            op("scaled", "Div", &["scores", "c"]);
            "scaled"
        }
    };
    let mask = if variant == Variant::FloatMask {
        "bias"
    } else {
        "mask"
    };
    op("masked", "Add", &[mask, scaled]);
    op("probs", "Softmax", &["masked"]);
    op("context", "MatMul", &["probs", "v_heads"]);
    op("merge", "Transpose", &["context"]);
    op("y", "Reshape", &["merge", "rows"]);
    let key_perm = if variant == Variant::WrongKeyPerm {
        HEADS_PERM
    } else {
        KEY_PERM
    };
    for n in &mut g.nodes {
        let perm = match n.name.as_str() {
            "k_heads" => key_perm,
            "q_heads" | "v_heads" | "merge" => HEADS_PERM,
            _ => continue,
        };
        n.attrs.insert("perm".into(), Attr::Ints(perm.to_vec()));
    }
    for (name, key, v) in [
        ("hs", "axis", 0),
        ("mask_f", "to", FLOAT),
        ("probs", "axis", -1),
    ] {
        if let Some(n) = g.nodes.iter_mut().find(|n| n.name == name) {
            n.attrs.insert(key.into(), Attr::Int(v));
        }
    }
    if variant == Variant::SharedProbs {
        g.outputs.push(input("probs", DType::F32, &[B, 2, S, S]));
    }
    g
}

fn run(g: &Graph) -> Vec<f32> {
    let x = (0..B * S * H)
        .map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0)
        .collect();
    let inputs = HashMap::from([
        ("x".to_string(), Tensor::f32(vec![B * S, H], x)),
        (
            "attention_mask".to_string(),
            Tensor::i64(vec![B, S], vec![1, 1, 1, 1, 1, 0]),
        ),
        (
            "bias".to_string(),
            Tensor::f32(vec![B, 1, 1, S], vec![0.0; B * S]),
        ),
    ]);
    eval::run(g, &inputs).unwrap()[0].as_f32().unwrap().to_vec()
}

#[test]
fn fuses_the_albert_attention_block() {
    for variant in [Variant::Exact, Variant::MulScale] {
        let mut g = block(variant);
        let want = run(&g);
        assert!(AttentionFusion.run(&mut g).unwrap());
        DeadCode.run(&mut g).unwrap();
        g.validate().unwrap();
        let ops = g.op_counts();
        assert_eq!(ops.get("MultiHeadAttention"), Some(&1), "{ops:?}");
        assert!(
            !ops.contains_key("Softmax") && !ops.contains_key("Transpose"),
            "{ops:?}"
        );
        let mha = g
            .nodes
            .iter()
            .find(|n| n.op == "MultiHeadAttention")
            .unwrap();
        assert_eq!(mha.domain, MS_DOMAIN);
        assert_eq!(mha.int("num_heads"), Some(2));
        assert_eq!(mha.float("mask_filter_value"), Some(f32::MIN));
        assert!((mha.float("scale").unwrap() - 1.0 / 2f32.sqrt()).abs() < 1e-7);
        assert_eq!(g.opsets.get(MS_DOMAIN), Some(&1));
        // The padded key of the second row is masked as before.
        assert!(max_diff(&run(&g), &want) < 1e-5);
        assert!(!AttentionFusion.run(&mut g).unwrap(), "idempotent");
    }
}

#[test]
fn near_misses_are_left_alone() {
    for variant in [
        Variant::WrongKeyPerm,
        Variant::NoScale,
        Variant::FloatMask,
        Variant::SharedProbs,
    ] {
        let mut g = block(variant);
        let before = g.clone();
        assert!(!AttentionFusion.run(&mut g).unwrap());
        assert_eq!(g, before);
    }
}
