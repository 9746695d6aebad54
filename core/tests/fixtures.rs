//! The committed tiny checkpoints (made by transformers, `fixtures/gen/make_tiny.py`) load
//! with the right per-layer attention kinds and RoPE parameters in both config styles.

use std::path::{Path, PathBuf};

use ava_core::{Checkpoint, DType, LayerKind, ModelFamily, RopeScaling};

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
}

fn kinds(pattern: &str) -> Vec<LayerKind> {
    pattern
        .chars()
        .map(|c| {
            if c == 'F' {
                LayerKind::Full
            } else {
                LayerKind::Sliding
            }
        })
        .collect()
}

#[test]
fn transformers5_config() {
    let ck = Checkpoint::open(&model("gemma3-tiny")).unwrap();
    assert_eq!(ck.family().unwrap(), ModelFamily::Gemma3);
    let cfg = ck.gemma3().unwrap();
    // `layer_types` wins over the stray `_sliding_window_pattern: 6` transformers also writes.
    assert_eq!(cfg.layer_types, kinds("SFSSFS"));
    assert_eq!(cfg.rope_global.theta, 1e6);
    assert_eq!(cfg.rope_global.scaling, RopeScaling::Linear { factor: 2.0 });
    assert_eq!(cfg.rope_local.theta, 1e4);
    assert_eq!(cfg.rope_local.scaling, RopeScaling::None);
    assert_eq!(
        (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim
        ),
        (4, 2, 16)
    );
    assert_eq!(cfg.sliding_window, 8);
    assert_eq!(cfg.query_pre_attn_scalar, 24.0);
    assert!(cfg.tie_word_embeddings);
    ck.check_shapes(&cfg.expected_tensors()).unwrap();
    assert_eq!(
        ck.tensor("model.embed_tokens.weight").unwrap().dtype,
        DType::F32
    );
}

#[test]
fn legacy_config() {
    let ck = Checkpoint::open(&model("gemma3-tiny-legacy")).unwrap();
    let cfg = ck.gemma3().unwrap();
    assert_eq!(cfg.layer_types, kinds("SSFSSF"));
    assert_eq!(cfg.rope_global.theta, 1e6);
    assert_eq!(cfg.rope_global.scaling, RopeScaling::None);
    assert_eq!(cfg.rope_local.theta, 1e4);
    assert_eq!(cfg.eos_token_ids, vec![1, 6]);
    ck.check_shapes(&cfg.expected_tensors()).unwrap();
    let embed = ck.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(embed.dtype, DType::BF16);
    assert_eq!(embed.shape, &[512, 64]);
    assert_eq!(embed.to_f32_vec().unwrap().len(), 512 * 64);
}

#[test]
fn albert_classifier() {
    let ck = Checkpoint::open(&model("albert-tiny-cls")).unwrap();
    assert_eq!(ck.family().unwrap(), ModelFamily::Albert);
    let cfg = ck.albert().unwrap();
    assert!(cfg.is_classifier());
    assert_eq!(cfg.id2label.len(), 5);
    assert_eq!(cfg.num_hidden_groups, 1);
    ck.check_shapes(&cfg.expected_tensors()).unwrap();
}
