//! `aon export`, `aon optimize` and `aon convert` on the ALBERT fixtures, with onnxruntime
//! (installed into `.venv` by `make setup`) checking the exported graphs against the
//! transformers goldens.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{aon, copy_dir, fixtures};

/// Logit tolerance against the transformers goldens.
const TOL: &str = "1e-4";

fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Runs `tests/scripts/ort_check.py` with the `.venv` Python; panics with its output on failure.
fn ort_check(onnx: &Path, goldens: &Path) -> Value {
    let python = repo().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(repo().join("tests/scripts/ort_check.py"))
        .args([onnx.as_os_str(), goldens.as_os_str()])
        .args(["--tol", TOL])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make setup`)", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn export_matches_goldens_in_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["albert-tiny-cls", "albert-clinc"] {
        let weights = std::fs::metadata(model(name).join("model.safetensors"))
            .unwrap()
            .len();
        for passes in ["none", "standard", "onnxruntime"] {
            let out = tmp.path().join(format!("{name}-{passes}.onnx"));
            let m = model(name);
            let r = aon(
                tmp.path(),
                &[
                    "export",
                    m.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                    "--passes",
                    passes,
                    "--json",
                ],
            )
            .ok()
            .json();
            assert_eq!(r["outputs"], json!(["logits"]));
            // The shared layer is stored once: the file is about the weights' size.
            let size = std::fs::metadata(&out).unwrap().len();
            assert!(
                size < weights + weights / 10 + 65536,
                "{name} {passes}: {size} bytes for {weights}"
            );
            ort_check(&out, &m.join("goldens.json"));
        }
    }
}

#[test]
fn optimize_reports_node_counts_and_keeps_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("albert-clinc");
    let raw = tmp.path().join("raw.onnx");
    aon(
        tmp.path(),
        &[
            "export",
            m.to_str().unwrap(),
            "-o",
            raw.to_str().unwrap(),
            "--passes",
            "none",
        ],
    )
    .ok();
    let opt = tmp.path().join("opt.onnx");
    let r = aon(
        tmp.path(),
        &[
            "optimize",
            "raw.onnx",
            "-o",
            "opt.onnx",
            "--passes",
            "onnxruntime",
            "--json",
        ],
    )
    .ok()
    .json();
    let (before, after) = (
        r["nodes_before"].as_u64().unwrap(),
        r["nodes_after"].as_u64().unwrap(),
    );
    assert!(after * 3 < before, "{r}");
    let ops = &r["ops_after"];
    assert_eq!(ops["LayerNormalization"], 9, "{r}");
    assert_eq!(ops["FastGelu"], 4, "{r}");
    // One fused attention per unrolled layer; no Softmax or head transposes left.
    assert_eq!(ops["MultiHeadAttention"], 4, "{r}");
    assert!(
        ops.get("Softmax").is_none() && ops.get("Transpose").is_none(),
        "{r}"
    );
    // 4 layers x 6 linears + mapping, pooler and classifier, all `Gemm`.
    assert_eq!(ops["Gemm"], 27, "{r}");
    ort_check(&opt, &m.join("goldens.json"));
    let text = aon(tmp.path(), &["optimize", "opt.onnx", "-o", "again.onnx"])
        .ok()
        .stdout;
    assert!(text.contains("no change"), "{text}");
}

#[test]
fn standard_pipeline_stays_portable() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("albert-clinc");
    let export = [
        "export",
        m.to_str().unwrap(),
        "-o",
        "raw.onnx",
        "--passes",
        "none",
    ];
    aon(tmp.path(), &export).ok();
    let run = |passes: &str, out: &str| {
        let args = [
            "optimize", "raw.onnx", "-o", out, "--passes", passes, "--json",
        ];
        aon(tmp.path(), &args).ok().json()
    };
    let std = run("standard", "std.onnx");
    let ops = &std["ops_after"];
    // Opset-17 operators only: no contrib attention or GELU.
    for contrib in ["MultiHeadAttention", "FastGelu"] {
        assert!(ops.get(contrib).is_none(), "{std}");
    }
    // The pooled 2-D path (pooler dense, classifier) folds into `Gemm` too.
    assert_eq!(ops["Gemm"], 27, "{std}");
    assert_eq!(ops["Softmax"], 4, "{std}");
    // `ort` is the `onnxruntime` pipeline.
    let ort = run("ort", "ort.onnx");
    assert_eq!(ort["ops_after"]["MultiHeadAttention"], 4, "{ort}");
}

#[test]
fn optimize_rejects_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad.onnx"), b"\x0a\xff\xff\xff").unwrap();
    let r = aon(tmp.path(), &["optimize", "bad.onnx", "-o", "out.onnx"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("ONNX"), "{}", r.stderr);
    let r = aon(
        tmp.path(),
        &["optimize", "bad.onnx", "-o", "out.onnx", "--passes", "nope"],
    );
    assert!(r.stderr.contains("unknown pass"), "{}", r.stderr);
}

/// Goldens of `name` with ids re-tokenized by `dir`'s tokenizer.json (pieces must not change).
fn retokenized_goldens(name: &str, dir: &Path) -> Value {
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let mut g = read_json(&model(name).join("goldens.json"));
    let mut rows = Vec::new();
    for u in g["utterances"].as_array_mut().unwrap() {
        let enc = tok.encode(u["text"].as_str().unwrap(), true).unwrap();
        let pieces: Vec<String> = enc
            .get_ids()
            .iter()
            .map(|&i| tok.id_to_token(i).unwrap())
            .collect();
        assert_eq!(json!(pieces), u["tokens"], "pieces changed");
        u["input_ids"] = json!(enc.get_ids());
        rows.push(enc.get_ids().to_vec());
    }
    let len = rows.iter().map(Vec::len).max().unwrap();
    let pad = |r: &Vec<u32>, v: u32| {
        r.iter()
            .copied()
            .chain(std::iter::repeat(v))
            .take(len)
            .collect::<Vec<_>>()
    };
    g["padded_batch"]["input_ids"] = json!(rows.iter().map(|r| pad(r, 0)).collect::<Vec<_>>());
    g
}

#[test]
fn convert_prunes_vocab_caps_length_and_keeps_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let g = read_json(&model("albert-clinc").join("goldens.json"));
    let texts: Vec<&str> = g["utterances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["text"].as_str().unwrap())
        .collect();
    std::fs::write(tmp.path().join("corpus.txt"), texts.join("\n")).unwrap();
    let m = model("albert-clinc");
    let args = [
        "convert",
        m.to_str().unwrap(),
        "-o",
        "out",
        "--prune-vocab",
        "--corpus",
        "corpus.txt",
        "--max-seq-len",
        "32",
        "--json",
    ];
    let r = aon(tmp.path(), &args).ok().json();
    assert_eq!(r["vocab_before"], 4000);
    assert!(r["vocab_after"].as_u64().unwrap() < 200, "{r}");
    assert_eq!(r["positions_after"], 32);
    assert_eq!(r["head"], "checkpoint");
    let out = tmp.path().join("out");
    assert_eq!(
        read_json(&out.join("labels.json"))
            .as_array()
            .unwrap()
            .len(),
        150
    );
    let tok = read_json(&out.join("tokenizer.json"));
    assert_eq!(tok["truncation"]["max_length"], 32);
    let goldens = tmp.path().join("goldens.json");
    std::fs::write(
        &goldens,
        retokenized_goldens("albert-clinc", &out).to_string(),
    )
    .unwrap();
    aon(tmp.path(), &["export", "out", "-o", "out.onnx"]).ok();
    ort_check(&tmp.path().join("out.onnx"), &goldens);
}

#[test]
fn convert_fits_a_head_on_a_bare_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = tmp.path().join("bare");
    copy_dir(&model("albert-clinc"), &bare);
    let mut cfg = read_json(&bare.join("config.json"));
    cfg["architectures"] = json!(["AlbertModel"]);
    std::fs::write(bare.join("config.json"), cfg.to_string()).unwrap();
    let data = read_json(&fixtures().join("gen/data/clinc150.json"));
    let keep = ["alarm", "timer", "weather"];
    // 30 of each intent (the first 30 of the split's 100).
    let mut seen = std::collections::HashMap::new();
    let lines: Vec<String> = data["train"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| keep.contains(&r[1].as_str().unwrap()))
        .filter(|r| {
            let n = seen.entry(r[1].as_str().unwrap().to_string()).or_insert(0);
            *n += 1;
            *n <= 30
        })
        .map(|r| json!({"text": r[0], "intent": r[1]}).to_string())
        .collect();
    std::fs::write(tmp.path().join("intents.jsonl"), lines.join("\n")).unwrap();
    let r = aon(
        tmp.path(),
        &[
            "convert",
            "bare",
            "-o",
            "out",
            "--intents",
            "intents.jsonl",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["head"], "fitted");
    assert_eq!(r["labels"], 3);
    assert!(r["val_accuracy"].as_f64().unwrap() >= 0.8, "{r}");
    assert_eq!(
        read_json(&tmp.path().join("out/labels.json")),
        json!(["alarm", "timer", "weather"])
    );
    aon(tmp.path(), &["export", "out", "-o", "out.onnx"]).ok();
}
