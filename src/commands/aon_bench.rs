//! `aon bench`: per-utterance latency of an intent classifier over a set of utterances (one
//! untimed warm-up pass, then `-r` timed passes), as percentiles.

use std::time::Instant;

use ava_malbert::data;
use serde::Serialize;

use crate::args::bench::AonBenchArgs;
use crate::commands::aon_classify::Classifier;
use crate::ui::Ui;

/// What `aon bench --json` prints.
#[derive(Debug, Serialize)]
pub struct AonBenchReport {
    /// The model file.
    pub model: String,
    /// `native`, `tvm` or `evaluator`.
    pub backend: &'static str,
    /// Threads the kernels ran on.
    pub threads: usize,
    /// Distinct utterances timed.
    pub utterances: usize,
    /// Timed passes over them.
    pub repetitions: usize,
    /// Median latency per utterance (tokenizer and model), ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Median latency of the model alone, ms.
    pub model_p50_ms: f64,
    /// 95th percentile latency of the model alone, ms.
    pub model_p95_ms: f64,
    /// Utterances classified per second, one at a time.
    pub utterances_per_s: f64,
}

/// Runs `aon bench`.
pub fn run(args: &AonBenchArgs, ui: &Ui) -> anyhow::Result<()> {
    let c = Classifier::open(&args.model, args.backend, &args.trust, ui)?;
    let mut texts: Vec<String> = match &args.data {
        Some(path) => data::read_split(path, &args.split)?
            .into_iter()
            .map(|(text, _)| text)
            .collect(),
        None => c.labels.iter().map(|l| l.replace('_', " ")).collect(),
    };
    texts.truncate(args.limit);
    anyhow::ensure!(!texts.is_empty(), "no utterances to time");
    for text in &texts {
        c.classify(text, 1, None)?;
    }
    let (mut lat, mut model_lat) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for _ in 0..args.repetitions {
        for text in &texts {
            let p = c.classify(text, 1, None)?;
            lat.push(p.latency_ms);
            model_lat.push(p.model_ms);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let mean_ms = lat.iter().sum::<f64>() / lat.len() as f64;
    let report = AonBenchReport {
        model: c.path.display().to_string(),
        backend: c.backend(),
        threads: c.threads(),
        utterances: texts.len(),
        repetitions: args.repetitions,
        p50_ms: data::percentile(&mut lat, 50.0),
        p95_ms: data::percentile(&mut lat, 95.0),
        mean_ms,
        model_p50_ms: data::percentile(&mut model_lat, 50.0),
        model_p95_ms: data::percentile(&mut model_lat, 95.0),
        utterances_per_s: lat.len() as f64 / seconds,
    };
    ui.result(&report, || {
        format!(
            "{} ({}, {} threads): {} utterances x {}: latency p50 {:.3} ms, p95 {:.3} ms, \
             mean {:.3} ms (model alone p50 {:.3} ms, p95 {:.3} ms); {:.1} utterances/s\n",
            crate::ui::escape(&report.model),
            report.backend,
            report.threads,
            report.utterances,
            report.repetitions,
            report.p50_ms,
            report.p95_ms,
            report.mean_ms,
            report.model_p50_ms,
            report.model_p95_ms,
            report.utterances_per_s
        )
    })
}
