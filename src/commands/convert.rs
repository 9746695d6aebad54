//! `alc convert FILE.gguf -o DIR`: a llama.cpp `gemma3` GGUF becomes a Hugging Face-layout
//! checkpoint (`model.safetensors` in f32 or bf16, transformers-5 `config.json`,
//! `generation_config.json`, and `tokenizer.json` when `--tokenizer` is given, or the
//! repository has one). `convert org/name --gguf FILE.gguf` fetches that one file of a hub
//! repository first.
//!
//! The work is the convert stage ([`ava_quantize::convert`]); this verb adds the temporary
//! directory that is renamed into place only when everything is written, and the output.
//! Format notes: `docs/formats/gguf-import.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use ava_core::{LayerKind, TOKENIZER_FILE};
use ava_packaging::Source;
use ava_quantize::convert::Conversion;
use ava_quantize::import::{ImportPlan, OutDtype};
use serde::Serialize;

use crate::args::ConvertArgs;
use crate::hub::resolve_gguf;
use crate::partial_dir::PartialDir;
use crate::ui::{human_bytes, Ui};

/// What `convert --json` prints.
#[derive(Serialize)]
struct ConvertReport<'a> {
    input: &'a Path,
    /// The hub repository and commit the GGUF came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
    output: &'a Path,
    dtype: OutDtype,
    tensors: usize,
    weights_bytes: u64,
    source_types: BTreeMap<&'static str, usize>,
    vocab_rows: usize,
    gguf_tokenizer_tokens: Option<usize>,
    tokenizer_json_vocab: Option<usize>,
    seconds: f64,
    config: ConfigSummary,
}

/// The config values people check first.
#[derive(Serialize)]
struct ConfigSummary {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
    sliding_window: usize,
    max_position_embeddings: usize,
    global_layers: Vec<usize>,
    layer_types_from_file: bool,
    rope_theta_global: f64,
    rope_theta_local: f64,
    tie_word_embeddings: bool,
}

/// Runs `convert`.
pub fn run(args: &ConvertArgs, ui: &Ui) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.output.symlink_metadata().is_ok() {
        bail!(
            "{}: already exists (convert writes a new directory)",
            args.output.display()
        );
    }
    let gguf = resolve_gguf(&args.input, args.gguf.as_deref(), &args.hub.options(ui), ui)?;
    let input = gguf.file.as_path();
    let opts = args.options(gguf.tokenizer.clone());
    let dtype = opts.dtype;
    let conversion = Conversion::open(input)?;
    let plan = &conversion.plan;
    let tokenizer_vocab = match &opts.tokenizer {
        Some(path) => Some(tokenizer_vocab_size(path)?),
        None => None,
    };
    report_vocab(ui, plan, tokenizer_vocab);
    let total = plan.output_bytes(dtype);
    ui.detail(format!(
        "{}: {} tensors {:?} -> {} of {} weights",
        input.display(),
        plan.tensors.len(),
        plan.source_types(),
        human_bytes(total),
        dtype.torch_name()
    ));
    let temp = PartialDir::beside(&args.output)?;
    let dir = temp.path();
    let bar = ui.bytes_progress(total, "converting");
    conversion
        .write(dir, &opts, &mut |n| bar.set_position(n))
        .with_context(|| format!("writing {}", args.output.display()))?;
    bar.finish_and_clear();
    temp.persist(&args.output)?;
    let report = ConvertReport {
        input,
        source: gguf.hub,
        output: &args.output,
        dtype,
        tensors: plan.tensors.len(),
        weights_bytes: total,
        source_types: plan.source_types(),
        vocab_rows: plan.params.vocab_size,
        gguf_tokenizer_tokens: plan.params.tokenizer_tokens,
        tokenizer_json_vocab: tokenizer_vocab,
        seconds: started.elapsed().as_secs_f64(),
        config: summary(plan),
    };
    ui.result(&report, || human(&report))
}

fn summary(plan: &ImportPlan) -> ConfigSummary {
    let p = &plan.params;
    ConfigSummary {
        vocab_size: p.vocab_size,
        hidden_size: p.hidden_size,
        intermediate_size: p.intermediate_size,
        num_hidden_layers: p.num_hidden_layers,
        num_attention_heads: p.num_attention_heads,
        num_key_value_heads: p.num_key_value_heads,
        head_dim: p.head_dim,
        sliding_window: p.sliding_window,
        max_position_embeddings: p.max_position_embeddings,
        global_layers: (0..p.layer_types.len())
            .filter(|&i| p.layer_types[i] == LayerKind::Full)
            .collect(),
        layer_types_from_file: p.layer_types_from_file,
        rope_theta_global: p.rope_theta_global,
        rope_theta_local: p.rope_theta_local,
        tie_word_embeddings: p.tie_word_embeddings,
    }
}

fn human(r: &ConvertReport<'_>) -> String {
    let c = &r.config;
    format!(
        "{}\n  gemma3: hidden {}, {} layers (global {:?}), {} heads / {} kv, head_dim {}, \
         vocab {}\n  {} tensors from {:?} -> {} {} in {:.1}s\n",
        r.output.display(),
        c.hidden_size,
        c.num_hidden_layers,
        c.global_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size,
        r.tensors,
        r.source_types,
        human_bytes(r.weights_bytes),
        r.dtype.torch_name(),
        r.seconds
    )
}

/// Says when the embedding has fewer rows than a tokenizer knows tokens (those ids would be
/// out of range) or more (unused rows, kept).
fn report_vocab(ui: &Ui, plan: &ImportPlan, tokenizer_json: Option<usize>) {
    let rows = plan.params.vocab_size;
    let sources = [
        ("the GGUF tokenizer", plan.params.tokenizer_tokens),
        (TOKENIZER_FILE, tokenizer_json),
    ];
    for (what, n) in sources {
        match n {
            Some(n) if n > rows => ui.info(format!(
                "warning: the embedding has {rows} rows but {what} has {n} tokens: ids {rows}.. \
                 have no embedding"
            )),
            Some(n) if n < rows => ui.detail(format!(
                "the embedding has {rows} rows, {what} {n} tokens (the extra rows are kept)"
            )),
            _ => {}
        }
    }
}

/// Tokens a tokenizer.json knows: its model vocabulary and added tokens (highest id + 1).
fn tokenizer_vocab_size(path: &Path) -> anyhow::Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let vocab = &json["model"]["vocab"];
    let model = vocab
        .as_object()
        .map(|o| o.len())
        .or_else(|| vocab.as_array().map(Vec::len))
        .with_context(|| format!("{}: no model.vocab (not a tokenizer.json?)", path.display()))?;
    let added = json["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_u64())
        .map(|id| id as usize + 1)
        .max()
        .unwrap_or(0);
    Ok(model.max(added))
}
