//! Checkpoints that `package` must refuse with a clear message.

use std::fs;

use crate::{alc, copy_dir, gemma3_tiny, listing};

fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&gemma3_tiny(), &model);
    edit_config(&model, |c| {
        let n = c["num_hidden_layers"].as_u64().unwrap();
        c["num_hidden_layers"] = (n + 1).into();
        if let Some(types) = c["layer_types"].as_array_mut() {
            types.push("sliding_attention".into());
        }
    });
    let run = alc(tmp.path(), &["package", "model", "-o", "m.tar"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("model.layers.") && run.stderr.contains("not found"),
        "{}",
        run.stderr
    );
    assert_eq!(listing(tmp.path()), vec!["model"]);
}

#[test]
fn wrong_shape_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&gemma3_tiny(), &model);
    edit_config(&model, |c| {
        let n = c["intermediate_size"].as_u64().unwrap();
        c["intermediate_size"] = (n * 2).into();
    });
    let run = alc(tmp.path(), &["package", "model", "-o", "m.tar"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("mlp.") && run.stderr.contains("shape"),
        "{}",
        run.stderr
    );
}

#[test]
fn truncated_weights_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    copy_dir(&gemma3_tiny(), &model);
    let weights = model.join("model.safetensors");
    let bytes = fs::read(&weights).unwrap();
    fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let run = alc(tmp.path(), &["package", "model", "-o", "m.tar"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("model.safetensors"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}
