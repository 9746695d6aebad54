//! The quality gates of `alc compile`: the quantized model scored against its source on a text
//! (perplexity and KL divergence, [`crate::perplexity`]), and each figure checked against its
//! limit before anything is built or packaged.

use ava_runtime::Engine;

use crate::perplexity::{perplexity_text, PplOptions, PplReport};
use crate::Result;

/// Tokens per window the gates score (at most the model's context).
pub const GATE_CTX: usize = 512;

/// What the gates check.
#[derive(Clone, Copy, Debug, Default)]
pub struct GateOptions {
    /// Largest mean KL divergence from the source allowed (`--max-kl`).
    pub max_kl: Option<f64>,
    /// Largest perplexity increase allowed, in percent of the source's (`--max-ppl-increase`).
    pub max_ppl_increase: Option<f64>,
    /// Windows of [`GATE_CTX`] tokens scored (at least one).
    pub chunks: usize,
}

impl GateOptions {
    /// Whether any gate is set (without one, nothing is scored).
    pub fn any(&self) -> bool {
        self.max_kl.is_some() || self.max_ppl_increase.is_some()
    }

    /// The limits `report` exceeds, one sentence each; empty when it passes or has no
    /// comparison with a reference.
    pub fn failures(&self, report: &PplReport) -> Vec<String> {
        let Some(c) = &report.reference else {
            return Vec::new();
        };
        let increase = 100.0 * c.perplexity_increase / c.perplexity;
        let mut failed = Vec::new();
        if let Some(max) = self.max_kl.filter(|&m| c.kl_mean > m) {
            failed.push(format!(
                "mean KL divergence {:.5} > --max-kl {max}",
                c.kl_mean
            ));
        }
        if let Some(max) = self.max_ppl_increase.filter(|&m| increase > m) {
            failed.push(format!(
                "perplexity increase {increase:.2}% > --max-ppl-increase {max}%"
            ));
        }
        failed
    }
}

/// What the gates measured and which limits were exceeded.
#[derive(Clone, Debug)]
pub struct GateOutcome {
    /// Perplexity of `model`, with its comparison with the reference.
    pub report: PplReport,
    /// [`GateOptions::failures`] of `report`.
    pub failures: Vec<String>,
}

/// Scores `model` against `reference` on `text` (its bytes, and a label naming it in errors)
/// in windows of [`GATE_CTX`] tokens (fewer when the model's context is shorter).
pub fn quality_gates(
    model: &Engine,
    reference: &Engine,
    text: (&[u8], &str),
    opts: &GateOptions,
) -> Result<GateOutcome> {
    let ctx = GATE_CTX.min(model.model().config().max_position_embeddings);
    let ppl = PplOptions {
        ctx,
        stride: ctx,
        max_chunks: Some(opts.chunks.max(1)),
    };
    let report = perplexity_text(model, Some(reference), text, &ppl, &mut |_, _| {})?;
    Ok(GateOutcome {
        failures: opts.failures(&report),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perplexity::RefReport;

    fn report(ppl: f64, reference_ppl: f64, kl_mean: f64) -> PplReport {
        PplReport {
            perplexity: ppl,
            perplexity_se: 0.0,
            nll: ppl.ln(),
            chunks: 1,
            chunks_available: 1,
            scored_tokens: 10,
            text_tokens: 10,
            ctx: GATE_CTX,
            stride: GATE_CTX,
            seconds: 0.0,
            reference: Some(RefReport {
                perplexity: reference_ppl,
                perplexity_se: 0.0,
                perplexity_increase: ppl - reference_ppl,
                kl_mean,
                kl_se: 0.0,
                kl_median: kl_mean,
                kl_p99: kl_mean,
                kl_max: kl_mean,
                top1_agreement: 1.0,
            }),
        }
    }

    #[test]
    fn each_limit_exceeded_is_one_failure() {
        let opts = GateOptions {
            max_kl: Some(0.01),
            max_ppl_increase: Some(5.0),
            chunks: 1,
        };
        assert!(opts.any());
        // 10.4 against 10.0 is a 4% increase: within 5%.
        assert!(opts.failures(&report(10.4, 10.0, 0.005)).is_empty());
        let both = opts.failures(&report(10.6, 10.0, 0.02));
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[0].contains("--max-kl 0.01"), "{both:?}");
        assert!(
            both[1].contains("6.00% > --max-ppl-increase 5%"),
            "{both:?}"
        );
        let kl_only = GateOptions {
            max_ppl_increase: None,
            ..opts
        };
        assert_eq!(
            kl_only.failures(&report(10.6, 10.0, 0.005)),
            Vec::<String>::new()
        );
        assert!(!GateOptions::default().any());
    }

    #[test]
    fn a_report_without_a_reference_fails_nothing() {
        let mut r = report(100.0, 1.0, 9.0);
        r.reference = None;
        let opts = GateOptions {
            max_kl: Some(0.0),
            max_ppl_increase: Some(0.0),
            chunks: 1,
        };
        assert!(opts.failures(&r).is_empty());
    }
}
