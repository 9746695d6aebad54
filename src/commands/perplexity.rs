//! `alc perplexity PKG|DIR --text FILE [--reference PKG|DIR]`: the perplexity of a text under
//! a model, computed on the native runtime as llama.cpp's `llama-perplexity` does, and with a
//! reference the KL divergence from its token distributions (`ava_quantize::perplexity`).

use anyhow::Context;
use ava_quantize::perplexity::{perplexity_vs, PplOptions, PplReport};
use ava_runtime::Engine;

use crate::args::PerplexityArgs;
use crate::ui::Ui;

/// Runs `perplexity`.
pub fn run(args: &PerplexityArgs, ui: &Ui) -> anyhow::Result<()> {
    let engine =
        Engine::open(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let reference = match &args.reference {
        Some(r) => Some(Engine::open(r).with_context(|| format!("loading {}", r.display()))?),
        None => None,
    };
    let opts = PplOptions {
        ctx: args.ctx,
        stride: args.stride.unwrap_or(args.ctx),
        max_chunks: args.max_chunks,
    };
    let bar = ui.bytes_progress(0, "windows");
    let report = perplexity_vs(
        &engine,
        reference.as_ref(),
        &args.text,
        &opts,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )
    .with_context(|| format!("scoring {}", args.text.display()))?;
    bar.finish_and_clear();
    ui.result(&report, || human(&report))
}

/// The report as text (also used by `alc compile`'s quality gates).
pub fn human(r: &PplReport) -> String {
    let mut s = format!(
        "perplexity {:.4} ± {:.4} (nll {:.4}) over {} tokens: {} of {} windows of {} (stride {}), {:.1}s\n",
        r.perplexity,
        r.perplexity_se,
        r.nll,
        r.scored_tokens,
        r.chunks,
        r.chunks_available,
        r.ctx,
        r.stride,
        r.seconds
    );
    if let Some(c) = &r.reference {
        s += &format!(
            "reference perplexity {:.4} ± {:.4} (increase {:+.4})\nKL divergence mean {:.5} ± {:.5}, median {:.5}, p99 {:.5}, max {:.5}; top-1 agreement {:.2}%\n",
            c.perplexity,
            c.perplexity_se,
            c.perplexity_increase,
            c.kl_mean,
            c.kl_se,
            c.kl_median,
            c.kl_p99,
            c.kl_max,
            100.0 * c.top1_agreement
        );
    }
    s
}
