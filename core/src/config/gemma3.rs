//! Gemma 3 text config, read from both `config.json` styles.
//!
//! Source of truth: transformers `models/gemma3/configuration_gemma3.py` (`Gemma3TextConfig`).
//! Older checkpoints (transformers 4.50-4.5x) describe layers with `sliding_window_pattern` and
//! RoPE with `rope_theta` (global) + `rope_local_base_freq` (local) + `rope_scaling` (global
//! only); transformers 5 writes `layer_types` and `rope_parameters`. Keys equal to the class
//! defaults may be left out (the 4B `text_config` omits `vocab_size`, heads and `head_dim`), so
//! absent keys take transformers' defaults, listed in the consts below.

use std::path::Path;

use serde_json::Value;

use super::{positive, read_json, Fields};
use crate::error::Result;

/// transformers default `vocab_size`.
pub const DEFAULT_VOCAB_SIZE: usize = 262_208;
/// transformers default `hidden_size`.
pub const DEFAULT_HIDDEN_SIZE: usize = 2304;
/// transformers default `intermediate_size`.
pub const DEFAULT_INTERMEDIATE_SIZE: usize = 9216;
/// transformers default `num_hidden_layers`.
pub const DEFAULT_NUM_HIDDEN_LAYERS: usize = 26;
/// transformers default `num_attention_heads`.
pub const DEFAULT_NUM_ATTENTION_HEADS: usize = 8;
/// transformers default `num_key_value_heads`.
pub const DEFAULT_NUM_KEY_VALUE_HEADS: usize = 4;
/// transformers default `head_dim`.
pub const DEFAULT_HEAD_DIM: usize = 256;
/// transformers default `max_position_embeddings`.
pub const DEFAULT_MAX_POSITION_EMBEDDINGS: usize = 131_072;
/// transformers default `sliding_window`.
pub const DEFAULT_SLIDING_WINDOW: usize = 4096;
/// transformers default `sliding_window_pattern`: every 6th layer is global.
pub const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;
/// transformers default `rms_norm_eps`.
pub const DEFAULT_RMS_NORM_EPS: f64 = 1e-6;
/// transformers default `rope_theta` (global layers).
pub const DEFAULT_ROPE_GLOBAL_THETA: f64 = 1_000_000.0;
/// transformers default `rope_local_base_freq` (sliding layers).
pub const DEFAULT_ROPE_LOCAL_THETA: f64 = 10_000.0;
/// transformers default `bos_token_id`.
pub const DEFAULT_BOS_TOKEN_ID: u32 = 2;
/// transformers default `eos_token_id`.
pub const DEFAULT_EOS_TOKEN_ID: u32 = 1;
/// transformers default `pad_token_id`.
pub const DEFAULT_PAD_TOKEN_ID: u32 = 0;
/// The only activation Gemma 3 uses.
pub const GELU_PYTORCH_TANH: &str = "gelu_pytorch_tanh";

/// Text weights of `Gemma3ForCausalLM`.
pub const CAUSAL_LM_PREFIX: &str = "model.";
/// Text weights of `Gemma3ForConditionalGeneration` saved by transformers 4.x.
pub const MULTIMODAL_PREFIX: &str = "language_model.model.";
/// Text weights of `Gemma3ForConditionalGeneration` saved by transformers 5.
pub const MULTIMODAL_V5_PREFIX: &str = "model.language_model.";
/// Every prefix under which Gemma 3 text weights are found, in lookup order.
pub const WEIGHT_PREFIXES: [&str; 3] = [CAUSAL_LM_PREFIX, MULTIMODAL_PREFIX, MULTIMODAL_V5_PREFIX];

/// Prefixes of the vision tower and projector of `Gemma3ForConditionalGeneration` (transformers
/// 4.x and 5 names): the text pipeline leaves these tensors out.
pub const NON_TEXT_PREFIXES: [&str; 4] = [
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
];

/// Whether tensor `name` belongs to the vision side of a multimodal checkpoint.
pub fn is_non_text(name: &str) -> bool {
    NON_TEXT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Attention kind of one decoder layer.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LayerKind {
    /// Local attention over the last `sliding_window` positions, local RoPE.
    #[serde(rename = "sliding_attention")]
    Sliding,
    /// Global attention over all positions, global RoPE.
    #[serde(rename = "full_attention")]
    Full,
}

impl LayerKind {
    /// The transformers name (`sliding_attention`, `full_attention`).
    pub fn hf_name(self) -> &'static str {
        match self {
            LayerKind::Sliding => "sliding_attention",
            LayerKind::Full => "full_attention",
        }
    }

    fn from_hf(s: &str) -> Option<Self> {
        match s {
            "sliding_attention" => Some(LayerKind::Sliding),
            "full_attention" => Some(LayerKind::Full),
            _ => None,
        }
    }
}

/// Frequency scaling applied to RoPE.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (Gemma 3 4B+: 8 on global layers).
    Linear {
        /// Position divisor.
        factor: f64,
    },
}

/// RoPE settings of one layer kind.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RopeParams {
    /// Base of the rotary frequencies.
    pub theta: f64,
    /// Scaling applied on top.
    pub scaling: RopeScaling,
}

impl RopeParams {
    fn plain(theta: f64) -> Self {
        RopeParams {
            theta,
            scaling: RopeScaling::None,
        }
    }
}

/// Gemma 3 text model hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gemma3Config {
    /// Embedding rows.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Gated-MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head dimension (not `hidden / heads` in Gemma 3).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Attention scores are scaled by `query_pre_attn_scalar ** -0.5`.
    pub query_pre_attn_scalar: f64,
    /// Window of sliding layers, in positions.
    pub sliding_window: usize,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// Attention kind of every layer.
    pub layer_types: Vec<LayerKind>,
    /// RoPE of full-attention layers.
    pub rope_global: RopeParams,
    /// RoPE of sliding layers.
    pub rope_local: RopeParams,
    /// MLP activation (always `gelu_pytorch_tanh`).
    pub hidden_activation: String,
    /// Whether the LM head reuses the embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token.
    pub bos_token_id: u32,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Padding token.
    pub pad_token_id: u32,
    /// Final logit softcap (`null` in Gemma 3; kept if set).
    pub final_logit_softcapping: Option<f64>,
    /// Attention logit softcap (`null` in Gemma 3; kept if set).
    pub attn_logit_softcapping: Option<f64>,
    /// Declared weight dtype (`torch_dtype` or `dtype`), e.g. `bfloat16`.
    pub dtype: Option<String>,
    /// Prefix of the text weights (`model.`...); set from the tensors by `Checkpoint::gemma3`.
    pub weight_prefix: String,
}

impl Gemma3Config {
    /// Reads `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(path, &read_json(path)?)
    }

    /// Parses a config (`path` is for messages). Multimodal configs are read from
    /// `text_config`, with token ids and dtype falling back to the top level.
    pub fn from_json(path: &Path, v: &Value) -> Result<Self> {
        let root = Fields::new(path, v)?;
        let (text, weight_prefix) = match root.child("text_config")? {
            Some(text) => (text, MULTIMODAL_PREFIX),
            None => (root.clone(), CAUSAL_LM_PREFIX),
        };
        if text.bool_or("use_bidirectional_attention", false)? {
            return Err(text.err(
                "use_bidirectional_attention",
                "bidirectional (EmbeddingGemma) models are not supported",
            ));
        }
        let head_dim = positive(
            &text,
            "head_dim",
            text.usize_or("head_dim", DEFAULT_HEAD_DIM)?,
        )?;
        let num_hidden_layers = positive(
            &text,
            "num_hidden_layers",
            text.usize_or("num_hidden_layers", DEFAULT_NUM_HIDDEN_LAYERS)?,
        )?;
        let (rope_global, rope_local) = read_rope(&text)?;
        let mut config = Gemma3Config {
            vocab_size: text.usize_or("vocab_size", DEFAULT_VOCAB_SIZE)?,
            hidden_size: text.usize_or("hidden_size", DEFAULT_HIDDEN_SIZE)?,
            intermediate_size: text.usize_or("intermediate_size", DEFAULT_INTERMEDIATE_SIZE)?,
            num_hidden_layers,
            num_attention_heads: text
                .usize_or("num_attention_heads", DEFAULT_NUM_ATTENTION_HEADS)?,
            num_key_value_heads: text
                .usize_or("num_key_value_heads", DEFAULT_NUM_KEY_VALUE_HEADS)?,
            head_dim,
            rms_norm_eps: text.f64_or("rms_norm_eps", DEFAULT_RMS_NORM_EPS)?,
            // transformers defaults to 256, which equals head_dim in every released model.
            query_pre_attn_scalar: text.f64_or("query_pre_attn_scalar", head_dim as f64)?,
            sliding_window: text.usize_or("sliding_window", DEFAULT_SLIDING_WINDOW)?,
            max_position_embeddings: text
                .usize_or("max_position_embeddings", DEFAULT_MAX_POSITION_EMBEDDINGS)?,
            layer_types: read_layer_types(&text, num_hidden_layers)?,
            rope_global,
            rope_local,
            hidden_activation: read_activation(&text)?,
            tie_word_embeddings: text.bool_or(
                "tie_word_embeddings",
                root.bool_or("tie_word_embeddings", true)?,
            )?,
            bos_token_id: DEFAULT_BOS_TOKEN_ID,
            eos_token_ids: vec![DEFAULT_EOS_TOKEN_ID],
            pad_token_id: DEFAULT_PAD_TOKEN_ID,
            final_logit_softcapping: text.opt_f64("final_logit_softcapping")?,
            attn_logit_softcapping: text.opt_f64("attn_logit_softcapping")?,
            dtype: None,
            weight_prefix: weight_prefix.to_string(),
        };
        config.read_tokens_and_dtype(&text, &root)?;
        config.validate(&text)?;
        Ok(config)
    }

    /// Token ids and dtype: from the text config, else from the top level, else defaults.
    fn read_tokens_and_dtype(&mut self, text: &Fields<'_>, root: &Fields<'_>) -> Result<()> {
        let either = |key: &str| -> Result<Option<Vec<u32>>> {
            Ok(text.opt_ids(key)?.or(root.opt_ids(key)?))
        };
        let single =
            |key: &str| -> Result<Option<u32>> { Ok(text.opt_u32(key)?.or(root.opt_u32(key)?)) };
        if let Some(bos) = single("bos_token_id")? {
            self.bos_token_id = bos;
        }
        if let Some(pad) = single("pad_token_id")? {
            self.pad_token_id = pad;
        }
        if let Some(eos) = either("eos_token_id")? {
            self.eos_token_ids = eos;
        }
        let mut dtype = None;
        for f in [text, root] {
            for key in ["dtype", "torch_dtype"] {
                dtype = dtype.or(f.opt_str(key)?);
            }
        }
        self.dtype = dtype.map(str::to_string);
        Ok(())
    }

    fn validate(&self, f: &Fields<'_>) -> Result<()> {
        positive(f, "vocab_size", self.vocab_size)?;
        positive(f, "hidden_size", self.hidden_size)?;
        positive(f, "intermediate_size", self.intermediate_size)?;
        positive(f, "num_attention_heads", self.num_attention_heads)?;
        positive(f, "num_key_value_heads", self.num_key_value_heads)?;
        positive(f, "sliding_window", self.sliding_window)?;
        positive(f, "max_position_embeddings", self.max_position_embeddings)?;
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(f.err(
                "num_key_value_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if self.query_pre_attn_scalar <= 0.0 {
            return Err(f.err("query_pre_attn_scalar", "must be greater than 0"));
        }
        if self.rms_norm_eps < 0.0 {
            return Err(f.err("rms_norm_eps", "must not be negative"));
        }
        Ok(())
    }

    /// Attention kind of layer `layer`.
    pub fn layer_kind(&self, layer: usize) -> Option<LayerKind> {
        self.layer_types.get(layer).copied()
    }

    /// RoPE settings for a layer kind.
    pub fn rope(&self, kind: LayerKind) -> &RopeParams {
        match kind {
            LayerKind::Full => &self.rope_global,
            LayerKind::Sliding => &self.rope_local,
        }
    }

    /// Number of full-attention layers.
    pub fn num_full_layers(&self) -> usize {
        self.layer_types
            .iter()
            .filter(|&&k| k == LayerKind::Full)
            .count()
    }

    /// Scale applied to attention scores: `query_pre_attn_scalar ** -0.5`.
    pub fn attention_scale(&self) -> f64 {
        self.query_pre_attn_scalar.powf(-0.5)
    }

    /// Name of the untied LM head. `Gemma3ForCausalLM` and transformers-5 multimodal
    /// checkpoints keep it at the top level (`lm_head.weight`), not under `model.`; older
    /// multimodal checkpoints put it under `language_model.`.
    pub fn lm_head_name(&self) -> String {
        match self.weight_prefix.as_str() {
            MULTIMODAL_V5_PREFIX => "lm_head.weight".to_string(),
            p => format!("{}lm_head.weight", p.strip_suffix("model.").unwrap_or(p)),
        }
    }

    /// Every weight tensor the model needs, with its full name and PyTorch shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let p = &self.weight_prefix;
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let i = self.intermediate_size;
        let mut out = vec![(format!("{p}embed_tokens.weight"), vec![self.vocab_size, h])];
        for layer in 0..self.num_hidden_layers {
            let shapes: [(&str, Vec<usize>); 13] = [
                ("self_attn.q_proj.weight", vec![q, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, q]),
                ("self_attn.q_norm.weight", vec![self.head_dim]),
                ("self_attn.k_norm.weight", vec![self.head_dim]),
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("pre_feedforward_layernorm.weight", vec![h]),
                ("post_feedforward_layernorm.weight", vec![h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ];
            out.extend(
                shapes
                    .into_iter()
                    .map(|(name, shape)| (format!("{p}layers.{layer}.{name}"), shape)),
            );
        }
        out.push((format!("{p}norm.weight"), vec![h]));
        if !self.tie_word_embeddings {
            out.push((self.lm_head_name(), vec![self.vocab_size, h]));
        }
        out
    }
}

fn read_activation(f: &Fields<'_>) -> Result<String> {
    let key = if f.has("hidden_activation") {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let act = f.opt_str(key)?.unwrap_or(GELU_PYTORCH_TANH);
    if act != GELU_PYTORCH_TANH {
        return Err(f.err(
            key,
            format!("unsupported activation `{act}` (Gemma 3 uses {GELU_PYTORCH_TANH})"),
        ));
    }
    Ok(act.to_string())
}

/// `layer_types` when given, else derived from the sliding-window pattern.
fn read_layer_types(f: &Fields<'_>, num_layers: usize) -> Result<Vec<LayerKind>> {
    if let Some(list) = f.opt_str_list("layer_types")? {
        if list.len() != num_layers {
            return Err(f.err(
                "layer_types",
                format!(
                    "has {} entries but num_hidden_layers is {num_layers}",
                    list.len()
                ),
            ));
        }
        return list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                LayerKind::from_hf(s).ok_or_else(|| {
                    f.err(
                        &format!("layer_types[{i}]"),
                        format!("unknown layer type `{s}` (expected sliding_attention or full_attention)"),
                    )
                })
            })
            .collect();
    }
    // transformers 4.5x saved the pattern as `_sliding_window_pattern`.
    let key = if f.has("sliding_window_pattern") {
        "sliding_window_pattern"
    } else {
        "_sliding_window_pattern"
    };
    let pattern = positive(f, key, f.usize_or(key, DEFAULT_SLIDING_WINDOW_PATTERN)?)?;
    Ok((0..num_layers)
        .map(|i| {
            if (i + 1) % pattern == 0 {
                LayerKind::Full
            } else {
                LayerKind::Sliding
            }
        })
        .collect())
}

/// (global, local) RoPE settings from either config style.
fn read_rope(f: &Fields<'_>) -> Result<(RopeParams, RopeParams)> {
    let global_theta = theta(f, "rope_theta", DEFAULT_ROPE_GLOBAL_THETA)?;
    let local_theta = theta(f, "rope_local_base_freq", DEFAULT_ROPE_LOCAL_THETA)?;
    let Some(params) = f.child("rope_parameters")? else {
        let scaling = match f.child("rope_scaling")? {
            Some(s) => read_scaling(&s)?,
            None => RopeScaling::None,
        };
        let global = RopeParams {
            theta: global_theta,
            scaling,
        };
        return Ok((global, RopeParams::plain(local_theta)));
    };
    let kinds = [LayerKind::Full, LayerKind::Sliding];
    if !kinds.iter().any(|k| params.has(k.hf_name())) {
        // Flat form: one set of parameters, which transformers applies to full attention.
        let global = read_rope_entry(&params, global_theta)?;
        return Ok((global, RopeParams::plain(local_theta)));
    }
    let global = match params.child(LayerKind::Full.hf_name())? {
        Some(p) => read_rope_entry(&p, global_theta)?,
        None => RopeParams::plain(global_theta),
    };
    let local = match params.child(LayerKind::Sliding.hf_name())? {
        Some(p) => read_rope_entry(&p, local_theta)?,
        None => RopeParams::plain(local_theta),
    };
    Ok((global, local))
}

fn theta(f: &Fields<'_>, key: &str, default: f64) -> Result<f64> {
    let t = f.f64_or(key, default)?;
    if t <= 0.0 {
        return Err(f.err(key, "must be greater than 0"));
    }
    Ok(t)
}

fn read_rope_entry(f: &Fields<'_>, default_theta: f64) -> Result<RopeParams> {
    Ok(RopeParams {
        theta: theta(f, "rope_theta", default_theta)?,
        scaling: read_scaling(f)?,
    })
}

/// `{rope_type|type, factor}`: `default` or `linear`; anything else is refused.
fn read_scaling(f: &Fields<'_>) -> Result<RopeScaling> {
    let key = if f.has("rope_type") {
        "rope_type"
    } else {
        "type"
    };
    match f.opt_str(key)? {
        None if f.has("factor") => Err(f.err("rope_type", "missing while `factor` is set")),
        None | Some("default") => Ok(RopeScaling::None),
        Some("linear") => {
            let factor = f
                .opt_f64("factor")?
                .ok_or_else(|| f.err("factor", "required for linear RoPE scaling"))?;
            if factor <= 0.0 {
                return Err(f.err("factor", "must be greater than 0"));
            }
            Ok(RopeScaling::Linear { factor })
        }
        Some(other) => Err(f.err(
            key,
            format!("unsupported RoPE scaling `{other}` (supported: default, linear)"),
        )),
    }
}

#[cfg(test)]
#[path = "gemma3_tests.rs"]
mod tests;
