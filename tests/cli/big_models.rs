//! The layouts of the larger Gemma 3 checkpoints, scaled down: the 1B's (`Gemma3ForCausalLM`)
//! and the 4B's (`Gemma3ForConditionalGeneration`: `text_config`, text weights under
//! `language_model.model.`, a vision tower and projector), both sharded with an index, written
//! by `fixtures/gen/make_synthetic_gemma.py`. Each compiles (the vision side left out), runs on
//! both backends, and the tvm kernels stay within the tolerance of the native reference step by
//! step; `--memory-budget` records the
//! estimate in the manifest, and an estimate over the budget fails with no archive.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::alc;
use crate::common::token_ids;

/// Writes the scaled-down `preset` (`tiny-1b`, `tiny-4b`) into `dir/preset`.
fn synthetic(dir: &Path, preset: &str) -> PathBuf {
    let seed = if preset == "tiny-1b" { "1" } else { "0" };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join(preset);
    let status = Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("fixtures/gen/make_synthetic_gemma.py"))
        .args(["--preset", preset, "--seed", seed, "-o"])
        .arg(&out)
        .status()
        .expect("the .venv Python runs (make setup)");
    assert!(
        status.success(),
        "make_synthetic_gemma.py --preset {preset}"
    );
    out
}

fn compile(dir: &Path, source: &Path, extra: &[&str]) -> crate::Run {
    let mut args = vec![
        "--cache-dir",
        "cache",
        "compile",
        source.to_str().unwrap(),
        "--target",
        "linux-x86_64",
        "-o",
        "out",
        "--context",
        "64",
        "--json",
    ];
    args.extend_from_slice(extra);
    alc(dir, &args)
}

fn greedy(dir: &Path, archive: &str, backend: &str) -> Vec<u64> {
    let run = alc(
        dir,
        &[
            "run",
            archive,
            "--prompt-ids",
            "2,17,99,250,31,400,12,7,8,9,301",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--ignore-eos",
            "--backend",
            backend,
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(run["backend"], backend);
    let ids = token_ids(&run["tokens"]);
    assert_eq!(ids.len(), 12);
    ids
}

/// Compiles `preset` with a generous budget and checks the archive and both backends.
fn compiles_and_runs(preset: &str, sharded_files: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let source = synthetic(tmp.path(), preset);
    let shards = std::fs::read_dir(&source)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".safetensors")
        })
        .count();
    assert!(shards >= sharded_files, "{shards} shards");
    assert!(source.join("model.safetensors.index.json").is_file());
    let report = compile(tmp.path(), &source, &["--memory-budget", "4096"])
        .ok()
        .json();
    let archive = report["archives"][0]["path"].as_str().unwrap().to_string();
    let memory = &report["archives"][0]["memory"];
    assert_eq!(memory["budget_bytes"], 4096u64 << 20);
    assert_eq!(memory["context"], 64);
    let inspect = alc(tmp.path(), &["inspect", &archive, "--json"])
        .ok()
        .json();
    let recorded = &inspect["manifest"]["stages"]["memory"];
    assert_eq!(recorded, memory);
    let total = recorded["total_bytes"].as_u64().unwrap();
    let parts = [
        "weights_bytes",
        "library_bytes",
        "kv_cache_bytes",
        "workspace_bytes",
    ];
    let sum: u64 = parts.iter().map(|k| recorded[k].as_u64().unwrap()).sum();
    assert_eq!(total, sum);
    // No vision weights reach the archive: its only weights file is the quantized text model,
    // and the manifest says so by size (the stand-in tower alone is ~200 KB of bf16).
    let weights: Vec<&serde_json::Value> = inspect["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["role"] == "weights")
        .collect();
    assert_eq!(weights.len(), 1, "{weights:?}");
    assert_eq!(
        recorded["weights_bytes"].as_u64(),
        weights[0]["size"].as_u64()
    );
    let human = alc(tmp.path(), &["inspect", &archive]).ok().stdout;
    assert!(
        human.contains("memory") && human.contains("budget 4.0 GiB"),
        "{human}"
    );
    greedy(tmp.path(), &archive, "native");
    greedy(tmp.path(), &archive, "tvm");
    backends_agree(tmp.path(), &archive);
}

/// The tvm kernels against the native reference, step by step (`validate --device host`,
/// docs/runtime.md "Numerical contract"): random weights have near-ties where the two
/// backends' q4 kernels may pick different greedy tokens, so tokens alone prove nothing
/// either way; teacher-forced logits within the tolerance do.
fn backends_agree(dir: &Path, archive: &str) {
    std::fs::write(dir.join("prompts.txt"), "2 17 99 250 31 400 12 7 8 9 301\n").unwrap();
    let run = alc(
        dir,
        &[
            "validate",
            archive,
            "--device",
            "host",
            "--backend",
            "tvm",
            "--prompts",
            "prompts.txt",
            "--max-new-tokens",
            "12",
            "--context",
            "64",
            "--runner-profile",
            "dev",
            "--json",
        ],
    );
    let report = run.json();
    assert_eq!(run.code, 0, "{report:#}\n{}", run.stderr);
    assert_eq!(report["backend"], "tvm");
    assert_eq!(report["ok"], true, "{report:#}");
}

#[test]
fn gemma3_1b_layout_sharded_compiles_and_backends_agree() {
    compiles_and_runs("tiny-1b", 2);
}

#[test]
fn gemma3_4b_multimodal_layout_compiles_without_vision_and_backends_agree() {
    compiles_and_runs("tiny-4b", 2);
}

#[test]
fn memory_budget_exceeded_fails_with_no_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let source = synthetic(tmp.path(), "tiny-4b");
    let run = compile(tmp.path(), &source, &["--memory-budget", "1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("exceeds --memory-budget 1 MiB"),
        "{}",
        run.stderr
    );
    let out = tmp.path().join("out");
    let archives = std::fs::read_dir(&out).map_or(0, |d| d.count());
    assert_eq!(archives, 0, "an archive was written");
}
