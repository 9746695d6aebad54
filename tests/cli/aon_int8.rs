//! `aon quantize`, `aon classify` and `aon eval` on the CLINC-trained ALBERT fixture: INT8
//! accuracy against float on a slice of the CLINC150 test split, shared weights quantized once,
//! onnxruntime (from `.venv`, `make setup`) agreeing with our predictions, QOperator-format
//! INT8 agreeing with QDQ, and the accuracy gate.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{aon, fixtures};

/// Test utterances scored here (the full split runs in `scripts/bench/aon.sh`).
const TEST_SLICE: &str = "300";
/// Calibration utterances (train split).
const CALIB_SAMPLES: &str = "128";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn clinc() -> String {
    fixtures()
        .join("gen/data/clinc150.json")
        .to_string_lossy()
        .into_owned()
}

/// Converts (sequence cap 64) and exports albert-clinc into `dir`; returns the float model path.
fn float_model(dir: &Path) -> String {
    let m = dir.join("m");
    let src = fixtures().join("models/albert-clinc");
    let r = aon(
        dir,
        &[
            "convert",
            src.to_str().unwrap(),
            "-o",
            m.to_str().unwrap(),
            "--max-seq-len",
            "64",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let onnx = m.join("model.onnx").to_string_lossy().into_owned();
    let r = aon(dir, &["export", m.to_str().unwrap(), "-o", &onnx]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    onnx
}

fn json(r: &super::Run) -> Value {
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn int8_keeps_accuracy_and_agrees_with_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_model = float_model(tmp.path());
    let int8 = tmp.path().join("m/model.int8.onnx");
    let int8 = int8.to_str().unwrap();
    let q = json(&aon(
        tmp.path(),
        &[
            "quantize",
            &f32_model,
            "--calib",
            &clinc(),
            "--samples",
            CALIB_SAMPLES,
            "-o",
            int8,
            "--json",
        ],
    ));
    // 4 unrolled layers x 6 linears + mapping, pooler, classifier; the shared layer's 6 weights
    // are quantized once each (+ mapping, pooler, classifier, word and position tables).
    assert_eq!(q["nodes_quantized"].as_array().unwrap().len(), 27, "{q}");
    assert_eq!(q["weights_quantized"], 11, "{q}");
    let (before, after) = (
        q["weight_bytes_before"].as_f64().unwrap(),
        q["weight_bytes_after"].as_f64().unwrap(),
    );
    assert!(after <= 0.3 * before, "{after} of {before}");
    let f32_bytes = std::fs::metadata(&f32_model).unwrap().len() as f64;
    let int8_bytes = std::fs::metadata(int8).unwrap().len() as f64;
    assert!(int8_bytes <= 0.3 * f32_bytes, "{int8_bytes} of {f32_bytes}");

    let eval = |model: &str, dump: &Path| {
        json(&aon(
            tmp.path(),
            &[
                "eval",
                model,
                "--data",
                &clinc(),
                "--limit",
                TEST_SLICE,
                "--predictions",
                dump.to_str().unwrap(),
                "--json",
            ],
        ))
    };
    let dump = tmp.path().join("int8.json");
    let ef = eval(&f32_model, &tmp.path().join("f32.json"));
    let eq = eval(int8, &dump);
    let (af, aq) = (
        ef["accuracy"].as_f64().unwrap(),
        eq["accuracy"].as_f64().unwrap(),
    );
    assert!(af > 0.8, "float accuracy {af}");
    assert!(af - aq <= 0.01, "float {af}, int8 {aq}");

    ort_predict(int8, &dump);

    let c = json(&aon(
        tmp.path(),
        &[
            "classify",
            tmp.path().join("m").to_str().unwrap(),
            "--text",
            "what is the balance of my checking account",
            "--top",
            "3",
            "--json",
        ],
    ));
    assert_eq!(c["intent"], "balance", "{c}");
    assert_eq!(c["top"].as_array().unwrap().len(), 3);
}

/// Replays `dump`'s token ids in onnxruntime on `model`; panics below 99% agreement with the
/// predictions in `dump`.
fn ort_predict(model: &str, dump: &Path) -> Value {
    let python = repo().join(".venv/bin/python");
    let out = Command::new(&python)
        .arg(repo().join("tests/scripts/ort_predict.py"))
        .args([model, dump.to_str().unwrap(), "--min-agreement", "0.99"])
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

#[test]
fn qoperator_int8_runs_in_onnxruntime_and_agrees_with_qdq() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_model = float_model(tmp.path());
    let quantize = |format: &str, out: &str| {
        json(&aon(
            tmp.path(),
            &[
                "quantize",
                &f32_model,
                "--calib",
                &clinc(),
                "--samples",
                CALIB_SAMPLES,
                "--format",
                format,
                "-o",
                out,
                "--json",
            ],
        ))
    };
    let qdq = tmp.path().join("m/qdq.onnx");
    let qop = tmp.path().join("m/qop.onnx");
    quantize("qdq", qdq.to_str().unwrap());
    let q = quantize("qoperator", qop.to_str().unwrap());
    assert_eq!(q["format"], "qoperator", "{q}");
    assert_eq!(q["nodes_quantized"].as_array().unwrap().len(), 27, "{q}");
    // Shared weights stored once: the same 11 int8 weights as QDQ, and about the same size.
    assert_eq!(q["weights_quantized"], 11, "{q}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!(
        size(&qop) < 1.05 * size(&qdq),
        "{} vs {}",
        size(&qop),
        size(&qdq)
    );

    // The QDQ model's predictions (runtime), replayed on the QOperator model in onnxruntime.
    let dump = tmp.path().join("qdq.json");
    let e = json(&aon(
        tmp.path(),
        &[
            "eval",
            qdq.to_str().unwrap(),
            "--data",
            &clinc(),
            "--limit",
            TEST_SLICE,
            "--predictions",
            dump.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(e["backend"], "native", "{e}");
    let o = ort_predict(qop.to_str().unwrap(), &dump);
    assert!(o["agreement"].as_f64().unwrap() >= 0.99, "{o}");

    // The runtime reads QDQ only; `classify` runs a QOperator file in the evaluator.
    let c = json(&aon(
        tmp.path(),
        &[
            "classify",
            qop.to_str().unwrap(),
            "--text",
            "what is the balance of my checking account",
            "--json",
        ],
    ));
    assert_eq!(c["intent"], "balance", "{c}");
    assert_eq!(c["backend"], "evaluator", "{c}");
}

#[test]
fn accuracy_gate_fails_with_a_report_when_it_cannot_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let f32_model = float_model(tmp.path());
    let out = tmp.path().join("q.onnx");
    // A negative allowance cannot be met even with every linear node kept in float.
    let r = aon(
        tmp.path(),
        &[
            "quantize",
            &f32_model,
            "--calib",
            &clinc(),
            "--samples",
            "16",
            "--max-accuracy-drop=-1",
            "--gate-samples",
            "12",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("the gate allows -1"), "{}", r.stderr);
    assert!(
        r.stderr.contains("27 node(s) kept in float"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}
