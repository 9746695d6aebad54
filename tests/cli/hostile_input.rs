//! Hostile input outside archives' kernels: control characters from archives and configs, flag
//! ranges, a config claiming 2^40 layers under a 2 GB limit, NaN/Inf weights and logits.

use std::path::Path;
use std::process::Command;

use super::security::archive_named;
use super::{alc, gemma3_tiny};

/// Text that comes from an archive or a config reaches the terminal with its control
/// characters escaped: `inspect`, `verify` and error messages.
#[test]
fn control_characters_from_archives_and_configs_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    archive_named(dir, "evil\x1b]0;owned\x07\x1b[2Jname", false);
    for verb in ["inspect", "verify"] {
        let r = alc(dir, &[verb, "canary.tar"]).ok();
        assert!(
            r.stdout.contains("evil\\u{1b}]0;owned\\u{7}"),
            "{verb}: {}",
            r.stdout
        );
        assert!(
            !r.stdout.contains('\x1b') && !r.stdout.contains('\x07'),
            "{verb}"
        );
    }
    // A config whose activation carries escapes: the error quotes it escaped.
    let ckpt = dir.join("ckpt");
    super::copy_dir(&gemma3_tiny(), &ckpt);
    let path = ckpt.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["hidden_activation"] = serde_json::json!("gelu\x1b[31m\x1b[2J");
    std::fs::write(&path, config.to_string()).unwrap();
    let r = alc(
        dir,
        &["run", "ckpt", "--prompt-ids", "2", "--max-tokens", "1"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("gelu\\u{1b}[31m\\u{1b}[2J"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains('\x1b'), "{}", r.stderr);
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
    // `compile` refuses it in its quantize stage, before any build.
    let r = alc(
        tmp.path(),
        &[
            "--cache-dir",
            "cache",
            "compile",
            "nan",
            "--quant",
            "bf16",
            "--target",
            "linux-x86_64",
            "-o",
            "out",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(tensor) && r.stderr.contains("NaN"),
        "{}",
        r.stderr
    );
    let out = tmp.path().join("out");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
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
