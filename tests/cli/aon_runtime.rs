//! `aon compile` into an archive and `aon classify`/`aon eval` on it through `ava-runtime`'s
//! mALBERT encoder (the agreement with onnxruntime is checked in `aon_int8.rs`), its stage
//! cache, and the out-of-scope threshold.

use std::path::Path;

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
    let cache = tmp.path().join("cache");
    let c = json(&aon(
        tmp.path(),
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
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
    assert_eq!(p["backend"], "native", "{p}");

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

/// `aon compile` of the tiny classifier with the stage cache in `dir/cache`, and `extra`.
pub(crate) fn compile_tiny(dir: &Path, extra: &[&str]) -> Value {
    let src = fixtures().join("models/albert-tiny-cls");
    let clinc = fixtures().join("gen/data/clinc150.json");
    let cache = dir.join("cache");
    let mut args = vec![
        "--cache-dir",
        cache.to_str().unwrap(),
        "compile",
        src.to_str().unwrap(),
        "--intents",
        clinc.to_str().unwrap(),
        "--keep-head",
        "--val-samples",
        "40",
        "-o",
        ".",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&aon(dir, &args))
}

fn cached(report: &Value) -> Vec<(String, bool)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["cached"] == true,
            )
        })
        .collect()
}

#[test]
fn compile_reuses_finished_stages_and_redoes_only_what_an_option_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let stages = |flags: [bool; 4]| -> Vec<(String, bool)> {
        ["convert", "export", "optimize", "quantize"]
            .iter()
            .zip(flags)
            .map(|(s, c)| (s.to_string(), c))
            .collect()
    };
    let first = compile_tiny(tmp.path(), &["--samples", "16"]);
    assert_eq!(cached(&first), stages([false; 4]), "{first}");
    let archive = tmp.path().join(first["archive"].as_str().unwrap());
    let bytes = std::fs::read(&archive).unwrap();

    // Same inputs: every stage from the cache, and the same archive byte for byte.
    let second = compile_tiny(tmp.path(), &["--samples", "16"]);
    assert_eq!(cached(&second), stages([true; 4]), "{second}");
    assert_eq!(std::fs::read(&archive).unwrap(), bytes);
    for (a, b) in first["stages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["stages"].as_array().unwrap())
    {
        assert_eq!(a["key"], b["key"]);
        assert_eq!(a["output"], b["output"]);
    }

    // More calibration samples: only the quantize stage runs again.
    let third = compile_tiny(tmp.path(), &["--samples", "24"]);
    assert_eq!(cached(&third), stages([true, true, true, false]), "{third}");
    assert_eq!(third["calibration_samples"], 24);

    // A longer sequence cap changes the converted checkpoint: everything runs again.
    let fourth = compile_tiny(tmp.path(), &["--samples", "24", "--max-seq-len", "48"]);
    assert_eq!(cached(&fourth), stages([false; 4]), "{fourth}");

    // f32: no quantize stage; the float stages are the cached ones.
    let f32 = compile_tiny(tmp.path(), &["--samples", "24", "--quant", "f32"]);
    assert_eq!(cached(&f32), stages([true; 4])[..3].to_vec(), "{f32}");
}

/// A CLINC150-layout file for the 5 intents of `INTENTS` (their first utterances of each
/// in-scope split) whose `oos_*` splits are utterances of other intents, labelled `oos`.
fn five_intents_with_oos(path: &Path) {
    const INTENTS: [&str; 5] = ["balance", "transfer", "weather", "alarm", "translate"];
    let clinc: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("gen/data/clinc150.json")).unwrap())
            .unwrap();
    let mut out = serde_json::Map::new();
    for (split, per_intent) in [("train", 30), ("val", 20), ("test", 20)] {
        let rows = clinc[split].as_array().unwrap();
        let intent = |r: &Value| r[1].as_str().unwrap().to_string();
        let mut kept = Vec::new();
        for name in INTENTS {
            kept.extend(
                rows.iter()
                    .filter(|r| intent(r) == name)
                    .take(per_intent)
                    .cloned(),
            );
        }
        let others: Vec<Value> = rows
            .iter()
            .filter(|r| !INTENTS.contains(&intent(r).as_str()))
            .step_by(40)
            .take(60)
            .map(|r| serde_json::json!([r[0], "oos"]))
            .collect();
        out.insert(split.into(), kept.into());
        out.insert(format!("oos_{split}"), others.into());
    }
    std::fs::write(path, serde_json::to_vec(&Value::Object(out)).unwrap()).unwrap();
}

#[test]
fn oos_threshold_is_stored_and_eval_reports_its_recall() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("five.json");
    five_intents_with_oos(&data);
    let data = data.to_str().unwrap();
    let src = fixtures().join("models/albert-clinc");
    let cache = dir.join("cache");
    let c = json(&aon(
        dir,
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "compile",
            src.to_str().unwrap(),
            "--intents",
            data,
            "--samples",
            "32",
            "--oos-threshold",
            "auto",
            "-o",
            ".",
            "--json",
        ],
    ));
    let archive = c["archive"].as_str().unwrap().to_string();
    let oos = &c["oos"];
    assert_eq!(oos["rule"], "auto", "{c}");
    assert_eq!(oos["val"]["oos"], 60, "{c}");
    assert_eq!(oos["val"]["in_scope"], 100, "{c}");
    let threshold = oos["threshold"].as_f64().unwrap();
    assert!(threshold > 0.0 && threshold <= 1.0, "{c}");
    let i = json(&aon(dir, &["inspect", &archive, "--json"]));
    let stored = &i["manifest"]["stages"]["oos"]["threshold"];
    assert!((stored.as_f64().unwrap() - threshold).abs() < 1e-6, "{i}");

    // Eval on the test split and oos_test.
    let e = json(&aon(dir, &["eval", &archive, "--data", data, "--json"]));
    let m = &e["oos"];
    assert_eq!(e["oos_utterances"], 60, "{e}");
    assert_eq!(m["oos"], 60, "{e}");
    let t = m["threshold"].as_f64().unwrap();

    // The same count, independently: `aon classify` on each out-of-scope test utterance.
    let file: Value = serde_json::from_slice(&std::fs::read(data).unwrap()).unwrap();
    let mut below = 0;
    for row in file["oos_test"].as_array().unwrap() {
        let text = row[0].as_str().unwrap();
        let p = json(&aon(dir, &["classify", &archive, "--text", text, "--json"]));
        let score = p["score"].as_f64().unwrap();
        assert_eq!(p["out_of_scope"], score < t, "{p}");
        if score < t {
            assert_eq!(p["intent"], "oos", "{p}");
            below += 1;
        }
    }
    assert_eq!(m["oos_detected"], below, "{e}");
    let recall = m["oos_recall"].as_f64().unwrap();
    assert!((recall - below as f64 / 60.0).abs() < 1e-12, "{e}");
    assert!(
        below > 0,
        "the threshold flags some out-of-scope utterances: {e}"
    );

    // --threshold overrides the archive's: 0 flags nothing, 1.0 (almost) everything.
    let e0 = json(&aon(
        dir,
        &[
            "eval",
            &archive,
            "--data",
            data,
            "--threshold",
            "0",
            "--json",
        ],
    ));
    assert_eq!(e0["oos"]["oos_detected"], 0, "{e0}");
    assert_eq!(e0["oos"]["in_scope_accuracy"], e0["accuracy"], "{e0}");
}

/// `aon classify --json` of `text` on `archive` with `--backend backend`.
fn classify(dir: &Path, archive: &str, text: &str, backend: &str) -> Value {
    json(&aon(
        dir,
        &[
            "classify",
            archive,
            "--text",
            text,
            "--backend",
            backend,
            "--top",
            "5",
            "--json",
        ],
    ))
}

#[test]
fn compile_for_a_target_carries_tvm_kernels_that_agree_with_native() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let utterances = [
        "what is the balance of my checking account",
        "book a table for two at eight",
        "please cancel my reservation",
        "how many calories are in an apple",
        "set an alarm for 6 am",
        "hi",
        "can you tell me the exchange rate between the us dollar and the euro today please",
    ];
    for (quant, extra) in [("int8", "--samples=16"), ("f32", "--quant=f32")] {
        let c = compile_tiny(dir, &[extra, "--target", "linux-x86_64"]);
        let archive = c["archive"].as_str().unwrap().to_string();
        assert!(
            archive.ends_with(&format!("-{quant}-linux-x86_64-v1.tar")),
            "{c}"
        );
        let k = &c["kernels"];
        assert_eq!(k["target"], "linux-x86_64", "{c}");
        assert!(k["kernels"].as_u64().unwrap() >= 6, "{c}");
        let i = json(&aon(dir, &["inspect", &archive, "--json"]));
        assert!(
            i.to_string().contains("lib/linux-x86_64/libmodel.so"),
            "{i}"
        );
        for text in utterances {
            let (n, t) = (
                classify(dir, &archive, text, "native"),
                classify(dir, &archive, text, "tvm"),
            );
            assert_eq!(
                (n["backend"].as_str(), t["backend"].as_str()),
                (Some("native"), Some("tvm"))
            );
            assert_eq!(n["input_ids"], t["input_ids"]);
            assert_eq!(n["intent"], t["intent"], "{quant} {text}: {n} {t}");
            let (a, b) = (n["top"].as_array().unwrap(), t["top"].as_array().unwrap());
            for (x, y) in a.iter().zip(b) {
                let d = (x[1].as_f64().unwrap() - y[1].as_f64().unwrap()).abs();
                assert!(d < 1e-4, "{quant} {text}: {x} vs {y}");
            }
            // `auto` takes the library for this machine.
            assert_eq!(classify(dir, &archive, text, "auto")["backend"], "tvm");
        }
    }
    // Without a library, `--backend tvm` is an error that says how to get one.
    let plain = compile_tiny(dir, &["--samples=16"]);
    let r = aon(
        dir,
        &[
            "classify",
            plain["archive"].as_str().unwrap(),
            "--text",
            "hi",
            "--backend",
            "tvm",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("aon compile --target"), "{}", r.stderr);
}

/// `-o DIR/` creates the directory (as `alc compile` does), and `--package-version auto` gives a
/// second compile the next version instead of replacing the first archive.
#[test]
fn compile_creates_the_output_directory_and_auto_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let clinc = fixtures().join("gen/data/clinc150.json");
    let src = fixtures().join("models/albert-clinc");
    let compile = |extra: &[&str]| {
        let mut args = vec![
            "--cache-dir",
            "cache",
            "compile",
            src.to_str().unwrap(),
            "--intents",
            clinc.to_str().unwrap(),
            "--keep-head",
            "--samples",
            "16",
            "--val-samples",
            "20",
            "-o",
            "new/dir/",
            "--json",
        ];
        args.extend_from_slice(extra);
        json(&aon(tmp.path(), &args))["archive"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(compile(&[]), "new/dir/albert-clinc-int8-any-v1.tar");
    let second = compile(&["--package-version", "auto"]);
    assert_eq!(second, "new/dir/albert-clinc-int8-any-v2.tar");
    assert!(tmp
        .path()
        .join("new/dir/albert-clinc-int8-any-v1.tar")
        .is_file());
    assert!(tmp.path().join(&second).is_file());
    let bad = aon(
        tmp.path(),
        &["compile", "x", "--package-version", "0", "-o", "o/"],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("is not a version"), "{}", bad.stderr);
}
