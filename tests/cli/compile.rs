//! `alc compile`: the whole pipeline on the tiny fixtures, its stage cache (a re-run skips every
//! stage; a changed option redoes only the stages after it), and the archive it names.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{alc, config_dir, fixtures, gemma3_tiny};

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
    // The archive in -o is a copy, never a link into the cache; a damaged cache entry is
    // noticed (its files' sha256 are recorded) and rebuilt.
    let out_archive = tmp.path().join(archive);
    assert_eq!(std::fs::metadata(&out_archive).unwrap().nlink(), 1);
    let entry = tmp
        .path()
        .join(again["stages"][3]["output"].as_str().unwrap());
    let cached_archive = std::fs::read_dir(&entry)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .unwrap();
    let mut bytes = std::fs::read(&cached_archive).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cached_archive, bytes).unwrap();
    let repaired = compile(tmp.path(), &fixture, &["--quant", "f32"]);
    assert_eq!(cached(&repaired), [false, true, true, false]);
    alc(tmp.path(), &["verify", archive]).ok();
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

    // --sign-key signs with that key instead of the user's (a new package stage), which this
    // machine does not trust.
    let signed_by = || {
        let j = alc(tmp.path(), &["inspect", archive, "--json"]).ok().json();
        j["signed_by"].as_str().unwrap().to_string()
    };
    let own = signed_by();
    alc(tmp.path(), &["keygen", "-o", "ci.key"]).ok();
    let ci = compile(
        tmp.path(),
        &fixture,
        &["--quant", "f32", "--sign-key", "ci.key"],
    );
    assert_eq!(cached(&ci), [false, true, true, false]);
    assert_ne!(signed_by(), own);
    let v = alc(
        tmp.path(),
        &["verify", archive, "--trusted-key", "ci.key.pub"],
    )
    .ok();
    assert!(v.stdout.contains("(trusted)"), "{}", v.stdout);
    assert_eq!(run("auto").0, "native");
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

/// Cheap calibration for the tiny fixture (2 sequences of 64 tokens of the built-in corpus).
const CHEAP_CALIB: [&str; 4] = ["--calib-samples", "2", "--calib-seq-len", "64"];

#[test]
fn default_compile_calibrates_and_quality_gates_fail_below_what_the_model_reaches() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = gemma3_tiny();
    // Gates far above what q4 reaches on the fixture pass and report the figures.
    let mut extra = CHEAP_CALIB.to_vec();
    extra.extend(["--max-kl", "100", "--max-ppl-increase", "10000"]);
    let ok = compile(tmp.path(), &fixture, &extra);
    let archive = ok["archives"][0]["path"].as_str().unwrap().to_string();
    let quality = &ok["quality"]["reference"];
    let kl = quality["kl_mean"].as_f64().unwrap();
    let increase = 100.0 * quality["perplexity_increase"].as_f64().unwrap()
        / quality["perplexity"].as_f64().unwrap();
    assert!(kl > 0.0, "{quality}");
    let agreement = quality["top1_agreement"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&agreement), "{quality}");
    // The manifest records the default method and the built-in corpus.
    let inspect = alc(tmp.path(), &["inspect", &archive, "--json"])
        .ok()
        .json();
    let q = &inspect["manifest"]["stages"]["quantize"];
    assert_eq!(q["method"], "awq+gptq", "{q}");
    assert_eq!(q["calibration_samples"], 2, "{q}");
    assert_eq!(q["calibration_sha256"].as_str().map(str::len), Some(64));
    assert!(q["calibration_file"]
        .as_str()
        .unwrap()
        .starts_with("built-in"));
    assert_eq!(q["gptq"]["act_order"], true, "{q}");

    // Each gate set below the figure the model reached fails the compile, with the figures,
    // and writes no archive.
    std::fs::remove_dir_all(tmp.path().join("out")).unwrap();
    let kl_gate = format!("--max-kl={}", kl / 2.0);
    let ppl_gate = format!("--max-ppl-increase={}", increase - 1.0);
    for gate in [kl_gate.as_str(), ppl_gate.as_str()] {
        let mut args = vec![
            "--cache-dir",
            "cache",
            "compile",
            fixture.to_str().unwrap(),
            "--target",
            "linux-x86_64",
            "-o",
            "out",
        ];
        args.extend(CHEAP_CALIB);
        args.push(gate);
        let run = alc(tmp.path(), &args);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains("quality gate failed"), "{}", run.stderr);
        assert!(run.stderr.contains("KL divergence mean"), "{}", run.stderr);
        assert!(!tmp.path().join(&archive).exists());
    }
}

/// The stage cache has its own directory, `$XDG_CACHE_HOME/ava` unless `AVA_CACHE_DIR` names
/// another, never inside the Hugging Face hub cache (whose tools take foreign folders for damage).
#[test]
fn the_stage_cache_lives_apart_from_the_hub_cache_and_follows_ava_cache_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fixture = gemma3_tiny();
    let compile = |out: &str, env: &[(&str, std::path::PathBuf)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_alc"));
        cmd.args(["compile", fixture.to_str().unwrap(), "--quant", "f32"])
            .args(["--target", "linux-x86_64", "--exclude", "goldens.json"])
            .args(["-o", out, "--json"])
            .current_dir(root)
            .env("HOME", root.join("home"))
            .env("HF_HOME", root.join("hf"))
            .env("AVA_CONFIG_DIR", config_dir());
        for var in ["AVA_CACHE_DIR", "XDG_CACHE_HOME", "HF_HUB_CACHE"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let under = |report: &serde_json::Value, dir: &Path| {
        assert_eq!(
            Path::new(report["cache"].as_str().unwrap()),
            dir.join("alc")
        );
        for s in report["stages"].as_array().unwrap().iter().skip(1) {
            let out = Path::new(s["output"].as_str().unwrap());
            assert!(out.starts_with(dir.join("alc")), "{s}");
        }
    };
    let xdg = compile("out1", &[("XDG_CACHE_HOME", root.join("xdg"))]);
    under(&xdg, &root.join("xdg/ava"));
    assert!(
        !root.join("hf").exists(),
        "nothing written into the hub cache"
    );
    // AVA_CACHE_DIR wins over XDG_CACHE_HOME; a new cache starts empty.
    let env = compile(
        "out2",
        &[
            ("XDG_CACHE_HOME", root.join("xdg")),
            ("AVA_CACHE_DIR", root.join("env")),
        ],
    );
    under(&env, &root.join("env"));
    assert_eq!(cached(&env), [false, false, false, false]);
    let first = std::fs::read(root.join(xdg["archives"][0]["path"].as_str().unwrap())).unwrap();
    let second = std::fs::read(root.join(env["archives"][0]["path"].as_str().unwrap())).unwrap();
    assert_eq!(first, second, "the same archive from either cache");
}
