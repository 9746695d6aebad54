//! `ava-runner`: the on-device half of `alc validate` and `aon validate` (docs/validate.md).
//! Runs an archive's prompts greedily (Gemma 3) or classifies utterances (mALBERT) and prints
//! one JSON report on stdout: tokens, load time, time to first token and decode speed per
//! prompt or label, score, logits and latency per utterance, peak RSS and the device's facts.
//!
//! ```text
//! ava-runner ARCHIVE --prompts FILE [--backend auto|native|tvm] [--max-new-tokens N] [--context N]
//!            [--force FILE] [--top K] [--kv-cache f32|f16|q8] [--threads N]
//!            [--trusted-key FILE]... [--allow-unsigned-kernels]
//! ava-runner ARCHIVE --classify FILE [--backend auto|native|tvm] [--threads N]
//! ava-runner --facts
//! ```
//!
//! The prompts file has one prompt per line, token ids separated by spaces or commas; the
//! classify file one utterance per line. `--force FILE` (same layout, one line per prompt)
//! teacher-forces the generation: after step `s` the token fed is the line's `s`-th id, not the
//! device's own argmax, and each prompt's report carries the device's argmax per step and, with
//! `--top K` (default 16 when forcing), its `K` highest logits per step. Built only
//! with the `runner` feature, so normal builds (and the NDK-less Android library) skip it; it
//! uses nothing beyond the runtime's own dependencies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ava_packaging::PublicKey;
use ava_runtime::albert::Classifier;
use ava_runtime::runner_report::{
    Classified, ClassifyReport, DeviceFacts, FactsReport, GenerateReport, PromptRun, Status,
    CLASSIFY_MODE, REPORT_VERSION,
};
use ava_runtime::{stepwise, Backend, Engine, GenerateOptions, KernelPolicy, SamplingParams};
/// New tokens per prompt when `--max-new-tokens` is not given.
const DEFAULT_MAX_NEW_TOKENS: usize = 32;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Options {
    archive: PathBuf,
    prompts: Option<PathBuf>,
    classify: Option<PathBuf>,
    backend: Backend,
    max_new_tokens: usize,
    context: usize,
    force: Option<PathBuf>,
    top: usize,
    /// Which kernel libraries may load (`--trusted-key FILE`, `--allow-unsigned-kernels`).
    policy: KernelPolicy,
    /// How the KV cache stores keys and values.
    kv: ava_runtime::KvDtype,
    /// Threads the kernels run on (`None`: one per core).
    threads: Option<usize>,
}

/// Logits reported per step with `--force` when `--top` is not given.
const DEFAULT_TOP: usize = 16;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.iter().any(|a| a == "--facts") {
        to_line(&FactsReport {
            report_version: REPORT_VERSION,
            device: device_facts(),
        })
    } else {
        parse_args(&args).and_then(|o| {
            if let Some(n) = o.threads {
                ava_runtime::set_process_threads(n).map_err(|e| format!("--threads {n}: {e}"))?;
            }
            match &o.classify {
                Some(utterances) => {
                    to_line(&classify(&o.archive, utterances, o.backend, &o.policy)?)
                }
                None => to_line(&run(&o)?),
            }
        })
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let failure = Status::failure(e.to_string());
            println!("{}", serde_json::to_string(&failure).unwrap_or_default());
            eprintln!("ava-runner: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A report as one line of JSON.
fn to_line<T: serde::Serialize>(report: &T) -> Result<String> {
    Ok(serde_json::to_string(report)?)
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut archive = None;
    let mut prompts = None;
    let mut classify = None;
    let mut backend = Backend::Auto;
    let mut max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
    let mut context = ava_runtime::generate::DEFAULT_CONTEXT;
    let mut force = None;
    let mut top = DEFAULT_TOP;
    let mut policy = KernelPolicy::default();
    let mut kv = ava_runtime::KvDtype::default();
    let mut threads = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value"))
                .cloned()
        };
        match arg.as_str() {
            "--prompts" => prompts = Some(PathBuf::from(value()?)),
            "--classify" => classify = Some(PathBuf::from(value()?)),
            "--backend" => {
                backend = match value()?.as_str() {
                    "auto" => Backend::Auto,
                    "native" => Backend::Native,
                    "tvm" => Backend::Tvm,
                    other => return Err(format!("unknown backend `{other}`").into()),
                }
            }
            "--max-new-tokens" => max_new_tokens = parse_count(arg, &value()?)?,
            "--context" => context = parse_count(arg, &value()?)?,
            "--force" => force = Some(PathBuf::from(value()?)),
            "--top" => top = parse_count(arg, &value()?)?,
            "--trusted-key" => {
                let path = PathBuf::from(value()?);
                policy
                    .trusted
                    .push(PublicKey::read(&path).map_err(|e| e.to_string())?);
            }
            "--allow-unsigned-kernels" => policy.allow_unsigned = true,
            "--kv-cache" => kv = value()?.parse()?,
            "--threads" => threads = Some(parse_count(arg, &value()?)?),
            a if a.starts_with('-') => return Err(format!("unknown option `{a}`").into()),
            a if archive.is_none() => archive = Some(PathBuf::from(a)),
            a => return Err(format!("unexpected argument `{a}`").into()),
        }
    }
    if prompts.is_some() == classify.is_some() {
        return Err("one of --prompts FILE and --classify FILE is required".into());
    }
    Ok(Options {
        archive: archive.ok_or("no archive given")?,
        prompts,
        classify,
        backend,
        max_new_tokens,
        context,
        force,
        top,
        policy,
        kv,
        threads,
    })
}

fn parse_count(flag: &str, s: &str) -> Result<usize> {
    s.parse()
        .map_err(|_| format!("{flag}: `{s}` is not a count").into())
}

/// One prompt per non-empty line: token ids separated by spaces or commas.
fn read_prompts(path: &std::path::Path) -> Result<Vec<Vec<u32>>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let ids = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>())
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
        if !ids.is_empty() {
            prompts.push(ids);
        }
    }
    if prompts.is_empty() {
        return Err(format!("{}: no prompts", path.display()).into());
    }
    Ok(prompts)
}

fn run(o: &Options) -> Result<GenerateReport> {
    let prompts = read_prompts(o.prompts.as_deref().ok_or("--prompts FILE is required")?)?;
    let engine = Engine::open_with_policy(&o.archive, o.backend, &o.policy)
        .map_err(|e| format!("loading {}: {e}", o.archive.display()))?;
    let options = GenerateOptions {
        max_tokens: o.max_new_tokens,
        sampling: SamplingParams::default(),
        // Exactly N tokens per prompt: comparable timings, and more tokens compared.
        ignore_eos: true,
        ..GenerateOptions::default()
    };
    let forced = match &o.force {
        Some(path) => Some(read_prompts(path)?),
        None => None,
    };
    let mut results = Vec::with_capacity(prompts.len());
    if let Some(forced) = &forced {
        if forced.len() != prompts.len() {
            return Err(format!(
                "--force has {} lines for {} prompts",
                forced.len(),
                prompts.len()
            )
            .into());
        }
        for (prompt, f) in prompts.iter().zip(forced) {
            results.push(forced_prompt(&engine, prompt, f, o)?);
        }
    }
    for prompt in prompts.iter().filter(|_| forced.is_none()) {
        // A fresh session per prompt: every prompt starts from an empty cache, as on the host.
        let mut session = engine.session_as(o.context, o.kv);
        let out = session.generate(prompt, &options, &mut |_| true)?;
        let t = &out.timings;
        results.push(PromptRun {
            prompt_tokens: prompt.len(),
            tokens: out.tokens,
            top: None,
            stop_reason: out.stop_reason.name().to_string(),
            ttft_ms: ms(t.time_to_first_token),
            prefill_tok_s: t.prefill_tokens_per_second(),
            decode_tok_s: t.decode_tokens_per_second(),
        });
    }
    Ok(GenerateReport {
        report_version: REPORT_VERSION,
        ok: true,
        backend: engine.backend_name().to_string(),
        load_ms: ms(engine.load_time()),
        kv_cache_bytes: ava_runtime::KvCache::bytes_for(engine.model().config(), o.context, o.kv)
            as u64,
        threads: Some(engine.threads().count()),
        prompts: results,
        peak_rss_bytes: status_bytes("VmHWM:"),
        device: device_facts(),
    })
}

/// One prompt teacher-forced with `forced`: the device's argmax and `--top` logits per step.
fn forced_prompt(
    engine: &Engine,
    prompt: &[u32],
    forced: &[u32],
    o: &Options,
) -> Result<PromptRun> {
    let sizes = stepwise::StepSizes {
        steps: o.max_new_tokens,
        context: o.context,
        kv: o.kv,
    };
    let out = stepwise::run_steps(engine, prompt, sizes, Some(forced), o.top, &mut |_, _| {})?;
    let decoded = out.steps.len().saturating_sub(1);
    let decode_tok_s = if decoded == 0 || out.decode.is_zero() {
        0.0
    } else {
        decoded as f64 / out.decode.as_secs_f64()
    };
    let top: Vec<Vec<(u32, f32)>> = out.steps.iter().map(|s| s.top.clone()).collect();
    Ok(PromptRun {
        prompt_tokens: prompt.len(),
        tokens: out.steps.iter().map(|s| s.argmax).collect(),
        top: Some(top),
        stop_reason: ava_runtime::StopReason::MaxTokens.name().to_string(),
        ttft_ms: ms(out.prefill),
        prefill_tok_s: prompt.len() as f64 / out.prefill.as_secs_f64().max(f64::MIN_POSITIVE),
        decode_tok_s,
    })
}

/// Classifies every non-empty line of `utterances` with the archive's mALBERT classifier.
fn classify(
    archive: &Path,
    utterances: &Path,
    backend: Backend,
    policy: &KernelPolicy,
) -> Result<ClassifyReport> {
    let text = std::fs::read_to_string(utterances)
        .map_err(|e| format!("reading {}: {e}", utterances.display()))?;
    let t0 = Instant::now();
    let c = Classifier::open_with_policy(archive, backend, policy)
        .map_err(|e| format!("loading {}: {e}", archive.display()))?;
    let load = t0.elapsed();
    let mut results = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r = c.classify(line)?;
        results.push(Classified {
            score: r.probs.get(r.index).copied().unwrap_or(0.0),
            tokens: r.input_ids,
            index: r.index,
            logits: r.logits,
            ms: r.seconds * 1e3,
            model_ms: r.model_seconds * 1e3,
        });
    }
    if results.is_empty() {
        return Err(format!("{}: no utterances", utterances.display()).into());
    }
    Ok(ClassifyReport {
        report_version: REPORT_VERSION,
        ok: true,
        mode: CLASSIFY_MODE.to_string(),
        backend: c.encoder().backend_name().to_string(),
        load_ms: ms(load),
        labels: c.labels().len(),
        threads: Some(c.threads().count()),
        max_seq_len: c.encoder().max_positions(),
        utterances: results,
        peak_rss_bytes: status_bytes("VmHWM:"),
        device: device_facts(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A `kB` line of `/proc/self/status` (`VmHWM:` is the peak resident set), in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    kib_line(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

fn kib_line(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What the device says about itself; every field is `null` where it cannot be read.
fn device_facts() -> DeviceFacts {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    DeviceFacts {
        arch: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).ok(),
        cpu_features: cpu_features(),
        mem_total_bytes: kib_line(&meminfo, "MemTotal:"),
        mem_available_bytes: kib_line(&meminfo, "MemAvailable:"),
        model: getprop("ro.product.model"),
        android_version: getprop("ro.build.version.release"),
    }
}

/// The first `Features` (arm64) or `flags` (x86) line of `/proc/cpuinfo`.
fn cpu_features() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key.trim(), "Features" | "flags").then_some(value)
        })
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// An Android system property through the `getprop` command, when there is one.
fn getprop(name: &str) -> Option<String> {
    let out = std::process::Command::new("getprop")
        .arg(name)
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty()).then_some(value)
}
