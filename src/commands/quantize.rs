//! `alc quantize DIR|REPO --quant Q -o DIR`: the quantize stage ([`ava_quantize::quantize`])
//! into a temporary directory beside `-o`, renamed into place when complete.

use std::path::PathBuf;

use anyhow::bail;
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
    let stage = ava_quantize::quantize(&dir, temp.path(), &opts, &Progress::new(ui))?;
    temp.persist(&args.output)?;
    let report = Report {
        output: &args.output,
        stage: &stage,
        peak_rss_bytes: crate::commands::run::peak_rss_bytes(),
    };
    ui.result(&report, || human(&report))
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
