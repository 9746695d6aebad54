//! The Gemma 3 forward pass over a chunk of tokens (prefill) or one token (decode).

use ava_core::LayerKind;
use rayon::prelude::*;

use super::kv_cache::{KvCache, LayerCache};
use super::{Gemma3, Layer};
use crate::error::{Error, Result};
use crate::native::{add_in_place, dot, gelu_tanh_gate, rms_norm, rms_norm_rows, softmax_in_place};

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

/// Activations of one chunk, `[n, width]` row-major.
struct Chunk {
    n: usize,
    start: usize,
}

impl Gemma3 {
    /// Runs `tokens` from the cache's current position and returns the logits of the last one.
    ///
    /// The cache advances by `tokens.len()`; on error it is left unchanged.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = self.hidden_states(tokens, cache, None)?;
        let hidden = self.cfg.hidden_size;
        let mut last = h[(tokens.len() - 1) * hidden..].to_vec();
        rms_norm(&mut last, &self.final_norm, self.cfg.rms_norm_eps as f32);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; head.rows];
        head.matmul(&last, 1, &mut logits);
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
        let mut h = h[first.min(tokens.len()) * hidden..].to_vec();
        rms_norm_rows(&mut h, &self.final_norm, self.cfg.rms_norm_eps as f32);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; LOGIT_BLOCK * head.rows];
        for (b, rows) in h.chunks(LOGIT_BLOCK * hidden).enumerate() {
            let n = rows.len() / hidden;
            head.matmul(rows, n, &mut logits[..n * head.rows]);
            for (t, l) in logits[..n * head.rows].chunks(head.rows).enumerate() {
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
        let hidden = self.cfg.hidden_size;
        let mut h = vec![0f32; chunk.n * hidden];
        for (t, &id) in tokens.iter().enumerate() {
            let row = &mut h[t * hidden..(t + 1) * hidden];
            self.embed.row_into(id as usize, row);
            row.iter_mut().for_each(|v| *v *= self.embed_scale);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let mut observe = |site: Site, x: &[f32]| {
                if let Some(hook) = hook.as_mut() {
                    hook(i, site, x);
                }
            };
            let (cache_layer, width) = (&mut cache.layers[i], cache.width);
            self.attention_block(layer, &mut h, &chunk, cache_layer, width, &mut observe);
            self.mlp_block(layer, &mut h, chunk.n, &mut observe);
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
        layer: &Layer,
        h: &mut [f32],
        chunk: &Chunk,
        cache: &mut LayerCache,
        width: usize,
        observe: &mut dyn FnMut(Site, &[f32]),
    ) {
        let c = &self.cfg;
        let eps = c.rms_norm_eps as f32;
        let n = chunk.n;
        let mut x = h.to_vec();
        rms_norm_rows(&mut x, &layer.input_norm, eps);
        observe(Site::Attention, &x);
        let mut q = vec![0f32; n * layer.q.rows];
        let mut k = vec![0f32; n * width];
        let mut v = vec![0f32; n * width];
        layer.q.matmul(&x, n, &mut q);
        layer.k.matmul(&x, n, &mut k);
        layer.v.matmul(&x, n, &mut v);
        rms_norm_rows(&mut q, &layer.q_norm, eps);
        rms_norm_rows(&mut k, &layer.k_norm, eps);
        let rope = if layer.kind == LayerKind::Sliding {
            &self.rope_local
        } else {
            &self.rope_global
        };
        for t in 0..n {
            rope.apply(
                &mut q[t * layer.q.rows..(t + 1) * layer.q.rows],
                chunk.start + t,
            );
            rope.apply(&mut k[t * width..(t + 1) * width], chunk.start + t);
        }
        let mut attn = vec![0f32; n * layer.q.rows];
        self.attend(layer.kind, &q, (&k, &v), chunk, cache, &mut attn);
        cache.store(chunk.start, &k, &v, width);
        observe(Site::Output, &attn);
        let mut out = vec![0f32; n * c.hidden_size];
        layer.o.matmul(&attn, n, &mut out);
        rms_norm_rows(&mut out, &layer.post_attention_norm, eps);
        add_in_place(h, &out);
    }

    /// Scaled dot-product attention of every (token, head) over the keys it may see: the
    /// chunk's own keys and, before the chunk, the cached ones.
    fn attend(
        &self,
        kind: LayerKind,
        q: &[f32],
        new: (&[f32], &[f32]),
        chunk: &Chunk,
        cache: &LayerCache,
        out: &mut [f32],
    ) {
        let c = &self.cfg;
        let (hd, heads) = (c.head_dim, c.num_attention_heads);
        let group = heads / c.num_key_value_heads;
        let width = c.num_key_value_heads * hd;
        let scale = c.query_pre_attn_scalar.powf(-0.5) as f32;
        let window = if kind == LayerKind::Sliding {
            c.sliding_window
        } else {
            usize::MAX
        };
        out.par_chunks_mut(hd).enumerate().for_each(|(idx, o)| {
            let (t, head) = (idx / heads, idx % heads);
            let g = head / group;
            let pos = chunk.start + t;
            let lo = (pos + 1).saturating_sub(window);
            let qh = &q[idx * hd..(idx + 1) * hd];
            // Where position j's key/value row is: in the chunk's fresh rows or the cache.
            let locate = |j: usize| -> (usize, bool) {
                if j >= chunk.start {
                    ((j - chunk.start) * width + g * hd, true)
                } else {
                    (cache.slot(j) * width + g * hd, false)
                }
            };
            let mut scores: Vec<f32> = (lo..=pos)
                .map(|j| {
                    let (at, fresh) = locate(j);
                    let src = if fresh { new.0 } else { &cache.k };
                    dot(qh, &src[at..at + hd]) * scale
                })
                .collect();
            softmax_in_place(&mut scores);
            o.fill(0.0);
            for (j, p) in (lo..=pos).zip(&scores) {
                let (at, fresh) = locate(j);
                let src = if fresh { new.1 } else { &cache.v };
                for (acc, val) in o.iter_mut().zip(&src[at..at + hd]) {
                    *acc += p * val;
                }
            }
        });
    }

    fn mlp_block(
        &self,
        layer: &Layer,
        h: &mut [f32],
        n: usize,
        observe: &mut dyn FnMut(Site, &[f32]),
    ) {
        let c = &self.cfg;
        let eps = c.rms_norm_eps as f32;
        let mut x = h.to_vec();
        rms_norm_rows(&mut x, &layer.pre_feedforward_norm, eps);
        observe(Site::Mlp, &x);
        let mut gate = vec![0f32; n * c.intermediate_size];
        let mut up = vec![0f32; n * c.intermediate_size];
        layer.gate.matmul(&x, n, &mut gate);
        layer.up.matmul(&x, n, &mut up);
        gelu_tanh_gate(&mut gate, &up);
        observe(Site::Down, &gate);
        let mut down = vec![0f32; n * c.hidden_size];
        layer.down.matmul(&gate, n, &mut down);
        rms_norm_rows(&mut down, &layer.post_feedforward_norm, eps);
        add_in_place(h, &down);
    }
}
