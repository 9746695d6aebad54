//! The quantize stage's entry point: a Gemma 3 checkpoint directory becomes a checkpoint of
//! Q4BF16 / Q8BF16 planes and float tensors, per the policy, calibrated (AWQ, GPTQ or both)
//! unless the method is RTN. `alc quantize` and `alc compile` both call [`quantize`].
//!
//! Calibration runs the model through `ava-runtime`; the weights are then streamed tensor by
//! tensor by [`crate::stage`]. A multimodal checkpoint's vision tower and projector are left
//! out. The output directory also holds the config and tokenizer files and `ava-stage.json`
//! (the `quantize` stage's record). Formats: `docs/formats/q4bf16.md`; methods:
//! `docs/quantization.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ava_core::config::gemma3::is_non_text;
use ava_core::quant::{FORMAT_VERSION, GROUP_SIZES};
use ava_core::{Checkpoint, FileRole};
use ava_packaging::size_label;
use ava_packaging::stage::{StageFile, STAGE_FILE};
use ava_runtime::Engine;
use serde::Serialize;
use serde_json::json;

use crate::awq_gemma3::{gemma3_transform, SiteReport};
use crate::calib::{calibrate, calibrate_bytes, CalibOptions, CalibStats};
use crate::calib::{DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use crate::gptq::GptqOptions;
use crate::gptq_gemma3::{add_gptq, GptqReport};
use crate::mixed::{self, Budget, MixedReport};
use crate::mixed_gemma3::sensitivities;
use crate::policy::{Policy, Scheme};
use crate::stage::{plan, write_weights, Method, PlannedTensor, StageSpec, Transform};
use crate::{Error, Result};

pub use ava_core::checkpoint::WEIGHTS_FILE;
/// The stage's name in `ava-stage.json` and the manifest.
pub const QUANTIZE_STAGE: &str = "quantize";

/// What the quantize stage does.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Scheme of the projections (and the default of the other roles).
    pub scheme: Scheme,
    /// Elements per group along the input dimension (one of [`GROUP_SIZES`]).
    pub group_size: usize,
    /// Rounding method (ignored, as RTN, when the policy rounds nothing to a grid).
    pub method: Method,
    /// Per-role overrides, e.g. `embed=q4bf16,norm=f32`.
    pub policy: Option<String>,
    /// Calibration text; `None`: the built-in corpus.
    pub calib: Option<PathBuf>,
    /// Calibration sequences.
    pub calib_samples: usize,
    /// Tokens per calibration sequence.
    pub calib_seq_len: usize,
    /// Exponents tried by the AWQ search.
    pub awq_grid: usize,
    /// Mixed precision: keep the most sensitive projections at q8bf16 within this budget.
    pub budget: Option<Budget>,
}

/// Where the stage reports progress; every method does nothing by default.
pub trait QuantizeProgress {
    /// A status line (calibrating, searching).
    fn info(&self, _msg: &str) {}
    /// Input bytes the weight writer will read in all.
    fn total(&self, _bytes: u64) {}
    /// Input bytes read so far.
    fn position(&self, _bytes: u64) {}
}

/// No progress reports.
pub struct Quiet;

impl QuantizeProgress for Quiet {}

/// What the quantize stage did.
#[derive(Debug, Serialize)]
pub struct QuantizeReport {
    /// The overall quantization name (`q4bf16`, ...).
    pub quantization: String,
    /// The method used.
    pub method: &'static str,
    /// Group size.
    pub group_size: usize,
    /// The policy, as written in the stage record.
    pub policy: String,
    /// Tensors written.
    pub tensors: usize,
    /// Of which quantized.
    pub quantized_tensors: usize,
    /// Vision tower and projector tensors left out.
    pub skipped_tensors: usize,
    /// Tensors kept as bf16 (shape not a multiple of the group).
    pub fallbacks: Vec<String>,
    /// Input weight bytes.
    pub input_bytes: u64,
    /// Output weight bytes.
    pub output_bytes: u64,
    /// Seconds spent calibrating and searching.
    pub calibration_seconds: f64,
    /// Seconds spent writing the weights.
    pub quantize_seconds: f64,
    /// Input bytes per second of the writer, in GB/s.
    pub input_gb_per_s: f64,
    /// The calibration text's name, when calibrated.
    pub calibration: Option<String>,
    /// AWQ per-site report.
    pub awq: Vec<SiteReport>,
    /// GPTQ per-weight report.
    pub gptq: Vec<GptqReport>,
    /// What the budget chose (`--size-budget`, `--bpw`).
    pub mixed_precision: Option<MixedReport>,
}

impl QuantizeOptions {
    /// Checks what can be checked before any input is read (the group size).
    pub fn check(&self) -> Result<()> {
        if !GROUP_SIZES.contains(&self.group_size) {
            return Err(Error::Quantize(format!(
                "--group-size {}: must be one of {GROUP_SIZES:?}",
                self.group_size
            )));
        }
        Ok(())
    }
}

/// Quantizes the Gemma 3 checkpoint in `input` into the existing, empty directory `out`.
pub fn quantize(
    input: &Path,
    out: &Path,
    opts: &QuantizeOptions,
    progress: &dyn QuantizeProgress,
) -> Result<QuantizeReport> {
    opts.check()?;
    let ck = Checkpoint::open(input)
        .map_err(|e| step(format!("reading checkpoint {}", input.display()), e))?;
    let cfg = ck
        .gemma3()
        .map_err(|e| step(format!("{}: not a Gemma 3 checkpoint", input.display()), e))?;
    let mut spec = stage_spec(opts)?;
    let mut planned = plan(&ck, &spec);
    let all = planned.len();
    planned.retain(|t| !is_non_text(&t.name));
    let skipped_tensors = all - planned.len();
    check_named(&planned, &spec)?;
    crate::stage::check_finite(&ck, &planned).map_err(|e| step("checking the weights", e))?;
    // The budget is checked before anything is measured: an impossible one fails at once.
    let budget = match opts.budget {
        Some(b) => Some((b, mixed::check(b, &planned, &spec)?)),
        None => None,
    };
    let measure = budget.is_some_and(|(_, all_fit)| !all_fit);
    let started = Instant::now();
    let (mut transform, mut awq, mut gptq, mut calib) =
        (Transform::default(), vec![], vec![], None);
    let mut measured = vec![];
    if spec.method.calibrated() || measure {
        let mut stats = run_calibration(input, (spec.method, measure), opts, progress)?;
        if spec.method.uses_awq() {
            progress.info("searching AWQ scales");
            (transform, awq) = gemma3_transform(&ck, &cfg, &stats, (&spec, opts.awq_grid))
                .map_err(|e| step("AWQ search", e))?;
        }
        if measure {
            progress.info("measuring each projection's sensitivity");
            let cands = mixed::candidates(&planned, &spec);
            measured = sensitivities((&ck, &cfg), &stats, &transform, spec.group, &cands)
                .map_err(|e| step("measuring sensitivities", e))?;
        }
        if spec.method.uses_gptq() {
            progress.info("preparing GPTQ Hessians");
            gptq = add_gptq(&cfg, &mut stats, &mut transform, &GptqOptions::default())
                .map_err(|e| step("GPTQ", e))?;
        }
        calib = Some(stats);
    }
    let mixed_precision = budget.map(|(b, all_fit)| {
        let promoted = if all_fit {
            mixed::candidates(&planned, &spec)
        } else {
            mixed::choose(b, (&planned, &spec), &measured)
        };
        let report = MixedReport::new(b, (&planned, &spec), measured, &promoted);
        planned = mixed::promote(&planned, &promoted);
        spec.tensors
            .extend(promoted.into_iter().map(|n| (n, mixed::PROMOTED)));
        report
    });
    let calibration_seconds = started.elapsed().as_secs_f64();
    progress.total(planned_bytes(&ck, &planned));
    let write_start = Instant::now();
    let stats = write_weights(
        &ck,
        (&planned, &spec),
        &transform,
        &out.join(WEIGHTS_FILE),
        &mut |n| progress.position(n),
    )
    .map_err(|e| step(format!("writing {}", out.display()), e))?;
    let quantize_seconds = write_start.elapsed().as_secs_f64();
    copy_side_files(&ck, out)?;
    let name = format!("gemma3-{}", size_label(ck.num_parameters()));
    write_stage_file(
        out,
        &name,
        (&spec, opts),
        calib.as_ref(),
        mixed_precision.as_ref(),
    )?;
    let written =
        Checkpoint::open(out).map_err(|e| step("reloading the quantized checkpoint", e))?;
    written
        .check_shapes(&written.gemma3()?.expected_tensors())
        .map_err(|e| step("checking the quantized checkpoint", e))?;
    Ok(QuantizeReport {
        quantization: spec.quantization.clone(),
        method: spec.method.name(),
        group_size: spec.group,
        policy: spec.policy.to_string(),
        tensors: planned.len(),
        quantized_tensors: planned
            .iter()
            .filter(|t| t.scheme.quant_format().is_some())
            .count(),
        skipped_tensors,
        fallbacks: planned
            .iter()
            .filter(|t| t.fell_back)
            .map(|t| t.name.clone())
            .collect(),
        input_bytes: stats.input_bytes,
        output_bytes: stats.output_bytes,
        calibration_seconds,
        quantize_seconds,
        input_gb_per_s: stats.input_bytes as f64 / quantize_seconds.max(1e-9) / 1e9,
        calibration: calib.as_ref().map(|_| calibration_name(opts)),
        awq,
        gptq,
        mixed_precision,
    })
}

/// Fails on a `--policy NAME=SCHEME` naming no tensor of the (text) model.
fn check_named(planned: &[PlannedTensor], spec: &StageSpec) -> Result<()> {
    for name in spec.tensors.keys() {
        if !planned.iter().any(|t| &t.name == name) {
            return Err(Error::Quantize(format!(
                "--policy {name}: the model has no tensor of that name"
            )));
        }
    }
    Ok(())
}

/// An error with what was being done.
fn step(what: impl Into<String>, source: impl Into<Error>) -> Error {
    Error::Step {
        what: what.into(),
        source: Box::new(source.into()),
    }
}

/// Input bytes of the planned tensors (the progress total).
fn planned_bytes(ck: &Checkpoint, planned: &[PlannedTensor]) -> u64 {
    planned
        .iter()
        .filter_map(|t| ck.tensor(&t.name).ok())
        .map(|v| v.data.len() as u64)
        .sum()
}

fn stage_spec(opts: &QuantizeOptions) -> Result<StageSpec> {
    let mut policy = Policy::for_quant(opts.scheme);
    let mut tensors = Default::default();
    if let Some(spec) = &opts.policy {
        (policy, tensors) = policy
            .with_tensor_overrides(spec)
            .map_err(|e| step("--policy", e))?;
    }
    // Nothing is rounded to a grid: nothing to calibrate.
    let float = policy.embed.quant_format().is_none()
        && policy.proj.quant_format().is_none()
        && tensors.values().all(|s| s.quant_format().is_none());
    Ok(StageSpec {
        policy,
        tensors,
        group: opts.group_size,
        method: if float { Method::Rtn } else { opts.method },
        quantization: opts.scheme.name().to_string(),
    })
}

/// The calibration text's name: the file given, or the built-in corpus.
fn calibration_name(opts: &QuantizeOptions) -> String {
    opts.calib
        .as_ref()
        .map_or(DEFAULT_CORPUS_NAME.to_string(), |p| p.display().to_string())
}

/// Runs calibration; `measure`: Hessians are needed for the mixed-precision measurement.
fn run_calibration(
    dir: &Path,
    (method, measure): (Method, bool),
    opts: &QuantizeOptions,
    progress: &dyn QuantizeProgress,
) -> Result<CalibStats> {
    let calib = CalibOptions {
        samples: opts.calib_samples,
        seq_len: opts.calib_seq_len,
        hessians: method.uses_gptq() || measure,
        ..CalibOptions::default()
    };
    let name = calibration_name(opts);
    progress.info(&format!(
        "calibrating on {name} (up to {} x {} tokens)",
        calib.samples, calib.seq_len
    ));
    let engine = Engine::open(dir).map_err(|e| step(format!("loading {}", dir.display()), e))?;
    match &opts.calib {
        Some(text) => calibrate(&engine, text, &calib),
        None => calibrate_bytes(&engine, (DEFAULT_CORPUS.as_bytes(), &name), &calib),
    }
    .map_err(|e| step(format!("calibrating on {name}"), e))
}

/// Copies config, tokenizer and other small files (not weights, not the stage file).
fn copy_side_files(ck: &Checkpoint, out: &Path) -> Result<()> {
    for f in ck.files() {
        let keep = matches!(
            f.role,
            FileRole::Config | FileRole::Tokenizer | FileRole::Other
        );
        if keep && f.relative != STAGE_FILE {
            std::fs::copy(&f.path, out.join(&f.relative)).map_err(|e| Error::io(&f.path, e))?;
        }
    }
    Ok(())
}

fn write_stage_file(
    out: &Path,
    name: &str,
    (spec, opts): (&StageSpec, &QuantizeOptions),
    calib: Option<&CalibStats>,
    mixed: Option<&MixedReport>,
) -> Result<()> {
    let mut stage = json!({
        "method": spec.method.name(),
        "group_size": spec.group,
        "policy": spec.policy.to_string(),
        "format_version": FORMAT_VERSION,
    });
    if !spec.tensors.is_empty() {
        let tensors: serde_json::Map<_, _> = spec
            .tensors
            .iter()
            .map(|(n, s)| (n.clone(), json!(s.name())))
            .collect();
        stage["tensor_policy"] = json!(tensors);
    }
    if let Some(m) = mixed {
        stage["mixed_precision"] = json!({
            "budget": m.budget,
            "file_bytes": m.file_bytes,
            "bits_per_weight": m.bits_per_weight,
            "candidates": m.candidates,
            "promoted": m.promoted.len(),
            "measure": "relative output error tr(D H D^T) / tr(W H W^T) on the calibration Hessian",
        });
    }
    if let Some(c) = calib {
        stage["calibration_sha256"] = json!(c.sha256);
        stage["calibration_file"] = json!(match &opts.calib {
            Some(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            None => Some(DEFAULT_CORPUS_NAME.to_string()),
        });
        stage["calibration_samples"] = json!(c.sequences);
        stage["calibration_seq_len"] = json!(c.tokens / c.sequences.max(1));
        stage["calibration_tokens"] = json!(c.tokens);
        if spec.method.uses_awq() {
            stage["awq_grid"] = json!(opts.awq_grid);
        }
        if spec.method.uses_gptq() {
            let g = GptqOptions::default();
            stage["gptq"] =
                json!({"damp": g.damp, "act_order": g.act_order, "static_groups": true});
        }
    }
    let stage_file = StageFile {
        name: Some(name.to_string()),
        family: Some("gemma3".to_string()),
        quantization: Some(spec.quantization.clone()),
        stages: [(QUANTIZE_STAGE.to_string(), stage)].into(),
        ..StageFile::default()
    };
    Ok(stage_file.write(out)?)
}
