//! `aon compile`: ALBERT checkpoint -> mALBERT classifier -> ONNX -> `standard` passes -> INT8
//! (calibrated on the intents' train split) -> validated against float on the `val` split ->
//! v1 archive (model.onnx, tokenizer.json, labels.json; the manifest's `aon-compile` stage
//! holds the accuracy figures and the calibration file's sha256).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use ava_core::Checkpoint;
use ava_passes::{albert, onnx, Pipeline};
use ava_runtime::albert::{Classifier, LABELS_FILE, TOKENIZER_FILE};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::aon_data as data;
use super::aon_quantize::{quantize_graph, QuantizeReport, Settings};
use super::package::{package, STAGE_FILE};
use crate::args::aon_int8::{CompileArgs, CompileQuant};
use crate::args::{HubArgs, PackageArgs};
use crate::malbert::{self, Options};
use crate::ui::{human_bytes, Ui};

/// Graph pipeline run before quantization (what the runtime recognises).
const PIPELINE: &str = "standard";
/// Default L2 of the fitted head (as `aon convert`).
const HEAD_L2: f32 = 1e-4;
/// Family written into the manifest.
const FAMILY: &str = "albert";

/// What `aon compile` reports (also the manifest's `aon-compile` stage).
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
    /// Quantization details.
    pub quantize: Option<QuantizeReport>,
}

/// Accuracy of `c` on `(text, intent)` pairs whose intent it knows.
fn accuracy(c: &Classifier, examples: &[data::Example]) -> anyhow::Result<(f64, usize)> {
    let index: HashMap<&str, usize> = c
        .labels()
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let (mut pred, mut gold) = (vec![], vec![]);
    for (text, intent) in examples {
        let Some(&g) = intent.as_deref().and_then(|i| index.get(i)) else {
            continue;
        };
        pred.push(c.classify(text)?.index);
        gold.push(g);
    }
    Ok((data::accuracy(&pred, &gold), gold.len()))
}

fn sha256_file(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Runs `aon compile`.
pub fn run(args: &CompileArgs, ui: &Ui) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("creating a work directory")?;
    let conv = work.path().join("malbert");
    let opts = Options {
        intents: (!args.keep_head).then_some(args.intents.as_path()),
        corpus: None,
        prune_vocab: false,
        max_seq_len: args.max_seq_len,
        l2: HEAD_L2,
    };
    ui.info(format!("converting {}", args.source.display()));
    malbert::convert(&args.source, &conv, &opts).context("aon compile: convert")?;
    let ckpt = Checkpoint::open(&conv).context("aon compile: reading the converted checkpoint")?;
    let mut graph = albert::build(&ckpt).context("aon compile: export")?;
    Pipeline::parse(PIPELINE)?
        .run(&mut graph)
        .context("aon compile: optimize")?;
    let float_path = conv.join("model.f32.onnx");
    onnx::save(&graph, &float_path)?;
    let tokenizer = conv.join(TOKENIZER_FILE);
    let labels = std::fs::read(conv.join(LABELS_FILE)).context("reading labels.json")?;
    let quantize = if args.quant == CompileQuant::Int8 {
        ui.info("quantizing (calibration on the train split)");
        let gate = match args.max_accuracy_drop {
            Some(p) => Some((p, serde_json::from_slice(&labels)?)),
            None => None,
        };
        let settings = Settings {
            calib: &args.intents,
            tokenizer: &tokenizer,
            samples: args.samples,
            method: ava_passes::quant::Method::MinMax,
            per_tensor: false,
            exclude: BTreeSet::new(),
            gate,
            gate_samples: args.val_samples,
        };
        Some(quantize_graph(&mut graph, &settings).context("aon compile: quantize")?)
    } else {
        None
    };
    let stage = work.path().join("stage");
    std::fs::create_dir_all(&stage)?;
    let model_path = stage.join("model.onnx");
    onnx::save(&graph, &model_path)?;
    std::fs::copy(&tokenizer, stage.join(TOKENIZER_FILE))?;
    std::fs::write(stage.join(LABELS_FILE), &labels)?;

    ui.info("validating against float on the val split");
    let tok_bytes = std::fs::read(&tokenizer)?;
    let float = Classifier::from_parts(
        &std::fs::read(&float_path)?,
        &tok_bytes,
        &labels,
        &float_path,
    )?;
    let built = Classifier::from_parts(
        &std::fs::read(&model_path)?,
        &tok_bytes,
        &labels,
        &model_path,
    )?;
    let val: Vec<_> = data::read_split(&args.intents, "val")?
        .into_iter()
        .take(args.val_samples)
        .collect();
    let (float_accuracy, n) = accuracy(&float, &val)?;
    let (acc, _) = accuracy(&built, &val)?;
    if let Some(p) = args.max_accuracy_drop {
        if 100.0 * (float_accuracy - acc) > p {
            bail!(
                "accuracy gate: {:.2}% against float {:.2}% on {n} val utterances (allowed drop {p} points)",
                100.0 * acc,
                100.0 * float_accuracy
            );
        }
    }
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
        val_samples: n,
        float_accuracy,
        accuracy: acc,
        calibration_sha256: sha256_file(&args.intents)?,
        calibration_samples: quantize.as_ref().map_or(0, |q| q.calibration_samples),
        quantize,
    };
    let name = args.name.clone().unwrap_or_else(|| {
        args.source
            .file_name()
            .map_or("malbert".into(), |n| n.to_string_lossy().into_owned())
    });
    let stage_file = serde_json::json!({
        "name": name,
        "family": FAMILY,
        "quantization": quantization,
        "stages": { "aon-compile": &report },
    });
    std::fs::write(
        stage.join(STAGE_FILE),
        serde_json::to_vec_pretty(&stage_file)?,
    )?;
    let packaged = package(&package_args(&stage, &args.output), ui)?;
    report.archive = packaged.path;
    report.archive_bytes = packaged.archive_size;
    ui.result(&report, || {
        format!(
            "wrote {} ({}, {}): val accuracy {:.2}% (float {:.2}%, {} utterances); model {} (float {})\n",
            report.archive.display(),
            human_bytes(report.archive_bytes),
            report.quantization,
            100.0 * report.accuracy,
            100.0 * report.float_accuracy,
            report.val_samples,
            human_bytes(report.onnx_bytes),
            human_bytes(report.float_onnx_bytes),
        )
    })
}

fn package_args(stage: &Path, output: &Path) -> PackageArgs {
    PackageArgs {
        dir: stage.to_path_buf(),
        output: output.to_path_buf(),
        exclude: vec![],
        zstd: false,
        name: None,
        package_version: "1".into(),
        target: None,
        family: None,
        quantization: None,
        source_repo: None,
        source_revision: None,
        hub: HubArgs::default(),
    }
}
