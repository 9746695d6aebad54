//! `alc compile SOURCE --quant Q --target T... -o OUT`: the whole pipeline in one command,
//! download -> convert (GGUF) -> quantize -> build (per target) -> package (per target).
//!
//! Every stage writes an entry of the stage cache ([`ava_packaging::cache`]),
//! `CACHE_DIR/alc/<stage>/<key>/`, where the key is the sha256 of the stage's input (the
//! previous stage's key, or the source's content) and its options. A finished stage's entry is
//! reused as is, so a re-run skips it and a changed option redoes only the stages downstream of
//! it. Before packaging, the runtime memory of each build is estimated (`--context`), checked
//! against `--memory-budget` and recorded in the manifest (`stages.memory`). Each stage is the
//! library function its own verb calls, under this command's single progress display.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ava_core::kernel_table::{table_path, KernelTable};
use ava_core::TOKENIZER_FILE;
use ava_packaging::cache::{hash_dir, KeyHasher, Lookup, StageCache, DIGEST_FILE};
use ava_packaging::package::PackageOptions;
use ava_packaging::Source;
use ava_quantize::calib::{DEFAULT_CORPUS, DEFAULT_CORPUS_NAME};
use ava_quantize::gate::quality_gates;
use ava_quantize::perplexity::PplReport;
use ava_quantize::{ConvertOptions, OutDtype};
use ava_runtime::Engine;
use ava_targets::memory::{for_built_dir, MemoryRecord, MEMORY_STAGE};
use ava_targets::{BuildOptions, TargetSpec};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::archive_identity::{check_replace, resolve_version, source_name};
use super::memory::{self, MIB};
use crate::args::compile::CompileArgs;
use crate::args::{GlobalArgs, MethodArg};
use crate::hub::{checkpoint_source, resolve_checkpoint, resolve_gguf};
use crate::ui::{human_bytes, Ui};
use crate::TOOL_ID;

/// This pipeline's folder in the stage cache.
pub const CACHE_FOLDER: &str = "alc";
/// Name of a stage's result inside its directory (convert, quantize, build).
const CHECKPOINT_DIR: &str = "checkpoint";

/// One stage as `compile --json` reports it.
#[derive(Serialize)]
struct StageReport {
    stage: String,
    key: String,
    cached: bool,
    seconds: f64,
    output: PathBuf,
}

/// One archive written.
#[derive(Serialize)]
struct ArchiveReport {
    target: String,
    path: PathBuf,
    archive_size: u64,
    kernels: usize,
    memory: MemoryRecord,
}

/// What `compile --json` prints.
#[derive(Serialize)]
struct CompileReport {
    source: String,
    quantization: String,
    archives: Vec<ArchiveReport>,
    stages: Vec<StageReport>,
    cache: PathBuf,
    seconds: f64,
    quality: Option<PplReport>,
}

/// Runs `compile`.
pub fn run(args: &CompileArgs, ui: &Ui) -> anyhow::Result<()> {
    let started = Instant::now();
    let cache = ui.stage_cache(CACHE_FOLDER);
    let specs = args
        .targets
        .iter()
        .map(|t| TargetSpec::new(*t, args.cpu.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let gates = u64::from(args.gate_options().any());
    let report_cache = cache.dir().to_path_buf();
    let mut p = Pipeline::new(args, ui, cache, 2 + gates + 2 * specs.len() as u64);
    let checkpoint = p.source()?;
    p.identify(&checkpoint);
    let quantized = p.quantize(&checkpoint)?;
    let gate = p.gates(&checkpoint, &quantized)?;
    // Every target is built and checked against the budget before any archive is written.
    let mut builds = Vec::new();
    for spec in &specs {
        let (built, kernels) = p.build(&quantized, spec)?;
        let memory = p.memory(&built, spec)?;
        builds.push((spec, built, kernels, memory));
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut archives = Vec::new();
    for (spec, built, kernels, memory) in builds {
        let (path, archive_size) = p.package(&built, spec, &memory)?;
        archives.push(ArchiveReport {
            target: spec.target.name().to_string(),
            path,
            archive_size,
            kernels,
            memory,
        });
    }
    p.bar.finish_and_clear();
    let report = CompileReport {
        source: args.source.clone(),
        quantization: format!("{:?}", args.quant).to_lowercase(),
        archives,
        stages: p.stages,
        cache: report_cache,
        seconds: started.elapsed().as_secs_f64(),
        quality: gate,
    };
    ui.result(&report, || human(&report))
}

fn human(r: &CompileReport) -> String {
    let cached = r.stages.iter().filter(|s| s.cached).count();
    let mut s = String::new();
    for a in &r.archives {
        s += &format!(
            "{}\n  {}: {} kernels, {}\n  runtime memory estimate {}\n",
            a.path.display(),
            a.target,
            a.kernels,
            human_bytes(a.archive_size),
            memory::describe(&a.memory)
        );
    }
    s + &format!(
        "  {} stages ({cached} cached) in {:.1}s\n",
        r.stages.len(),
        r.seconds
    )
}

/// A stage's input: what it hashes, and where it is.
#[derive(Clone, Debug)]
struct Artifact {
    key: String,
    dir: PathBuf,
}

/// The state of one `compile`: options, cache, progress display and finished stages.
struct Pipeline<'a> {
    args: &'a CompileArgs,
    ui: &'a Ui,
    /// What the hub download is given: quiet, so the only display is `bar`.
    inner: Ui,
    cache: StageCache,
    bar: ProgressBar,
    stages: Vec<StageReport>,
    /// The archives' name, version and source, once the source is known.
    identity: Identity,
    /// The repository and commit of a GGUF fetched from the hub.
    hub_gguf: Option<Source>,
}

/// What the archives of one `compile` are called and where they come from.
#[derive(Default)]
struct Identity {
    name: String,
    version: u64,
    source: Source,
}

impl<'a> Pipeline<'a> {
    fn new(args: &'a CompileArgs, ui: &'a Ui, cache: StageCache, steps: u64) -> Self {
        let quiet = GlobalArgs {
            quiet: true,
            cache_dir: ui.cache_dir.clone(),
            hub_cache: ui.hub_cache.clone(),
            ..GlobalArgs::default()
        };
        Pipeline {
            args,
            ui,
            inner: Ui::new(ui.tool, &quiet),
            cache,
            bar: steps_bar(ui, steps),
            stages: Vec::new(),
            identity: Identity::default(),
            hub_gguf: None,
        }
    }

    /// Names the archives after the source and records where it came from: a hub id with the
    /// commit its snapshot was resolved to, a local source with the digest of its content.
    fn identify(&mut self, checkpoint: &Artifact) {
        let a = self.args;
        let name = source_name(a.gguf.as_deref().unwrap_or(&a.source));
        let source = if let Some(hub) = self.hub_gguf.take() {
            hub
        } else if Path::new(&a.source).exists() {
            Source {
                repository: "local".into(),
                revision: Some(format!("sha256:{}", checkpoint.key)),
                ..Source::default()
            }
        } else {
            checkpoint_source(&a.source, &checkpoint.dir)
        };
        let quant = format!("{:?}", a.quant).to_lowercase();
        let targets: Vec<&str> = a.targets.iter().map(|t| t.name()).collect();
        let version = resolve_version(a.package_version, &a.output, &name, &quant, &targets);
        self.identity = Identity {
            name,
            version,
            source,
        };
    }

    /// The checkpoint to quantize: the source directory (downloaded first for a repo id), or
    /// the `.gguf` converted to an f32 checkpoint.
    fn source(&mut self) -> anyhow::Result<Artifact> {
        let source = &self.args.source;
        if source.ends_with(".gguf") || self.args.gguf.is_some() {
            self.bar.set_message("download");
            let opts = self.args.hub.options(self.ui);
            let gguf = resolve_gguf(source, self.args.gguf.as_deref(), &opts, &self.inner)?;
            self.hub_gguf = gguf.hub;
            return self.convert(&gguf.file, gguf.tokenizer);
        }
        let local = Path::new(source).exists();
        self.bar
            .set_message(if local { "hashing source" } else { "download" });
        let t = Instant::now();
        let dir = resolve_checkpoint(source, &self.args.hub.options(self.ui), &self.inner)?;
        let key = hash_dir(&dir, &TOOL_ID)?;
        self.finish("source", &key, false, t.elapsed(), &dir);
        Ok(Artifact { key, dir })
    }

    /// The GGUF converted to an f32 checkpoint, with `--tokenizer`, else `found` (the
    /// repository's), else the one beside the file.
    fn convert(&mut self, gguf: &Path, found: Option<PathBuf>) -> anyhow::Result<Artifact> {
        let tokenizer = match (&self.args.tokenizer, found) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => t,
            (None, None) => gguf.with_file_name(TOKENIZER_FILE),
        };
        if !tokenizer.is_file() {
            bail!(
                "{}: no tokenizer.json in its repository or beside it: pass --tokenizer FILE",
                gguf.display()
            );
        }
        self.bar.set_message("hashing source");
        let mut h = KeyHasher::new("convert", &TOOL_ID);
        h.file(gguf)?;
        h.file(&tokenizer)?;
        let opts = ConvertOptions {
            dtype: OutDtype::F32,
            tokenizer: Some(tokenizer),
        };
        self.stage("convert", h, |out| {
            let dir = out.join(CHECKPOINT_DIR);
            std::fs::create_dir(&dir)?;
            ava_quantize::convert(gguf, &dir, &opts)?;
            Ok(())
        })
        .map(|a| a.join(CHECKPOINT_DIR))
    }

    fn quantize(&mut self, input: &Artifact) -> anyhow::Result<Artifact> {
        let a = self.args;
        let mut h = KeyHasher::new("quantize", &TOOL_ID);
        h.text(&input.key);
        h.text(&format!("{:?} group {}", a.quant, a.group_size));
        let budget = a.budget.budget();
        if let Some(b) = budget {
            h.text(&b.describe());
        }
        if a.method != MethodArg::Rtn || budget.is_some() {
            h.text(&format!(
                "{:?} {} x {}",
                a.method, a.calib_samples, a.calib_seq_len
            ));
            match &a.calib {
                Some(calib) => h.file(calib)?,
                None => h.text(ava_quantize::calib::DEFAULT_CORPUS),
            }
        }
        let opts = a.quantize_options();
        opts.check()?;
        let dir = input.dir.clone();
        self.stage("quantize", h, |out| {
            let dest = out.join(CHECKPOINT_DIR);
            std::fs::create_dir(&dest)?;
            ava_quantize::quantize(&dir, &dest, &opts, &ava_quantize::run::Quiet)
                .map_err(crate::commands::quantize::stage_error)?;
            Ok(())
        })
        .map(|a| a.join(CHECKPOINT_DIR))
    }

    /// The quality gates: with `--max-kl` or `--max-ppl-increase`, scores the quantized model
    /// against the source on the gate text and fails (before any archive is written) when a
    /// figure is over its limit.
    fn gates(
        &mut self,
        source: &Artifact,
        quantized: &Artifact,
    ) -> anyhow::Result<Option<PplReport>> {
        let a = self.args;
        let opts = a.gate_options();
        if !opts.any() {
            return Ok(None);
        }
        self.bar.set_message("quality gates");
        let t = Instant::now();
        let open = |d: &Path| Engine::open(d).with_context(|| format!("loading {}", d.display()));
        let (model, reference) = (open(&quantized.dir)?, open(&source.dir)?);
        let (bytes, label) = match &a.gate_text {
            Some(p) => (
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (
                DEFAULT_CORPUS.as_bytes().to_vec(),
                DEFAULT_CORPUS_NAME.to_string(),
            ),
        };
        let outcome = quality_gates(&model, &reference, (&bytes, &label), &opts)
            .with_context(|| format!("scoring {label}"))?;
        let figures = crate::commands::perplexity::human(&outcome.report);
        if !outcome.failures.is_empty() {
            self.bar.finish_and_clear();
            bail!(
                "quality gate failed: {}\n{figures}",
                outcome.failures.join("; ")
            );
        }
        self.ui.info(figures.trim_end());
        let dir = quantized.dir.clone();
        self.finish("quality gates", &quantized.key, false, t.elapsed(), &dir);
        Ok(Some(outcome.report))
    }

    /// Builds one target's kernels; returns the stage directory and the number of kernels.
    fn build(&mut self, input: &Artifact, spec: &TargetSpec) -> anyhow::Result<(Artifact, usize)> {
        let mut h = KeyHasher::new("build", &TOOL_ID);
        h.text(&input.key);
        h.text(&format!("{} {}", spec.target.name(), spec.cpu.name));
        h.text(&ava_targets::driver::driver_fingerprint());
        let dir = input.dir.clone();
        let name = format!("build {}", spec.target.name());
        let built = self.stage(&name, h, |out| {
            let dest = out.join(CHECKPOINT_DIR);
            std::fs::create_dir(&dest)?;
            let specs = std::slice::from_ref(spec);
            ava_targets::build_dir(&dir, specs, &dest, &BuildOptions::default())?;
            Ok(())
        })?;
        let built = built.join(CHECKPOINT_DIR);
        let path = built.dir.join(table_path(spec.target));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let kernels = KernelTable::parse(&bytes, &path)?.kernels.len();
        Ok((built, kernels))
    }

    /// The runtime memory estimate of one target's build; an error when it exceeds
    /// `--memory-budget` (before anything is packaged).
    fn memory(&self, built: &Artifact, spec: &TargetSpec) -> anyhow::Result<MemoryRecord> {
        let footprint = for_built_dir(&built.dir, spec.target, self.args.context)?;
        let record = MemoryRecord {
            footprint,
            budget_bytes: self.args.memory_budget.map(|m| m.saturating_mul(MIB)),
        };
        memory::check(&record)?;
        Ok(record)
    }

    /// Packages one target's build with its memory estimate in the manifest; the archive is
    /// copied into `-o` (never linked: editing the output must not change the cache).
    fn package(
        &mut self,
        input: &Artifact,
        spec: &TargetSpec,
        memory: &MemoryRecord,
    ) -> anyhow::Result<(PathBuf, u64)> {
        let a = self.args;
        let memory = serde_json::to_value(memory)?;
        let mut h = KeyHasher::new("package", &TOOL_ID);
        h.text(&input.key);
        h.text(&format!("{:?} zstd {} {}", a.exclude, a.zstd, a.source));
        h.text(&memory.to_string());
        let id = &self.identity;
        h.text(&format!(
            "{} v{} {} {:?}",
            id.name, id.version, id.source.repository, id.source.revision
        ));
        let key = crate::trust::signing_key(a.sign.sign_key.as_deref(), &|m| self.ui.info(m))?;
        h.text(&format!("signed by {}", key.public().key_id()));
        let opts = PackageOptions {
            exclude: a.exclude.clone(),
            zstd: a.zstd,
            name: Some(id.name.clone()),
            version: id.version.to_string(),
            source_repo: Some(id.source.repository.clone()),
            source_revision: id.source.revision.clone(),
            extra_stages: [(MEMORY_STAGE.to_string(), memory)].into(),
            created_by: crate::created_by(self.ui.tool),
            sign_with: Some(key),
            ..PackageOptions::default()
        };
        let (dir, source) = (input.dir.clone(), id.source.clone());
        let stage = format!("package {}", spec.target.name());
        let staged = self.stage(&stage, h, |out| {
            ava_packaging::package::package(&dir, out, &opts)?;
            Ok(())
        })?;
        let archive = only_file(&staged.dir)?;
        let name = archive.file_name().context("archive name")?;
        let dest = a.output.join(name);
        crate::output::claim(&dest, crate::output::Expect::Archive, a.force)?;
        check_replace(&dest, &source, a.force)?;
        crate::output::copy_file(&archive, &dest)?;
        let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        Ok((dest, size))
    }

    /// Runs `work` into a fresh directory that becomes the cache entry `<stage>/<key>` when
    /// it succeeds, unless a sound entry already exists (then `work` is skipped).
    fn stage(
        &mut self,
        name: &str,
        hasher: KeyHasher,
        work: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Artifact> {
        let key = hasher.finish();
        let folder = name.split(' ').next().unwrap_or(name);
        let t = Instant::now();
        let pending = match self.cache.lookup(folder, &key, &|m| self.ui.info(m))? {
            Lookup::Hit(dir) => {
                self.finish(name, &key, true, t.elapsed(), &dir);
                return Ok(Artifact { key, dir });
            }
            Lookup::Miss(pending) => pending,
        };
        self.bar.set_message(name.to_string());
        work(pending.path()).with_context(|| format!("stage {name}"))?;
        let dir = pending.commit()?;
        self.finish(name, &key, false, t.elapsed(), &dir);
        Ok(Artifact { key, dir })
    }

    fn finish(&mut self, name: &str, key: &str, cached: bool, took: Duration, dir: &Path) {
        let line = format!(
            "{name:>22}: {}",
            if cached {
                "cached".to_string()
            } else {
                format!("{:.1}s", took.as_secs_f64())
            }
        );
        if self.bar.is_hidden() {
            self.ui.info(line);
        } else {
            self.bar.println(line);
        }
        self.bar.inc(1);
        self.stages.push(StageReport {
            stage: name.to_string(),
            key: key.to_string(),
            cached,
            seconds: took.as_secs_f64(),
            output: dir.to_path_buf(),
        });
    }
}

impl Artifact {
    fn join(self, sub: &str) -> Artifact {
        Artifact {
            dir: self.dir.join(sub),
            ..self
        }
    }
}

/// The one progress display: stages done out of all, the current stage, elapsed time.
fn steps_bar(ui: &Ui, steps: u64) -> ProgressBar {
    if ui.json || !ui.shows_progress() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The single file a package stage wrote.
fn only_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut files = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != DIGEST_FILE)
        .map(|e| e.path())
        .filter(|p| p.is_file());
    match (files.next(), files.next()) {
        (Some(f), None) => Ok(f),
        _ => bail!("{}: expected one archive", dir.display()),
    }
}
