//! `aon compile`: ALBERT checkpoint -> mALBERT classifier -> ONNX -> `standard` passes -> INT8
//! (calibrated on the intents' train split) -> validated against float on the `val` split,
//! with an optional out-of-scope threshold -> v1 archive (model.onnx, tokenizer.json,
//! labels.json; the manifest's `aon-compile` stage holds the accuracy figures and the
//! calibration file's sha256, its `oos` stage the threshold). The first four stages are cached
//! by content hash ([`stages`]).

mod stages;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use ava_core::checkpoint::{LABELS_FILE, ONNX_MODEL_FILE};
use ava_core::{Target, TOKENIZER_FILE};
use ava_malbert::oos::{OosReport, OOS_STAGE};
use ava_malbert::ValidateOptions;
use ava_packaging::package::PackageOptions;
use ava_packaging::stage::StageFile;
use ava_packaging::PackageTarget;
use ava_runtime::albert::Classifier;
use ava_targets::kernels::KernelSpec;
use ava_targets::{BuildOptions, TargetReport, TargetSpec};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::archive_identity::{resolve_version, source_name};
use super::package;
use crate::args::aon_int8::{CompileArgs, CompileQuant};
use crate::hub::resolve_checkpoint_source;
use crate::ui::{human_bytes, Ui};
use stages::{StageReport, Stages, CACHE_FOLDER, CONVERT_REPORT, QUANTIZE_REPORT};

/// Family written into the manifest.
const FAMILY: &str = "albert";
/// Keys of [`CompileReport`] that describe this run, not the archive: left out of the
/// manifest so that a cached re-run writes the same archive.
const RUN_ONLY_KEYS: [&str; 6] = [
    "archive",
    "archive_bytes",
    "stages",
    "cache",
    "seconds",
    "build",
];

/// The kernel library an archive carries.
#[derive(Debug, Serialize)]
pub struct KernelsReport {
    /// Target.
    pub target: String,
    /// CPU preset.
    pub cpu: String,
    /// Kernels in the library.
    pub kernels: usize,
}

/// What `aon compile` reports (also the manifest's `aon-compile` stage, less the run-only keys).
#[derive(Debug, Serialize)]
pub struct CompileReport {
    /// The archive.
    pub archive: PathBuf,
    /// Archive bytes.
    pub archive_bytes: u64,
    /// Weight format.
    pub quantization: String,
    /// Float model bytes (ONNX).
    pub float_onnx_bytes: u64,
    /// Packaged model bytes (ONNX).
    pub onnx_bytes: u64,
    /// Validation utterances scored.
    pub val_samples: usize,
    /// Float accuracy on them (our runtime).
    pub float_accuracy: f64,
    /// Accuracy of the packaged model.
    pub accuracy: f64,
    /// sha256 of the calibration (intents) file.
    pub calibration_sha256: String,
    /// Calibration utterances (train split).
    pub calibration_samples: usize,
    /// The fitted head (solver, steps, train/val accuracy), when one was fitted.
    pub head: Option<Value>,
    /// Quantization details.
    pub quantize: Option<Value>,
    /// The out-of-scope threshold, when one was asked for.
    pub oos: Option<OosReport>,
    /// The kernel library (`--target`): target, CPU preset and number of kernels.
    pub kernels: Option<KernelsReport>,
    /// The kernel build (`--target`), as `alc build` reports it.
    pub build: Option<TargetReport>,
    /// The stages, cached or run.
    pub stages: Vec<StageReport>,
    /// The stage cache (`CACHE_DIR/aon`).
    pub cache: PathBuf,
    /// Seconds for the whole command.
    pub seconds: f64,
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn load(model: &Path, tokenizer: &[u8], labels: &[u8]) -> anyhow::Result<Classifier> {
    let onnx = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    Ok(Classifier::from_parts(&onnx, tokenizer, labels, model)?)
}

/// Runs `aon compile`.
pub fn run(args: &CompileArgs, ui: &Ui) -> anyhow::Result<()> {
    let started = Instant::now();
    let stage_cache = ui.stage_cache(CACHE_FOLDER);
    let cache = stage_cache.dir().to_path_buf();
    let mut st = Stages::new(stage_cache, ui);
    let (source_dir, hub) = resolve_checkpoint_source(&args.source, &args.hub.options(ui), ui)?;
    let conv = st.convert(args, &source_dir)?;
    let optimized = {
        let exported = st.export(&conv)?;
        st.optimize(&exported)?
    };
    let float_path = optimized.model();
    let (model_path, quantize) = match args.quant {
        CompileQuant::Int8 => {
            let q = st.quantize(&optimized, &conv, args)?;
            let report = std::fs::read(q.dir.join(QUANTIZE_REPORT))
                .with_context(|| format!("reading {}", q.dir.display()))?;
            (q.model(), Some(serde_json::from_slice::<Value>(&report)?))
        }
        CompileQuant::F32 => (float_path.clone(), None),
    };
    let ckpt = conv.checkpoint();
    let tokenizer = std::fs::read(ckpt.join(TOKENIZER_FILE)).context("reading tokenizer.json")?;
    let labels = std::fs::read(ckpt.join(LABELS_FILE)).context("reading labels.json")?;

    ui.info("validating against float on the val split");
    let float = load(&float_path, &tokenizer, &labels)?;
    let built = load(&model_path, &tokenizer, &labels)?;
    let validation = ava_malbert::validate(
        &float,
        &built,
        &ValidateOptions {
            intents: args.intents.clone(),
            samples: args.val_samples,
            max_accuracy_drop: args.max_accuracy_drop,
            oos: args.oos_threshold,
        },
    )?;
    let quantization = match args.quant {
        CompileQuant::Int8 => "int8",
        CompileQuant::F32 => "f32",
    };
    let mut report = CompileReport {
        archive: PathBuf::new(),
        archive_bytes: 0,
        quantization: quantization.into(),
        float_onnx_bytes: std::fs::metadata(&float_path)?.len(),
        onnx_bytes: std::fs::metadata(&model_path)?.len(),
        val_samples: validation.samples,
        float_accuracy: validation.float_accuracy,
        accuracy: validation.accuracy,
        calibration_sha256: sha256_file(&args.intents)?,
        calibration_samples: quantize
            .as_ref()
            .and_then(|q| q["calibration_samples"].as_u64())
            .unwrap_or(0) as usize,
        head: fitted_head(&conv.dir)?,
        quantize,
        oos: validation.oos,
        kernels: None,
        build: None,
        stages: Vec::new(),
        cache,
        seconds: 0.0,
    };
    let work = tempfile::tempdir().context("creating a work directory")?;
    let stage = work.path();
    std::fs::copy(&model_path, stage.join(ONNX_MODEL_FILE))?;
    std::fs::write(stage.join(TOKENIZER_FILE), &tokenizer)?;
    std::fs::write(stage.join(LABELS_FILE), &labels)?;
    if let Some(target) = args.target {
        let build = build_kernels(
            &built,
            target,
            args.cpu.as_deref(),
            stage,
            &report.cache,
            ui,
        )?;
        report.kernels = Some(KernelsReport {
            target: build.target.clone(),
            cpu: build.cpu.clone(),
            kernels: build.kernels,
        });
        report.build = Some(build);
    }
    write_stage_file(stage, args, &report)?;
    let as_dir = args.output.is_dir() || args.output.to_string_lossy().ends_with('/');
    if as_dir {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
    }
    let target = args.target.map_or("any", |t| t.name());
    let version = resolve_version(
        args.package_version,
        &args.output,
        &archive_name(args),
        &report.quantization,
        &[target],
    );
    let key = crate::trust::signing_key(args.sign.sign_key.as_deref(), &|m| ui.info(m))?;
    let opts = PackageOptions {
        version: version.to_string(),
        target: args.target.map(PackageTarget::Native),
        zstd: args.output.extension().is_some_and(|e| e == "zst"),
        created_by: crate::created_by(ui.tool),
        sign_with: Some(key),
        source_repo: hub.as_ref().map(|s| s.repository.clone()),
        source_revision: hub.and_then(|s| s.revision),
        ..PackageOptions::default()
    };
    let (path, _, archive_bytes) = package::write(stage, &args.output, args.force, &opts, ui)?;
    report.archive = path;
    report.archive_bytes = archive_bytes;
    report.stages = st.reports;
    report.seconds = started.elapsed().as_secs_f64();
    ui.result(&report, || human(&report))
}

/// The convert stage's `head_fit` (present when a head was fitted on `--intents`).
fn fitted_head(convert_dir: &Path) -> anyhow::Result<Option<Value>> {
    let path = convert_dir.join(CONVERT_REPORT);
    let report: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    Ok(report.get("head_fit").filter(|v| !v.is_null()).cloned())
}

/// Generates, compiles and links the kernels `c`'s encoder needs for `target` into
/// `stage/lib/<target>/`; compiled objects are cached by content under `cache/kernels`.
fn build_kernels(
    c: &Classifier,
    target: Target,
    cpu: Option<&str>,
    stage: &Path,
    cache: &Path,
    ui: &Ui,
) -> anyhow::Result<TargetReport> {
    let spec = TargetSpec::new(target, cpu)?;
    let kernels: Vec<KernelSpec> = c
        .encoder()
        .kernel_specs()
        .into_iter()
        .map(|(name, params)| KernelSpec::new(name, params))
        .collect();
    ui.info(format!(
        "compiling {} kernels for {target} ({}) with TVM",
        kernels.len(),
        spec.cpu.name
    ));
    let options = BuildOptions {
        cache: Some(cache.join("kernels")),
    };
    let mut reports = ava_targets::build_kernels(&kernels, &[spec], stage, &options)
        .with_context(|| format!("building the {target} kernel library"))?;
    reports.pop().context("the kernel build reported no target")
}

/// The archive's name: `--name`, else the source directory's or repository's name.
fn archive_name(args: &CompileArgs) -> String {
    args.name
        .clone()
        .unwrap_or_else(|| source_name(&args.source))
}

/// `ava-stage.json`: name, family, quantization, and the `aon-compile` and `oos` stages.
fn write_stage_file(
    stage: &Path,
    args: &CompileArgs,
    report: &CompileReport,
) -> anyhow::Result<()> {
    let name = archive_name(args);
    let mut compile = serde_json::to_value(report)?;
    if let Some(obj) = compile.as_object_mut() {
        for key in RUN_ONLY_KEYS.iter().chain(["oos"].iter()) {
            obj.remove(*key);
        }
    }
    let mut stages = BTreeMap::from([("aon-compile".to_string(), compile)]);
    if let Some(oos) = &report.oos {
        stages.insert(OOS_STAGE.to_string(), serde_json::to_value(oos)?);
    }
    let stage_file = StageFile {
        name: Some(name),
        family: Some(FAMILY.to_string()),
        quantization: Some(report.quantization.clone()),
        stages,
        ..StageFile::default()
    };
    stage_file.write(stage).context("writing ava-stage.json")
}

fn human(r: &CompileReport) -> String {
    let cached = r.stages.iter().filter(|s| s.cached).count();
    let mut s = format!(
        "wrote {} ({}, {}): val accuracy {:.2}% (float {:.2}%, {} utterances); model {} (float {})\n",
        r.archive.display(),
        human_bytes(r.archive_bytes),
        r.quantization,
        100.0 * r.accuracy,
        100.0 * r.float_accuracy,
        r.val_samples,
        human_bytes(r.onnx_bytes),
        human_bytes(r.float_onnx_bytes),
    );
    if let Some(h) = &r.head {
        s += &format!(
            "  head fitted by {} in {} steps ({}): train accuracy {:.2}%, val {:.2}%\n",
            h["solver"].as_str().unwrap_or("?"),
            h["steps"],
            h["stop"].as_str().unwrap_or("?"),
            100.0 * h["train_accuracy"].as_f64().unwrap_or(0.0),
            100.0 * h["val_accuracy"].as_f64().unwrap_or(0.0),
        );
    }
    if let Some(o) = &r.oos {
        s += &format!("  out-of-scope threshold {} ({})", o.threshold, o.rule);
        if let Some(m) = &o.val {
            s += &format!(
                ": val in-scope accuracy {:.2}%, out-of-scope recall {:.2}% ({}/{})",
                100.0 * m.in_scope_accuracy,
                100.0 * m.oos_recall,
                m.oos_detected,
                m.oos
            );
        }
        s += "\n";
    }
    s + &format!(
        "  {} stages ({cached} cached) in {:.1}s\n",
        r.stages.len(),
        r.seconds
    )
}
