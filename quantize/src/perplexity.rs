//! Perplexity of a text under a model, the quality gate of quantization.
//!
//! As llama.cpp's `llama-perplexity` does: the text is tokenized once as plain text (a literal
//! `<unk>` in WikiText is characters, not the special token); window `i` holds the
//! `ctx` tokens from `i * stride` with its first token replaced by BOS; each window scores the
//! next-token log-likelihood of its last `min(stride, ctx / 2)` positions (with `stride = ctx`,
//! the second half, as llama.cpp), so every scored token has at least `ctx / 2` tokens of context.
//! With a reference model the same windows also give the KL divergence of the model's token
//! distributions from the reference's and their top-1 agreement (llama-perplexity's
//! `--kl-divergence`); the reference's log-probabilities of one window are held at a time.

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
    /// Standard error of the perplexity (`ppl * se(nll)`, as llama-perplexity reports it).
    pub perplexity_se: f64,
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
    /// Seconds spent in the model(s).
    pub seconds: f64,
    /// The comparison with a reference model, when one was given.
    pub reference: Option<RefReport>,
}

/// How a model's token distributions differ from a reference's over the same positions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RefReport {
    /// The reference's perplexity.
    pub perplexity: f64,
    /// Its standard error.
    pub perplexity_se: f64,
    /// `ppl(model) - ppl(reference)`.
    pub perplexity_increase: f64,
    /// Mean `KL(P_ref || P_model)` per scored position (nats).
    pub kl_mean: f64,
    /// Standard error of that mean.
    pub kl_se: f64,
    /// Median KL.
    pub kl_median: f64,
    /// 99th percentile KL.
    pub kl_p99: f64,
    /// Largest KL.
    pub kl_max: f64,
    /// Fraction of positions where both models' most likely token is the same.
    pub top1_agreement: f64,
}

/// Running sums of one model's scored positions.
#[derive(Default)]
struct Tally {
    nll: Vec<f64>,
    kl: Vec<f64>,
    same_top1: usize,
}

/// Computes the perplexity of `text_file` under `engine`; `progress(done, total)` per window.
pub fn perplexity(
    engine: &Engine,
    text_file: &Path,
    opts: &PplOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplReport> {
    perplexity_vs(engine, None, text_file, opts, progress)
}

/// [`perplexity`], and with `reference` the KL divergence from its token distributions and
/// the top-1 agreement with it over the same windows (as llama-perplexity --kl-divergence).
pub fn perplexity_vs(
    engine: &Engine,
    reference: Option<&Engine>,
    text_file: &Path,
    opts: &PplOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplReport> {
    let bytes = std::fs::read(text_file).map_err(|e| Error::io(text_file, e))?;
    let label = text_file.display().to_string();
    perplexity_text(engine, reference, (&bytes, &label), opts, progress)
}

/// [`perplexity_vs`] on text in memory (`label` names it in errors).
pub fn perplexity_text(
    engine: &Engine,
    reference: Option<&Engine>,
    (bytes, label): (&[u8], &str),
    opts: &PplOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplReport> {
    let tokens = engine
        .tokenizer()
        .encode_plain(&String::from_utf8_lossy(bytes))?;
    if opts.ctx < 2 || opts.stride == 0 {
        return Err(Error::Quantize(
            "--ctx must be at least 2 and --stride at least 1".into(),
        ));
    }
    if let Some(r) = reference {
        let (a, b) = (
            engine.model().config().vocab_size,
            r.model().config().vocab_size,
        );
        if a != b {
            return Err(Error::Quantize(format!(
                "the reference's vocabulary ({b}) differs from the model's ({a})"
            )));
        }
    }
    let available = if tokens.len() >= opts.ctx {
        (tokens.len() - opts.ctx) / opts.stride + 1
    } else {
        0
    };
    let chunks = opts.max_chunks.map_or(available, |m| m.min(available));
    if chunks == 0 {
        return Err(Error::Quantize(format!(
            "{label}: {} tokens, fewer than one window of {}",
            tokens.len(),
            opts.ctx
        )));
    }
    let scored_per = opts.stride.min(opts.ctx / 2).max(1);
    let first = opts.ctx - 1 - scored_per;
    let started = std::time::Instant::now();
    let (mut tally, mut ref_nll) = (Tally::default(), Vec::new());
    for i in 0..chunks {
        let mut window = tokens[i * opts.stride..i * opts.stride + opts.ctx].to_vec();
        window[0] = BOS;
        let ref_rows = match reference {
            Some(r) => Some(reference_rows(r, &window, first, &mut ref_nll)?),
            None => None,
        };
        let mut cache = engine.model().new_cache(opts.ctx);
        let mut k = 0;
        engine
            .model()
            .forward_all(&window, &mut cache, first, &mut |pos, logits| {
                let Some(&next) = window.get(pos + 1) else {
                    return;
                };
                tally
                    .nll
                    .push(negative_log_likelihood(logits, next as usize));
                if let Some((rows, top)) = &ref_rows {
                    let v = logits.len();
                    let (kl, argmax) = kl_from(&rows[k * v..(k + 1) * v], logits);
                    tally.kl.push(kl);
                    tally.same_top1 += usize::from(argmax == top[k]);
                }
                k += 1;
            })?;
        progress(i + 1, chunks);
    }
    let (nll, se) = mean_se(&tally.nll);
    let perplexity = nll.exp();
    let reference = reference.map(|_| compare(&tally, &ref_nll, perplexity));
    Ok(PplReport {
        perplexity,
        perplexity_se: perplexity * se,
        nll,
        chunks,
        chunks_available: available,
        scored_tokens: tally.nll.len(),
        text_tokens: tokens.len(),
        ctx: opts.ctx,
        stride: opts.stride,
        seconds: started.elapsed().as_secs_f64(),
        reference,
    })
}

/// The reference's log-softmax rows of the scored positions (`[scored, vocab]`) and their
/// argmax; its negative log-likelihoods go to `nll`.
fn reference_rows(
    r: &Engine,
    window: &[u32],
    first: usize,
    nll: &mut Vec<f64>,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let (mut rows, mut top) = (Vec::new(), Vec::new());
    let mut cache = r.model().new_cache(window.len());
    r.model()
        .forward_all(window, &mut cache, first, &mut |pos, logits| {
            let Some(&next) = window.get(pos + 1) else {
                return;
            };
            nll.push(negative_log_likelihood(logits, next as usize));
            let (ls, arg) = log_softmax(logits);
            rows.extend(ls);
            top.push(arg);
        })?;
    Ok((rows, top))
}

/// `log softmax(logits)` (f32 values, f64 normaliser) and the argmax.
fn log_softmax(logits: &[f32]) -> (impl Iterator<Item = f32> + '_, usize) {
    let (arg, max) =
        logits.iter().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &l)| if l > b.1 { (i, l) } else { b },
        );
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let norm = f64::from(max) + sum.ln();
    (
        logits.iter().map(move |&l| (f64::from(l) - norm) as f32),
        arg,
    )
}

/// `KL(P || Q)` with `P` given as log-probabilities and `Q` as logits; and `Q`'s argmax.
fn kl_from(log_p: &[f32], logits_q: &[f32]) -> (f64, usize) {
    let (log_q, arg) = log_softmax(logits_q);
    let kl = log_p
        .iter()
        .zip(log_q)
        .map(|(&lp, lq)| f64::from(lp).exp() * (f64::from(lp) - f64::from(lq)))
        .sum::<f64>();
    (kl.max(0.0), arg)
}

/// Mean and standard error of the mean.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// The `q` quantile (nearest rank) of `sorted`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn compare(t: &Tally, ref_nll: &[f64], perplexity: f64) -> RefReport {
    let (rn, rse) = mean_se(ref_nll);
    let (kl_mean, kl_se) = mean_se(&t.kl);
    let mut sorted = t.kl.clone();
    sorted.sort_by(f64::total_cmp);
    RefReport {
        perplexity: rn.exp(),
        perplexity_se: rn.exp() * rse,
        perplexity_increase: perplexity - rn.exp(),
        kl_mean,
        kl_se,
        kl_median: quantile(&sorted, 0.5),
        kl_p99: quantile(&sorted, 0.99),
        kl_max: sorted.last().copied().unwrap_or(0.0),
        top1_agreement: t.same_top1 as f64 / t.kl.len().max(1) as f64,
    }
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

    #[test]
    fn kl_is_zero_for_equal_and_positive_for_different_distributions() {
        let a = [1.0f32, 2.0, 0.5, -1.0];
        let (la, arg) = log_softmax(&a);
        let la: Vec<f32> = la.collect();
        assert_eq!(arg, 1);
        assert!(kl_from(&la, &a).0 < 1e-9);
        let (kl, arg_b) = kl_from(&la, &[2.5, 1.0, 0.5, -1.0]);
        assert!(kl > 0.1, "{kl}");
        assert_eq!(arg_b, 0);
        let (m, se) = mean_se(&[1.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (se - 1.0).abs() < 1e-12);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
