//! Compilation targets and the Apache TVM kernel driver: from a Gemma 3 checkpoint to one
//! native kernel library per target (`lib/<target>/libmodel.so`) plus its kernel table
//! (`lib/<target>/kernels.json`), which the runtime's `tvm` backend loads.
//!
//! The list of targets itself lives in `ava_core::Target`, because archives name their target.
//! See `docs/tvm.md` for the library's ABI.
#![deny(missing_docs)]

pub mod android_runner;
pub mod driver;
mod error;
pub mod kernels;
pub mod link;
pub mod memory;
pub mod spec;
pub mod stage_dir;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ava_core::kernel_table::{KernelTable, LIB_DIR};
use ava_core::Checkpoint;
use serde::Serialize;

pub use error::{Error, Result};
pub use kernels::WeightFormat;
pub use spec::{CpuPreset, TargetSpec};
pub use stage_dir::build_dir;

pub use ava_core::kernel_table::{TABLE_FORMAT_VERSION, TABLE_NAME};

/// Options of [`build`].
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Where compiled kernel objects are cached by content (`None`: `$AVA_KERNEL_CACHE`, if set).
    pub cache: Option<PathBuf>,
}

/// What [`build`] made for one target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    /// Target name.
    pub target: String,
    /// CPU preset.
    pub cpu: String,
    /// The library.
    pub library: PathBuf,
    /// The kernel table.
    pub table: PathBuf,
    /// Number of kernels.
    pub kernels: usize,
    /// Seconds spent generating + compiling (0 when cached) and linking.
    pub seconds: f64,
    /// Whether the compiled kernels came from the cache.
    pub cached: bool,
}

/// Generates, compiles and links the kernels of the Gemma 3 checkpoint in `dir` for each
/// target, into `out/lib/<target>/`.
pub fn build(
    dir: &Path,
    targets: &[TargetSpec],
    out: &Path,
    options: &BuildOptions,
) -> Result<Vec<TargetReport>> {
    let ckpt = Checkpoint::open(dir)?;
    let cfg = ckpt.gemma3()?;
    let mut cfg = cfg;
    if let Some(p) = ava_core::config::gemma3::WEIGHT_PREFIXES
        .iter()
        .find(|p| ckpt.contains(&format!("{p}embed_tokens.weight")))
    {
        cfg.weight_prefix = p.to_string();
    }
    let kernels = kernels::gemma3_kernels(&cfg, &ckpt)?;
    build_kernels(&kernels, targets, out, options)
}

/// Generates, compiles and links `kernels` for each target into `out/lib/<target>/`: the
/// model-independent half of [`build`], also used for the mALBERT encoder's kernels (whose
/// list the runtime derives from the exported graph).
pub fn build_kernels(
    kernels: &[kernels::KernelSpec],
    targets: &[TargetSpec],
    out: &Path,
    options: &BuildOptions,
) -> Result<Vec<TargetReport>> {
    let cache = options
        .cache
        .clone()
        .or_else(|| std::env::var_os(driver::CACHE_ENV).map(PathBuf::from));
    targets
        .iter()
        .map(|spec| build_target(spec, kernels, out, cache.as_deref()))
        .collect()
}

fn build_target(
    spec: &TargetSpec,
    kernels: &[kernels::KernelSpec],
    out: &Path,
    cache: Option<&Path>,
) -> Result<TargetReport> {
    let start = Instant::now();
    let dir = out.join(LIB_DIR).join(spec.target.name());
    std::fs::create_dir_all(&dir).map_err(error::io(&dir))?;
    let work = tempfile::tempdir_in(&dir).map_err(error::io(&dir))?;
    let compiled = driver::run(spec, kernels, work.path(), cache)?;
    let library = link::link(spec.target, &compiled.object, &dir)?;
    let table = kernel_table(spec, compiled.table);
    let table_path = dir.join(TABLE_NAME);
    std::fs::write(&table_path, table.to_json()).map_err(error::io(&table_path))?;
    Ok(TargetReport {
        target: spec.target.name().to_string(),
        cpu: spec.cpu.name.to_string(),
        library,
        table: table_path,
        kernels: kernels.len(),
        seconds: start.elapsed().as_secs_f64(),
        cached: compiled.cached,
    })
}

fn kernel_table(spec: &TargetSpec, driver_table: driver::DriverTable) -> KernelTable {
    KernelTable {
        format_version: TABLE_FORMAT_VERSION,
        target: spec.target.name().to_string(),
        cpu: spec.cpu.name.to_string(),
        requires: spec.cpu.requires.iter().map(|f| f.to_string()).collect(),
        library: link::LIBRARY_NAME.to_string(),
        tvm_version: driver_table.tvm_version,
        kernels: driver_table.kernels,
    }
}
