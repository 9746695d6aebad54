//! `alc perplexity PKG|DIR --text FILE`: the perplexity of a text under a model, computed on
//! the native runtime as llama.cpp's `llama-perplexity` does (`ava_quantize::perplexity`).

use anyhow::Context;
use ava_quantize::perplexity::{perplexity, PplOptions, PplReport};
use ava_runtime::Engine;

use crate::args::PerplexityArgs;
use crate::ui::Ui;

/// Runs `perplexity`.
pub fn run(args: &PerplexityArgs, ui: &Ui) -> anyhow::Result<()> {
    let engine =
        Engine::open(&args.model).with_context(|| format!("loading {}", args.model.display()))?;
    let opts = PplOptions {
        ctx: args.ctx,
        stride: args.stride,
        max_chunks: args.max_chunks,
    };
    let bar = ui.bytes_progress(0, "windows");
    let report = perplexity(&engine, &args.text, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("scoring {}", args.text.display()))?;
    bar.finish_and_clear();
    ui.result(&report, || human(&report))
}

fn human(r: &PplReport) -> String {
    format!(
        "perplexity {:.4} (nll {:.4}) over {} tokens: {} of {} windows of {} (stride {}), {:.1}s\n",
        r.perplexity,
        r.nll,
        r.scored_tokens,
        r.chunks,
        r.chunks_available,
        r.ctx,
        r.stride,
        r.seconds
    )
}
