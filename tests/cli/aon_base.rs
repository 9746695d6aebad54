//! An ALBERT the size of albert-base-v2 (seeded random weights written by
//! `fixtures/gen/make_albert_base.py`, never committed) through every `aon` stage: convert with
//! vocabulary pruning on a corpus, export (the shared layer stored once), optimize, quantize,
//! and `aon compile` fitting a head; then the runtime classifies with the archive. About 40 s of
//! test time on two busy cores: ignored by `cargo test`, run by `make test-base` (part of
//! `make test-real`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{aon, fixtures};

/// ONNX file bytes allowed per byte of checkpoint weights (shared layer stored once).
const MAX_ONNX_OVER_WEIGHTS: f64 = 1.3;
/// Intents of the small labelled set the head is fitted on.
const INTENTS: [&str; 4] = ["alarm", "balance", "timer", "weather"];

fn json_ok(r: &super::Run) -> Value {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Runs the generator into `dir/base`.
fn generate(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("base");
    let status = Command::new(repo.join(".venv/bin/python"))
        .arg(fixtures().join("gen/make_albert_base.py"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect(".venv/bin/python runs (make setup creates it)");
    assert!(status.success());
    out
}

/// 20 train and 5 val utterances of each of [`INTENTS`] in CLINC150's layout.
fn small_intents(dir: &Path) -> PathBuf {
    let data: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("gen/data/clinc150.json")).unwrap())
            .unwrap();
    let pick = |split: &str, n: usize| -> Vec<Value> {
        INTENTS
            .iter()
            .flat_map(|i| {
                data[split]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(move |r| r[1] == *i)
                    .take(n)
                    .cloned()
            })
            .collect()
    };
    let path = dir.join("intents.json");
    let small = json!({"train": pick("train", 20), "val": pick("val", 5)});
    std::fs::write(&path, small.to_string()).unwrap();
    path
}

#[test]
#[ignore = "albert-base-v2-sized model: minutes; run by make test-base"]
fn albert_base_sized_model_goes_through_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = generate(dir);
    let corpus = fixtures().join("gen/data/clinc150-sample.txt");
    let corpus = corpus.to_str().unwrap();
    let c = json_ok(&aon(
        dir,
        &[
            "convert",
            "base",
            "--prune-vocab",
            "--corpus",
            corpus,
            "-o",
            "malbert",
            "--json",
        ],
    ));
    assert_eq!(c["vocab_before"], 30000, "{c}");
    let kept = c["vocab_after"].as_u64().unwrap();
    assert!(kept > 1000 && kept < 30000, "{c}");

    let e = json_ok(&aon(
        dir,
        &["export", "malbert", "-o", "model.onnx", "--json"],
    ));
    let (file, weights) = (
        e["file_bytes"].as_f64().unwrap(),
        e["checkpoint_weight_bytes"].as_f64().unwrap(),
    );
    assert!(file <= MAX_ONNX_OVER_WEIGHTS * weights, "{e}");
    json_ok(&aon(
        dir,
        &["optimize", "model.onnx", "-o", "opt.onnx", "--json"],
    ));
    let q = json_ok(&aon(
        dir,
        &[
            "quantize",
            "opt.onnx",
            "--tokenizer",
            "malbert/tokenizer.json",
            "--calib",
            corpus,
            "--samples",
            "8",
            "-o",
            "int8.onnx",
            "--json",
        ],
    ));
    let int8 = std::fs::metadata(dir.join("int8.onnx")).unwrap().len() as f64;
    assert!(int8 < 0.35 * file, "{q}");

    let intents = small_intents(dir);
    let cache = dir.join("cache");
    let r = json_ok(&aon(
        dir,
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "compile",
            base.to_str().unwrap(),
            "--intents",
            intents.to_str().unwrap(),
            "--samples",
            "8",
            "--val-samples",
            "20",
            "-o",
            ".",
            "--json",
        ],
    ));
    assert_eq!(r["head"]["solver"], "lbfgs", "{r}");
    assert_eq!(r["val_samples"], 20, "{r}");
    let archive = r["archive"].as_str().unwrap();
    let p = json_ok(&aon(
        dir,
        &[
            "classify",
            archive,
            "--text",
            "wake me up at seven",
            "--json",
        ],
    ));
    assert!(INTENTS.contains(&p["intent"].as_str().unwrap()), "{p}");
}
