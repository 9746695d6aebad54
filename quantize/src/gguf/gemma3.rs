//! What a llama.cpp `gemma3` GGUF means in Hugging Face terms: tensor names, the `1 + w` norm
//! convention, and the hyper-parameters for a transformers-5 `Gemma3TextConfig`.
//!
//! Source of truth: llama.cpp `convert_hf_to_gguf.py` (`Gemma3Model`: `+1` on every
//! `*norm.weight`), `src/llama-model.cpp` (what the loader assumes for gemma3) and
//! transformers `configuration_gemma3.py`. The file does not carry the 5-local:1-global layer
//! pattern, the local RoPE theta or `query_pre_attn_scalar`; llama.cpp assumes them and so do
//! we, unless the optional keys `gemma3.attention.sliding_window_pattern` and
//! `gemma3.rope.freq_base_swa` say otherwise.

use std::path::Path;

use ava_core::config::gemma3::{
    DEFAULT_BOS_TOKEN_ID, DEFAULT_EOS_TOKEN_ID, DEFAULT_PAD_TOKEN_ID, DEFAULT_ROPE_GLOBAL_THETA,
    DEFAULT_ROPE_LOCAL_THETA, DEFAULT_SLIDING_WINDOW_PATTERN, GELU_PYTORCH_TANH,
};
use ava_core::LayerKind;
use serde_json::{json, Value as Json};

use super::{GgufFile, Value};
use crate::error::{Error, Result};

/// `general.architecture` of Gemma 3 text models.
pub const ARCH: &str = "gemma3";
/// llama.cpp stores Gemma's RMSNorm weight `w` as `1 + w`.
pub const NORM_OFFSET: f32 = 1.0;
/// The embedding (tied LM head).
pub const TOKEN_EMBD: &str = "token_embd.weight";
/// An untied LM head.
pub const OUTPUT: &str = "output.weight";
/// Length of the tokenizer vocabulary in the metadata.
pub const TOKENS_KEY: &str = "tokenizer.ggml.tokens";

/// GGUF block tensor suffix -> Hugging Face suffix, for `blk.N.*` tensors.
const LAYER_NAMES: [(&str, &str); 13] = [
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("attn_norm.weight", "input_layernorm.weight"),
    (
        "post_attention_norm.weight",
        "post_attention_layernorm.weight",
    ),
    ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
    ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// The Hugging Face (`Gemma3ForCausalLM`) name of GGUF tensor `name`, if it has one.
pub fn hf_name(name: &str) -> Option<String> {
    match name {
        TOKEN_EMBD => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        OUTPUT => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    // Canonical decimal only: `blk.01.` would collide with `blk.1.`.
    let n: usize = layer
        .parse()
        .ok()
        .filter(|n: &usize| n.to_string() == layer)?;
    let (_, hf) = LAYER_NAMES.iter().find(|(g, _)| *g == suffix)?;
    Some(format!("model.layers.{n}.{hf}"))
}

/// The GGUF name of Hugging Face tensor `hf` (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some(TOKEN_EMBD.into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some(OUTPUT.into()),
        _ => {}
    }
    let (layer, suffix) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let (g, _) = LAYER_NAMES.iter().find(|(_, h)| *h == suffix)?;
    Some(format!("blk.{layer}.{g}"))
}

/// Whether a Hugging Face tensor is an RMSNorm weight (stored `+1` in the GGUF).
pub fn is_norm(hf_name: &str) -> bool {
    hf_name.ends_with("norm.weight")
}

/// Gemma 3 hyper-parameters read from (or, where the file is silent, assumed for) a GGUF.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gemma3Params {
    /// Rows of `token_embd` (the model's vocabulary).
    pub vocab_size: usize,
    /// Entries of `tokenizer.ggml.tokens`, when present.
    pub tokenizer_tokens: Option<usize>,
    /// `embedding_length`.
    pub hidden_size: usize,
    /// `feed_forward_length`.
    pub intermediate_size: usize,
    /// `block_count`.
    pub num_hidden_layers: usize,
    /// `attention.head_count`.
    pub num_attention_heads: usize,
    /// `attention.head_count_kv`.
    pub num_key_value_heads: usize,
    /// `attention.key_length` (= `value_length`).
    pub head_dim: usize,
    /// `context_length`.
    pub max_position_embeddings: usize,
    /// `attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f64,
    /// `attention.sliding_window`.
    pub sliding_window: usize,
    /// Attention kind of each layer.
    pub layer_types: Vec<LayerKind>,
    /// Whether `layer_types` came from the file (else the 5:1 pattern was assumed).
    pub layer_types_from_file: bool,
    /// `rope.freq_base`: global layers.
    pub rope_theta_global: f64,
    /// `rope.freq_base_swa` or 10,000: sliding layers.
    pub rope_theta_local: f64,
    /// Linear RoPE scaling factor of global layers (`rope.scaling.type = linear`).
    pub rope_linear_factor: Option<f64>,
    /// Whether the LM head is the embedding (no `output.weight`).
    pub tie_word_embeddings: bool,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: u32,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: u32,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_token_id: u32,
}

/// Typed access to `gemma3.*` keys, with errors naming the file and key.
struct Keys<'a> {
    file: &'a GgufFile,
}

impl Keys<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn key(name: &str) -> String {
        if name.starts_with("tokenizer.") {
            name.to_string()
        } else {
            format!("{ARCH}.{name}")
        }
    }

    fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        let key = Self::key(name);
        let Some(v) = self.file.get(&key) else {
            return Ok(None);
        };
        let n = v.as_u64().and_then(|n| usize::try_from(n).ok());
        n.map(Some).ok_or_else(|| {
            Error::metadata(
                self.path(),
                &key,
                format!("expected an unsigned integer, found {}", v.summary()),
            )
        })
    }

    fn usize(&self, name: &str) -> Result<usize> {
        let key = Self::key(name);
        match self.opt_usize(name)? {
            Some(0) => Err(Error::metadata(self.path(), &key, "must be greater than 0")),
            Some(n) if n > gguf_limit(name) => Err(Error::metadata(
                self.path(),
                &key,
                format!(
                    "{n} is over this toolchain's limit of {} (docs/security.md)",
                    gguf_limit(name)
                ),
            )),
            Some(n) => Ok(n),
            None => Err(Error::metadata(self.path(), &key, "missing")),
        }
    }

    fn opt_u32(&self, name: &str, default: u32) -> Result<u32> {
        let key = Self::key(name);
        match self.opt_usize(name)? {
            None => Ok(default),
            Some(n) => u32::try_from(n)
                .map_err(|_| Error::metadata(self.path(), &key, format!("{n} is not a token id"))),
        }
    }

    fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        let key = Self::key(name);
        let Some(v) = self.file.get(&key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(Error::metadata(
                self.path(),
                &key,
                format!(
                    "expected a finite non-negative number, found {}",
                    v.summary()
                ),
            )),
        }
    }
}

/// The config bound (`ava_core::config::limits`) of a GGUF hyper-parameter, checked before
/// anything is sized by it.
fn gguf_limit(name: &str) -> usize {
    use ava_core::config::limits;
    match name {
        "block_count" => limits::MAX_LAYERS,
        "attention.head_count" | "attention.head_count_kv" => limits::MAX_HEADS,
        "embedding_length" | "attention.key_length" | "attention.value_length" => limits::MAX_DIM,
        "feed_forward_length" => limits::MAX_INTERMEDIATE,
        "context_length" | "attention.sliding_window" => limits::MAX_CONTEXT,
        _ => limits::max_for(name),
    }
}

impl Gemma3Params {
    /// Reads the hyper-parameters of a `gemma3` file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        check_architecture(file)?;
        let k = Keys { file };
        let embd = file
            .tensor(TOKEN_EMBD)
            .ok_or_else(|| Error::tensor(file.path(), TOKEN_EMBD, "missing"))?;
        let hidden_size = k.usize("embedding_length")?;
        let num_attention_heads = k.usize("attention.head_count")?;
        let head_dim = read_head_dim(&k, hidden_size, num_attention_heads)?;
        let num_hidden_layers = k.usize("block_count")?;
        let (layer_types, layer_types_from_file) = read_layer_types(&k, num_hidden_layers)?;
        let eps_key = "attention.layer_norm_rms_epsilon";
        Ok(Gemma3Params {
            vocab_size: embd.shape().first().copied().unwrap_or(0),
            tokenizer_tokens: file
                .get(TOKENS_KEY)
                .and_then(Value::as_array)
                .map(<[_]>::len),
            hidden_size,
            intermediate_size: k.usize("feed_forward_length")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads: k
                .opt_usize("attention.head_count_kv")?
                .unwrap_or(num_attention_heads),
            head_dim,
            max_position_embeddings: k.usize("context_length")?,
            rms_norm_eps: k
                .opt_f64(eps_key)?
                .ok_or_else(|| Error::metadata(file.path(), &Keys::key(eps_key), "missing"))?,
            sliding_window: k.usize("attention.sliding_window")?,
            layer_types,
            layer_types_from_file,
            rope_theta_global: k
                .opt_f64("rope.freq_base")?
                .unwrap_or(DEFAULT_ROPE_GLOBAL_THETA),
            rope_theta_local: k
                .opt_f64("rope.freq_base_swa")?
                .unwrap_or(DEFAULT_ROPE_LOCAL_THETA),
            rope_linear_factor: read_rope_scaling(&k)?,
            tie_word_embeddings: file.tensor(OUTPUT).is_none(),
            bos_token_id: k.opt_u32("tokenizer.ggml.bos_token_id", DEFAULT_BOS_TOKEN_ID)?,
            eos_token_id: k.opt_u32("tokenizer.ggml.eos_token_id", DEFAULT_EOS_TOKEN_ID)?,
            pad_token_id: k.opt_u32("tokenizer.ggml.padding_token_id", DEFAULT_PAD_TOKEN_ID)?,
        })
    }

    /// `config.json` as transformers 5 writes a `Gemma3TextConfig`; `dtype` is the torch
    /// name of the weights (`float32`, `bfloat16`).
    pub fn config_json(&self, dtype: &str) -> Json {
        let full = match self.rope_linear_factor {
            Some(factor) => {
                json!({"rope_type": "linear", "factor": factor, "rope_theta": self.rope_theta_global})
            }
            None => json!({"rope_type": "default", "rope_theta": self.rope_theta_global}),
        };
        let layer_types: Vec<&str> = self.layer_types.iter().map(|k| k.hf_name()).collect();
        json!({
            "architectures": ["Gemma3ForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "attn_logit_softcapping": null,
            "bos_token_id": self.bos_token_id,
            "dtype": dtype,
            "eos_token_id": self.eos_token_id,
            "final_logit_softcapping": null,
            "head_dim": self.head_dim,
            "hidden_activation": GELU_PYTORCH_TANH,
            "hidden_size": self.hidden_size,
            "initializer_range": 0.02,
            "intermediate_size": self.intermediate_size,
            "layer_types": layer_types,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "gemma3_text",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pad_token_id": self.pad_token_id,
            "query_pre_attn_scalar": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {
                "full_attention": full,
                "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_theta_local},
            },
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_bidirectional_attention": false,
            "use_cache": true,
            "vocab_size": self.vocab_size,
        })
    }

    /// `generation_config.json` with the token ids.
    pub fn generation_config_json(&self) -> Json {
        json!({
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        })
    }
}

/// Fails unless `general.architecture` is `gemma3`.
pub fn check_architecture(file: &GgufFile) -> Result<()> {
    match file.architecture() {
        Some(ARCH) => Ok(()),
        Some(other) => Err(Error::UnsupportedArchitecture {
            path: file.path().to_path_buf(),
            arch: other.to_string(),
        }),
        None => Err(Error::metadata(
            file.path(),
            super::ARCHITECTURE_KEY,
            "missing or not a string",
        )),
    }
}

fn read_head_dim(k: &Keys<'_>, hidden: usize, heads: usize) -> Result<usize> {
    let key_len = k
        .opt_usize("attention.key_length")?
        .unwrap_or(hidden / heads);
    let value_len = k.opt_usize("attention.value_length")?.unwrap_or(key_len);
    if key_len == 0 || key_len != value_len || key_len > gguf_limit("attention.key_length") {
        return Err(Error::metadata(
            k.path(),
            &Keys::key("attention.key_length"),
            format!("key length {key_len} and value length {value_len} must be equal and non-zero"),
        ));
    }
    Ok(key_len)
}

/// Layer kinds from `attention.sliding_window_pattern` (a period, or one bool per layer, true
/// meaning sliding), else the 5:1 pattern llama.cpp assumes for gemma3.
fn read_layer_types(k: &Keys<'_>, layers: usize) -> Result<(Vec<LayerKind>, bool)> {
    let key = Keys::key("attention.sliding_window_pattern");
    let by_period = |period: usize| -> Vec<LayerKind> {
        (0..layers)
            .map(|i| match period != 0 && (i + 1) % period == 0 {
                true => LayerKind::Full,
                false => LayerKind::Sliding,
            })
            .collect()
    };
    let Some(v) = k.file.get(&key) else {
        return Ok((by_period(DEFAULT_SLIDING_WINDOW_PATTERN), false));
    };
    if let Some(period) = v.as_u64() {
        let period = usize::try_from(period).unwrap_or(usize::MAX);
        return Ok((by_period(period), true));
    }
    let flags: Option<Vec<bool>> = v
        .as_array()
        .and_then(|a| a.iter().map(Value::as_bool).collect());
    match flags {
        Some(f) if f.len() == layers => Ok((
            f.into_iter()
                .map(|sliding| {
                    if sliding {
                        LayerKind::Sliding
                    } else {
                        LayerKind::Full
                    }
                })
                .collect(),
            true,
        )),
        _ => Err(Error::metadata(
            k.path(),
            &key,
            format!("expected a period or {layers} bools, found {}", v.summary()),
        )),
    }
}

fn read_rope_scaling(k: &Keys<'_>) -> Result<Option<f64>> {
    let key = Keys::key("rope.scaling.type");
    let kind = match k.file.get(&key) {
        None => return Ok(None),
        Some(v) => v.as_str().unwrap_or_default(),
    };
    match kind {
        "none" => Ok(None),
        "linear" => match k.opt_f64("rope.scaling.factor")? {
            Some(f) if f > 0.0 => Ok(Some(f)),
            _ => Err(Error::metadata(
                k.path(),
                &Keys::key("rope.scaling.factor"),
                "missing or not positive (required by linear scaling)",
            )),
        },
        other => Err(Error::metadata(
            k.path(),
            &key,
            format!("unsupported RoPE scaling `{other}` (supported: none, linear)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map() {
        assert_eq!(
            hf_name("blk.17.ffn_down.weight").as_deref(),
            Some("model.layers.17.mlp.down_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.attn_k_norm.weight").as_deref(),
            Some("model.layers.0.self_attn.k_norm.weight")
        );
        assert_eq!(
            hf_name("blk.3.ffn_norm.weight").as_deref(),
            Some("model.layers.3.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            hf_name("output_norm.weight").as_deref(),
            Some("model.norm.weight")
        );
        assert_eq!(hf_name("blk.01.attn_q.weight"), None);
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("blk.1.attn_qkv.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        for hf in [
            "model.layers.5.mlp.up_proj.weight",
            "model.norm.weight",
            "lm_head.weight",
        ] {
            assert_eq!(hf_name(&gguf_name(hf).unwrap()).as_deref(), Some(hf));
        }
        assert!(is_norm("model.layers.0.post_feedforward_layernorm.weight"));
        assert!(is_norm("model.norm.weight"));
        assert!(!is_norm("model.layers.0.mlp.up_proj.weight"));
    }
}
