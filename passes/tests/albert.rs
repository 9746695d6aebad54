//! ALBERT fixtures through the IR: the built graph, raw and after each pipeline, reproduces the
//! transformers goldens in the reference evaluator, and the ONNX bytes round-trip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ava_core::Checkpoint;
use ava_passes::{albert, eval, onnx, Graph, Pipeline, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

fn goldens(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Max |logits - golden| over the padded batch.
fn batch_error(g: &Graph, gold: &serde_json::Value) -> f32 {
    let b = &gold["padded_batch"];
    let rows: Vec<Vec<i64>> = b["input_ids"].as_array().unwrap().iter().map(ids).collect();
    let (n, s) = (rows.len(), rows[0].len());
    let flat = |key: &str| {
        b[key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(ids)
            .collect::<Vec<_>>()
    };
    let inputs = HashMap::from([
        (
            "input_ids".to_string(),
            Tensor::i64(vec![n, s], flat("input_ids")),
        ),
        (
            "attention_mask".to_string(),
            Tensor::i64(vec![n, s], flat("attention_mask")),
        ),
        (
            "token_type_ids".to_string(),
            Tensor::i64(vec![n, s], flat("token_type_ids")),
        ),
    ]);
    let out = eval::run(g, &inputs).unwrap().remove(0);
    let want: Vec<f32> = b["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    out.as_f32()
        .unwrap()
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check(name: &str) {
    let ckpt = Checkpoint::open(&fixture(name)).unwrap();
    let gold = goldens(name);
    let raw = albert::build(&ckpt).unwrap();
    // Stored once: the graph's weights are exactly the checkpoint's.
    let extra = raw.weight_bytes() as u64 - ckpt.weights_bytes();
    assert!(extra < 1024, "{extra} bytes beyond the checkpoint");
    assert!(batch_error(&raw, &gold) < 1e-4, "raw {name}");
    let back = onnx::from_bytes(&onnx::to_bytes(&raw)).unwrap();
    assert_eq!(back, raw);
    for p in ["standard", "onnxruntime"] {
        let mut g = raw.clone();
        let report = Pipeline::parse(p).unwrap().run(&mut g).unwrap();
        assert!(
            report.nodes_after * 10 < report.nodes_before * 6,
            "{p}: {report:?}"
        );
        assert!(
            g.weight_bytes() <= raw.weight_bytes() + 4096,
            "{p}: weights duplicated"
        );
        assert!(batch_error(&g, &gold) < 1e-4, "{p} {name}");
    }
}

#[test]
fn albert_tiny_matches_goldens() {
    check("albert-tiny-cls");
}

#[test]
fn albert_clinc_matches_goldens() {
    check("albert-clinc");
}
