//! `alc build`: generate, compile and link the TVM kernels of a checkpoint for each target.
//!
//! The output is a stage directory: copies of the input's files, one
//! `lib/<target>/` per target, and `ava-stage.json` recording the build for the manifest.

use std::path::Path;

use anyhow::{bail, Context};
use ava_packaging::stage::{StageFile, STAGE_FILE};
use ava_packaging::PackageTarget;
use ava_targets::{BuildOptions, TargetReport, TargetSpec};
use serde_json::json;

use crate::args::build::BuildArgs;
use crate::output::Expect;
use crate::partial_dir::PartialDir;
use crate::ui::Ui;

/// Runs `build`.
pub fn run(args: &BuildArgs, ui: &Ui) -> anyhow::Result<()> {
    let specs = args
        .targets
        .iter()
        .map(|t| TargetSpec::new(*t, args.cpu.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    crate::output::claim(&args.output, Expect::StageDir, args.force)?;
    let reports = build_dir(&args.dir, &specs, &args.output, ui)?;
    for r in &reports {
        ui.detail(format!(
            "{}: {} kernels ({}), {:.1} s{}",
            r.target,
            r.kernels,
            r.cpu,
            r.seconds,
            if r.cached { ", cached" } else { "" }
        ));
    }
    ui.result(&json!({"output": args.output, "targets": reports}), || {
        format!("built {}\n", args.output.display())
    })
}

/// Builds `specs` for the checkpoint in `dir` into the stage directory `out`.
pub fn build_dir(
    dir: &Path,
    specs: &[TargetSpec],
    out: &Path,
    ui: &Ui,
) -> anyhow::Result<Vec<TargetReport>> {
    if !dir.join("config.json").is_file() {
        bail!(
            "{}: not a checkpoint directory (no config.json)",
            dir.display()
        );
    }
    ui.detail(format!("building kernels for {} target(s)", specs.len()));
    let tmp = PartialDir::beside(out)?;
    copy_files(dir, tmp.path())?;
    let reports = ava_targets::build(dir, specs, tmp.path(), &BuildOptions::default())?;
    write_stage(dir, tmp.path(), specs, &reports)?;
    let kept = tmp.path().to_path_buf();
    tmp.persist(out)?;
    Ok(reports
        .into_iter()
        .map(|mut r| {
            let rel = |p: &Path| out.join(p.strip_prefix(&kept).unwrap_or(p));
            r.library = rel(&r.library);
            r.table = rel(&r.table);
            r
        })
        .collect())
}

/// Copies the checkpoint's top-level files, except earlier builds' `lib/` (never hard links: the
/// input may be a stage cache entry, which an edited output must not change).
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() || entry.file_name() == STAGE_FILE {
            continue;
        }
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target)
            .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

/// Writes `ava-stage.json`: the input's stage data plus the build (target, kernel tables).
fn write_stage(
    dir: &Path,
    out: &Path,
    specs: &[TargetSpec],
    reports: &[TargetReport],
) -> anyhow::Result<()> {
    let mut stage = StageFile::read(dir)?.unwrap_or_default();
    if let [only] = specs {
        stage.target = Some(PackageTarget::Native(only.target));
    }
    let targets: Vec<_> = reports
        .iter()
        .map(|r| {
            let table: serde_json::Value = std::fs::read(&r.table)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            json!({"target": r.target, "cpu": r.cpu, "kernels": table["kernels"],
                   "tvm_version": table["tvm_version"]})
        })
        .collect();
    stage.stages.insert(
        "build".to_string(),
        json!({"tool": "ava-targets", "targets": targets}),
    );
    Ok(stage.write(out)?)
}
