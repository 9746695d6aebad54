//! Perplexity of a text under a model, the quality gate of quantization.
//!
//! As llama.cpp's `llama-perplexity` does: the text is tokenized once as plain text (a literal
//! `<unk>` in WikiText is characters, not the special token); window `i` holds the
//! `ctx` tokens from `i * stride` with its first token replaced by BOS; each window scores the
//! next-token log-likelihood of its last `min(stride, ctx / 2)` positions (with `stride = ctx`,
//! the second half, as llama.cpp), so every scored token has at least `ctx / 2` tokens of context.

use std::path::Path;

use ava_runtime::Engine;

use crate::error::{Error, Result};

/// Gemma's BOS token.
const BOS: u32 = 2;

/// How to cut the text.
#[derive(Clone, Copy, Debug)]
pub struct PplOptions {
    /// Tokens per window.
    pub ctx: usize,
    /// Tokens between window starts.
    pub stride: usize,
    /// Most windows to run (`None`: all).
    pub max_chunks: Option<usize>,
}

/// The result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PplReport {
    /// exp(mean negative log-likelihood).
    pub perplexity: f64,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
    /// Windows run.
    pub chunks: usize,
    /// Windows the whole text would give.
    pub chunks_available: usize,
    /// Tokens scored.
    pub scored_tokens: usize,
    /// Tokens in the text.
    pub text_tokens: usize,
    /// Tokens per window.
    pub ctx: usize,
    /// Tokens between window starts.
    pub stride: usize,
    /// Seconds spent in the model.
    pub seconds: f64,
}

/// Computes the perplexity of `text_file` under `engine`; `progress(done, total)` per window.
pub fn perplexity(
    engine: &Engine,
    text_file: &Path,
    opts: &PplOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplReport> {
    let bytes = std::fs::read(text_file).map_err(|e| Error::io(text_file, e))?;
    let tokens = engine
        .tokenizer()
        .encode_plain(&String::from_utf8_lossy(&bytes))?;
    if opts.ctx < 2 || opts.stride == 0 {
        return Err(Error::Quantize(
            "--ctx must be at least 2 and --stride at least 1".into(),
        ));
    }
    let available = if tokens.len() >= opts.ctx {
        (tokens.len() - opts.ctx) / opts.stride + 1
    } else {
        0
    };
    let chunks = opts.max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        return Err(Error::Quantize(format!(
            "{}: {} tokens, fewer than one window of {}",
            text_file.display(),
            tokens.len(),
            opts.ctx
        )));
    }
    let scored_per = opts.stride.min(opts.ctx / 2).max(1);
    let first = opts.ctx - 1 - scored_per;
    let started = std::time::Instant::now();
    let (mut nll, mut scored) = (0f64, 0usize);
    for i in 0..chunks {
        let mut window = tokens[i * opts.stride..i * opts.stride + opts.ctx].to_vec();
        window[0] = BOS;
        let mut cache = engine.model().new_cache(opts.ctx);
        engine
            .model()
            .forward_all(&window, &mut cache, first, &mut |pos, logits| {
                if let Some(&next) = window.get(pos + 1) {
                    nll += negative_log_likelihood(logits, next as usize);
                    scored += 1;
                }
            })?;
        progress(i + 1, chunks);
    }
    let mean = nll / scored.max(1) as f64;
    Ok(PplReport {
        perplexity: mean.exp(),
        nll: mean,
        chunks,
        chunks_available: available,
        scored_tokens: scored,
        text_tokens: tokens.len(),
        ctx: opts.ctx,
        stride: opts.stride,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `-log softmax(logits)[target]`, in f64.
pub fn negative_log_likelihood(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let t = logits.get(target).copied().unwrap_or(f32::NEG_INFINITY);
    sum.ln() - f64::from(t - max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_vocab_size() {
        let nll = negative_log_likelihood(&[0.5; 8], 3);
        assert!((nll.exp() - 8.0).abs() < 1e-9);
    }
}
