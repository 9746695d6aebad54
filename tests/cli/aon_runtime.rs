//! `aon compile` into an archive and `aon classify`/`aon eval` on it through `ava-runtime`'s
//! mALBERT encoder (the agreement with onnxruntime is checked in `aon_int8.rs`).

use serde_json::Value;

use super::{aon, fixtures};

fn json(r: &super::Run) -> Value {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn compile_packages_an_int8_archive_the_runtime_classifies() {
    let tmp = tempfile::tempdir().unwrap();
    let clinc = fixtures().join("gen/data/clinc150.json");
    let src = fixtures().join("models/albert-clinc");
    let c = json(&aon(
        tmp.path(),
        &[
            "compile",
            src.to_str().unwrap(),
            "--intents",
            clinc.to_str().unwrap(),
            "--keep-head",
            "--samples",
            "64",
            "--val-samples",
            "100",
            "--max-accuracy-drop",
            "2",
            "-o",
            ".",
            "--json",
        ],
    ));
    let archive = c["archive"].as_str().unwrap().to_string();
    assert!(archive.ends_with("albert-clinc-int8-any-v1.tar"), "{c}");
    let (fa, qa) = (
        c["float_accuracy"].as_f64().unwrap(),
        c["accuracy"].as_f64().unwrap(),
    );
    assert!(fa > 0.8 && fa - qa <= 0.02, "{c}");
    assert!(
        c["onnx_bytes"].as_f64().unwrap() < 0.3 * c["float_onnx_bytes"].as_f64().unwrap(),
        "{c}"
    );
    assert_eq!(c["calibration_sha256"].as_str().unwrap().len(), 64);

    let i = json(&aon(tmp.path(), &["inspect", &archive, "--json"]));
    assert!(i.to_string().contains("calibration_sha256"), "{i}");

    let p = json(&aon(
        tmp.path(),
        &[
            "classify",
            &archive,
            "--text",
            "what is the balance of my checking account",
            "--json",
        ],
    ));
    assert_eq!(p["intent"], "balance", "{p}");
    assert_eq!(p["backend"], "runtime", "{p}");

    let e = json(&aon(
        tmp.path(),
        &[
            "eval",
            &archive,
            "--data",
            clinc.to_str().unwrap(),
            "--limit",
            "100",
            "--json",
        ],
    ));
    assert!(e["accuracy"].as_f64().unwrap() > 0.8, "{e}");
    assert!(e["latency_p95_ms"].as_f64().unwrap() > 0.0, "{e}");
}

#[test]
fn runtime_refuses_a_model_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.onnx"), b"not onnx").unwrap();
    let r = aon(tmp.path(), &["classify", "model.onnx", "--text", "hi"]);
    assert_ne!(r.code, 0);
}
