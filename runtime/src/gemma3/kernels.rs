//! The operations the Gemma 3 forward pass is written over ([`Kernels`]): one implementation
//! per backend (`crate::native::NativeKernels`, `crate::tvm::TvmKernels`). The model, the
//! weights' names and shapes, the order of operations and the KV cache are the model's; how a
//! weight is stored and multiplied, and how each op is computed, are the backend's.

use crate::error::Result;
use crate::native::{QuantActs, Rope};
use crate::source::ModelSource;

/// The kernels of one backend.
///
/// Every activation is f32, row-major; `n` rows are the tokens of one forward call.
pub trait Kernels: Send + Sync + Sized {
    /// A weight matrix bound for this backend (`[rows, cols]`, PyTorch's `[out, in]`).
    type Weight: Send + Sync;
    /// Rotary embedding of one forward call's positions, prepared once for all layers.
    type Positions;

    /// The backend's name (`native`, `tvm`).
    const NAME: &'static str;

    /// Binds the weight `name` of `source` (float, or quantized planes beside the name).
    fn weight(&self, source: &ModelSource, name: &str) -> Result<Self::Weight>;

    /// `(rows, cols)` of a weight.
    fn shape(w: &Self::Weight) -> (usize, usize);

    /// Bytes a weight holds in memory (mapped or owned).
    fn weight_bytes(w: &Self::Weight) -> usize;

    /// Whether a weight is used in place from a mapped archive.
    fn is_mapped(w: &Self::Weight) -> bool;

    /// Checks, once after loading, that every op the model will call exists for its weights.
    fn check(
        &self,
        weights: &[&Self::Weight],
        embed: &Self::Weight,
        head: &Self::Weight,
    ) -> Result<()>;

    /// `out[t] = embed[tokens[t]] * scale` (`out` is `[n, cols]`).
    fn embed(&self, w: &Self::Weight, tokens: &[u32], scale: f32, out: &mut [f32]) -> Result<()>;

    /// `out[t, r] = sum_c x[t, c] * W[r, c]`.
    fn matmul(&self, w: &Self::Weight, x: &mut Input<'_>, out: &mut [f32]) -> Result<()>;

    /// Gemma's RMSNorm `x / rms(x) * (1 + w)` of every `w.len()`-wide row of `x` into `out`.
    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut [f32]) -> Result<()>;

    /// `h += rms_norm(x, w)` (the post-attention and post-feedforward norms); `x` is scratch.
    fn add_rms_norm(&self, x: &mut [f32], w: &[f32], h: &mut Vec<f32>) -> Result<()>;

    /// Rotary tables for positions `start..start + n` of one RoPE.
    fn positions(&self, rope: &Rope, start: usize, n: usize) -> Self::Positions;

    /// Per-head RMSNorm by `w`, then RoPE at `pos`, of `x` (`[n, heads * head_dim]`).
    fn norm_rope(
        &self,
        x: &mut Vec<f32>,
        w: &[f32],
        heads: usize,
        pos: &Self::Positions,
    ) -> Result<()>;

    /// Scaled dot-product attention of `q.q` over the keys each position may see.
    fn attention(&self, q: &Attention<'_>, out: &mut [f32]) -> Result<()>;

    /// `gate = gelu_tanh(gate) * up`.
    fn gelu_gate(&self, gate: &mut Vec<f32>, up: &[f32]) -> Result<()>;
}

/// The input of one or more matrix products: `n` rows of `x`. A backend that multiplies
/// int8 activations keeps them here, so the products sharing one input (q, k and v; gate and
/// up) quantize it once.
pub struct Input<'a> {
    /// The activations, `[n, cols]`.
    pub x: &'a [f32],
    /// Rows.
    pub n: usize,
    quantized: Option<QuantActs>,
}

impl<'a> Input<'a> {
    /// `n` rows of `x`.
    pub fn new(x: &'a [f32], n: usize) -> Self {
        Input {
            x,
            n,
            quantized: None,
        }
    }

    /// `x` quantized to int8 per `group` (`cols` per row), computed on first use.
    pub fn quantized(&mut self, cols: usize, group: usize) -> &QuantActs {
        let fresh = self
            .quantized
            .as_ref()
            .is_some_and(|q| q.group() == group && q.cols() == cols && q.n() == self.n);
        if !fresh {
            let mut q = QuantActs::new();
            q.quantize(self.x, self.n, cols, group);
            self.quantized = Some(q);
        }
        self.quantized.get_or_insert_with(QuantActs::new)
    }
}

/// One layer's attention call: the chunk's queries, keys and values and the cached ones.
pub struct Attention<'a> {
    /// Queries, `[n, heads * head_dim]`, normed and rotated.
    pub q: &'a [f32],
    /// The chunk's keys, `[n, kv_heads * head_dim]`, normed and rotated.
    pub k: &'a [f32],
    /// The chunk's values, `[n, kv_heads * head_dim]`.
    pub v: &'a [f32],
    /// Cached keys, `[cap, kv_heads * head_dim]`; position `j` sits in slot `j % cap`.
    pub cache_k: &'a [f32],
    /// Cached values, as `cache_k`.
    pub cache_v: &'a [f32],
    /// Slots in the cache.
    pub cap: usize,
    /// Position of the chunk's first token.
    pub start: usize,
    /// Most positions a query sees (itself included): the sliding window, or unbounded.
    pub window: usize,
}
