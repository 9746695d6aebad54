//! Gemma 3 text models on the native backend.
//!
//! Source of truth: Hugging Face transformers' `modeling_gemma3.py` (`Gemma3ForCausalLM`), and
//! the facts in `../shared/notes/models.md`: embedding scaled by sqrt(hidden) in the weight
//! dtype, RMSNorm `x * (1 + w)` in f32, q/k norms, RoPE theta per layer kind (linear scaling on
//! global layers only), GQA, `query_pre_attn_scalar`, sliding-window attention on local
//! layers, gated GELU-tanh MLP, tied lm_head.

mod forward;
mod kv_cache;

pub use forward::{ActivationHook, Site};
pub use kv_cache::KvCache;

use ava_core::{DType, Gemma3Config, LayerKind, RopeScaling};

use crate::error::{Error, Result};
use ava_core::quant::{QuantFormat, SCALES_SUFFIX};

use crate::native::{Matrix, QuantWeights, Rope};
use crate::source::ModelSource;

/// One decoder layer's weights.
struct Layer {
    kind: LayerKind,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    input_norm: Vec<f32>,
    post_attention_norm: Vec<f32>,
    pre_feedforward_norm: Vec<f32>,
    post_feedforward_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// A loaded Gemma 3 model.
pub struct Gemma3 {
    cfg: Gemma3Config,
    embed: Matrix,
    lm_head: Option<Matrix>,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    rope_local: Rope,
    rope_global: Rope,
    embed_scale: f32,
}

impl Gemma3 {
    /// Loads the weights named by `cfg` from `source`.
    pub fn load(source: &ModelSource, mut cfg: Gemma3Config) -> Result<Self> {
        cfg.weight_prefix = find_prefix(source, &cfg)?;
        if cfg.final_logit_softcapping.is_some() || cfg.attn_logit_softcapping.is_some() {
            return Err(Error::Model(
                "logit softcapping is Gemma 2's, not Gemma 3's: unsupported".into(),
            ));
        }
        let p = cfg.weight_prefix.clone();
        let matrix = |name: String| -> Result<Matrix> {
            if let Some(m) = quantized_matrix(source, &name)? {
                return Ok(m);
            }
            let view = tensor(source, &name)?;
            match source.mapping_of(view.data) {
                Some((map, offset)) => Matrix::from_mapped(&view, map, offset),
                None => Matrix::from_view(&view),
            }
        };
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
        let embed = matrix(format!("{p}embed_tokens.weight"))?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(matrix(cfg.lm_head_name())?)
        };
        let model = Gemma3 {
            embed_scale: embed_scale(cfg.hidden_size, source_dtype(&cfg, &embed)),
            final_norm: vector(format!("{p}norm.weight"))?,
            rope_local: rope(&cfg, LayerKind::Sliding)?,
            rope_global: rope(&cfg, LayerKind::Full)?,
            embed,
            lm_head,
            layers,
            cfg,
        };
        model.check_shapes()?;
        Ok(model)
    }

    /// The model's config.
    pub fn config(&self) -> &Gemma3Config {
        &self.cfg
    }

    /// Whether the big matrices are used in place from a mapped archive (no copy).
    pub fn weights_mapped(&self) -> bool {
        self.embed.is_mapped()
    }

    /// Bytes of weights held in memory.
    pub fn weight_bytes(&self) -> usize {
        let layer_bytes: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|m| m.bytes())
                    .sum::<usize>()
            })
            .sum();
        layer_bytes + self.embed.bytes() + self.lm_head.as_ref().map_or(0, Matrix::bytes)
    }

    /// A KV cache for `max_context` positions (capped at the model's maximum).
    pub fn new_cache(&self, max_context: usize) -> KvCache {
        KvCache::new(&self.cfg, max_context.min(self.cfg.max_position_embeddings))
    }

    fn check_shapes(&self) -> Result<()> {
        let c = &self.cfg;
        let (h, q_out, kv_out) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let bad = |what: &str, m: &Matrix, want: (usize, usize)| -> Result<()> {
            if (m.rows, m.cols) == want {
                Ok(())
            } else {
                Err(Error::Model(format!(
                    "{what}: shape [{}, {}], expected [{}, {}]",
                    m.rows, m.cols, want.0, want.1
                )))
            }
        };
        bad("embed_tokens", &self.embed, (c.vocab_size, h))?;
        for (i, l) in self.layers.iter().enumerate() {
            let name = |s: &str| format!("layer {i} {s}");
            bad(&name("q_proj"), &l.q, (q_out, h))?;
            bad(&name("k_proj"), &l.k, (kv_out, h))?;
            bad(&name("v_proj"), &l.v, (kv_out, h))?;
            bad(&name("o_proj"), &l.o, (h, q_out))?;
            bad(&name("gate_proj"), &l.gate, (c.intermediate_size, h))?;
            bad(&name("up_proj"), &l.up, (c.intermediate_size, h))?;
            bad(&name("down_proj"), &l.down, (h, c.intermediate_size))?;
            for (norm, len) in [
                (&l.q_norm, c.head_dim),
                (&l.k_norm, c.head_dim),
                (&l.input_norm, h),
            ] {
                if norm.len() != len {
                    return Err(Error::Model(format!(
                        "layer {i}: norm of length {}, expected {len}",
                        norm.len()
                    )));
                }
            }
        }
        Ok(())
    }
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

/// A weight stored as Q4BF16 / Q8BF16 planes (`docs/formats/q4bf16.md`), if it is.
fn quantized_matrix(source: &ModelSource, name: &str) -> Result<Option<Matrix>> {
    if source.tensor(name).is_some() {
        return Ok(None);
    }
    let Some(format) = QuantFormat::detect(name, |n| source.tensor(n).is_some()) else {
        return Ok(None);
    };
    let codes = tensor(source, &format!("{name}{}", format.code_suffix()))?;
    let scales = tensor(source, &format!("{name}{SCALES_SUFFIX}"))?;
    let (rows, cols) = match (codes.shape, format) {
        ([r, c], QuantFormat::Q4Bf16) => (*r, c * 2),
        ([r, c], _) => (*r, *c),
        _ => return Err(Error::Model(format!("{name}: code plane is not 2-D"))),
    };
    let weights = QuantWeights::from_planes(format, &codes, &scales, rows, cols)?;
    Ok(Some(Matrix::from_quantized(weights, rows, cols)))
}

/// The dtype the model was trained/converted in: the matrix's, or for quantized weights the
/// one `config.json` names (the embedding scale is rounded to it).
fn source_dtype(cfg: &Gemma3Config, m: &Matrix) -> DType {
    if m.quantized().is_none() {
        return m.dtype();
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
