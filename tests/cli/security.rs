//! Signed archives and the native-code policy (docs/security.md), end to end: an archive whose
//! kernel library has a constructor that leaves a file behind shows whether the library was
//! ever loaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use ava_packaging::{write_archive, Compression, CreatedBy, InputFile, PackageSpec, Role, Source};

use super::{alc, gemma3_tiny, Run};

/// The kernel target of the machine running the tests.
fn host_target() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "linux-arm64"
    } else {
        "linux-x86_64"
    }
}

/// A shared library whose constructor creates the file named by `$AVA_TEST_CANARY`.
fn canary_library(dir: &Path) -> PathBuf {
    let src = dir.join("canary.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n\
         __attribute__((constructor)) static void planted(void) {\n\
           const char *p = getenv(\"AVA_TEST_CANARY\");\n\
           if (p) { FILE *f = fopen(p, \"w\"); if (f) { fputs(\"ran\", f); fclose(f); } }\n\
         }\n",
    )
    .unwrap();
    let lib = dir.join("libmodel.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(status.success());
    lib
}

/// The tiny Gemma 3 with the canary library as its kernels for this machine, as an unsigned
/// archive (written with the library: the tools always sign).
fn hostile_archive(dir: &Path) -> PathBuf {
    let lib = canary_library(dir);
    let table = dir.join("kernels.json");
    std::fs::write(
        &table,
        format!(
            r#"{{"format_version": 1, "target": "{}", "requires": [], "kernels": []}}"#,
            host_target()
        ),
    )
    .unwrap();
    let mut inputs: Vec<InputFile> = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .map(|name| InputFile {
            source: gemma3_tiny().join(name),
            path: name.to_string(),
            role: Role::from_path(name),
        })
        .collect();
    for (source, name) in [(lib, "libmodel.so"), (table, "kernels.json")] {
        let path = format!("lib/{}/{name}", host_target());
        inputs.push(InputFile {
            role: Role::from_path(&path),
            source,
            path,
        });
    }
    let spec = PackageSpec {
        name: "gemma3-canary".into(),
        version: "1".into(),
        family: "gemma3".into(),
        quantization: "f32".into(),
        target: host_target().parse().unwrap(),
        created_by: CreatedBy {
            tool: "test".into(),
            version: "0".into(),
            git_commit: "none".into(),
        },
        source: Source::default(),
        stages: Default::default(),
        sign_with: None,
    };
    let out = dir.join("canary.tar");
    write_archive(&spec, &inputs, &out, Compression::None, &mut |_| {}).unwrap();
    out
}

/// `alc run` with the canary variable set, in `dir`.
fn run_with_canary(dir: &Path, canary: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "run",
        "canary.tar",
        "--prompt-ids",
        "2,10,11",
        "--max-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_alc"))
        .args(&args)
        .current_dir(dir)
        .env("AVA_CONFIG_DIR", dir.join("config"))
        .env("AVA_TEST_CANARY", canary)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn unsigned_kernels_never_load_and_signed_ones_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    let canary = dir.join("constructor-ran");

    // Default policy: the model runs on the native backend, and says why.
    let r = run_with_canary(dir, &canary, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("native backend") && r.stderr.contains("not signed"),
        "{}",
        r.stderr
    );
    assert!(!canary.exists(), "the library's constructor ran");
    // Asking for TVM fails with the reason.
    let r = run_with_canary(dir, &canary, &["--backend", "tvm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("not signed"), "{}", r.stderr);
    assert!(!canary.exists(), "the library's constructor ran");

    // Signed with a key the run trusts: the library is loaded (its constructor runs).
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    alc(dir, &["sign", "canary.tar", "--key", "ci.key"]).ok();
    let v = alc(
        dir,
        &[
            "verify",
            "canary.tar",
            "--json",
            "--trusted-key",
            "ci.key.pub",
        ],
    )
    .ok();
    assert_eq!(v.json()["signature"], "signed");
    assert_eq!(v.json()["trusted"], true);
    let untrusted = run_with_canary(dir, &canary, &["--backend", "tvm"]);
    assert_eq!(untrusted.code, 1);
    assert!(
        untrusted.stderr.contains("not trusted"),
        "{}",
        untrusted.stderr
    );
    assert!(!canary.exists());
    run_with_canary(
        dir,
        &canary,
        &["--backend", "tvm", "--trusted-key", "ci.key.pub"],
    );
    assert!(canary.exists(), "a trusted signed library was not loaded");
}

#[test]
fn allow_unsigned_loads_local_archives_but_never_checkpoint_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    let canary = dir.join("constructor-ran");
    // A checkpoint directory with the same library: never loaded.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(ckpt.join("lib").join(host_target())).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(gemma3_tiny().join(f), ckpt.join(f)).unwrap();
    }
    for f in ["libmodel.so", "kernels.json"] {
        std::fs::copy(dir.join(f), ckpt.join("lib").join(host_target()).join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_alc"))
        .args([
            "run",
            "ckpt",
            "--prompt-ids",
            "2,10",
            "--max-tokens",
            "1",
            "--backend",
            "tvm",
        ])
        .arg("--allow-unsigned-kernels")
        .current_dir(dir)
        .env("AVA_CONFIG_DIR", dir.join("config"))
        .env("AVA_TEST_CANARY", &canary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoint directory"));
    assert!(
        !canary.exists(),
        "a checkpoint directory's library was loaded"
    );
    // The explicit opt-in loads the unsigned archive's library.
    run_with_canary(
        dir,
        &canary,
        &["--backend", "tvm", "--allow-unsigned-kernels"],
    );
    assert!(
        canary.exists(),
        "--allow-unsigned-kernels did not load the library"
    );
}

#[test]
fn tampered_signed_archive_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    hostile_archive(dir);
    alc(dir, &["keygen", "-o", "ci.key"]).ok();
    alc(dir, &["sign", "canary.tar", "--key", "ci.key"]).ok();
    let inspect = alc(dir, &["inspect", "canary.tar", "--json"]).ok();
    assert_eq!(inspect.json()["manifest"]["format_version"], 2);
    assert_eq!(inspect.json()["signed_by"].as_str().unwrap().len(), 16);
    // Change the manifest (not any entry): only the signature can tell.
    let path = dir.join("canary.tar");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"gemma3-canary")
        .unwrap();
    bytes[at + 7] = b'C';
    std::fs::write(&path, bytes).unwrap();
    let v = alc(dir, &["verify", "canary.tar"]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("bad signature"), "{}", v.stderr);
    let r = alc(
        dir,
        &[
            "run",
            "canary.tar",
            "--prompt-ids",
            "2",
            "--max-tokens",
            "1",
        ],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("bad signature"), "{}", r.stderr);
}

#[test]
fn out_of_range_flags_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = gemma3_tiny();
    let model = model.to_str().unwrap();
    for bad in [
        &["--max-tokens", "0"][..],
        &["--temperature", "nan"],
        &["--temperature", "-1"],
        &["--top-p", "0"],
        &["--top-p", "1.5"],
        &["--min-p", "inf"],
        &["--repeat-penalty", "0"],
        &["--context", "0"],
        &["--context", "100000000"],
    ] {
        let mut args = vec!["run", model, "--prompt-ids", "2,10"];
        args.extend_from_slice(bad);
        let r = alc(tmp.path(), &args);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
    }
    let r = alc(
        tmp.path(),
        &["quantize", model, "--calib-samples", "0", "-o", "q"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn a_config_with_2_40_layers_fails_cleanly_in_2_gb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(gemma3_tiny().join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["num_hidden_layers"] = serde_json::json!(1u64 << 40);
    std::fs::write(&path, config.to_string()).unwrap();
    for verb in [
        "run big --prompt-ids 2 --max-tokens 1",
        "package big -o out.tar",
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -v 2000000 && exec {} {verb}",
                env!("CARGO_BIN_EXE_alc")
            ))
            .current_dir(tmp.path())
            .env("AVA_CONFIG_DIR", super::config_dir())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {stderr}");
        assert!(stderr.contains("num_hidden_layers"), "{verb}: {stderr}");
    }
}

/// Sets the first element of tensor `name` in a safetensors file to NaN.
fn plant_nan(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[name];
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    let nan: &[u8] = match t["dtype"].as_str().unwrap() {
        "F32" => &f32::NAN.to_le_bytes(),
        "BF16" => &[0xc0, 0x7f],
        other => panic!("{other}"),
    };
    bytes[at..at + nan.len()].copy_from_slice(nan);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn nan_weights_are_refused_by_quantize_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nan");
    super::copy_dir(&gemma3_tiny(), &dir);
    let tensor = "model.layers.0.mlp.down_proj.weight";
    plant_nan(&dir.join("model.safetensors"), tensor);
    for quant in ["q4bf16", "bf16"] {
        let r = alc(
            tmp.path(),
            &["quantize", "nan", "--quant", quant, "-o", "q"],
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains(tensor) && r.stderr.contains("NaN"),
            "{}",
            r.stderr
        );
        assert!(!tmp.path().join("q").exists());
    }
    // Running it works, with one warning.
    let r = alc(
        tmp.path(),
        &["run", "nan", "--prompt-ids", "2,10,11", "--max-tokens", "3"],
    )
    .ok();
    assert_eq!(
        r.stderr.matches("NaN or infinite logits").count(),
        1,
        "{}",
        r.stderr
    );

    // The ONNX quantizer: a NaN in a linear weight of an exported graph.
    let albert = super::fixtures().join("models/albert-tiny-cls");
    let onnx = tmp.path().join("model.onnx");
    super::aon(
        tmp.path(),
        &["export", albert.to_str().unwrap(), "-o", "model.onnx"],
    )
    .ok();
    std::fs::copy(
        albert.join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut graph = ava_passes::onnx::load(&onnx).unwrap();
    let weight = ava_passes::quant::linear_nodes(&graph)[0].weight.clone();
    if let Some(ava_passes::ir::TensorData::F32(v)) =
        graph.initializers.get_mut(&weight).map(|t| &mut t.data)
    {
        v[3] = f32::INFINITY;
    }
    ava_passes::onnx::save(&graph, &onnx).unwrap();
    let calib = super::fixtures().join("gen/data/clinc150.json");
    let r = super::aon(
        tmp.path(),
        &[
            "quantize",
            "model.onnx",
            "--calib",
            calib.to_str().unwrap(),
            "--samples",
            "4",
            "-o",
            "int8.onnx",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&weight), "{}", r.stderr);
    assert!(!tmp.path().join("int8.onnx").exists());
}

#[test]
fn classify_and_eval_warn_once_about_non_finite_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    super::outputs::exported_classifier(dir);
    let warning = "NaN or infinite logits";
    let r = super::aon(dir, &["classify", "model.onnx", "--text", "what about it"]).ok();
    assert!(!r.stderr.contains(warning), "{}", r.stderr);

    let onnx = dir.join("model.onnx");
    let mut graph = ava_passes::onnx::load(&onnx).unwrap();
    let weight = ava_passes::quant::linear_nodes(&graph)[0].weight.clone();
    if let Some(ava_passes::ir::TensorData::F32(v)) =
        graph.initializers.get_mut(&weight).map(|t| &mut t.data)
    {
        v[0] = f32::NAN;
    }
    ava_passes::onnx::save(&graph, &onnx).unwrap();
    let r = super::aon(dir, &["classify", "model.onnx", "--text", "what about it"]).ok();
    assert_eq!(r.stderr.matches(warning).count(), 1, "{}", r.stderr);
    // Five utterances, one warning.
    let r = super::aon(dir, &["eval", "model.onnx", "--data", "data.json"]).ok();
    assert_eq!(r.stderr.matches(warning).count(), 1, "{}", r.stderr);
}
