//! `alc validate`: the Gemma 3 half. The host's greedy tokens are the reference; the device
//! runs the same prompts teacher-forced with them, and every step's logits are compared
//! ([`super::compare`]).

use std::process::Output;

use anyhow::{bail, Context};
use ava_core::footprint::{self, FootprintInputs, KvDtype};
use ava_core::Gemma3Config;
use ava_packaging::{Manifest, Role};
use ava_runtime::runner_report::{DeviceFacts, GenerateReport};
use ava_runtime::stepwise::{run_steps, StepSizes};
use ava_runtime::Engine;
use ava_targets::memory::MemoryRecord;
use serde::Serialize;

use super::compare::{self, Comparison, Divergence};
use super::report::{finite, finite_one, fits_check, human_head, percentile, runner_report};
use super::report::{on_threads, Check, Outcome};
use super::runner::{DeviceArgs, Start, Verb};
use crate::args::run::Backend;
use crate::args::validate::ValidateArgs;
use crate::ui::{human_bytes, Ui};

/// The prompts file pushed next to the runner.
const PROMPTS_FILE: &str = "prompts.txt";

/// The host's greedy tokens, pushed next to the runner: it feeds them (teacher forcing).
const FORCE_FILE: &str = "forced.txt";

/// Highest logits the runner reports per step (compared with the host's at the same ids).
const TOP_LOGITS: usize = 16;

/// Prompts used when `--prompts` is not given, tokenized with the archive's tokenizer.
const DEFAULT_PROMPTS: [&str; 3] = [
    "The capital of France is",
    "Write a short poem about the sea.",
    "def fibonacci(n):",
];

#[derive(Serialize)]
struct Memory {
    weights_bytes: u64,
    library_bytes: u64,
    kv_cache_bytes: u64,
    scratch_bytes: u64,
    estimate_bytes: u64,
    device_mem_total_bytes: Option<u64>,
    context: usize,
    /// `alc compile --memory-budget`, from the manifest.
    budget_bytes: Option<u64>,
    /// The estimate `alc compile` recorded in the manifest.
    recorded_estimate_bytes: Option<u64>,
}

#[derive(Serialize, Default)]
struct Timings {
    load_ms: Option<f64>,
    ttft_ms: Vec<f64>,
    decode_tok_s: Vec<f64>,
    decode_tok_s_p50: Option<f64>,
    decode_tok_s_p95: Option<f64>,
    ttft_ms_p50: Option<f64>,
    ttft_ms_p95: Option<f64>,
}

/// The report printed with `--json`.
#[derive(Serialize)]
pub(super) struct Report {
    ok: bool,
    archive: String,
    target: String,
    device: String,
    runner: String,
    backend: Option<String>,
    prompts: usize,
    max_new_tokens: usize,
    tokens_match: Option<bool>,
    first_divergence: Option<Divergence>,
    /// The tolerance's absolute part.
    tolerance: f32,
    /// Its part relative to each step's scale (the host's largest `|logit|`).
    rel_tolerance: f32,
    max_logit_diff: Option<compare::WorstDiff>,
    max_relative_logit_diff: Option<compare::WorstDiff>,
    near_ties: Vec<compare::NearTie>,
    memory: Memory,
    timings: Timings,
    peak_rss_bytes: Option<u64>,
    /// Threads the runner computed on (its report's figure).
    threads: Option<usize>,
    device_facts: DeviceFacts,
    checks: Vec<Check>,
}

impl Outcome for Report {
    fn ok(&self) -> bool {
        self.ok
    }

    fn human(&self) -> String {
        let mut s = human_head(
            &self.archive,
            &self.device,
            &self.target,
            self.ok,
            &self.checks,
        );
        let t = &self.timings;
        if let (Some(load), Some(p50), Some(p95)) =
            (t.load_ms, t.decode_tok_s_p50, t.decode_tok_s_p95)
        {
            s.push_str(&format!(
                "  load {load:.0} ms, ttft p50 {:.1} ms, decode {p50:.1} tok/s p50, {p95:.1} p95{}\n",
                t.ttft_ms_p50.unwrap_or_default(),
                on_threads(self.threads)
            ));
        }
        if let Some(rss) = self.peak_rss_bytes {
            let m = &self.memory;
            s.push_str(&format!(
                "  peak RSS {} (estimate {}{})\n",
                human_bytes(rss),
                human_bytes(m.recorded_estimate_bytes.unwrap_or(m.estimate_bytes)),
                m.budget_bytes
                    .map(|b| format!(", budget {}", human_bytes(b)))
                    .unwrap_or_default()
            ));
        }
        for t in &self.near_ties {
            s.push_str(&format!(
                "  near-tie: prompt {} token {}: host {} device {} (host margin {:.2e}); \
                 continued with the host's token\n",
                t.prompt, t.token, t.expected, t.got, t.margin
            ));
        }
        s
    }
}

/// The archives `alc validate` runs.
const VERB: Verb = Verb {
    family: "gemma3",
    runs: "`alc validate` runs Gemma 3 archives",
    other: "aon validate",
};

pub(super) fn validate(args: &ValidateArgs, ui: &Ui) -> anyhow::Result<Report> {
    let start = Start::new(
        DeviceArgs {
            archive: &args.archive,
            device: &args.device,
            runner: &args.runner,
            trust: &args.trust,
        },
        &VERB,
        ui,
    )?;
    let (manifest, target) = (&start.manifest, start.target);
    let tolerance = match (args.tolerance, args.rel_tolerance) {
        (None, None) => compare::default_tolerance(&manifest.quantization),
        (abs, rel) => compare::Tolerance {
            abs: abs.unwrap_or(0.0),
            rel: rel.unwrap_or(0.0),
        },
    };

    let engine = Engine::open_with(&args.archive, ava_runtime::Backend::Native)
        .with_context(|| format!("loading {} on the host", args.archive.display()))?;
    let prompts = read_prompts(args, &engine)?;
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + args.max_new_tokens > args.context {
        bail!(
            "a prompt of {longest} tokens + {} new tokens does not fit --context {}",
            args.max_new_tokens,
            args.context
        );
    }
    let mut memory = estimate(manifest, engine.model().config(), args, longest);
    ui.info(format!(
        "reference: {} prompts on the host (native backend)",
        prompts.len()
    ));
    let expected = reference_tokens(&engine, &prompts, args)?;
    let files = [
        (PROMPTS_FILE, lines(&prompts)),
        (FORCE_FILE, lines(&expected)),
    ];
    let mut device = start.transport(&files)?;
    let facts = device.facts()?;
    memory.device_mem_total_bytes = facts.mem_total_bytes;
    let mut report = Report {
        ok: false,
        archive: args.archive.display().to_string(),
        target: target.name().to_string(),
        device: device.label(),
        runner: start.runner.display().to_string(),
        backend: None,
        prompts: prompts.len(),
        max_new_tokens: args.max_new_tokens,
        tokens_match: None,
        first_divergence: None,
        tolerance: tolerance.abs,
        rel_tolerance: tolerance.rel,
        max_logit_diff: None,
        max_relative_logit_diff: None,
        near_ties: Vec::new(),
        memory,
        timings: Timings::default(),
        peak_rss_bytes: None,
        threads: None,
        device_facts: facts,
        checks: Vec::new(),
    };
    let fits = memory_check(&report.memory);
    let fits_ok = fits.ok;
    report.checks.push(fits);
    if fits_ok {
        let mut argv = runner_argv(args);
        argv.extend(args.runner.threads_argv());
        let out = start.run(device, &argv, ui)?;
        if let Some(run) = read_run(&mut report, out) {
            let c = compare_run(&engine, (&prompts, &expected), &run, args, tolerance)?;
            for d in &c.per_step {
                ui.detail(format!(
                    "prompt {} token {}: max logit diff {:.3e}, scale {:.3e}, tolerance {:.3e}",
                    d.prompt, d.token, d.diff, d.scale, d.tolerance
                ));
            }
            record(&mut report, c);
        }
        if let Some(budget) = report.memory.budget_bytes {
            let check = budget_check(report.peak_rss_bytes, &report.memory, budget);
            report.checks.push(check);
        }
    }
    report.ok = report.checks.iter().all(|c| c.ok);
    Ok(report)
}

/// The runner's command line for the prompts of `alc validate`.
fn runner_argv(args: &ValidateArgs) -> Vec<String> {
    let backend = match args.backend {
        Backend::Auto => "auto",
        Backend::Native => "native",
        Backend::Tvm => "tvm",
    };
    [
        "--prompts",
        PROMPTS_FILE,
        "--backend",
        backend,
        "--max-new-tokens",
        &args.max_new_tokens.to_string(),
        "--context",
        &args.context.to_string(),
        "--force",
        FORCE_FILE,
        "--top",
        &TOP_LOGITS.to_string(),
        "--kv-cache",
        KvDtype::from(args.kv_cache).name(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// Prompts from `--prompts` (token ids per line), else the built-in sentences.
fn read_prompts(args: &ValidateArgs, engine: &Engine) -> anyhow::Result<Vec<Vec<u32>>> {
    let Some(path) = &args.prompts else {
        return DEFAULT_PROMPTS
            .iter()
            .map(|text| Ok(engine.tokenizer().encode(text, true)?))
            .collect();
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let ids = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::parse::<u32>)
            .collect::<Result<Vec<u32>, _>>()
            .with_context(|| format!("{} line {}: token ids expected", path.display(), i + 1))?;
        if !ids.is_empty() {
            prompts.push(ids);
        }
    }
    if prompts.is_empty() {
        bail!(
            "{}: no prompts (one line of token ids each)",
            path.display()
        );
    }
    let vocab = engine.model().config().vocab_size;
    if let Some(id) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        bail!(
            "{}: token id {id} is outside the vocabulary ({vocab})",
            path.display()
        );
    }
    Ok(prompts)
}

/// The greedy tokens of every prompt on the host's native backend, step by step as the
/// runner makes them.
fn reference_tokens(
    engine: &Engine,
    prompts: &[Vec<u32>],
    args: &ValidateArgs,
) -> anyhow::Result<Vec<Vec<u32>>> {
    prompts
        .iter()
        .map(|p| Ok(run_steps(engine, p, sizes(args, p.len()), None, 0, &mut |_, _| {})?.tokens))
        .collect()
}

/// The host's steps for a prompt of `prompt_len` tokens. The cache holds what the run needs
/// (`--context` may be far larger: it sizes the device's cache; the logits do not depend on
/// its size), stored as the device stores it.
fn sizes(args: &ValidateArgs, prompt_len: usize) -> StepSizes {
    StepSizes {
        steps: args.max_new_tokens,
        context: prompt_len + args.max_new_tokens,
        kv: args.kv_cache.into(),
    }
}

/// Token ids, one line per sequence (the runner's prompts and forced-tokens files).
fn lines(seqs: &[Vec<u32>]) -> String {
    seqs.iter()
        .map(|p| p.iter().map(u32::to_string).collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

/// The host's run again, teacher-forced with its own tokens (the same logits as the first
/// run), each step compared with what the device reported.
fn compare_run(
    engine: &Engine,
    (prompts, expected): (&[Vec<u32>], &[Vec<u32>]),
    run: &GenerateReport,
    args: &ValidateArgs,
    tolerance: compare::Tolerance,
) -> anyhow::Result<Comparison> {
    let runs = &run.prompts;
    let mut c = Comparison::new(tolerance);
    for (p, (prompt, forced)) in prompts.iter().zip(expected).enumerate() {
        let device = runs.get(p).map(compare::device_steps).unwrap_or_default();
        let mut each = |s: usize, logits: &[f32]| {
            c.step((p, s), logits, forced[s], device.get(s));
        };
        run_steps(
            engine,
            prompt,
            sizes(args, prompt.len()),
            Some(forced),
            0,
            &mut each,
        )?;
        if let Some(extra) = device.get(forced.len()) {
            c.extra(p, forced.len(), extra.argmax);
        }
    }
    for (p, extra) in runs.iter().enumerate().skip(prompts.len()) {
        let first = compare::device_steps(extra).first().map_or(0, |s| s.argmax);
        c.extra(p, 0, first);
    }
    Ok(c)
}

/// The comparison into the report: the `tokens` check and its fields.
fn record(report: &mut Report, c: Comparison) {
    report.checks.push(Check {
        name: "tokens",
        ok: c.ok(),
        detail: c.detail(),
    });
    report.tokens_match = Some(c.tokens_match);
    report.max_logit_diff = c.max_logit_diff;
    report.max_relative_logit_diff = c.max_relative_logit_diff;
    report.near_ties = c.near_ties;
    report.first_divergence = c.first_divergence;
}

/// Weights + kernel library + KV cache (sliding-window aware) + scratch (activations of the
/// longest prefill, logits, tokenizer, a fixed base): `ava_core::footprint`.
fn estimate(manifest: &Manifest, cfg: &Gemma3Config, args: &ValidateArgs, prompt: usize) -> Memory {
    let context = args.context;
    let size_of = |role: Role| -> u64 {
        manifest
            .files
            .iter()
            .filter(|f| f.role == role)
            .map(|f| f.size)
            .sum()
    };
    let inputs = FootprintInputs {
        weights_bytes: size_of(Role::Weights),
        library_bytes: size_of(Role::Library),
        tokenizer_bytes: size_of(Role::Tokenizer),
        context,
        prefill_tokens: prompt,
        kv: args.kv_cache.into(),
    };
    let f = footprint::estimate(cfg, &inputs);
    let recorded = MemoryRecord::from_manifest(manifest);
    Memory {
        weights_bytes: f.weights_bytes,
        library_bytes: f.library_bytes,
        kv_cache_bytes: f.kv_cache_bytes,
        scratch_bytes: f.workspace_bytes,
        estimate_bytes: f.total_bytes,
        device_mem_total_bytes: None,
        context,
        budget_bytes: recorded.as_ref().and_then(|r| r.budget_bytes),
        recorded_estimate_bytes: recorded.map(|r| r.footprint.total_bytes),
    }
}

/// The `budget` check: the measured peak RSS against `alc compile --memory-budget`.
fn budget_check(peak_rss: Option<u64>, m: &Memory, budget: u64) -> Check {
    let estimate = m.recorded_estimate_bytes.unwrap_or(m.estimate_bytes);
    let (ok, detail) = match peak_rss {
        None => (
            false,
            "the runner reported no peak RSS; cannot check the budget".to_string(),
        ),
        Some(rss) => (
            rss <= budget,
            format!(
                "peak RSS {} {} budget {} (estimate {})",
                human_bytes(rss),
                if rss <= budget { "within" } else { "exceeds" },
                human_bytes(budget),
                human_bytes(estimate)
            ),
        ),
    };
    Check {
        name: "budget",
        ok,
        detail,
    }
}

fn memory_check(m: &Memory) -> Check {
    let breakdown = format!(
        "weights {}, KV cache {} at context {}, scratch {}",
        human_bytes(m.weights_bytes),
        human_bytes(m.kv_cache_bytes),
        m.context,
        human_bytes(m.scratch_bytes),
    );
    fits_check(m.estimate_bytes, m.device_mem_total_bytes, &breakdown)
}

/// Reads the runner's output into the report (the `runner` check and timings); its report
/// when it ran.
fn read_run(report: &mut Report, out: Output) -> Option<GenerateReport> {
    let run: GenerateReport = match runner_report(&out) {
        Ok(v) => v,
        Err(detail) => {
            report.checks.push(Check {
                name: "runner",
                ok: false,
                detail,
            });
            return None;
        }
    };
    report.checks.push(Check {
        name: "runner",
        ok: true,
        detail: format!("ran {} prompts", report.prompts),
    });
    report.backend = Some(run.backend.clone());
    report.peak_rss_bytes = run.peak_rss_bytes;
    report.threads = run.threads;
    report.timings = timings(&run);
    Some(run)
}

fn timings(run: &GenerateReport) -> Timings {
    let ttft = finite(run.prompts.iter().map(|p| p.ttft_ms));
    let decode = finite(run.prompts.iter().map(|p| p.decode_tok_s));
    Timings {
        load_ms: finite_one(run.load_ms),
        ttft_ms_p50: percentile(&ttft, 50),
        ttft_ms_p95: percentile(&ttft, 95),
        decode_tok_s_p50: percentile(&decode, 50),
        decode_tok_s_p95: percentile(&decode, 95),
        ttft_ms: ttft,
        decode_tok_s: decode,
    }
}
