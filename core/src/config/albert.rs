//! ALBERT encoder config (`AlbertConfig`), for `AlbertModel` and `AlbertForSequenceClassification`.
//!
//! Source of truth: transformers `models/albert/configuration_albert.py` and
//! `modeling_albert.py` (tensor names). ALBERT shares one set of layer weights per group:
//! layer `i` of `num_hidden_layers` runs group `i * num_hidden_groups / num_hidden_layers`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{positive, read_json, Fields};
use crate::error::Result;

/// transformers default `vocab_size`.
pub const DEFAULT_VOCAB_SIZE: usize = 30_000;
/// transformers default `embedding_size`.
pub const DEFAULT_EMBEDDING_SIZE: usize = 128;
/// transformers default `hidden_size` (the xxlarge model's).
pub const DEFAULT_HIDDEN_SIZE: usize = 4096;
/// transformers default `num_hidden_layers`.
pub const DEFAULT_NUM_HIDDEN_LAYERS: usize = 12;
/// transformers default `num_attention_heads`.
pub const DEFAULT_NUM_ATTENTION_HEADS: usize = 64;
/// transformers default `intermediate_size`.
pub const DEFAULT_INTERMEDIATE_SIZE: usize = 16_384;
/// transformers default `max_position_embeddings`.
pub const DEFAULT_MAX_POSITION_EMBEDDINGS: usize = 512;
/// transformers default `type_vocab_size`.
pub const DEFAULT_TYPE_VOCAB_SIZE: usize = 2;
/// transformers default `layer_norm_eps`.
pub const DEFAULT_LAYER_NORM_EPS: f64 = 1e-12;
/// transformers default `hidden_act`.
pub const DEFAULT_HIDDEN_ACT: &str = "gelu_new";
/// transformers default label count when `id2label` is absent.
pub const DEFAULT_NUM_LABELS: usize = 2;
/// Activations we can run.
pub const SUPPORTED_ACTIVATIONS: [&str; 7] = [
    "gelu",
    "gelu_new",
    "gelu_fast",
    "gelu_pytorch_tanh",
    "relu",
    "silu",
    "swish",
];
/// Prefix of the encoder weights in task-head checkpoints (bare `AlbertModel` may omit it).
pub const ALBERT_PREFIX: &str = "albert.";
/// Architecture name of the sequence classifier.
pub const SEQUENCE_CLASSIFICATION: &str = "AlbertForSequenceClassification";
/// Heads built with `add_pooling_layer=False`.
const WITHOUT_POOLER: [&str; 3] = [
    "AlbertForMaskedLM",
    "AlbertForTokenClassification",
    "AlbertForQuestionAnswering",
];

/// ALBERT hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AlbertConfig {
    /// Word embedding rows.
    pub vocab_size: usize,
    /// Factorised embedding width (projected to `hidden_size`).
    pub embedding_size: usize,
    /// Encoder width.
    pub hidden_size: usize,
    /// Layers run (sharing weights within a group).
    pub num_hidden_layers: usize,
    /// Distinct weight groups.
    pub num_hidden_groups: usize,
    /// Distinct layers inside one group.
    pub inner_group_num: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// FFN activation (`gelu_new` for the released models).
    pub hidden_act: String,
    /// Position embedding rows.
    pub max_position_embeddings: usize,
    /// Token type embedding rows.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Padding token.
    pub pad_token_id: u32,
    /// Class names by index (transformers writes keys as strings: `"0"`).
    pub id2label: BTreeMap<usize, String>,
    /// HF class names from `architectures`.
    pub architectures: Vec<String>,
    /// Declared weight dtype (`torch_dtype` or `dtype`).
    pub dtype: Option<String>,
    /// Prefix of encoder weights: `albert.`, or empty for some bare `AlbertModel` saves;
    /// set from the tensors by `Checkpoint::albert`.
    pub weight_prefix: String,
}

impl AlbertConfig {
    /// Reads `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(path, &read_json(path)?)
    }

    /// Parses a config (`path` is for messages); absent keys take transformers' defaults.
    pub fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let f = Fields::new(path, v)?;
        let size = |key: &str, default: usize| -> Result<usize> {
            positive(&f, key, f.usize_or(key, default)?)
        };
        let architectures = f
            .opt_str_list("architectures")?
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        let dtype = match f.opt_str("dtype")? {
            Some(d) => Some(d),
            None => f.opt_str("torch_dtype")?,
        };
        let config = AlbertConfig {
            vocab_size: size("vocab_size", DEFAULT_VOCAB_SIZE)?,
            embedding_size: size("embedding_size", DEFAULT_EMBEDDING_SIZE)?,
            hidden_size: size("hidden_size", DEFAULT_HIDDEN_SIZE)?,
            num_hidden_layers: size("num_hidden_layers", DEFAULT_NUM_HIDDEN_LAYERS)?,
            num_hidden_groups: size("num_hidden_groups", 1)?,
            inner_group_num: size("inner_group_num", 1)?,
            num_attention_heads: size("num_attention_heads", DEFAULT_NUM_ATTENTION_HEADS)?,
            intermediate_size: size("intermediate_size", DEFAULT_INTERMEDIATE_SIZE)?,
            hidden_act: read_activation(&f)?,
            max_position_embeddings: size(
                "max_position_embeddings",
                DEFAULT_MAX_POSITION_EMBEDDINGS,
            )?,
            type_vocab_size: size("type_vocab_size", DEFAULT_TYPE_VOCAB_SIZE)?,
            layer_norm_eps: f.f64_or("layer_norm_eps", DEFAULT_LAYER_NORM_EPS)?,
            pad_token_id: f.opt_u32("pad_token_id")?.unwrap_or(0),
            id2label: read_id2label(&f)?,
            architectures,
            dtype: dtype.map(str::to_string),
            weight_prefix: ALBERT_PREFIX.to_string(),
        };
        config.validate(&f)?;
        Ok(config)
    }

    fn validate(&self, f: &Fields<'_>) -> Result<()> {
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(f.err(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not a multiple of {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.num_hidden_groups > self.num_hidden_layers {
            return Err(f.err(
                "num_hidden_groups",
                format!(
                    "{} groups for only {} layers",
                    self.num_hidden_groups, self.num_hidden_layers
                ),
            ));
        }
        if let Some(kind) = f.opt_str("position_embedding_type")? {
            if kind != "absolute" {
                return Err(f.err(
                    "position_embedding_type",
                    format!("`{kind}` is not supported (only absolute)"),
                ));
            }
        }
        Ok(())
    }

    /// Whether this is `AlbertForSequenceClassification` (has `classifier.*`).
    pub fn is_classifier(&self) -> bool {
        self.architectures
            .iter()
            .any(|a| a == SEQUENCE_CLASSIFICATION)
    }

    /// Number of classes (`id2label` entries).
    pub fn num_labels(&self) -> usize {
        self.id2label.len()
    }

    /// Whether the checkpoint's class has the pooler (`dense + tanh` on `[CLS]`).
    pub fn has_pooler(&self) -> bool {
        !self
            .architectures
            .iter()
            .any(|a| WITHOUT_POOLER.contains(&a.as_str()))
    }

    /// Weight group run by layer `layer` (as transformers' `AlbertTransformer`).
    pub fn group_of_layer(&self, layer: usize) -> usize {
        layer * self.num_hidden_groups / self.num_hidden_layers
    }

    /// Per-head dimension.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Every weight tensor the model needs, named as transformers saves them.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let p = &self.weight_prefix;
        let (e, h, i) = (
            self.embedding_size,
            self.hidden_size,
            self.intermediate_size,
        );
        let mut out = Vec::new();
        let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
        push(
            format!("{p}embeddings.word_embeddings.weight"),
            vec![self.vocab_size, e],
        );
        push(
            format!("{p}embeddings.position_embeddings.weight"),
            vec![self.max_position_embeddings, e],
        );
        push(
            format!("{p}embeddings.token_type_embeddings.weight"),
            vec![self.type_vocab_size, e],
        );
        push(format!("{p}embeddings.LayerNorm.weight"), vec![e]);
        push(format!("{p}embeddings.LayerNorm.bias"), vec![e]);
        push(
            format!("{p}encoder.embedding_hidden_mapping_in.weight"),
            vec![h, e],
        );
        push(
            format!("{p}encoder.embedding_hidden_mapping_in.bias"),
            vec![h],
        );
        for g in 0..self.num_hidden_groups {
            for l in 0..self.inner_group_num {
                let lp = format!("{p}encoder.albert_layer_groups.{g}.albert_layers.{l}.");
                for (name, out_dim, in_dim) in [
                    ("attention.query", h, h),
                    ("attention.key", h, h),
                    ("attention.value", h, h),
                    ("attention.dense", h, h),
                    ("ffn", i, h),
                    ("ffn_output", h, i),
                ] {
                    push(format!("{lp}{name}.weight"), vec![out_dim, in_dim]);
                    push(format!("{lp}{name}.bias"), vec![out_dim]);
                }
                for norm in ["attention.LayerNorm", "full_layer_layer_norm"] {
                    push(format!("{lp}{norm}.weight"), vec![h]);
                    push(format!("{lp}{norm}.bias"), vec![h]);
                }
            }
        }
        if self.has_pooler() {
            push(format!("{p}pooler.weight"), vec![h, h]);
            push(format!("{p}pooler.bias"), vec![h]);
        }
        if self.is_classifier() {
            push("classifier.weight".to_string(), vec![self.num_labels(), h]);
            push("classifier.bias".to_string(), vec![self.num_labels()]);
        }
        out
    }
}

fn read_activation(f: &Fields<'_>) -> Result<String> {
    let act = f.opt_str("hidden_act")?.unwrap_or(DEFAULT_HIDDEN_ACT);
    if !SUPPORTED_ACTIVATIONS.contains(&act) {
        return Err(f.err(
            "hidden_act",
            format!(
                "unsupported activation `{act}` (supported: {})",
                SUPPORTED_ACTIVATIONS.join(", ")
            ),
        ));
    }
    Ok(act.to_string())
}

/// `id2label` with integer keys `0..n`; transformers' two default labels when absent.
fn read_id2label(f: &Fields<'_>) -> Result<BTreeMap<usize, String>> {
    let Some(map) = f.child("id2label")? else {
        return Ok((0..DEFAULT_NUM_LABELS)
            .map(|i| (i, format!("LABEL_{i}")))
            .collect());
    };
    let mut out = BTreeMap::new();
    for (k, v) in map.entries() {
        let id: usize = k
            .parse()
            .map_err(|_| map.err(k, "label ids must be integers"))?;
        let label = v
            .as_str()
            .ok_or_else(|| map.err(k, format!("expected a label string, found {v}")))?;
        out.insert(id, label.to_string());
    }
    if let Some((&last, _)) = out.last_key_value() {
        if last + 1 != out.len() {
            return Err(f.err(
                "id2label",
                format!(
                    "ids must be 0..{} without gaps, found up to {last}",
                    out.len()
                ),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATH: &str = "/ckpt/albert/config.json";

    /// albert/albert-base-v2 as published.
    fn albert_base_v2() -> Value {
        json!({
            "architectures": ["AlbertForMaskedLM"],
            "attention_probs_dropout_prob": 0,
            "bos_token_id": 2,
            "classifier_dropout_prob": 0.1,
            "down_scale_factor": 1,
            "embedding_size": 128,
            "eos_token_id": 3,
            "gap_size": 0,
            "hidden_act": "gelu_new",
            "hidden_dropout_prob": 0,
            "hidden_size": 768,
            "initializer_range": 0.02,
            "inner_group_num": 1,
            "intermediate_size": 3072,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512,
            "model_type": "albert",
            "net_structure_type": 0,
            "num_attention_heads": 12,
            "num_hidden_groups": 1,
            "num_hidden_layers": 12,
            "num_memory_blocks": 0,
            "pad_token_id": 0,
            "type_vocab_size": 2,
            "vocab_size": 30000
        })
    }

    /// A small CLINC150-style classifier as transformers 5 saves it.
    fn classifier() -> Value {
        let mut v = albert_base_v2();
        v["architectures"] = json!(["AlbertForSequenceClassification"]);
        v["embedding_size"] = json!(64);
        v["hidden_size"] = json!(256);
        v["num_attention_heads"] = json!(4);
        v["intermediate_size"] = json!(1024);
        v["num_hidden_layers"] = json!(4);
        v["dtype"] = json!("float32");
        v["id2label"] = json!({"0": "balance", "1": "transfer", "2": "oos"});
        v["label2id"] = json!({"balance": 0, "transfer": 1, "oos": 2});
        v
    }

    fn parse(v: Value) -> Result<AlbertConfig> {
        AlbertConfig::from_json(Path::new(PATH), &v)
    }

    #[test]
    fn base_v2() -> Result<()> {
        let c = parse(albert_base_v2())?;
        assert_eq!(
            (c.vocab_size, c.embedding_size, c.hidden_size),
            (30000, 128, 768)
        );
        assert_eq!(
            (c.num_hidden_layers, c.num_hidden_groups, c.inner_group_num),
            (12, 1, 1)
        );
        assert_eq!(
            (c.num_attention_heads, c.head_dim(), c.intermediate_size),
            (12, 64, 3072)
        );
        assert_eq!(c.hidden_act, "gelu_new");
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert!(!c.is_classifier());
        assert!(!c.has_pooler());
        assert_eq!(c.num_labels(), 2);
        assert_eq!(c.group_of_layer(11), 0);
        let t = c.expected_tensors();
        // 7 embedding tensors + 16 per shared layer, no pooler for the MLM head.
        assert_eq!(t.len(), 7 + 16);
        assert_eq!(
            t[0],
            (
                "albert.embeddings.word_embeddings.weight".to_string(),
                vec![30000, 128]
            )
        );
        Ok(())
    }

    #[test]
    fn sequence_classifier() -> Result<()> {
        let c = parse(classifier())?;
        assert!(c.is_classifier() && c.has_pooler());
        assert_eq!(c.num_labels(), 3);
        assert_eq!(c.id2label.get(&2).map(String::as_str), Some("oos"));
        assert_eq!(c.dtype.as_deref(), Some("float32"));
        let t = c.expected_tensors();
        let find = |n: &str| t.iter().find(|(name, _)| name == n).map(|(_, s)| s.clone());
        let layer = "albert.encoder.albert_layer_groups.0.albert_layers.0.";
        assert_eq!(find(&format!("{layer}ffn.weight")), Some(vec![1024, 256]));
        assert_eq!(
            find(&format!("{layer}ffn_output.weight")),
            Some(vec![256, 1024])
        );
        assert_eq!(
            find(&format!("{layer}attention.LayerNorm.bias")),
            Some(vec![256])
        );
        assert_eq!(
            find("albert.encoder.embedding_hidden_mapping_in.weight"),
            Some(vec![256, 64])
        );
        assert_eq!(find("albert.pooler.weight"), Some(vec![256, 256]));
        assert_eq!(find("classifier.weight"), Some(vec![3, 256]));
        assert_eq!(find("classifier.bias"), Some(vec![3]));
        Ok(())
    }

    #[test]
    fn groups_map_layers() -> Result<()> {
        let mut v = albert_base_v2();
        v["num_hidden_groups"] = json!(3);
        v["inner_group_num"] = json!(2);
        let c = parse(v)?;
        let groups: Vec<usize> = (0..12).map(|i| c.group_of_layer(i)).collect();
        assert_eq!(groups, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(c.expected_tensors().len(), 7 + 16 * 6);
        Ok(())
    }

    #[test]
    fn errors_name_file_and_key() {
        let cases: [(&str, Value, &str); 5] = [
            ("num_attention_heads", json!(7), "not a multiple"),
            (
                "num_hidden_groups",
                json!(13),
                "13 groups for only 12 layers",
            ),
            ("hidden_act", json!("mish"), "unsupported activation"),
            ("hidden_size", json!(0), "greater than 0"),
            (
                "position_embedding_type",
                json!("relative_key"),
                "not supported",
            ),
        ];
        for (key, value, needle) in cases {
            let mut v = albert_base_v2();
            v[key] = value;
            let msg = parse(v).unwrap_err().to_string();
            assert!(msg.starts_with(PATH), "{msg}");
            assert!(
                msg.contains(&format!("`{key}`")) && msg.contains(needle),
                "{msg}"
            );
        }
    }

    #[test]
    fn hostile_sizes_are_refused_before_anything_is_allocated() {
        let cases = [
            ("num_hidden_layers", json!(1u64 << 40)),
            ("num_hidden_groups", json!(u64::MAX)),
            ("num_attention_heads", json!(1u64 << 32)),
            ("hidden_size", json!(1u64 << 33)),
            ("embedding_size", json!(1u64 << 40)),
            ("intermediate_size", json!(1u64 << 40)),
            ("vocab_size", json!(1u64 << 50)),
            ("max_position_embeddings", json!(1u64 << 50)),
        ];
        for (key, value) in cases {
            let mut v = albert_base_v2();
            v[key] = value;
            let msg = parse(v).unwrap_err().to_string();
            assert!(msg.contains(&format!("`{key}`")), "{key}: {msg}");
        }
    }

    #[test]
    fn bad_id2label() {
        let mut v = classifier();
        v["id2label"] = json!({"zero": "a"});
        let msg = parse(v).unwrap_err().to_string();
        assert!(msg.contains("`id2label.zero`"), "{msg}");
        let mut v = classifier();
        v["id2label"] = json!({"0": "a", "2": "b"});
        let msg = parse(v).unwrap_err().to_string();
        assert!(msg.contains("without gaps"), "{msg}");
    }
}
