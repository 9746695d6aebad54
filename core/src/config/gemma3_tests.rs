//! Tests of the Gemma 3 config reader against realistic `config.json` files.

use super::*;
use crate::error::Error;
use serde_json::json;

const PATH: &str = "/ckpt/gemma/config.json";

fn parse(v: Value) -> Result<Gemma3Config> {
    Gemma3Config::from_json(Path::new(PATH), &v)
}

fn err_of(v: Value) -> String {
    match parse(v) {
        Ok(c) => panic!("expected an error, parsed {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// google/gemma-3-1b-it as published (transformers 4.50).
fn gemma3_1b() -> Value {
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": null,
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": [1, 106],
        "final_logit_softcapping": null,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "initializer_range": 0.02,
        "intermediate_size": 6912,
        "max_position_embeddings": 32768,
        "model_type": "gemma3_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 26,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000,
        "rope_scaling": null,
        "rope_theta": 1000000,
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0",
        "use_cache": true,
        "vocab_size": 262144
    })
}

/// google/gemma-3-4b-it as published: sparse `text_config` (defaults omitted).
fn gemma3_4b() -> Value {
    json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "boi_token_index": 255999,
        "eoi_token_index": 256000,
        "eos_token_id": [1, 106],
        "image_token_index": 262144,
        "initializer_range": 0.02,
        "mm_tokens_per_image": 256,
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "model_type": "gemma3_text",
            "num_hidden_layers": 34,
            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "sliding_window": 1024
        },
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0",
        "vision_config": {
            "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
            "model_type": "siglip_vision_model", "num_attention_heads": 16,
            "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false
        }
    })
}

/// A gemma-3-270m config as written by transformers 5.
fn gemma3_270m_v5() -> Value {
    let layer_types: Vec<&str> = (0..18)
        .map(|i| {
            if (i + 1) % 6 == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    json!({
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": false,
        "attn_logit_softcapping": null,
        "bos_token_id": 2,
        "dtype": "bfloat16",
        "eos_token_id": 1,
        "final_logit_softcapping": null,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 640,
        "intermediate_size": 2048,
        "layer_types": layer_types,
        "max_position_embeddings": 32768,
        "model_type": "gemma3_text",
        "num_attention_heads": 4,
        "num_hidden_layers": 18,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {
            "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
        },
        "sliding_window": 512,
        "tie_word_embeddings": true,
        "transformers_version": "5.0.0",
        "use_bidirectional_attention": false,
        "use_cache": true,
        "vocab_size": 262144
    })
}

fn full_layers(c: &Gemma3Config) -> Vec<usize> {
    (0..c.num_hidden_layers)
        .filter(|&i| c.layer_kind(i) == Some(LayerKind::Full))
        .collect()
}

#[test]
fn old_style_1b() -> Result<()> {
    let c = parse(gemma3_1b())?;
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.head_dim),
        (1152, 26, 256)
    );
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (4, 1));
    assert_eq!(full_layers(&c), vec![5, 11, 17, 23]);
    assert_eq!(c.rope(LayerKind::Full), &RopeParams::plain(1e6));
    assert_eq!(c.rope(LayerKind::Sliding), &RopeParams::plain(1e4));
    assert_eq!(c.eos_token_ids, vec![1, 106]);
    assert_eq!((c.bos_token_id, c.pad_token_id), (2, 0));
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.weight_prefix, "model.");
    assert!(c.tie_word_embeddings);
    assert_eq!(c.final_logit_softcapping, None);
    assert!((c.attention_scale() - 1.0 / 16.0).abs() < 1e-12);
    Ok(())
}

#[test]
fn multimodal_4b_reads_text_config_and_defaults() -> Result<()> {
    let c = parse(gemma3_4b())?;
    assert_eq!(
        (c.hidden_size, c.num_hidden_layers, c.sliding_window),
        (2560, 34, 1024)
    );
    // Omitted in the file: transformers' defaults.
    assert_eq!((c.num_attention_heads, c.num_key_value_heads), (8, 4));
    assert_eq!((c.vocab_size, c.head_dim), (262_208, 256));
    assert_eq!(c.max_position_embeddings, 131_072);
    assert_eq!(full_layers(&c), vec![5, 11, 17, 23, 29]);
    assert_eq!(c.rope_global.theta, 1e6);
    assert_eq!(c.rope_global.scaling, RopeScaling::Linear { factor: 8.0 });
    assert_eq!(c.rope_local, RopeParams::plain(1e4));
    // From the top level.
    assert_eq!(c.eos_token_ids, vec![1, 106]);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    assert_eq!(c.weight_prefix, MULTIMODAL_PREFIX);
    Ok(())
}

#[test]
fn transformers5_layer_types_and_rope_parameters() -> Result<()> {
    let c = parse(gemma3_270m_v5())?;
    assert_eq!(full_layers(&c), vec![5, 11, 17]);
    assert_eq!(c.num_full_layers(), 3);
    assert_eq!(c.rope_global, RopeParams::plain(1e6));
    assert_eq!(c.rope_local, RopeParams::plain(1e4));
    assert_eq!(c.eos_token_ids, vec![1]);
    assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    Ok(())
}

#[test]
fn transformers5_scaled_global_rope() -> Result<()> {
    let mut v = gemma3_270m_v5();
    v["rope_parameters"]["full_attention"] =
        json!({"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0});
    let c = parse(v)?;
    assert_eq!(c.rope_global.scaling, RopeScaling::Linear { factor: 8.0 });
    assert_eq!(c.rope_local.scaling, RopeScaling::None);
    Ok(())
}

#[test]
fn flat_rope_parameters_apply_to_global_layers() -> Result<()> {
    let mut v = gemma3_270m_v5();
    v["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 500000.0});
    let c = parse(v)?;
    assert_eq!(c.rope_global, RopeParams::plain(5e5));
    assert_eq!(c.rope_local, RopeParams::plain(1e4));
    Ok(())
}

#[test]
fn old_pattern_key_with_underscore() -> Result<()> {
    let mut v = gemma3_1b();
    v.as_object_mut()
        .map(|o| o.remove("sliding_window_pattern"));
    v["_sliding_window_pattern"] = json!(2);
    assert_eq!(full_layers(&parse(v)?).len(), 13);
    Ok(())
}

#[test]
fn unsupported_rope_scaling_names_the_key() {
    let mut v = gemma3_4b();
    v["text_config"]["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
    let msg = err_of(v);
    assert!(msg.starts_with(PATH), "{msg}");
    assert!(
        msg.contains("`text_config.rope_scaling.rope_type`") && msg.contains("yarn"),
        "{msg}"
    );
    let mut v = gemma3_270m_v5();
    v["rope_parameters"]["sliding_attention"]["rope_type"] = json!("dynamic");
    let msg = err_of(v);
    assert!(
        msg.contains("rope_parameters.sliding_attention.rope_type"),
        "{msg}"
    );
}

#[test]
fn validation_errors_name_file_and_key() {
    let cases: [(&str, Value, &str); 6] = [
        ("num_key_value_heads", json!(3), "not a multiple"),
        ("hidden_size", json!(0), "greater than 0"),
        ("sliding_window", json!(0), "greater than 0"),
        (
            "layer_types",
            json!(["full_attention"]),
            "1 entries but num_hidden_layers is 26",
        ),
        ("hidden_activation", json!("silu"), "unsupported activation"),
        ("head_dim", json!("big"), "non-negative integer"),
    ];
    for (key, value, needle) in cases {
        let mut v = gemma3_1b();
        v[key] = value;
        let msg = err_of(v);
        assert!(msg.starts_with(PATH), "{msg}");
        assert!(
            msg.contains(&format!("`{key}`")) && msg.contains(needle),
            "{msg}"
        );
    }
}

#[test]
fn unknown_layer_type() {
    let mut v = gemma3_270m_v5();
    v["layer_types"][3] = json!("chunked_attention");
    let msg = err_of(v);
    assert!(
        msg.contains("`layer_types[3]`") && msg.contains("chunked_attention"),
        "{msg}"
    );
}

#[test]
fn embedding_gemma_is_refused() {
    let mut v = gemma3_270m_v5();
    v["use_bidirectional_attention"] = json!(true);
    assert!(err_of(v).contains("use_bidirectional_attention"));
}

#[test]
fn softcapping_is_kept() -> Result<()> {
    let mut v = gemma3_1b();
    v["final_logit_softcapping"] = json!(30.0);
    assert_eq!(parse(v)?.final_logit_softcapping, Some(30.0));
    Ok(())
}

#[test]
fn hidden_act_alias() -> Result<()> {
    let mut v = gemma3_1b();
    v.as_object_mut().map(|o| o.remove("hidden_activation"));
    v["hidden_act"] = json!("gelu_pytorch_tanh");
    assert_eq!(parse(v)?.hidden_activation, GELU_PYTORCH_TANH);
    Ok(())
}

#[test]
fn expected_tensor_names_and_shapes() -> Result<()> {
    let c = parse(gemma3_1b())?;
    let t = c.expected_tensors();
    assert_eq!(t.len(), 1 + 26 * 13 + 1);
    assert_eq!(
        t[0],
        ("model.embed_tokens.weight".to_string(), vec![262144, 1152])
    );
    let find = |n: &str| t.iter().find(|(name, _)| name == n).map(|(_, s)| s.clone());
    assert_eq!(
        find("model.layers.0.self_attn.q_proj.weight"),
        Some(vec![1024, 1152])
    );
    assert_eq!(
        find("model.layers.0.self_attn.k_proj.weight"),
        Some(vec![256, 1152])
    );
    assert_eq!(
        find("model.layers.25.self_attn.o_proj.weight"),
        Some(vec![1152, 1024])
    );
    assert_eq!(
        find("model.layers.3.self_attn.q_norm.weight"),
        Some(vec![256])
    );
    assert_eq!(
        find("model.layers.3.mlp.down_proj.weight"),
        Some(vec![1152, 6912])
    );
    assert_eq!(find("model.norm.weight"), Some(vec![1152]));
    assert_eq!(find("lm_head.weight"), None);
    Ok(())
}

#[test]
fn untied_head_names() -> Result<()> {
    let mut v = gemma3_1b();
    v["tie_word_embeddings"] = json!(false);
    let mut c = parse(v)?;
    assert_eq!(
        c.expected_tensors().last().map(|t| t.0.as_str()),
        Some("lm_head.weight")
    );
    c.weight_prefix = MULTIMODAL_PREFIX.into();
    assert_eq!(c.lm_head_name(), "language_model.lm_head.weight");
    c.weight_prefix = MULTIMODAL_V5_PREFIX.into();
    assert_eq!(c.lm_head_name(), "lm_head.weight");
    Ok(())
}

#[test]
fn from_file_reports_missing_and_bad_json() {
    let dir = tempfile::tempdir().ok();
    let dir = dir
        .as_ref()
        .map(|d| d.path())
        .unwrap_or(Path::new("/nonexistent"));
    let missing = dir.join("absent.json");
    let msg = Gemma3Config::from_file(&missing).unwrap_err().to_string();
    assert!(msg.contains("absent.json"), "{msg}");
    let bad = dir.join("bad.json");
    if std::fs::write(&bad, "{not json").is_ok() {
        let err = Gemma3Config::from_file(&bad).unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");
        assert!(err.to_string().contains("bad.json"));
    }
}

#[test]
fn hostile_sizes_are_refused_before_anything_is_allocated() {
    use crate::config::limits;
    let cases = [
        ("num_hidden_layers", 1u64 << 40),
        ("num_attention_heads", (limits::MAX_HEADS + 1) as u64),
        ("head_dim", u64::MAX),
        ("vocab_size", (limits::MAX_VOCAB + 1) as u64),
        ("hidden_size", 1 << 33),
        ("intermediate_size", 1 << 40),
        ("max_position_embeddings", 1 << 50),
        ("sliding_window", 1 << 50),
    ];
    for (key, value) in cases {
        let v = serde_json::json!({ "model_type": "gemma3_text", key: value });
        let err = Gemma3Config::from_json(std::path::Path::new("config.json"), &v)
            .expect_err(key)
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
}
