//! The build stage's entry point on a stage directory: the checkpoint's files copied, one
//! `lib/<target>/` per target, and `ava-stage.json` recording the build for the manifest.
//! `alc build` and `alc compile` both call [`build_dir`].

use std::path::Path;

use ava_core::checkpoint::CONFIG_FILE;
use ava_core::kernel_table::KernelTable;
use ava_packaging::stage::{StageFile, STAGE_FILE};
use ava_packaging::PackageTarget;
use serde_json::json;

use crate::error::{self, Error};
use crate::{build, BuildOptions, Result, TargetReport, TargetSpec};

/// The stage's name in `ava-stage.json` and the manifest.
pub const BUILD_STAGE: &str = "build";

/// Builds `specs` for the checkpoint in `dir` into the existing, empty directory `out`, beside
/// copies of the checkpoint's top-level files (never hard links: the input may be a stage
/// cache entry, which an edited output must not change).
pub fn build_dir(
    dir: &Path,
    specs: &[TargetSpec],
    out: &Path,
    opts: &BuildOptions,
) -> Result<Vec<TargetReport>> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Err(Error::Unsupported(format!(
            "{}: not a checkpoint directory (no config.json)",
            dir.display()
        )));
    }
    copy_files(dir, out)?;
    let reports = build(dir, specs, out, opts)?;
    write_stage(dir, out, specs, &reports)?;
    Ok(reports)
}

/// Copies the checkpoint's top-level files, except earlier builds' `lib/` and the stage file.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(error::io(from))? {
        let entry = entry.map_err(error::io(from))?;
        let kind = entry.file_type().map_err(error::io(&entry.path()))?;
        if !kind.is_file() || entry.file_name() == STAGE_FILE {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .map_err(error::io(&entry.path()))?;
    }
    Ok(())
}

/// Writes `ava-stage.json`: the input's stage data plus the build (target, kernel tables).
fn write_stage(
    dir: &Path,
    out: &Path,
    specs: &[TargetSpec],
    reports: &[TargetReport],
) -> Result<()> {
    let mut stage = StageFile::read(dir)?.unwrap_or_default();
    if let [only] = specs {
        stage.target = Some(PackageTarget::Native(only.target));
    }
    let mut targets = Vec::with_capacity(reports.len());
    for r in reports {
        let bytes = std::fs::read(&r.table).map_err(error::io(&r.table))?;
        let table = KernelTable::parse(&bytes, &r.table)?;
        targets.push(
            json!({"target": r.target, "cpu": r.cpu, "kernels": table.kernels,
               "tvm_version": table.tvm_version}),
        );
    }
    stage.stages.insert(
        BUILD_STAGE.to_string(),
        json!({"tool": "ava-targets", "targets": targets}),
    );
    Ok(stage.write(out)?)
}
