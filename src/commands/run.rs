//! `alc run`: generate text with the runtime, streaming to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ava_runtime::tokenizer::gemma_chat_turn;
use ava_runtime::{Engine, GenerateOptions};
use serde::Serialize;

use crate::args::run::ModelArgs;
use crate::args::RunArgs;
use crate::hub::resolve_checkpoint;
use crate::ui::Ui;

#[derive(Serialize)]
struct RunReport<'a> {
    tokens: &'a [u32],
    text: &'a str,
    stop_reason: &'a str,
    prompt_tokens: usize,
    timings: TimingsReport,
    peak_rss_bytes: Option<u64>,
    kv_cache_bytes: usize,
    weights_bytes: usize,
    backend: &'a str,
    threads: usize,
}

#[derive(Serialize)]
struct TimingsReport {
    load_ms: f64,
    ttft_ms: f64,
    prefill_tok_s: f64,
    decode_tok_s: f64,
}

/// Opens the model of `args` (a path, or a hub id downloaded first) on its backend under its
/// trust policy, saying when the archive's kernels are not used; returns the engine and the
/// path it was opened from. `run`, `chat` and `bench` share it.
pub(crate) fn open_engine(args: &ModelArgs, ui: &Ui) -> anyhow::Result<(Engine, PathBuf)> {
    let local = Path::new(&args.source).exists();
    let model = resolve_checkpoint(&args.source, &args.hub.options(ui), ui)?;
    let policy = args.trust.policy(local)?;
    let engine = Engine::open_with_policy(&model, args.backend.into(), &policy)
        .with_context(|| format!("loading {}", model.display()))?;
    if let Some(note) = engine.kernel_note() {
        ui.info(format!("note: running on the native backend: {note}"));
    }
    Ok((engine, model))
}

/// Generates from `ids`, streaming each piece to stdout (then a newline) when `stream`;
/// generation stops early when `stop` returns true. `run` and `chat` share it.
pub(crate) fn generate_to_stdout(
    session: &mut ava_runtime::Session<'_>,
    ids: &[u32],
    options: &GenerateOptions,
    stream: bool,
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<ava_runtime::Generation> {
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let out = session.generate(ids, options, &mut |piece| {
        if stop() {
            return false;
        }
        if stream {
            if let Err(e) = stdout
                .write_all(piece.text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                write_error = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if stream {
        writeln!(stdout)?;
    }
    Ok(out)
}

/// Runs `run`.
pub fn run(args: &RunArgs, ui: &Ui) -> anyhow::Result<()> {
    if let Some(path) = &args.logits_out {
        crate::output::claim(path, crate::output::Expect::Npy, args.force)?;
    }
    let (engine, _) = open_engine(&args.model, ui)?;
    let context = context_length(args.context, &engine)?;
    ui.detail(format!(
        "loaded in {:.0} ms ({} backend)",
        engine.load_time().as_secs_f64() * 1e3,
        engine.backend_name()
    ));
    let prompt = prompt_ids(args, &engine)?;
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: args.sampling.params(),
        stop_strings: args.stop.clone(),
        ignore_eos: args.ignore_eos,
    };
    let mut session = engine.session_as(context, args.kv_cache.into());
    let stream = !ui.json;
    let out = generate_to_stdout(&mut session, &prompt, &options, stream, || false)?;
    if out.prompt_logits.iter().any(|x| !x.is_finite()) {
        ui.info(
            "warning: the model computes NaN or infinite logits (its weights hold NaN or \
             infinity?); the output is meaningless",
        );
    }
    if let Some(path) = &args.logits_out {
        write_npy(path, &out.prompt_logits)?;
    }
    let t = &out.timings;
    ui.detail(format!(
        "stop: {}, prefill {:.1} tok/s, decode {:.1} tok/s",
        out.stop_reason.name(),
        t.prefill_tokens_per_second(),
        t.decode_tokens_per_second()
    ));
    if !ui.json {
        return Ok(());
    }
    let report = RunReport {
        tokens: &out.tokens,
        text: &out.text,
        stop_reason: out.stop_reason.name(),
        prompt_tokens: prompt.len(),
        timings: TimingsReport {
            load_ms: engine.load_time().as_secs_f64() * 1e3,
            ttft_ms: t.time_to_first_token.as_secs_f64() * 1e3,
            prefill_tok_s: t.prefill_tokens_per_second(),
            decode_tok_s: t.decode_tokens_per_second(),
        },
        peak_rss_bytes: peak_rss_bytes(),
        kv_cache_bytes: session.cache().bytes(),
        weights_bytes: engine.model().weight_bytes(),
        backend: engine.backend_name(),
        threads: engine.threads().count(),
    };
    ui.result(&report, String::new)
}

/// The session length `--context` asks for: by default 4096 or the model's maximum when that
/// is smaller; more than the maximum is a usage error.
pub fn context_length(asked: Option<usize>, engine: &Engine) -> anyhow::Result<usize> {
    let max_context = engine.model().config().max_position_embeddings;
    match asked {
        Some(n) if n > max_context => Err(crate::UsageError(format!(
            "--context {n}: the model handles at most {max_context} positions"
        ))
        .into()),
        Some(n) => Ok(n),
        None => Ok(ava_runtime::generate::DEFAULT_CONTEXT.min(max_context)),
    }
}

fn prompt_ids(args: &RunArgs, engine: &Engine) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &args.prompt_ids {
        return Ok(ids.clone());
    }
    let text = match (&args.prompt, &args.prompt_file) {
        (Some(prompt), _) => crate::text_input::inline_or_stdin(prompt, "--prompt")?,
        (None, Some(path)) => crate::text_input::from_file(path, "--prompt-file")?,
        (None, None) => String::new(),
    };
    let text = if args.chat {
        gemma_chat_turn(&text, true)
    } else {
        text
    };
    Ok(engine.tokenizer().encode(&text, true)?)
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes a float32 vector as a NumPy `.npy` file (format 1.0).
pub fn write_npy(path: &Path, values: &[f32]) -> anyhow::Result<()> {
    const MAGIC: &[u8] = b"\x93NUMPY\x01\x00";
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    // Magic, version and length take 10 bytes; the header ends with '\n' on a 64-byte boundary.
    while (MAGIC.len() + 2 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    values
        .iter()
        .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    crate::output::write_file(path, &bytes)
}
