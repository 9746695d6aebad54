//! [`LanguageModel`]: a Gemma 3 model with its backend chosen at run time, as an [`Engine`]
//! holds it.
//!
//! [`Engine`]: crate::Engine

use ava_core::Gemma3Config;

use super::{ActivationHook, Gemma3, Kernels, KvCache, KvDtype};
use crate::error::Result;

/// A loaded Gemma 3 model on some backend; see [`Gemma3`] for what each call does.
pub trait LanguageModel: Send + Sync {
    /// The model's config.
    fn config(&self) -> &Gemma3Config;
    /// The backend's name (`native`, `tvm`).
    fn backend_name(&self) -> &'static str;
    /// Whether the big matrices are used in place from a mapped archive.
    fn weights_mapped(&self) -> bool;
    /// Bytes of weights held in memory.
    fn weight_bytes(&self) -> usize;
    /// An f32 KV cache for `max_context` positions.
    fn new_cache(&self, max_context: usize) -> KvCache;
    /// A KV cache for `max_context` positions stored as `dtype`.
    fn new_cache_as(&self, max_context: usize, dtype: KvDtype) -> KvCache;
    /// Runs `tokens`; returns the last one's logits ([`Gemma3::forward`]).
    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>>;
    /// Runs `tokens`, handing every position's logits from `first` on to `each`
    /// ([`Gemma3::forward_all`]).
    fn forward_all(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        first: usize,
        each: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()>;
    /// Runs `tokens` through the layers, showing every projection input to `hook`
    /// ([`Gemma3::forward_observed`]).
    fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        hook: &mut ActivationHook<'_>,
    ) -> Result<()>;
}

impl<K: Kernels> LanguageModel for Gemma3<K> {
    fn config(&self) -> &Gemma3Config {
        Gemma3::config(self)
    }

    fn backend_name(&self) -> &'static str {
        K::NAME
    }

    fn weights_mapped(&self) -> bool {
        Gemma3::weights_mapped(self)
    }

    fn weight_bytes(&self) -> usize {
        Gemma3::weight_bytes(self)
    }

    fn new_cache(&self, max_context: usize) -> KvCache {
        Gemma3::new_cache(self, max_context)
    }

    fn new_cache_as(&self, max_context: usize, dtype: KvDtype) -> KvCache {
        Gemma3::new_cache_as(self, max_context, dtype)
    }

    fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        Gemma3::forward(self, tokens, cache)
    }

    fn forward_all(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        first: usize,
        each: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<()> {
        Gemma3::forward_all(self, tokens, cache, first, each)
    }

    fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        hook: &mut ActivationHook<'_>,
    ) -> Result<()> {
        Gemma3::forward_observed(self, tokens, cache, hook)
    }
}
