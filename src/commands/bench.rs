//! `alc bench`: prefill and decode speed of a model, in the manner of llama-bench: each test
//! (`ppN`: a prompt of N tokens; `tgN`: N tokens generated one by one) runs once untimed, then
//! `-r` times timed on a fresh KV cache, and reports tokens per second as mean ± standard
//! deviation.

use std::path::Path;
use std::time::Instant;

use ava_runtime::{Engine, KvDtype};
use serde::Serialize;

use crate::args::bench::BenchArgs;
use crate::ui::Ui;

/// Seed of the prompt tokens (fixed: every run times the same tokens).
const PROMPT_SEED: u64 = 0x5eed;

/// One test's figures.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// `ppN` or `tgN`.
    pub test: String,
    /// Prompt tokens of the test (0 for `tgN`).
    pub n_prompt: usize,
    /// Generated tokens of the test (0 for `ppN`).
    pub n_gen: usize,
    /// Tokens per second of each timed repetition.
    pub samples_ts: Vec<f64>,
    /// Mean tokens per second.
    pub avg_ts: f64,
    /// Sample standard deviation of the tokens per second (0 for one repetition).
    pub stddev_ts: f64,
}

/// What `alc bench --json` prints.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The model benchmarked.
    pub model: String,
    /// `native` or `tvm`.
    pub backend: &'static str,
    /// Threads the kernels ran on.
    pub threads: usize,
    /// How the KV cache stored keys and values.
    pub kv_cache: &'static str,
    /// Bytes of weights in memory.
    pub weights_bytes: usize,
    /// Timed repetitions of each test.
    pub repetitions: usize,
    /// One entry per test, prompt sizes first.
    pub results: Vec<BenchResult>,
}

/// Runs `alc bench`.
pub fn run(args: &BenchArgs, ui: &Ui) -> anyhow::Result<()> {
    let (engine, model) = super::run::open_engine(&args.model, ui)?;
    let kv: KvDtype = args.kv_cache.into();
    let max_context = engine.model().config().max_position_embeddings;
    let tests = tests(args);
    anyhow::ensure!(
        !tests.is_empty(),
        "nothing to time: every -p and -n size is 0"
    );
    let mut results = Vec::new();
    for (n_prompt, n_gen) in tests {
        let needed = n_prompt + n_gen + 1;
        if needed > max_context {
            return Err(crate::UsageError(format!(
                "a test of {} tokens: the model handles at most {max_context} positions",
                n_prompt.max(n_gen)
            ))
            .into());
        }
        let name = if n_prompt > 0 {
            format!("pp{n_prompt}")
        } else {
            format!("tg{n_gen}")
        };
        ui.detail(format!("{name}: warm-up and {} runs", args.repetitions));
        let timer = Timer {
            engine: &engine,
            kv,
            context: needed,
        };
        timer.time(n_prompt, n_gen)?;
        let samples = (0..args.repetitions)
            .map(|_| timer.time(n_prompt, n_gen))
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let (avg_ts, stddev_ts) = mean_sd(&samples);
        results.push(BenchResult {
            test: name,
            n_prompt,
            n_gen,
            samples_ts: samples,
            avg_ts,
            stddev_ts,
        });
    }
    let report = BenchReport {
        model: model.display().to_string(),
        backend: engine.backend_name(),
        threads: engine.threads().count(),
        kv_cache: kv_name(args.kv_cache),
        weights_bytes: engine.model().weight_bytes(),
        repetitions: args.repetitions,
        results,
    };
    ui.result(&report, || table(&report))
}

/// The tests `-p` and `-n` ask for: prompt sizes first, zero sizes left out.
fn tests(args: &BenchArgs) -> Vec<(usize, usize)> {
    let pp = args.n_prompt.iter().filter(|&&n| n > 0).map(|&n| (n, 0));
    let tg = args.n_gen.iter().filter(|&&n| n > 0).map(|&n| (0, n));
    pp.chain(tg).collect()
}

fn kv_name(kv: crate::args::run::KvCache) -> &'static str {
    use crate::args::run::KvCache;
    match kv {
        KvCache::F32 => "f32",
        KvCache::F16 => "f16",
        KvCache::Q8 => "q8",
    }
}

/// Runs one test on a fresh cache.
struct Timer<'e> {
    engine: &'e Engine,
    kv: KvDtype,
    context: usize,
}

impl Timer<'_> {
    /// Tokens per second of one run: a prompt of `n_prompt` tokens in one forward pass, or
    /// `n_gen` tokens decoded one at a time (greedy, each fed back) after a one-token prompt.
    fn time(&self, n_prompt: usize, n_gen: usize) -> anyhow::Result<f64> {
        let mut cache = self.engine.model().new_cache_as(self.context, self.kv);
        let vocab = self.engine.model().config().vocab_size;
        if n_prompt > 0 {
            let tokens = prompt_tokens(n_prompt, vocab);
            let start = Instant::now();
            self.engine.forward(&tokens, &mut cache)?;
            return Ok(n_prompt as f64 / start.elapsed().as_secs_f64());
        }
        let mut logits = self.engine.forward(&prompt_tokens(1, vocab), &mut cache)?;
        let start = Instant::now();
        for _ in 0..n_gen {
            let next = argmax(&logits);
            logits = self.engine.forward(&[next], &mut cache)?;
        }
        Ok(n_gen as f64 / start.elapsed().as_secs_f64())
    }
}

/// `n` token ids spread over the vocabulary (a fixed pseudo-random sequence).
fn prompt_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut state = PROMPT_SEED;
    (0..n)
        .map(|_| {
            // xorshift64: cheap, and the same on every machine.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab.max(1) as u64) as u32
        })
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The report as a markdown table, as llama-bench prints it.
fn table(r: &BenchReport) -> String {
    let name = Path::new(&r.model)
        .file_name()
        .map_or_else(|| r.model.clone(), |n| n.to_string_lossy().into_owned());
    let size = crate::ui::human_bytes(r.weights_bytes as u64);
    let mut s = String::from(
        "| model | size | backend | threads | kv | test | t/s |\n\
         | ----- | ---: | ------- | ------: | -- | ---: | --: |\n",
    );
    for t in &r.results {
        s += &format!(
            "| {} | {size} | {} | {} | {} | {} | {:.2} ± {:.2} |\n",
            crate::ui::escape(&name),
            r.backend,
            r.threads,
            r.kv_cache,
            t.test,
            t.avg_ts,
            t.stddev_ts
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_deviation() {
        assert_eq!(mean_sd(&[4.0]), (4.0, 0.0));
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn prompt_tokens_stay_in_the_vocabulary() {
        let t = prompt_tokens(1000, 37);
        assert!(t.iter().all(|&x| x < 37));
        assert!(t.iter().collect::<std::collections::HashSet<_>>().len() > 20);
        assert_eq!(t, prompt_tokens(1000, 37));
    }
}
