//! Gemma 3 text models, written once over a backend's [`Kernels`].
//!
//! Source of truth: Hugging Face transformers' `modeling_gemma3.py` (`Gemma3ForCausalLM`), and
//! the facts in `../shared/notes/models.md`: embedding scaled by sqrt(hidden) in the weight
//! dtype, RMSNorm `x * (1 + w)` in f32, q/k norms, RoPE theta per layer kind (linear scaling on
//! global layers only), GQA, `query_pre_attn_scalar`, sliding-window attention on local
//! layers, gated GELU-tanh MLP, tied lm_head.

mod forward;
mod kernels;
mod kv_cache;
mod language_model;

pub use forward::{ActivationHook, Site};
pub use kernels::{Attention, Input, Kernels};
pub use kv_cache::{KvCache, KvDtype};
pub use language_model::LanguageModel;

use ava_core::{DType, Gemma3Config, LayerKind, RopeScaling};

use crate::error::{Error, Result};
use ava_core::quant::QuantFormat;

use crate::native::{NativeKernels, Rope};
use crate::source::ModelSource;

/// One decoder layer's weights.
struct Layer<W> {
    kind: LayerKind,
    q: W,
    k: W,
    v: W,
    o: W,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    input_norm: Vec<f32>,
    post_attention_norm: Vec<f32>,
    pre_feedforward_norm: Vec<f32>,
    post_feedforward_norm: Vec<f32>,
    gate: W,
    up: W,
    down: W,
}

impl<W> Layer<W> {
    fn matrices(&self) -> [&W; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// A loaded Gemma 3 model on the kernels `K` (the native backend unless said otherwise).
pub struct Gemma3<K: Kernels = NativeKernels> {
    cfg: Gemma3Config,
    kernels: K,
    embed: K::Weight,
    lm_head: Option<K::Weight>,
    final_norm: Vec<f32>,
    layers: Vec<Layer<K::Weight>>,
    rope_local: Rope,
    rope_global: Rope,
    embed_scale: f32,
    /// The source the weights point into, for backends that bind them in place by address.
    _source: Option<ModelSource>,
}

impl Gemma3 {
    /// Loads the weights named by `cfg` from `source` on the native kernels.
    pub fn load(source: &ModelSource, cfg: Gemma3Config) -> Result<Self> {
        let kernels = NativeKernels::new(&cfg);
        Self::bind(source, cfg, kernels)
    }
}

impl<K: Kernels> Gemma3<K> {
    /// Binds the weights named by `cfg` from `source` to `kernels`.
    pub fn bind(source: &ModelSource, mut cfg: Gemma3Config, kernels: K) -> Result<Self> {
        cfg.weight_prefix = find_prefix(source, &cfg)?;
        if cfg.final_logit_softcapping.is_some() || cfg.attn_logit_softcapping.is_some() {
            return Err(Error::Model(
                "logit softcapping is Gemma 2's, not Gemma 3's: unsupported".into(),
            ));
        }
        let p = cfg.weight_prefix.clone();
        let matrix = |name: String| kernels.weight(source, &name);
        let vector =
            |name: String| -> Result<Vec<f32>> { Ok(tensor(source, &name)?.to_f32_vec()?) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for (i, kind) in cfg.layer_types.iter().enumerate() {
            let l = format!("{p}layers.{i}.");
            layers.push(Layer {
                kind: *kind,
                q: matrix(format!("{l}self_attn.q_proj.weight"))?,
                k: matrix(format!("{l}self_attn.k_proj.weight"))?,
                v: matrix(format!("{l}self_attn.v_proj.weight"))?,
                o: matrix(format!("{l}self_attn.o_proj.weight"))?,
                q_norm: vector(format!("{l}self_attn.q_norm.weight"))?,
                k_norm: vector(format!("{l}self_attn.k_norm.weight"))?,
                input_norm: vector(format!("{l}input_layernorm.weight"))?,
                post_attention_norm: vector(format!("{l}post_attention_layernorm.weight"))?,
                pre_feedforward_norm: vector(format!("{l}pre_feedforward_layernorm.weight"))?,
                post_feedforward_norm: vector(format!("{l}post_feedforward_layernorm.weight"))?,
                gate: matrix(format!("{l}mlp.gate_proj.weight"))?,
                up: matrix(format!("{l}mlp.up_proj.weight"))?,
                down: matrix(format!("{l}mlp.down_proj.weight"))?,
            });
        }
        let embed_name = format!("{p}embed_tokens.weight");
        let embed = matrix(embed_name.clone())?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(matrix(cfg.lm_head_name())?)
        };
        let model = Gemma3 {
            embed_scale: embed_scale(cfg.hidden_size, source_dtype(&cfg, source, &embed_name)),
            final_norm: vector(format!("{p}norm.weight"))?,
            rope_local: rope(&cfg, LayerKind::Sliding)?,
            rope_global: rope(&cfg, LayerKind::Full)?,
            embed,
            lm_head,
            layers,
            cfg,
            kernels,
            _source: None,
        };
        model.check_shapes()?;
        let weights: Vec<&K::Weight> = model.layers.iter().flat_map(Layer::matrices).collect();
        model.kernels.check(&weights, &model.embed, model.head())?;
        Ok(model)
    }

    /// Keeps `source` alive as long as the model (weights bound by address into it).
    pub(crate) fn hold(&mut self, source: ModelSource) {
        self._source = Some(source);
    }

    /// The model's config.
    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// The backend's name (`native`, `tvm`).
    pub fn backend_name(&self) -> &'static str {
        K::NAME
    }

    /// Whether the big matrices are used in place from a mapped archive (no copy).
    pub fn weights_mapped(&self) -> bool {
        K::is_mapped(&self.embed)
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let layer_bytes: usize = self
            .layers
            .iter()
            .flat_map(Layer::matrices)
            .map(K::weight_bytes)
            .sum();
        layer_bytes
            + K::weight_bytes(&self.embed)
            + self.lm_head.as_ref().map_or(0, K::weight_bytes)
    }

    /// A KV cache for `max_context` positions (capped at the model's maximum), stored as
    /// f32 (exact: what the goldens and calibration use).
    pub fn new_cache(&self, max_context: usize) -> KvCache {
        self.new_cache_as(max_context, KvDtype::F32)
    }

    /// A KV cache for `max_context` positions (capped at the model's maximum), stored as
    /// `dtype`.
    pub fn new_cache_as(&self, max_context: usize, dtype: KvDtype) -> KvCache {
        let context = max_context.min(self.cfg.max_position_embeddings);
        KvCache::new(&self.cfg, context, dtype)
    }

    /// The output head: the untied `lm_head`, or the embedding.
    fn head(&self) -> &K::Weight {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    fn check_shapes(&self) -> Result<()> {
        let c = &self.cfg;
        let (h, q_out, kv_out) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let bad = |what: &str, m: &K::Weight, want: (usize, usize)| -> Result<()> {
            let (rows, cols) = K::shape(m);
            if (rows, cols) == want {
                Ok(())
            } else {
                Err(Error::Model(format!(
                    "{what}: shape [{rows}, {cols}], expected [{}, {}]",
                    want.0, want.1
                )))
            }
        };
        bad("embed_tokens", &self.embed, (c.vocab_size, h))?;
        if let Some(head) = &self.lm_head {
            bad("lm_head", head, (c.vocab_size, h))?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let name = |s: &str| format!("layer {i} {s}");
            bad(&name("q_proj"), &l.q, (q_out, h))?;
            bad(&name("k_proj"), &l.k, (kv_out, h))?;
            bad(&name("v_proj"), &l.v, (kv_out, h))?;
            bad(&name("o_proj"), &l.o, (h, q_out))?;
            bad(&name("gate_proj"), &l.gate, (c.intermediate_size, h))?;
            bad(&name("up_proj"), &l.up, (c.intermediate_size, h))?;
            bad(&name("down_proj"), &l.down, (h, c.intermediate_size))?;
            check_norms(i, l, c)?;
        }
        if self.final_norm.len() != h {
            return Err(Error::Model(format!(
                "norm: length {}, expected {h}",
                self.final_norm.len()
            )));
        }
        Ok(())
    }
}

fn check_norms<W>(i: usize, l: &Layer<W>, c: &Gemma3Config) -> Result<()> {
    let h = c.hidden_size;
    for (norm, len) in [
        (&l.q_norm, c.head_dim),
        (&l.k_norm, c.head_dim),
        (&l.input_norm, h),
        (&l.post_attention_norm, h),
        (&l.pre_feedforward_norm, h),
        (&l.post_feedforward_norm, h),
    ] {
        if norm.len() != len {
            return Err(Error::Model(format!(
                "layer {i}: norm of length {}, expected {len}",
                norm.len()
            )));
        }
    }
    Ok(())
}

fn tensor<'a>(source: &'a ModelSource, name: &str) -> Result<ava_core::TensorView<'a>> {
    source.tensor(name).ok_or_else(|| {
        Error::Model(format!(
            "{}: tensor {name:?} not found",
            source.label("").display()
        ))
    })
}

fn find_prefix(source: &ModelSource, cfg: &Gemma3Config) -> Result<String> {
    std::iter::once(cfg.weight_prefix.as_str())
        .chain(ava_core::config::gemma3::WEIGHT_PREFIXES)
        .find(|p| {
            let name = format!("{p}embed_tokens.weight");
            let has = |n: &str| source.tensor(n).is_some();
            has(&name) || QuantFormat::detect(&name, has).is_some()
        })
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Model(format!(
                "{}: no embed_tokens.weight tensor",
                source.label("").display()
            ))
        })
}

fn rope(cfg: &Gemma3Config, kind: LayerKind) -> Result<Rope> {
    let params = cfg.rope(kind);
    let factor = match params.scaling {
        RopeScaling::None => 1.0,
        RopeScaling::Linear { factor } => factor,
        ref other => return Err(Error::Model(format!("unsupported rope scaling {other:?}"))),
    };
    Ok(Rope::new(cfg.head_dim, params.theta, factor))
}

/// The dtype the model was trained/converted in: the embedding's, or for quantized weights
/// the one `config.json` names (the embedding scale is rounded to it).
fn source_dtype(cfg: &Gemma3Config, source: &ModelSource, embed: &str) -> DType {
    if let Some(t) = source.tensor(embed) {
        return t.dtype;
    }
    match cfg.dtype.as_deref() {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    }
}

/// `sqrt(hidden)` rounded to the embedding's dtype, as transformers computes it.
fn embed_scale(hidden: usize, dtype: DType) -> f32 {
    let s = (hidden as f32).sqrt();
    match dtype {
        DType::BF16 => half::bf16::from_f32(s).to_f32(),
        DType::F16 => half::f16::from_f32(s).to_f32(),
        _ => s,
    }
}
