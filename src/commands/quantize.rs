//! `alc quantize DIR|REPO --quant Q -o DIR`: a Gemma 3 checkpoint becomes a checkpoint of
//! Q4BF16 / Q8BF16 planes and float tensors, per the policy, calibrated (AWQ, GPTQ or both)
//! unless `--method rtn`.
//!
//! Calibration runs the model through `ava-runtime`; the weights are then streamed tensor by
//! tensor by `ava_quantize::stage` into a temporary directory beside `-o`, which is reloaded
//! and renamed into place. A multimodal checkpoint's vision tower and projector are left out. Formats: `docs/formats/q4bf16.md`; methods: `docs/quantization.md`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use ava_core::config::gemma3::is_non_text;
use ava_core::quant::{FORMAT_VERSION, GROUP_SIZES};
use ava_core::{Checkpoint, FileRole};
use ava_packaging::size_label;
use ava_packaging::stage::{StageFile, STAGE_FILE};
use ava_quantize::awq_gemma3::{gemma3_transform, SiteReport};
use ava_quantize::calib::{
    calibrate, calibrate_bytes, CalibOptions, CalibStats, DEFAULT_CORPUS, DEFAULT_CORPUS_NAME,
};
use ava_quantize::gptq::GptqOptions;
use ava_quantize::gptq_gemma3::{add_gptq, GptqReport};
use ava_quantize::policy::{Policy, Scheme};
use ava_quantize::stage::{plan, write_weights, Method, PlannedTensor, StageSpec, Transform};
use ava_runtime::Engine;
use serde::Serialize;
use serde_json::json;

use crate::args::{MethodArg, QuantArg, QuantizeArgs};
use crate::hub::resolve_checkpoint;
use crate::partial_dir::PartialDir;
use crate::ui::{human_bytes, Ui};

/// The weights file written.
const WEIGHTS_FILE: &str = "model.safetensors";

/// What `quantize --json` prints.
#[derive(Serialize)]
pub struct QuantizeReport {
    output: PathBuf,
    quantization: String,
    method: &'static str,
    group_size: usize,
    policy: String,
    tensors: usize,
    quantized_tensors: usize,
    skipped_tensors: usize,
    fallbacks: Vec<String>,
    input_bytes: u64,
    output_bytes: u64,
    calibration_seconds: f64,
    quantize_seconds: f64,
    input_gb_per_s: f64,
    peak_rss_bytes: Option<u64>,
    calibration: Option<String>,
    awq: Vec<SiteReport>,
    gptq: Vec<GptqReport>,
}

/// Runs `quantize`.
pub fn run(args: &QuantizeArgs, ui: &Ui) -> anyhow::Result<()> {
    let report = quantize(args, ui)?;
    ui.result(&report, || human(&report))
}

/// Quantizes `args.input` into `args.output` (the work of `quantize`, without printing the
/// result; `alc compile` calls it).
pub fn quantize(args: &QuantizeArgs, ui: &Ui) -> anyhow::Result<QuantizeReport> {
    if args.output.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists (quantize writes a new directory)",
            args.output.display()
        );
    }
    if !GROUP_SIZES.contains(&args.group_size) {
        bail!(
            "--group-size {}: must be one of {GROUP_SIZES:?}",
            args.group_size
        );
    }
    let dir = match args.input.to_str() {
        Some(arg) => resolve_checkpoint(arg, &args.hub.options(ui), ui)?,
        None => args.input.clone(),
    };
    let ck =
        Checkpoint::open(&dir).with_context(|| format!("reading checkpoint {}", dir.display()))?;
    let cfg = ck
        .gemma3()
        .with_context(|| format!("{}: not a Gemma 3 checkpoint", dir.display()))?;
    let spec = stage_spec(args)?;
    ava_quantize::stage::check_finite(&ck, &plan(&ck, &spec)).context("checking the weights")?;
    let started = Instant::now();
    let (mut transform, mut awq, mut gptq, mut calib) =
        (Transform::default(), vec![], vec![], None);
    if spec.method.calibrated() {
        let mut stats = run_calibration(&dir, spec.method, args, ui)?;
        if spec.method.uses_awq() {
            ui.info("searching AWQ scales");
            (transform, awq) = gemma3_transform(&ck, &cfg, &stats, (&spec, args.awq_grid))
                .context("AWQ search")?;
        }
        if spec.method.uses_gptq() {
            ui.info("preparing GPTQ Hessians");
            gptq = add_gptq(&cfg, &mut stats, &mut transform, &GptqOptions::default())
                .context("GPTQ")?;
        }
        calib = Some(stats);
    }
    let calibration_seconds = started.elapsed().as_secs_f64();
    let mut planned = plan(&ck, &spec);
    let all = planned.len();
    planned.retain(|t| !is_non_text(&t.name));
    let skipped_tensors = all - planned.len();
    let temp = PartialDir::beside(&args.output)?;
    let bar = ui.bytes_progress(planned_bytes(&ck, &planned), "quantizing");
    let write_start = Instant::now();
    let stats = write_weights(
        &ck,
        (&planned, &spec),
        &transform,
        &temp.path().join(WEIGHTS_FILE),
        &mut |n| bar.set_position(n),
    )
    .with_context(|| format!("writing {}", args.output.display()))?;
    let quantize_seconds = write_start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    copy_side_files(&ck, temp.path())?;
    let name = format!("gemma3-{}", size_label(ck.num_parameters()));
    write_stage_file(temp.path(), &name, &spec, args, calib.as_ref())?;
    let out = Checkpoint::open(temp.path()).context("reloading the quantized checkpoint")?;
    out.check_shapes(&out.gemma3()?.expected_tensors())
        .context("checking the quantized checkpoint")?;
    temp.persist(&args.output)?;
    let report = QuantizeReport {
        output: args.output.clone(),
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
        peak_rss_bytes: crate::commands::run::peak_rss_bytes(),
        calibration: calib.as_ref().map(|_| calibration_name(args)),
        awq,
        gptq,
    };
    Ok(report)
}

/// Input bytes of the planned tensors (the progress total).
fn planned_bytes(ck: &Checkpoint, planned: &[PlannedTensor]) -> u64 {
    planned
        .iter()
        .filter_map(|t| ck.tensor(&t.name).ok())
        .map(|v| v.data.len() as u64)
        .sum()
}

fn stage_spec(args: &QuantizeArgs) -> anyhow::Result<StageSpec> {
    let scheme = match args.quant {
        QuantArg::Q4bf16 => Scheme::Q4Bf16,
        QuantArg::Q8bf16 => Scheme::Q8Bf16,
        QuantArg::Bf16 => Scheme::Bf16,
        QuantArg::F16 => Scheme::F16,
        QuantArg::F32 => Scheme::F32,
    };
    let mut policy = Policy::for_quant(scheme);
    if let Some(spec) = &args.policy {
        policy = policy.with_overrides(spec).context("--policy")?;
    }
    Ok(StageSpec {
        policy,
        group: args.group_size,
        method: match args.method {
            // Nothing is rounded to a grid: nothing to calibrate.
            _ if policy_is_float(&policy) => Method::Rtn,
            MethodArg::Rtn => Method::Rtn,
            MethodArg::Awq => Method::Awq,
            MethodArg::Gptq => Method::Gptq,
            MethodArg::AwqGptq => Method::AwqGptq,
        },
        quantization: scheme.name().to_string(),
    })
}

fn policy_is_float(p: &Policy) -> bool {
    p.embed.quant_format().is_none() && p.proj.quant_format().is_none()
}

/// The calibration text's name: the file given, or the built-in corpus.
fn calibration_name(args: &QuantizeArgs) -> String {
    args.calib
        .as_ref()
        .map_or(DEFAULT_CORPUS_NAME.to_string(), |p| p.display().to_string())
}

fn run_calibration(
    dir: &Path,
    method: Method,
    args: &QuantizeArgs,
    ui: &Ui,
) -> anyhow::Result<CalibStats> {
    let opts = CalibOptions {
        samples: args.calib_samples,
        seq_len: args.calib_seq_len,
        hessians: method.uses_gptq(),
        ..CalibOptions::default()
    };
    let name = calibration_name(args);
    ui.info(format!(
        "calibrating on {name} (up to {} x {} tokens)",
        opts.samples, opts.seq_len
    ));
    let engine = Engine::open(dir).with_context(|| format!("loading {}", dir.display()))?;
    match &args.calib {
        Some(text) => calibrate(&engine, text, &opts),
        None => calibrate_bytes(&engine, (DEFAULT_CORPUS.as_bytes(), &name), &opts),
    }
    .with_context(|| format!("calibrating on {name}"))
}

/// Copies config, tokenizer and other small files (not weights, not the stage file).
fn copy_side_files(ck: &Checkpoint, out: &Path) -> anyhow::Result<()> {
    for f in ck.files() {
        let keep = matches!(
            f.role,
            FileRole::Config | FileRole::Tokenizer | FileRole::Other
        );
        if keep && f.relative != STAGE_FILE {
            std::fs::copy(&f.path, out.join(&f.relative))
                .with_context(|| format!("copying {}", f.path.display()))?;
        }
    }
    Ok(())
}

fn write_stage_file(
    out: &Path,
    name: &str,
    spec: &StageSpec,
    args: &QuantizeArgs,
    calib: Option<&CalibStats>,
) -> anyhow::Result<()> {
    let mut stage = json!({
        "method": spec.method.name(),
        "group_size": spec.group,
        "policy": spec.policy.to_string(),
        "format_version": FORMAT_VERSION,
    });
    if let Some(c) = calib {
        stage["calibration_sha256"] = json!(c.sha256);
        stage["calibration_file"] = json!(match &args.calib {
            Some(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
            None => Some(DEFAULT_CORPUS_NAME.to_string()),
        });
        stage["calibration_samples"] = json!(c.sequences);
        stage["calibration_seq_len"] = json!(c.tokens / c.sequences.max(1));
        stage["calibration_tokens"] = json!(c.tokens);
        if spec.method.uses_awq() {
            stage["awq_grid"] = json!(args.awq_grid);
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
        stages: [("quantize".to_string(), stage)].into(),
        ..StageFile::default()
    };
    Ok(stage_file.write(out)?)
}

fn human(r: &QuantizeReport) -> String {
    let mut s = format!(
        "{}\n  {} ({}, group {}, {}): {} of {} tensors quantized\n  {} -> {} in {:.1}s ({:.2} GB/s input)",
        r.output.display(),
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
    if let Some(rss) = r.peak_rss_bytes {
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
