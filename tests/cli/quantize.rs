//! `alc quantize` and `alc perplexity` on the tiny Gemma 3 fixture: every format round-trips
//! through the runtime, q8bf16 keeps the golden greedy tokens, q4bf16 stays within a logit
//! bound, AWQ calibrates, and `alc package` carries the metadata into the manifest.

use std::fs;
use std::path::Path;

use crate::{alc, gemma3_tiny};

/// Largest |logit - golden| of the prompt's last position allowed for q4bf16 (group 32,
/// embedding q4 too) on the random tiny fixture: measured 3.35. Random weights have no
/// outlier structure and tiny top-2 margins (0.02), so q4 changes its greedy tokens; the
/// real model's quality gate is perplexity (docs/quantization.md).
const Q4_LOGIT_BOUND: f32 = 5.0;
/// The same for bf16 and f16 (bf16 measures 0.06).
const HALF_LOGIT_BOUND: f32 = 0.15;
/// The same for q8bf16 (measured 0.22; the tokens still match the goldens).
const Q8_LOGIT_BOUND: f32 = 0.5;

fn golden() -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(gemma3_tiny().join("goldens.json")).unwrap()).unwrap();
    json["prompts"][0].clone()
}

fn quantize(dir: &Path, out: &str, extra: &[&str]) {
    let model = gemma3_tiny();
    let mut args = vec![
        "-q",
        "quantize",
        model.to_str().unwrap(),
        "-o",
        out,
        "--group-size",
        "32",
    ];
    args.extend_from_slice(extra);
    alc(dir, &args).ok();
}

/// Greedy tokens and last-prompt-position logits of `model`.
fn run(dir: &Path, model: &str) -> (Vec<u64>, Vec<f32>) {
    let g = golden();
    let ids: Vec<String> = g["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let ids = ids.join(",");
    let npy = format!("{model}.npy");
    let args = [
        "--json",
        "run",
        model,
        "--prompt-ids",
        &ids,
        "--max-tokens",
        "8",
        "--ignore-eos",
        "--logits-out",
        &npy,
    ];
    let report = alc(dir, &args).ok().json();
    let tokens = report["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let bytes = fs::read(dir.join(&npy)).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let logits = bytes[10 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (tokens, logits)
}

fn max_diff(a: &[f32], golden: &serde_json::Value) -> f32 {
    let g: Vec<f32> = golden
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(a.len(), g.len());
    a.iter()
        .zip(&g)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_format_round_trips_through_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let g = golden();
    let want: Vec<u64> = g["greedy_ids"].as_array().unwrap()[..8]
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for (quant, bound) in [
        ("f32", 1e-4),
        ("bf16", HALF_LOGIT_BOUND),
        ("f16", HALF_LOGIT_BOUND),
        ("q8bf16", Q8_LOGIT_BOUND),
    ] {
        quantize(tmp.path(), quant, &["--quant", quant, "--method", "rtn"]);
        let (tokens, logits) = run(tmp.path(), quant);
        assert_eq!(tokens, want, "{quant}");
        let d = max_diff(&logits, &g["last_logits"]);
        eprintln!("{quant}: max logit error {d}");
        assert!(d < bound, "{quant}: max logit error {d}");
    }
    quantize(
        tmp.path(),
        "q4",
        &["--quant", "q4bf16", "--policy", "embed=q4bf16"],
    );
    let (tokens, logits) = run(tmp.path(), "q4");
    assert_eq!(tokens.len(), 8);
    let d = max_diff(&logits, &g["last_logits"]);
    eprintln!("q4bf16: max logit error {d}");
    assert!(d < Q4_LOGIT_BOUND, "q4bf16: max logit error {d}");
    let header = fs::read(tmp.path().join("q4/model.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&header[..4096.min(header.len())]).into_owned();
    assert!(
        text.contains("model.layers.0.mlp.down_proj.weight.q4"),
        "{text}"
    );
    assert!(
        text.contains("\"ava.quantize.group_size\":\"32\""),
        "{text}"
    );
}

#[test]
fn calibrated_methods_record_their_calibration_and_package_carries_it() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = tmp.path().join("calib.txt");
    fs::write(
        &calib,
        "The capital of France is Paris. Once upon a time there was a cat. ".repeat(40),
    )
    .unwrap();
    let cheap = ["--calib-samples", "2", "--calib-seq-len", "32"];
    // No --method, no --calib: the default method on the built-in corpus.
    quantize(tmp.path(), "default", &cheap);
    let stage = |dir: &str| -> serde_json::Value {
        let text = fs::read(tmp.path().join(dir).join("ava-stage.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&text).unwrap()["stages"]["quantize"].clone()
    };
    let default = stage("default");
    assert_eq!(default["method"], "awq+gptq");
    assert!(default["calibration_file"]
        .as_str()
        .unwrap()
        .starts_with("built-in"));
    assert_eq!(default["calibration_samples"], 2);
    for method in ["awq", "gptq"] {
        let mut args = vec!["--method", method, "--calib", "calib.txt"];
        args.extend(cheap);
        quantize(tmp.path(), method, &args);
        let s = stage(method);
        assert_eq!(s["method"], method);
        assert_eq!(s["calibration_sha256"].as_str().map(str::len), Some(64));
        assert_ne!(s["calibration_sha256"], default["calibration_sha256"]);
        let (tokens, _) = run(tmp.path(), method);
        assert_eq!(tokens.len(), 8);
    }
    quantize(tmp.path(), "rtn", &["--method", "rtn"]);
    assert_eq!(stage("rtn")["method"], "rtn");
    assert!(stage("rtn")["calibration_sha256"].is_null());
    let pkg = alc(
        tmp.path(),
        &[
            "--json",
            "package",
            "gptq",
            "-o",
            "out",
            "--exclude",
            "goldens.json",
        ],
    )
    .ok()
    .json();
    assert_eq!(pkg["quantization"], "q4bf16");
    assert_eq!(pkg["stages"]["quantize"]["group_size"], 32);
    assert_eq!(pkg["stages"]["quantize"]["method"], "gptq");
    assert!(!tmp.path().join(".gptq.partial").exists());
}

#[test]
fn perplexity_reports_windows() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("t.txt"),
        "the quick brown fox jumps over the lazy dog. ".repeat(60),
    )
    .unwrap();
    let model = gemma3_tiny();
    let args = [
        "--json",
        "perplexity",
        model.to_str().unwrap(),
        "--text",
        "t.txt",
        "--ctx",
        "64",
        "--max-chunks",
        "3",
    ];
    let r = alc(tmp.path(), &args).ok().json();
    assert_eq!(r["chunks"], 3);
    assert_eq!(r["stride"], 64);
    assert_eq!(r["scored_tokens"], 3 * 32);
    let ppl = r["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 512.0 * 4.0, "{ppl}");
    assert!(r["perplexity_se"].as_f64().unwrap() > 0.0);
    assert!(r["reference"].is_null());

    // Against itself: no divergence, full agreement; against a q4 model: some of both.
    quantize(
        tmp.path(),
        "q4",
        &["--method", "rtn", "--policy", "embed=q4bf16"],
    );
    let mut with_ref = args.to_vec();
    with_ref.extend(["--reference", model.to_str().unwrap()]);
    let same = alc(tmp.path(), &with_ref).ok().json();
    assert_eq!(same["reference"]["kl_mean"], 0.0);
    assert_eq!(same["reference"]["top1_agreement"], 1.0);
    assert_eq!(same["reference"]["perplexity"], same["perplexity"]);
    with_ref[2] = "q4";
    let q4 = alc(tmp.path(), &with_ref).ok().json();
    let c = &q4["reference"];
    assert!(c["kl_mean"].as_f64().unwrap() > 0.0, "{c}");
    assert!(c["kl_max"].as_f64() >= c["kl_p99"].as_f64(), "{c}");
    assert!(c["kl_p99"].as_f64() >= c["kl_median"].as_f64(), "{c}");
    assert!(c["top1_agreement"].as_f64().unwrap() < 1.0, "{c}");
    assert_eq!(c["perplexity"], r["perplexity"]);
}

/// The tensor names of a safetensors file's header.
fn header_names(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_size_budget_keeps_sensitive_projections_at_q8_within_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cheap = [
        "--method",
        "rtn",
        "--calib-samples",
        "2",
        "--calib-seq-len",
        "32",
    ];
    let budgeted = |out: &str, flags: &[&str]| -> serde_json::Value {
        let model = gemma3_tiny();
        let mut args = vec!["--json", "quantize", model.to_str().unwrap(), "-o", out];
        args.extend(["--group-size", "32"]);
        args.extend(cheap);
        args.extend(flags);
        alc(tmp.path(), &args).ok().json()
    };
    // A budget above everything: the range of sizes reported.
    let probe = budgeted("probe", &["--size-budget", "999999999"]);
    let range = &probe["mixed_precision"]["file_bytes_range"];
    let (min, max) = (range[0].as_u64().unwrap(), range[1].as_u64().unwrap());
    let candidates = probe["mixed_precision"]["candidates"].as_u64().unwrap();
    assert_eq!(candidates, 6 * 7);
    // Above the all-q8 size: everything promoted, nothing measured.
    assert_eq!(
        probe["mixed_precision"]["promoted"]
            .as_array()
            .unwrap()
            .len() as u64,
        candidates
    );
    assert_eq!(probe["mixed_precision"]["file_bytes"].as_u64(), Some(max));
    // The largest projection of the fixture is 128 x 64: one promotion adds 4096 bytes.
    let step = 128 * 64 / 2;
    let mut counts = vec![];
    for (i, budget) in [min + (max - min) / 3, min + 2 * (max - min) / 3]
        .into_iter()
        .enumerate()
    {
        let out = format!("b{i}");
        let r = budgeted(&out, &["--size-budget", &budget.to_string()]);
        let m = &r["mixed_precision"];
        let size = fs::metadata(tmp.path().join(&out).join("model.safetensors"))
            .unwrap()
            .len();
        assert_eq!(m["file_bytes"].as_u64(), Some(size), "{m}");
        assert!(
            size <= budget && budget - size < step + 64,
            "{size} {budget}"
        );
        let promoted: Vec<String> = m["promoted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        // Promoted in decreasing gain per byte: the first has the best measured gain.
        let sens = m["sensitivity"].as_array().unwrap();
        assert_eq!(sens.len() as u64, candidates);
        assert_eq!(sens[0]["name"].as_str(), Some(promoted[0].as_str()));
        // What was recorded is what was written.
        let text = fs::read(tmp.path().join(&out).join("ava-stage.json")).unwrap();
        let stage: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let policy = stage["stages"]["quantize"]["tensor_policy"]
            .as_object()
            .unwrap();
        let names = header_names(&tmp.path().join(&out).join("model.safetensors"));
        for name in names.iter().filter(|n| n.ends_with("_proj.weight.q4")) {
            assert!(!policy.contains_key(name.trim_end_matches(".q4")), "{name}");
        }
        let q8: Vec<&String> = names
            .iter()
            .filter(|n| n.contains("_proj.weight.q8"))
            .collect();
        assert_eq!(q8.len(), promoted.len());
        for name in &promoted {
            assert_eq!(policy[name], "q8bf16");
            assert!(names.contains(&format!("{name}.q8")), "{name}");
        }
        assert_eq!(
            stage["stages"]["quantize"]["mixed_precision"]["file_bytes"].as_u64(),
            Some(size)
        );
        counts.push(promoted.len());
    }
    assert!(counts[0] > 0 && counts[1] >= counts[0], "{counts:?}");
    // The mixed model runs.
    let (tokens, _) = run(tmp.path(), "b0");
    assert_eq!(tokens.len(), 8);

    // --policy NAME=SCHEME is left alone by the budget; --bpw is the other unit.
    let down = "model.layers.0.mlp.down_proj.weight";
    let r = budgeted(
        "named",
        &["--bpw", "8.6", "--policy", &format!("{down}=q4bf16")],
    );
    assert_eq!(
        r["mixed_precision"]["candidates"].as_u64(),
        Some(candidates - 1)
    );
    let names = header_names(&tmp.path().join("named/model.safetensors"));
    assert!(names.contains(&format!("{down}.q4")));

    // Below the all-q4 size: a usage error with the minimum, and no output.
    let model = gemma3_tiny();
    let low = (min - 1).to_string();
    let mut args = vec!["quantize", model.to_str().unwrap(), "-o", "low"];
    // The same method as the probe: the header records it, so it counts in the size.
    args.extend(["--group-size", "32", "--size-budget", &low]);
    args.extend(cheap);
    let r = alc(tmp.path(), &args);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{min} bytes")), "{}", r.stderr);
    assert!(!tmp.path().join("low").exists());
}
