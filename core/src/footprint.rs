//! The runtime memory footprint of a Gemma 3 model: mapped weights and kernel library, the KV
//! cache at a context (sliding layers hold only their window), and a workspace (activations of
//! a prefill, the last position's logits, the tokenizer, a fixed base). `alc compile
//! --memory-budget` checks it and records it in the manifest; `alc validate` sets the measured
//! peak RSS beside it.

use crate::config::{Gemma3Config, LayerKind};

/// Fixed part of the workspace: the runtime's code, threads' stacks, allocator slack.
pub const WORKSPACE_BASE_BYTES: u64 = 32 << 20;
/// A tokenizer's in-memory size relative to its `tokenizer.json`.
pub const TOKENIZER_EXPANSION: u64 = 4;
/// Context length of a runtime session when none is asked for (what an estimate assumes
/// without an explicit context).
pub const DEFAULT_CONTEXT: usize = 4096;
/// Prompt tokens assumed in one prefill when no prompt is known (`alc compile`).
pub const DEFAULT_PREFILL_TOKENS: usize = 512;
/// Bytes of an f32 activation.
const F32_BYTES: u64 = 4;
/// Bytes of the per-slot, per-head scale of a q8 KV cache (f32).
const Q8_SCALE_BYTES: u64 = 4;
/// Bytes of an f16 cache value.
const F16_BYTES: usize = 2;

/// How the runtime's KV cache stores keys and values (`--kv-cache`; one definition for the
/// runtime and this estimate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvDtype {
    /// 4 bytes a value (exact; the reference).
    F32,
    /// IEEE half floats, 2 bytes a value (the runtime's default).
    #[default]
    F16,
    /// int8 codes, 1 byte a value, plus an f32 scale per head and slot.
    Q8,
}

impl KvDtype {
    /// Every dtype, in `--kv-cache` order.
    pub const ALL: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::Q8];

    /// `f32`, `f16`, `q8`.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Q8 => "q8",
        }
    }

    /// Bytes one cache slot of `width` values takes, with `head_dim` values per q8 scale.
    pub fn slot_bytes(self, width: usize, head_dim: usize) -> usize {
        match self {
            KvDtype::F32 => width * F32_BYTES as usize,
            KvDtype::F16 => width * F16_BYTES,
            KvDtype::Q8 => width + width / head_dim.max(1) * Q8_SCALE_BYTES as usize,
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KvDtype::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown KV cache type {s:?} (f32, f16, q8)"))
    }
}

/// What the estimate is computed from besides the config.
#[derive(Clone, Copy, Debug)]
pub struct FootprintInputs {
    /// Bytes of weight files (mapped whole by the runtime).
    pub weights_bytes: u64,
    /// Bytes of the kernel library (0 for the native backend).
    pub library_bytes: u64,
    /// Bytes of the tokenizer files.
    pub tokenizer_bytes: u64,
    /// Positions the KV cache is sized for.
    pub context: usize,
    /// Tokens of the longest prefill.
    pub prefill_tokens: usize,
    /// KV cache storage.
    pub kv: KvDtype,
}

/// The estimate, in bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    /// Mapped weights.
    pub weights_bytes: u64,
    /// Mapped kernel library.
    pub library_bytes: u64,
    /// KV cache at `context`.
    pub kv_cache_bytes: u64,
    /// Activations, logits, tokenizer, base.
    pub workspace_bytes: u64,
    /// The sum of the above.
    pub total_bytes: u64,
    /// Positions the KV cache is sized for.
    pub context: usize,
    /// KV cache storage.
    pub kv_dtype: KvDtype,
}

/// Slots of one layer of `kind` in a KV cache of `context` positions: sliding layers keep
/// `min(window, context)` (a ring), full-attention layers every position.
pub fn kv_layer_slots(cfg: &Gemma3Config, kind: LayerKind, context: usize) -> usize {
    match kind {
        LayerKind::Sliding => cfg.sliding_window.min(context),
        _ => context,
    }
}

/// Bytes of the runtime's KV cache of `cfg` at `context` positions stored as `kv`: keys and
/// values of every layer ([`kv_layer_slots`]), plus, for f16 and q8, the f32 copy of the
/// largest layer that attention reads.
pub fn kv_cache_bytes(cfg: &Gemma3Config, context: usize, kv: KvDtype) -> u64 {
    let width = cfg.num_key_value_heads * cfg.head_dim;
    let caps = cfg
        .layer_types
        .iter()
        .map(|&kind| kv_layer_slots(cfg, kind, context) as u64);
    let slots: u64 = caps.clone().sum();
    let scratch = match kv {
        KvDtype::F32 => 0,
        _ => 2 * caps.max().unwrap_or(0) * width as u64 * F32_BYTES,
    };
    2 * slots * kv.slot_bytes(width, cfg.head_dim) as u64 + scratch
}

/// Activations of a prefill of `tokens` at `context`, two logit rows and the fixed base.
fn workspace_bytes(cfg: &Gemma3Config, inputs: &FootprintInputs) -> u64 {
    let tokens = inputs.prefill_tokens.clamp(1, inputs.context.max(1)) as u64;
    let per_token = 3 * cfg.hidden_size
        + (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim
        + 2 * cfg.intermediate_size
        + cfg.num_attention_heads * inputs.context;
    let activations = (tokens * per_token as u64 + 2 * cfg.vocab_size as u64) * F32_BYTES;
    WORKSPACE_BASE_BYTES + activations + inputs.tokenizer_bytes * TOKENIZER_EXPANSION
}

/// The footprint of `cfg` with `inputs`.
pub fn estimate(cfg: &Gemma3Config, inputs: &FootprintInputs) -> Footprint {
    let kv_cache_bytes = kv_cache_bytes(cfg, inputs.context, inputs.kv);
    let workspace_bytes = workspace_bytes(cfg, inputs);
    Footprint {
        weights_bytes: inputs.weights_bytes,
        library_bytes: inputs.library_bytes,
        kv_cache_bytes,
        workspace_bytes,
        total_bytes: inputs.weights_bytes + inputs.library_bytes + kv_cache_bytes + workspace_bytes,
        context: inputs.context,
        kv_dtype: inputs.kv,
    }
}

/// Bytes of a Gemma 3 text model's weights in a quantized layout: projections at
/// `bits_per_weight` (codes and scales), the embedding too when `embedding_quantized`, norms
/// in bf16. For models not at hand (12B, 27B).
pub fn weights_bytes_for(
    cfg: &Gemma3Config,
    bits_per_weight: f64,
    embedding_quantized: bool,
) -> u64 {
    let h = cfg.hidden_size as u64;
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let ffn = cfg.intermediate_size as u64;
    let per_layer = 2 * h * q + 2 * h * kv + 3 * h * ffn;
    let projections = per_layer * cfg.num_hidden_layers as u64;
    let embedding = cfg.vocab_size as u64 * h;
    let norms = (4 * h + 2 * cfg.head_dim as u64) * cfg.num_hidden_layers as u64 + h;
    let bits = |n: u64, b: f64| (n as f64 * b / 8.0).ceil() as u64;
    let embedding_bits = if embedding_quantized {
        bits_per_weight
    } else {
        16.0
    };
    bits(projections, bits_per_weight) + bits(embedding, embedding_bits) + 2 * norms
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn config(text: serde_json::Value) -> Gemma3Config {
        let v = json!({"model_type": "gemma3", "text_config": text});
        match Gemma3Config::from_json(Path::new("config.json"), &v) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn published(name: &str) -> Gemma3Config {
        let scaling = json!({"factor": 8.0, "rope_type": "linear"});
        match name {
            "1b" => config(json!({"hidden_size": 1152, "intermediate_size": 6912,
                "num_hidden_layers": 26, "num_attention_heads": 4, "num_key_value_heads": 1,
                "sliding_window": 512, "vocab_size": 262144, "max_position_embeddings": 32768})),
            "12b" => config(json!({"hidden_size": 3840, "intermediate_size": 15360,
                "num_hidden_layers": 48, "num_attention_heads": 16, "num_key_value_heads": 8,
                "rope_scaling": scaling, "sliding_window": 1024})),
            _ => config(
                json!({"head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
                "num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16,
                "query_pre_attn_scalar": 168, "rope_scaling": scaling, "sliding_window": 1024}),
            ),
        }
    }

    #[test]
    fn kv_cache_is_sliding_aware_and_scales_with_the_dtype() {
        // The figures of docs: 1B at 4K context in f16 is 104 MiB if every layer kept all
        // positions, 27 MiB sliding-aware (22 sliding layers of 512, 4 global of 4096), plus
        // 8 MiB for the f32 copy of one global layer that attention reads.
        let c = published("1b");
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        assert_eq!(c.num_full_layers(), 4);
        let f16 = kv_cache_bytes(&c, 4096, KvDtype::F16);
        let scratch = 2 * 4096 * 256 * 4;
        assert!((mib(f16) - 35.0).abs() < 0.01);
        assert_eq!(kv_cache_bytes(&c, 4096, KvDtype::F32), 2 * (f16 - scratch));
        // Below the window every layer holds the whole context.
        assert_eq!(
            kv_cache_bytes(&c, 256, KvDtype::F16),
            2 * 26 * 256 * 256 * 2 + 2 * 256 * 256 * 4
        );
        let q8 = kv_cache_bytes(&c, 4096, KvDtype::Q8);
        assert!(q8 - scratch > (f16 - scratch) / 2);
        assert!(q8 < f16);
    }

    #[test]
    fn kv_dtype_names_round_trip() {
        for kv in KvDtype::ALL {
            assert_eq!(kv.name().parse::<KvDtype>(), Ok(kv));
        }
        assert!("bf16".parse::<KvDtype>().is_err());
    }

    #[test]
    fn twelve_and_twenty_seven_b_configs_are_estimated() {
        // Q4BF16 at group 128: 4 bits + a bf16 scale per 128 values = 4.125 bits a weight.
        let bits = 4.0 + 16.0 / 128.0;
        for (name, min_gib, max_gib) in [("12b", 5.5, 7.5), ("27b", 12.5, 16.0)] {
            let c = published(name);
            let inputs = FootprintInputs {
                weights_bytes: weights_bytes_for(&c, bits, true),
                library_bytes: 0,
                tokenizer_bytes: 0,
                context: 2048,
                prefill_tokens: DEFAULT_PREFILL_TOKENS,
                kv: KvDtype::F16,
            };
            let f = estimate(&c, &inputs);
            let gib = f.total_bytes as f64 / (1u64 << 30) as f64;
            assert!((min_gib..max_gib).contains(&gib), "{name}: {gib:.2} GiB");
            assert_eq!(
                f.total_bytes,
                f.weights_bytes + f.kv_cache_bytes + f.workspace_bytes
            );
        }
    }
}
