//! The Gemma 3 forward pass over a chunk of tokens (prefill) or one token (decode).
//!
//! Written once for every backend: each op is a call on the model's [`Kernels`].

use ava_core::LayerKind;

use super::kernels::{Attention, Input, Kernels};
use super::kv_cache::KvCache;
use super::{Gemma3, Layer};
use crate::error::{Error, Result};

/// Positions whose logits [`Gemma3::forward_all`] computes in one matmul against the head.
const LOGIT_BLOCK: usize = 16;

/// Which projection input an [`ActivationHook`] is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Site {
    /// The normed input of q/k/v_proj, `[n, hidden]`.
    Attention,
    /// The attention output, input of o_proj, `[n, heads * head_dim]`.
    Output,
    /// The normed input of gate/up_proj, `[n, hidden]`.
    Mlp,
    /// The gated activation, input of down_proj, `[n, intermediate]`.
    Down,
}

/// Sees every projection input of a forward pass: `(layer, site, rows)`.
pub type ActivationHook<'a> = dyn FnMut(usize, Site, &[f32]) + 'a;

/// The tokens of one forward call: how many, from which position.
struct Chunk {
    n: usize,
    start: usize,
}

/// Where a layer shows its projection inputs.
type Observe<'a> = dyn FnMut(Site, &[f32]) + 'a;

impl<K: Kernels> Gemma3<K> {
    /// Runs `tokens` from the cache's current position and returns the logits of the last one.
    ///
    /// The cache advances by `tokens.len()`; on error it is left unchanged.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = self.hidden_states(tokens, cache, None)?;
        let hidden = self.cfg.hidden_size;
        let last = &h[(tokens.len() - 1) * hidden..];
        let mut normed = vec![0f32; hidden];
        self.kernels.rms_norm(last, &self.final_norm, &mut normed)?;
        let head = self.head();
        let mut logits = vec![0f32; K::shape(head).0];
        let mut input = Input::new(&normed, 1);
        self.kernels.matmul(head, &mut input, &mut logits)?;
        Ok(logits)
    }

    /// Runs `tokens` like [`Gemma3::forward`] and hands the logits of every position from
    /// `first` on, in order, to `each(position_in_chunk, logits)` (for perplexity); the head
    /// runs over `LOGIT_BLOCK` positions at a time, so all the logits never exist at once.
    pub fn forward_all(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        first: usize,
        each: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        let h = self.hidden_states(tokens, cache, None)?;
        let hidden = self.cfg.hidden_size;
        let h = &h[first.min(tokens.len()) * hidden..];
        let head = self.head();
        let vocab = K::shape(head).0;
        let mut normed = vec![0f32; LOGIT_BLOCK * hidden];
        let mut logits = vec![0f32; LOGIT_BLOCK * vocab];
        for (b, rows) in h.chunks(LOGIT_BLOCK * hidden).enumerate() {
            let n = rows.len() / hidden;
            let normed = &mut normed[..n * hidden];
            self.kernels.rms_norm(rows, &self.final_norm, normed)?;
            let logits = &mut logits[..n * vocab];
            self.kernels
                .matmul(head, &mut Input::new(normed, n), logits)?;
            for (t, l) in logits.chunks(vocab).enumerate() {
                each(first + b * LOGIT_BLOCK + t, l);
            }
        }
        Ok(())
    }

    /// Runs `tokens` through the decoder layers only, showing every projection input to
    /// `hook` (calibration statistics); the cache advances as in [`Gemma3::forward`].
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        hook: &mut ActivationHook<'_>,
    ) -> Result<()> {
        self.hidden_states(tokens, cache, Some(hook)).map(drop)
    }

    /// The residual stream after the last layer, `[n, hidden]`; advances the cache.
    fn hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        mut hook: Option<&mut ActivationHook<'_>>,
    ) -> Result<Vec<f32>> {
        let chunk = self.check_request(tokens, cache)?;
        let mut h = vec![0f32; chunk.n * self.cfg.hidden_size];
        self.kernels
            .embed(&self.embed, tokens, self.embed_scale, &mut h)?;
        let k = &self.kernels;
        let positions = [
            k.positions(&self.rope_local, chunk.start, chunk.n),
            k.positions(&self.rope_global, chunk.start, chunk.n),
        ];
        for (i, layer) in self.layers.iter().enumerate() {
            let mut observe = |site: Site, x: &[f32]| {
                if let Some(hook) = hook.as_mut() {
                    hook(i, site, x);
                }
            };
            let pos = &positions[usize::from(layer.kind != LayerKind::Sliding)];
            self.attention_block(layer, &mut h, (&chunk, pos), (cache, i), &mut observe)?;
            self.mlp_block(layer, &mut h, chunk.n, &mut observe)?;
        }
        cache.advance(chunk.n);
        Ok(h)
    }

    fn check_request(&self, tokens: &[u32], cache: &KvCache) -> Result<Chunk> {
        if tokens.is_empty() {
            return Err(Error::Request("no tokens to run".into()));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let needed = cache.position() + tokens.len();
        if needed > cache.max_context() {
            return Err(Error::ContextFull {
                needed,
                max: cache.max_context(),
            });
        }
        Ok(Chunk {
            n: tokens.len(),
            start: cache.position(),
        })
    }

    fn attention_block(
        &self,
        layer: &Layer<K::Weight>,
        h: &mut Vec<f32>,
        (chunk, pos): (&Chunk, &K::Positions),
        (cache, index): (&mut KvCache, usize),
        observe: &mut Observe<'_>,
    ) -> Result<()> {
        let (c, k) = (&self.cfg, &self.kernels);
        let n = chunk.n;
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        let mut x = vec![0f32; h.len()];
        k.rms_norm(h, &layer.input_norm, &mut x)?;
        observe(Site::Attention, &x);
        let width = kv_heads * c.head_dim;
        let mut q = vec![0f32; n * heads * c.head_dim];
        let (mut key, mut value) = (vec![0f32; n * width], vec![0f32; n * width]);
        let mut input = Input::new(&x, n);
        k.matmul(&layer.q, &mut input, &mut q)?;
        k.matmul(&layer.k, &mut input, &mut key)?;
        k.matmul(&layer.v, &mut input, &mut value)?;
        k.norm_rope(&mut q, &layer.q_norm, heads, pos)?;
        k.norm_rope(&mut key, &layer.k_norm, kv_heads, pos)?;
        let window = match layer.kind {
            LayerKind::Sliding => c.sliding_window,
            _ => usize::MAX,
        };
        let mut attn = vec![0f32; q.len()];
        let (cache_k, cache_v, cap) = cache.read(index);
        let call = Attention {
            q: &q,
            k: &key,
            v: &value,
            cache_k,
            cache_v,
            cap,
            start: chunk.start,
            window,
        };
        k.attention(&call, &mut attn)?;
        cache.store(index, chunk.start, &key, &value);
        observe(Site::Output, &attn);
        let mut out = vec![0f32; n * c.hidden_size];
        k.matmul(&layer.o, &mut Input::new(&attn, n), &mut out)?;
        k.add_rms_norm(&mut out, &layer.post_attention_norm, h)
    }

    fn mlp_block(
        &self,
        layer: &Layer<K::Weight>,
        h: &mut Vec<f32>,
        n: usize,
        observe: &mut Observe<'_>,
    ) -> Result<()> {
        let (c, k) = (&self.cfg, &self.kernels);
        let mut x = vec![0f32; h.len()];
        k.rms_norm(h, &layer.pre_feedforward_norm, &mut x)?;
        observe(Site::Mlp, &x);
        let mut gate = vec![0f32; n * c.intermediate_size];
        let mut up = vec![0f32; n * c.intermediate_size];
        let mut input = Input::new(&x, n);
        k.matmul(&layer.gate, &mut input, &mut gate)?;
        k.matmul(&layer.up, &mut input, &mut up)?;
        k.gelu_gate(&mut gate, &up)?;
        observe(Site::Down, &gate);
        let mut down = vec![0f32; h.len()];
        k.matmul(&layer.down, &mut Input::new(&gate, n), &mut down)?;
        k.add_rms_norm(&mut down, &layer.post_feedforward_norm, h)
    }
}
