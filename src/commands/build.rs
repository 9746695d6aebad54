//! `alc build`: generate, compile and link the TVM kernels of a checkpoint for each target.
//!
//! The output is a stage directory: the input's files (hard-linked when possible), one
//! `lib/<target>/` per target, and `ava-stage.json` recording the build for the manifest.

use std::path::Path;

use anyhow::{bail, Context};
use ava_targets::{BuildOptions, TargetReport, TargetSpec};
use serde_json::json;

use crate::args::build::BuildArgs;
use crate::commands::package::STAGE_FILE;
use crate::ui::Ui;

/// Runs `build`.
pub fn run(args: &BuildArgs, ui: &Ui) -> anyhow::Result<()> {
    let specs = args
        .targets
        .iter()
        .map(|t| TargetSpec::new(*t, args.cpu.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
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
    let tmp_parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp_parent = tmp_parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(tmp_parent)
        .with_context(|| format!("creating {}", tmp_parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".alc-build-")
        .tempdir_in(tmp_parent)
        .with_context(|| format!("creating a directory in {}", tmp_parent.display()))?;
    link_files(dir, tmp.path())?;
    let reports = ava_targets::build(dir, specs, tmp.path(), &BuildOptions::default())?;
    write_stage(dir, tmp.path(), specs, &reports)?;
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).with_context(|| format!("writing {}", out.display()))?;
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

/// Hard-links (or copies) the checkpoint's top-level files, except earlier builds' `lib/`.
fn link_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if !entry.file_type()?.is_file() || entry.file_name() == STAGE_FILE {
            continue;
        }
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
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
    let mut stage = match std::fs::read(dir.join(STAGE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: invalid stage metadata", dir.display()))?,
        Err(_) => json!({}),
    };
    if let [only] = specs {
        stage["target"] = json!(only.target.name());
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
    if !stage["stages"].is_object() {
        stage["stages"] = json!({});
    }
    stage["stages"]["build"] = json!({"tool": "ava-targets", "targets": targets});
    let path = out.join(STAGE_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&stage)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
