//! `aon convert`: an ALBERT checkpoint becomes a mALBERT intent classifier directory:
//! pruned vocabulary (tokenizer.json rewritten to match), position embeddings cut to the
//! sequence cap, and an intent head (the checkpoint's own, or a logistic regression fitted on
//! the frozen encoder's pooled output), with `labels.json`. See `docs/aon.md`.

use std::collections::BTreeMap;
use std::path::Path;

use ava_core::checkpoint::WEIGHTS_FILE;
use ava_core::{AlbertConfig, Checkpoint, TOKENIZER_FILE};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{bail, tokenizer_err, Context};
use crate::{encode, head, intents, vocab, Error, Progress};

/// Name of the label list written next to the model (the runtime reads it).
pub use ava_core::checkpoint::LABELS_FILE;
use ava_core::checkpoint::{CONFIG_FILE, TOKENIZER_CONFIG_FILE};

/// f32 tensors by name, with shapes.
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// What `convert` reports.
#[derive(Debug, Default, Serialize)]
pub struct ConvertReport {
    /// Vocabulary before / after pruning.
    pub vocab_before: usize,
    /// Vocabulary after.
    pub vocab_after: usize,
    /// Position rows before / after the cap.
    pub positions_before: usize,
    /// Position rows after.
    pub positions_after: usize,
    /// Weight bytes (f32) before / after.
    pub weight_bytes_before: u64,
    /// Weight bytes after.
    pub weight_bytes_after: u64,
    /// Where the head came from: `checkpoint`, `fitted`, or `none`.
    pub head: String,
    /// Number of labels.
    pub labels: usize,
    /// Accuracy of a fitted head on the training and held-out examples.
    pub train_accuracy: Option<f64>,
    /// Held-out accuracy.
    pub val_accuracy: Option<f64>,
    /// How a fitted head was fitted: solver, iterations, why it stopped, accuracies.
    pub head_fit: Option<head::FitReport>,
}

/// Conversion settings.
pub struct Options<'a> {
    /// `--intents`.
    pub intents: Option<&'a Path>,
    /// `--corpus`.
    pub corpus: Option<&'a Path>,
    /// `--prune-vocab`.
    pub prune_vocab: bool,
    /// `--max-seq-len`.
    pub max_seq_len: usize,
    /// `--l2`.
    pub l2: f32,
    /// Advanced by one per utterance encoded for head fitting (total set here).
    pub progress: &'a dyn Progress,
}

/// Loads every tensor as f32.
pub(crate) fn load_weights(ckpt: &Checkpoint) -> crate::Result<Weights> {
    ckpt.tensor_views()
        .map(|t| Ok((t.name.to_string(), (t.shape.to_vec(), t.to_f32_vec()?))))
        .collect()
}

fn weight_bytes(w: &Weights) -> u64 {
    w.values().map(|(_, v)| 4 * v.len() as u64).sum()
}

/// Keeps rows `rows` (in order) of tensor `name`.
fn take_rows(w: &mut Weights, name: &str, rows: impl Iterator<Item = usize>) -> crate::Result<()> {
    let (shape, data) = w
        .get_mut(name)
        .with_context(|| format!("tensor {name} missing"))?;
    let width: usize = shape[1..].iter().product();
    let new: Vec<f32> = rows
        .flat_map(|r| data[r * width..(r + 1) * width].iter().copied())
        .collect();
    shape[0] = new.len() / width.max(1);
    *data = new;
    Ok(())
}

/// Runs the conversion from checkpoint `src` into directory `out`.
pub fn convert(src: &Path, out: &Path, opts: &Options<'_>) -> crate::Result<ConvertReport> {
    let ckpt =
        Checkpoint::open(src).with_context(|| format!("reading checkpoint {}", src.display()))?;
    let cfg = ckpt.albert().context("reading the ALBERT config")?;
    let mut w = load_weights(&ckpt)?;
    let mut report = ConvertReport {
        vocab_before: cfg.vocab_size,
        positions_before: cfg.max_position_embeddings,
        weight_bytes_before: weight_bytes(&w),
        ..Default::default()
    };
    let intents = opts.intents.map(intents::read).transpose()?;
    let tok_path = src.join(TOKENIZER_FILE);
    let tok_text = std::fs::read_to_string(&tok_path)
        .with_context(|| format!("reading {}", tok_path.display()))?;
    let mut tok_json: Value = serde_json::from_str(&tok_text)
        .with_context(|| format!("parsing {}", tok_path.display()))?;
    let p = &cfg.weight_prefix;
    if opts.prune_vocab {
        let corpus = match opts.corpus {
            Some(c) => {
                std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?
            }
            None => String::new(),
        };
        let texts = corpus
            .lines()
            .filter(|l| !l.trim().is_empty())
            .chain(intents.iter().flat_map(|i| i.texts()));
        let tok = Tokenizer::from_bytes(tok_text.as_bytes())
            .map_err(tokenizer_err(tok_path.display()))?;
        let pruned = vocab::prune(&tok_json, &tok, texts)?;
        take_rows(
            &mut w,
            &format!("{p}embeddings.word_embeddings.weight"),
            pruned.kept.iter().map(|&i| i as usize),
        )?;
        tok_json = pruned.json;
    }
    report.vocab_after = w[&format!("{p}embeddings.word_embeddings.weight")].0[0];
    let cap = opts.max_seq_len.min(cfg.max_position_embeddings);
    if cap < 2 {
        bail!("--max-seq-len must leave room for [CLS] and [SEP]");
    }
    take_rows(
        &mut w,
        &format!("{p}embeddings.position_embeddings.weight"),
        0..cap,
    )?;
    report.positions_after = cap;
    vocab::set_truncation(&mut tok_json, cap);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(TOKENIZER_FILE), serde_json::to_vec(&tok_json)?)?;
    copy_tokenizer_config(src, out, cap)?;
    let labels = attach_head(&cfg, &mut w, out, intents.as_ref(), opts, &mut report)?;
    write_checkpoint(&ckpt, &w, out, labels.as_deref(), (report.vocab_after, cap))?;
    report.weight_bytes_after = weight_bytes(&w);
    Ok(report)
}

/// Keeps the checkpoint's classifier, or fits one on `--intents`; returns the labels.
fn attach_head(
    cfg: &AlbertConfig,
    w: &mut Weights,
    out: &Path,
    intents: Option<&intents::Intents>,
    opts: &Options<'_>,
    report: &mut ConvertReport,
) -> crate::Result<Option<Vec<String>>> {
    let Some(data) = intents else {
        let has = cfg.is_classifier() && w.contains_key("classifier.weight");
        report.head = if has { "checkpoint" } else { "none" }.into();
        let labels: Vec<String> = cfg.id2label.values().cloned().collect();
        report.labels = if has { labels.len() } else { 0 };
        return Ok(has.then_some(labels));
    };
    w.remove("classifier.weight");
    w.remove("classifier.bias");
    let encoder = encode::Encoder::new(w, cfg).context("loading the encoder for head fitting")?;
    let tok = Tokenizer::from_file(out.join(TOKENIZER_FILE)).map_err(tokenizer_err("tokenizer"))?;
    let labels = data.labels();
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let known = |rows: &[(String, String)]| -> Vec<(String, usize)> {
        rows.iter()
            .filter_map(|(t, i)| index.get(i.as_str()).map(|&c| (t.clone(), c)))
            .collect()
    };
    let (train, val) = (known(&data.train), known(&data.val));
    opts.progress.set_total((train.len() + val.len()) as u64);
    let tx = features(&encoder, &tok, &train, opts.progress)?;
    let vx = features(&encoder, &tok, &val, opts.progress)?;
    opts.progress.finish();
    let (ty, vy): (Vec<usize>, Vec<usize>) = (
        train.iter().map(|(_, c)| *c).collect(),
        val.iter().map(|(_, c)| *c).collect(),
    );
    let hidden = encoder.hidden();
    let val_data = (!vy.is_empty()).then_some(head::Data { x: &vx, y: &vy });
    let (fitted, fit) = head::fit(
        head::Data { x: &tx, y: &ty },
        val_data,
        labels.len(),
        hidden,
        opts.l2,
    );
    report.train_accuracy = Some(fit.train_accuracy);
    report.val_accuracy = fit.val_accuracy;
    report.head_fit = Some(fit);
    w.insert(
        "classifier.weight".into(),
        (vec![labels.len(), fitted.hidden], fitted.weight),
    );
    w.insert("classifier.bias".into(), (vec![labels.len()], fitted.bias));
    report.head = "fitted".into();
    report.labels = labels.len();
    Ok(Some(labels))
}

/// Pooled features of `rows`' texts, one row of `encoder.hidden()` values each.
fn features(
    encoder: &encode::Encoder,
    tok: &Tokenizer,
    rows: &[(String, usize)],
    progress: &dyn Progress,
) -> crate::Result<Vec<f32>> {
    let ids = rows
        .par_iter()
        .map(|(t, _)| {
            tok.encode(t.as_str(), true)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(format!("tokenizing {t:?}: {e}")))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    encoder.pooled(&ids, progress)
}

fn copy_tokenizer_config(src: &Path, out: &Path, cap: usize) -> crate::Result<()> {
    let path = src.join(TOKENIZER_CONFIG_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    v["model_max_length"] = cap.into();
    std::fs::write(
        out.join(TOKENIZER_CONFIG_FILE),
        serde_json::to_vec_pretty(&v)?,
    )?;
    Ok(())
}

/// Writes model.safetensors, config.json and (with labels) labels.json.
fn write_checkpoint(
    ckpt: &Checkpoint,
    w: &Weights,
    out: &Path,
    labels: Option<&[String]>,
    (vocab, positions): (usize, usize),
) -> crate::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = w
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &out.join(WEIGHTS_FILE))
        .context("writing model.safetensors")?;
    let mut config = ckpt.config_json().clone();
    config["vocab_size"] = vocab.into();
    config["max_position_embeddings"] = positions.into();
    config["dtype"] = "float32".into();
    if let Some(map) = config.as_object_mut() {
        map.remove("torch_dtype");
    }
    match labels {
        Some(labels) => {
            config["architectures"] =
                serde_json::json!([ava_core::config::albert::SEQUENCE_CLASSIFICATION]);
            config["id2label"] = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), Value::from(l.as_str())))
                .collect::<serde_json::Map<_, _>>()
                .into();
            config["label2id"] = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), Value::from(i)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            std::fs::write(out.join(LABELS_FILE), serde_json::to_vec_pretty(labels)?)?;
        }
        None => config["architectures"] = serde_json::json!(["AlbertModel"]),
    }
    std::fs::write(out.join(CONFIG_FILE), serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
