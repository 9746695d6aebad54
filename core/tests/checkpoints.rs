//! End-to-end tests of `Checkpoint` on tiny directories written by hand.

use std::path::{Path, PathBuf};

use ava_core::{Checkpoint, Error, FileRole, ModelFamily, RopeScaling};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One tensor to write: name, safetensors dtype, shape, little-endian bytes.
struct T {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32_tensor(name: &str, shape: &[usize], fill: f32) -> T {
    let n: usize = shape.iter().product();
    T {
        name: name.to_string(),
        dtype: "F32",
        shape: shape.to_vec(),
        data: (0..n).flat_map(|_| fill.to_le_bytes()).collect(),
    }
}

/// Serialises tensors into a safetensors image, header built by hand.
fn safetensors_bytes(tensors: &[T]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        data.extend_from_slice(&t.data);
        let entry =
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, data.len()]});
        header.insert(t.name.clone(), entry);
    }
    let header = Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("writing {}: {e}", path.display());
    }
}

fn write_st(dir: &Path, name: &str, tensors: &[T]) {
    write(&dir.join(name), safetensors_bytes(tensors));
}

fn write_json(dir: &Path, name: &str, v: &Value) {
    write(&dir.join(name), v.to_string());
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn open_err(dir: &Path) -> Error {
    match Checkpoint::open(dir) {
        Ok(c) => panic!(
            "expected an error, opened {} tensors",
            c.tensor_infos().len()
        ),
        Err(e) => e,
    }
}

fn tiny_gemma_config() -> Value {
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "sliding_window": 4, "sliding_window_pattern": 2,
        "max_position_embeddings": 64, "query_pre_attn_scalar": 4,
        "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
        "eos_token_id": [1, 106], "torch_dtype": "float32"
    })
}

/// Every tensor of the tiny Gemma under `prefix`, filled with 0.5.
fn tiny_gemma_tensors(prefix: &str) -> Vec<T> {
    let mut config = match ava_core::Gemma3Config::from_json(Path::new("x"), &tiny_gemma_config()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    config.weight_prefix = prefix.to_string();
    config
        .expected_tensors()
        .iter()
        .map(|(name, shape)| f32_tensor(name, shape, 0.5))
        .collect()
}

fn gemma_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &tiny_gemma_config());
    write_st(dir.path(), "model.safetensors", &tiny_gemma_tensors(prefix));
    dir
}

#[test]
fn single_file_gemma_checkpoint() -> TestResult {
    let dir = gemma_dir("model.");
    write_json(dir.path(), "tokenizer.json", &json!({"model": {}}));
    write_json(
        dir.path(),
        "generation_config.json",
        &json!({"eos_token_id": [1, 106]}),
    );
    write(&dir.path().join(".hidden"), "x");
    std::fs::create_dir(dir.path().join("subdir"))?;
    write(&dir.path().join("subdir/inner.safetensors"), "ignored");

    let ckpt = Checkpoint::open(dir.path())?;
    assert!(ckpt.dir().is_absolute());
    assert_eq!(ckpt.family()?, ModelFamily::Gemma3);
    let rel: Vec<(&str, FileRole)> = ckpt
        .files()
        .iter()
        .map(|f| (f.relative.as_str(), f.role))
        .collect();
    assert_eq!(
        rel,
        [
            ("config.json", FileRole::Config),
            ("generation_config.json", FileRole::Other),
            ("model.safetensors", FileRole::Weights),
            ("tokenizer.json", FileRole::Tokenizer),
        ]
    );
    assert!(ckpt
        .files()
        .iter()
        .all(|f| f.path.is_absolute() && f.size > 0));

    let config = ckpt.gemma3()?;
    assert_eq!(config.weight_prefix, "model.");
    assert_eq!(config.rope_global.scaling, RopeScaling::None);
    ckpt.check_shapes(&config.expected_tensors())?;
    // 10*8 embed + 2 layers * (4 proj + 2 qk-norm + 4 norms + 3 mlp) + final norm
    let per_layer = 8 * 8 + 4 * 8 * 2 + 8 * 8 + 4 * 2 + 8 * 4 + 16 * 8 * 3;
    assert_eq!(ckpt.num_parameters(), (80 + 2 * per_layer + 8) as u64);
    assert_eq!(ckpt.weights_bytes(), ckpt.num_parameters() * 4);

    let infos = ckpt.tensor_infos();
    assert!(infos.windows(2).all(|w| w[0].name < w[1].name));
    let embed = ckpt.tensor("model.embed_tokens.weight")?;
    assert_eq!(embed.shape, [10, 8]);
    assert_eq!(embed.to_f32_vec()?, vec![0.5; 80]);
    Ok(())
}

#[test]
fn gemma_weight_prefix_is_discovered() -> TestResult {
    for prefix in ["language_model.model.", "model.language_model."] {
        let dir = tempdir();
        let mut config = tiny_gemma_config();
        let text = config.clone();
        config = json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                        "text_config": text});
        write_json(dir.path(), "config.json", &config);
        write_st(dir.path(), "model.safetensors", &tiny_gemma_tensors(prefix));
        let ckpt = Checkpoint::open(dir.path())?;
        let c = ckpt.gemma3()?;
        assert_eq!(c.weight_prefix, prefix);
        ckpt.check_shapes(&c.expected_tensors())?;
    }
    Ok(())
}

#[test]
fn missing_embedding_is_reported() {
    let dir = gemma_dir("transformer.");
    let err = Checkpoint::open(dir.path()).and_then(|c| c.gemma3()).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("model.embed_tokens.weight") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn check_shapes_reports_mismatch_and_missing() -> TestResult {
    let dir = gemma_dir("model.");
    let ckpt = Checkpoint::open(dir.path())?;
    let wrong = [("model.norm.weight".to_string(), vec![9])];
    let err = ckpt.check_shapes(&wrong).err();
    match &err {
        Some(Error::ShapeMismatch {
            path,
            name,
            expected,
            found,
        }) => {
            assert!(path.ends_with("model.safetensors"));
            assert_eq!(
                (name.as_str(), expected, found),
                ("model.norm.weight", &vec![9], &vec![8])
            );
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("model.safetensors") && msg.contains("[8]") && msg.contains("[9]"),
        "{msg}"
    );

    let missing = [("model.nope".to_string(), vec![1])];
    match ckpt.check_shapes(&missing) {
        Err(Error::MissingTensor { name, .. }) => assert_eq!(name, "model.nope"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    Ok(())
}

/// Writes a two-shard checkpoint; `index` is the weight_map.
fn sharded_dir(weight_map: Value) -> tempfile::TempDir {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &tiny_gemma_config());
    write_st(
        dir.path(),
        "model-00001-of-00002.safetensors",
        &[f32_tensor("a", &[2], 1.0), f32_tensor("b", &[1], 2.0)],
    );
    write_st(
        dir.path(),
        "model-00002-of-00002.safetensors",
        &[f32_tensor("c", &[3], 3.0)],
    );
    write_json(
        dir.path(),
        "model.safetensors.index.json",
        &json!({"metadata": {"total_size": 24}, "weight_map": weight_map}),
    );
    dir
}

fn good_map() -> Value {
    json!({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
           "c": "model-00002-of-00002.safetensors"})
}

#[test]
fn sharded_with_index() -> TestResult {
    let dir = sharded_dir(good_map());
    // Not referenced by the index, so ignored (it would clash with `a` otherwise).
    write_st(
        dir.path(),
        "consolidated.safetensors",
        &[f32_tensor("a", &[2], 9.0)],
    );
    let ckpt = Checkpoint::open(dir.path())?;
    assert_eq!(ckpt.shards().len(), 2);
    assert_eq!(ckpt.tensor("a")?.to_f32_vec()?, vec![1.0, 1.0]);
    assert_eq!(ckpt.tensor("c")?.to_f32_vec()?, vec![3.0; 3]);
    let file = ckpt
        .tensor_file("c")
        .map(Path::to_path_buf)
        .unwrap_or_default();
    assert!(file.ends_with("model-00002-of-00002.safetensors"));
    assert_eq!(ckpt.num_parameters(), 6);
    let roles: Vec<FileRole> = ckpt.files().iter().map(|f| f.role).collect();
    assert!(roles.contains(&FileRole::WeightsIndex));
    Ok(())
}

fn index_error(weight_map: Value, setup: impl FnOnce(&Path)) -> String {
    let dir = sharded_dir(weight_map);
    setup(dir.path());
    let err = open_err(dir.path());
    assert!(matches!(err, Error::InvalidIndex { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors.index.json"), "{msg}");
    msg
}

#[test]
fn index_rejects_path_traversal() {
    for bad in [
        "../model-00002-of-00002.safetensors",
        "/etc/passwd",
        "sub/x.safetensors",
        "..\\x.safetensors",
    ] {
        let mut map = good_map();
        map["c"] = json!(bad);
        let msg = index_error(map, |_| {});
        assert!(
            msg.contains(bad) && msg.contains("not a plain file name"),
            "{msg}"
        );
    }
}

#[test]
fn index_names_missing_shard() {
    let mut map = good_map();
    map["c"] = json!("model-00003-of-00002.safetensors");
    let msg = index_error(map, |_| {});
    assert!(msg.contains("model-00003-of-00002.safetensors"), "{msg}");
}

#[test]
fn index_tensor_missing_from_shard() {
    let mut map = good_map();
    map["d"] = json!("model-00002-of-00002.safetensors");
    let msg = index_error(map, |_| {});
    assert!(
        msg.contains("`d`") && msg.contains("does not contain it"),
        "{msg}"
    );
    // `c` is in shard 2, which the index still loads for `e`.
    let mut map = good_map();
    map["c"] = json!("model-00001-of-00002.safetensors");
    map["e"] = json!("model-00002-of-00002.safetensors");
    let msg = index_error(map, |dir| {
        write_st(
            dir,
            "model-00002-of-00002.safetensors",
            &[f32_tensor("c", &[3], 3.0), f32_tensor("e", &[1], 1.0)],
        );
    });
    assert!(
        msg.contains("`c`") && msg.contains("(it is in model-00002"),
        "{msg}"
    );
}

#[test]
fn index_duplicate_tensor_across_shards() {
    let msg = index_error(good_map(), |dir| {
        write_st(
            dir,
            "model-00002-of-00002.safetensors",
            &[f32_tensor("c", &[3], 3.0), f32_tensor("a", &[2], 5.0)],
        );
    });
    assert!(
        msg.contains("`a`") && msg.contains("stored in both"),
        "{msg}"
    );
}

#[test]
fn duplicate_tensor_without_index() {
    let dir = gemma_dir("model.");
    write_st(
        dir.path(),
        "extra.safetensors",
        &[f32_tensor("model.norm.weight", &[8], 1.0)],
    );
    let msg = open_err(dir.path()).to_string();
    assert!(
        msg.contains("model.norm.weight") && msg.contains("stored in both"),
        "{msg}"
    );
}

#[test]
fn malformed_index() {
    let dir = sharded_dir(good_map());
    write_json(
        dir.path(),
        "model.safetensors.index.json",
        &json!({"weights": {}}),
    );
    let msg = open_err(dir.path()).to_string();
    assert!(
        msg.contains("model.safetensors.index.json") && msg.contains("weight_map"),
        "{msg}"
    );
    write(&dir.path().join("model.safetensors.index.json"), "{oops");
    let err = open_err(dir.path());
    assert!(matches!(err, Error::Json { .. }), "{err:?}");
}

#[test]
fn pickle_only_is_refused() {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &tiny_gemma_config());
    write(&dir.path().join("pytorch_model.bin"), b"\x80\x02}q\x00.");
    let err = open_err(dir.path());
    let msg = err.to_string();
    assert!(matches!(err, Error::PickleRefused { .. }), "{msg}");
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains("convert it to .safetensors"),
        "{msg}"
    );
}

#[test]
fn pickle_beside_safetensors_is_ignored() -> TestResult {
    let dir = gemma_dir("model.");
    write(&dir.path().join("pytorch_model.bin"), b"\x80\x02}q\x00.");
    let ckpt = Checkpoint::open(dir.path())?;
    assert!(ckpt.contains("model.embed_tokens.weight"));
    Ok(())
}

#[test]
fn no_weights() {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &tiny_gemma_config());
    write_json(dir.path(), "tokenizer.json", &json!({}));
    let err = open_err(dir.path());
    assert!(matches!(err, Error::NoWeights { .. }), "{err:?}");
    assert!(err.to_string().contains("no weights"));
}

#[test]
fn missing_config_and_missing_dir() {
    let dir = tempdir();
    write_st(
        dir.path(),
        "model.safetensors",
        &[f32_tensor("a", &[1], 1.0)],
    );
    let msg = open_err(dir.path()).to_string();
    assert!(msg.contains("config.json"), "{msg}");
    let gone: PathBuf = dir.path().join("nope");
    let msg = open_err(&gone).to_string();
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn corrupt_weights_name_the_file() {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &tiny_gemma_config());
    write(&dir.path().join("model.safetensors"), [0xffu8; 12]);
    let err = open_err(dir.path());
    let msg = err.to_string();
    assert!(matches!(err, Error::Safetensors { .. }), "{msg}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("exceeds the limit"),
        "{msg}"
    );
}

fn albert_config(architecture: &str) -> Value {
    json!({
        "architectures": [architecture], "model_type": "albert",
        "vocab_size": 12, "embedding_size": 4, "hidden_size": 8, "num_hidden_layers": 3,
        "num_hidden_groups": 1, "inner_group_num": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "hidden_act": "gelu_new", "max_position_embeddings": 16,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
        "id2label": {"0": "greeting", "1": "goodbye", "2": "oos"}
    })
}

#[test]
fn albert_prefix_detection_and_classifier_shapes() -> TestResult {
    for (architecture, prefix) in [
        ("AlbertForSequenceClassification", "albert."),
        ("AlbertModel", ""),
    ] {
        let dir = tempdir();
        let config_json = albert_config(architecture);
        write_json(dir.path(), "config.json", &config_json);
        write(&dir.path().join("spiece.model"), "sp");
        let mut config = ava_core::AlbertConfig::from_json(Path::new("x"), &config_json)?;
        config.weight_prefix = prefix.to_string();
        let tensors: Vec<T> = config
            .expected_tensors()
            .iter()
            .map(|(n, s)| f32_tensor(n, s, 0.0))
            .collect();
        write_st(dir.path(), "model.safetensors", &tensors);

        let ckpt = Checkpoint::open(dir.path())?;
        assert_eq!(ckpt.family()?, ModelFamily::Albert);
        let albert = ckpt.albert()?;
        assert_eq!(albert.weight_prefix, prefix);
        assert_eq!(albert.is_classifier(), prefix == "albert.");
        ckpt.check_shapes(&albert.expected_tensors())?;
        let tokenizer = ckpt
            .files()
            .iter()
            .find(|f| f.role == FileRole::Tokenizer)
            .map(|f| f.relative.as_str());
        assert_eq!(tokenizer, Some("spiece.model"));
    }
    Ok(())
}

#[test]
fn albert_classifier_with_wrong_label_count() -> TestResult {
    let dir = tempdir();
    let config_json = albert_config("AlbertForSequenceClassification");
    write_json(dir.path(), "config.json", &config_json);
    let config = ava_core::AlbertConfig::from_json(Path::new("x"), &config_json)?;
    let tensors: Vec<T> = config
        .expected_tensors()
        .iter()
        .map(|(n, s)| {
            if n == "classifier.weight" {
                f32_tensor(n, &[2, 8], 0.0)
            } else {
                f32_tensor(n, s, 0.0)
            }
        })
        .collect();
    write_st(dir.path(), "model.safetensors", &tensors);
    let ckpt = Checkpoint::open(dir.path())?;
    let msg = ckpt
        .check_shapes(&ckpt.albert()?.expected_tensors())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("classifier.weight") && msg.contains("[2, 8]") && msg.contains("[3, 8]"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn mixed_dtypes_read_back() -> TestResult {
    let dir = tempdir();
    write_json(dir.path(), "config.json", &albert_config("AlbertModel"));
    let bf16: Vec<u8> = [1.0f32, -0.5]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let f16: Vec<u8> = [2.0f32]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let tensors = [
        T {
            name: "bf".into(),
            dtype: "BF16",
            shape: vec![2],
            data: bf16,
        },
        T {
            name: "h".into(),
            dtype: "F16",
            shape: vec![1],
            data: f16,
        },
        T {
            name: "q".into(),
            dtype: "I8",
            shape: vec![3],
            data: vec![0x80, 0, 0x7f],
        },
    ];
    write_st(dir.path(), "model.safetensors", &tensors);
    let ckpt = Checkpoint::open(dir.path())?;
    assert_eq!(ckpt.tensor("bf")?.to_f32_vec()?, vec![1.0, -0.5]);
    assert_eq!(ckpt.tensor("h")?.to_f32_vec()?, vec![2.0]);
    assert_eq!(ckpt.tensor("q")?.to_f32_vec()?, vec![-128.0, 0.0, 127.0]);
    assert_eq!(ckpt.weights_bytes(), 4 + 2 + 3);
    Ok(())
}
