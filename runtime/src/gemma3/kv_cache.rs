//! The KV cache of a Gemma 3 session: sliding-window layers keep only `sliding_window`
//! positions in a ring buffer; global layers keep the whole context.

use ava_core::{Gemma3Config, LayerKind};

/// Keys and values of one layer: `cap` slots of `kv_heads * head_dim` values each.
#[derive(Debug)]
pub(crate) struct LayerCache {
    pub(crate) cap: usize,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

/// The cache of every layer plus the number of positions already processed.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) width: usize,
    pos: usize,
    max_context: usize,
}

impl KvCache {
    /// A cache for `max_context` positions.
    pub fn new(cfg: &Gemma3Config, max_context: usize) -> Self {
        let width = cfg.num_key_value_heads * cfg.head_dim;
        let layers = cfg
            .layer_types
            .iter()
            .map(|kind| {
                let cap = match kind {
                    LayerKind::Sliding => cfg.sliding_window.min(max_context),
                    _ => max_context,
                };
                LayerCache {
                    cap,
                    k: vec![0.0; cap * width],
                    v: vec![0.0; cap * width],
                }
            })
            .collect();
        KvCache {
            layers,
            width,
            pos: 0,
            max_context,
        }
    }

    /// Bytes the cache holds for a config and context, without allocating it.
    pub fn bytes_for(cfg: &Gemma3Config, max_context: usize) -> usize {
        let width = cfg.num_key_value_heads * cfg.head_dim;
        let slots: usize = cfg
            .layer_types
            .iter()
            .map(|kind| match kind {
                LayerKind::Sliding => cfg.sliding_window.min(max_context),
                _ => max_context,
            })
            .sum();
        2 * slots * width * std::mem::size_of::<f32>()
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * 4)
            .sum()
    }

    /// Positions processed so far (the next token's position).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The most positions this cache can hold.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Forgets everything (a new conversation); keeps the allocation.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}

impl LayerCache {
    /// The slot holding position `pos`.
    #[inline]
    pub(crate) fn slot(&self, pos: usize) -> usize {
        pos % self.cap
    }

    /// Stores the keys and values of positions `start..start + n` (rows of `width`); only the
    /// last `cap` of them survive in a ring.
    pub(crate) fn store(&mut self, start: usize, k: &[f32], v: &[f32], width: usize) {
        let n = k.len() / width;
        let first = n.saturating_sub(self.cap);
        for t in first..n {
            let slot = self.slot(start + t);
            self.k[slot * width..(slot + 1) * width]
                .copy_from_slice(&k[t * width..(t + 1) * width]);
            self.v[slot * width..(slot + 1) * width]
                .copy_from_slice(&v[t * width..(t + 1) * width]);
        }
    }
}
