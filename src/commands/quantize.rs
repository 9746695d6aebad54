//! `alc quantize DIR|REPO --quant Q -o DIR`: the quantize stage ([`ava_quantize::quantize`])
//! into a temporary directory beside `-o`, renamed into place when complete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use ava_quantize::mixed::MixedReport;
use ava_quantize::{QuantizeProgress, QuantizeReport};
use indicatif::ProgressBar;
use serde::Serialize;

use crate::args::QuantizeArgs;
use crate::hub::resolve_checkpoint;
use crate::partial_dir::PartialDir;
use crate::ui::{human_bytes, Ui};

/// What `quantize --json` prints.
#[derive(Serialize)]
struct Report<'a> {
    output: &'a PathBuf,
    #[serde(flatten)]
    stage: &'a QuantizeReport,
    peak_rss_bytes: Option<u64>,
}

/// The terminal as the stage's progress sink.
pub struct Progress<'a> {
    ui: &'a Ui,
    bar: ProgressBar,
}

impl<'a> Progress<'a> {
    /// Status lines through `ui`, and a bytes bar.
    pub fn new(ui: &'a Ui) -> Self {
        Progress {
            ui,
            bar: ui.bytes_progress(0, "quantizing"),
        }
    }
}

impl QuantizeProgress for Progress<'_> {
    fn info(&self, msg: &str) {
        self.ui.info(msg);
    }

    fn total(&self, bytes: u64) {
        self.bar.set_length(bytes);
    }

    fn position(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `quantize`.
pub fn run(args: &QuantizeArgs, ui: &Ui) -> anyhow::Result<()> {
    if args.output.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists (quantize writes a new directory)",
            args.output.display()
        );
    }
    let opts = args.options();
    opts.check()?;
    let dir = match args.input.to_str() {
        Some(arg) => resolve_checkpoint(arg, &args.hub.options(ui), ui)?,
        None => args.input.clone(),
    };
    let temp = PartialDir::beside(&args.output)?;
    let stage = ava_quantize::quantize(&dir, temp.path(), &opts, &Progress::new(ui))
        .map_err(stage_error)?;
    temp.persist(&args.output)?;
    let report = Report {
        output: &args.output,
        stage: &stage,
        peak_rss_bytes: crate::commands::run::peak_rss_bytes(),
    };
    ui.result(&report, || human(&report))
}

/// The stage's error; a usage error (exit 2) when the budget is below what the policy can write.
pub fn stage_error(e: ava_quantize::Error) -> anyhow::Error {
    if matches!(e, ava_quantize::Error::BudgetTooSmall { .. }) {
        anyhow::Error::new(crate::UsageError(e.to_string()))
    } else {
        e.into()
    }
}

/// The budget's choice: one line per layer with promoted projections.
fn human_mixed(m: &MixedReport) -> String {
    let mut s = format!(
        "\n  {}: {} of {} q4bf16 projections kept at q8bf16; {} ({} bytes, {:.3} bits per \
         quantized weight; all q4 {}, all q8 {})",
        m.budget,
        m.promoted.len(),
        m.candidates,
        human_bytes(m.file_bytes),
        m.file_bytes,
        m.bits_per_weight,
        human_bytes(m.file_bytes_range[0]),
        human_bytes(m.file_bytes_range[1]),
    );
    let mut layers: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for name in &m.promoted {
        let (layer, short) = layer_and_short(name);
        layers
            .entry(layer.unwrap_or(usize::MAX))
            .or_default()
            .push(short);
    }
    for (layer, names) in layers {
        s += &format!("\n    layer {layer}: {}", names.join(" "));
    }
    s
}

/// `(3, "down_proj")` from `model.layers.3.mlp.down_proj.weight`.
fn layer_and_short(name: &str) -> (Option<usize>, &str) {
    let layer = name
        .split_once("layers.")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|n| n.parse().ok());
    let short = name
        .trim_end_matches(".weight")
        .rsplit('.')
        .next()
        .unwrap_or(name);
    (layer, short)
}

fn human(report: &Report<'_>) -> String {
    let r = report.stage;
    let mut s = format!(
        "{}\n  {} ({}, group {}, {}): {} of {} tensors quantized\n  {} -> {} in {:.1}s ({:.2} GB/s input)",
        report.output.display(),
        r.quantization,
        r.method,
        r.group_size,
        r.policy,
        r.quantized_tensors,
        r.tensors,
        human_bytes(r.input_bytes),
        human_bytes(r.output_bytes),
        r.quantize_seconds,
        r.input_gb_per_s
    );
    if r.calibration_seconds > 0.01 {
        s += &format!(
            ", calibration + {} search {:.1}s",
            r.method, r.calibration_seconds
        );
    }
    if let Some(rss) = report.peak_rss_bytes {
        s += &format!(", peak RSS {}", human_bytes(rss));
    }
    if let Some(m) = &r.mixed_precision {
        s += &human_mixed(m);
    }
    if r.skipped_tensors > 0 {
        s += &format!(
            "\n  left out {} vision tower / projector tensors (text model only)",
            r.skipped_tensors
        );
    }
    if !r.fallbacks.is_empty() {
        s += &format!(
            "\n  kept as bf16 (shape not a multiple of the group): {}",
            r.fallbacks.len()
        );
    }
    s + "\n"
}
