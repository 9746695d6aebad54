//! `alc compile`: the whole pipeline on the tiny fixtures, its stage cache (a re-run skips every
//! stage; a changed option redoes only the stages after it), and the archive it names.

use std::path::Path;

use crate::{alc, fixtures, gemma3_tiny};

/// Runs `compile --json` with a private cache; returns the report.
fn compile(dir: &Path, source: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--cache-dir",
        "cache",
        "compile",
        source.to_str().unwrap(),
        "--target",
        "linux-x86_64",
        "-o",
        "out",
        "--exclude",
        "goldens.json",
        "--json",
    ];
    args.extend_from_slice(extra);
    alc(dir, &args).ok().json()
}

/// `(stage, cached)` of every stage in a report.
fn stages(report: &serde_json::Value) -> Vec<(String, bool)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn cached(report: &serde_json::Value) -> Vec<bool> {
    stages(report).into_iter().map(|(_, c)| c).collect()
}

#[test]
fn compile_caches_stages_and_redoes_only_what_an_option_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = gemma3_tiny();
    let first = compile(tmp.path(), &fixture, &["--quant", "f32"]);
    let names: Vec<String> = stages(&first).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        names,
        [
            "source",
            "quantize",
            "build linux-x86_64",
            "package linux-x86_64"
        ]
    );
    assert_eq!(cached(&first), [false, false, false, false]);
    let archive = first["archives"][0]["path"].as_str().unwrap();
    assert_eq!(archive, "out/gemma3-tiny-f32-linux-x86_64-v1.tar");
    assert!(tmp.path().join(archive).is_file());
    assert!(first["archives"][0]["kernels"].as_u64().unwrap() > 10);

    let again = compile(tmp.path(), &fixture, &["--quant", "f32"]);
    assert_eq!(cached(&again), [false, true, true, true]);
    // Packaging options redo only the package stage.
    let zstd = compile(tmp.path(), &fixture, &["--quant", "f32", "--zstd"]);
    assert_eq!(cached(&zstd), [false, true, true, false]);
    assert!(tmp
        .path()
        .join("out/gemma3-tiny-f32-linux-x86_64-v1.tar.zst")
        .is_file());
    // Quantization options redo everything after the source.
    let bf16 = compile(tmp.path(), &fixture, &["--quant", "bf16"]);
    assert_eq!(cached(&bf16), [false, false, false, false]);

    // The archive runs on the TVM kernels it carries, with the native backend's tokens.
    let run = |backend: &str| {
        let args = [
            "run",
            archive,
            "--prompt-ids",
            "2,10,20,30",
            "--max-tokens",
            "12",
            "--ignore-eos",
            "--backend",
            backend,
            "--json",
        ];
        let j = alc(tmp.path(), &args).ok().json();
        (
            j["backend"].as_str().unwrap().to_string(),
            j["tokens"].clone(),
        )
    };
    let (b1, native) = run("native");
    let (b2, tvm) = run("auto");
    assert_eq!((b1.as_str(), b2.as_str()), ("native", "tvm"));
    assert_eq!(native, tvm);
}

#[test]
fn compile_converts_a_gguf_source() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = fixtures().join("gguf/gemma3-tiny.gguf");
    let tokenizer = gemma3_tiny().join("tokenizer.json");
    let tok = tokenizer.to_str().unwrap();
    let report = compile(tmp.path(), &gguf, &["--quant", "f32", "--tokenizer", tok]);
    let names: Vec<String> = stages(&report).into_iter().map(|(s, _)| s).collect();
    assert_eq!(names[0], "convert");
    assert!(tmp
        .path()
        .join(report["archives"][0]["path"].as_str().unwrap())
        .is_file());
    let again = compile(tmp.path(), &gguf, &["--quant", "f32", "--tokenizer", tok]);
    assert!(cached(&again).iter().all(|&c| c));
}

#[test]
fn compile_of_a_gguf_without_a_tokenizer_says_what_to_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = fixtures().join("gguf/gemma3-tiny.gguf");
    let run = alc(
        tmp.path(),
        &[
            "--cache-dir",
            "cache",
            "compile",
            gguf.to_str().unwrap(),
            "--target",
            "linux-x86_64",
            "-o",
            "out",
        ],
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("--tokenizer"), "{}", run.stderr);
}
