//! `alc build`: the build stage ([`ava_targets::build_dir`]) into a temporary directory beside
//! `-o`, renamed into place when complete.

use std::path::Path;

use ava_targets::{BuildOptions, TargetReport};
use serde_json::json;

use crate::args::build::BuildArgs;
use crate::output::Expect;
use crate::partial_dir::PartialDir;
use crate::ui::Ui;

/// Runs `build`.
pub fn run(args: &BuildArgs, ui: &Ui) -> anyhow::Result<()> {
    let specs = args.specs()?;
    crate::output::claim(&args.output, Expect::StageDir, args.force)?;
    ui.detail(format!("building kernels for {} target(s)", specs.len()));
    let tmp = PartialDir::beside(&args.output)?;
    let reports = ava_targets::build_dir(&args.dir, &specs, tmp.path(), &BuildOptions::default())?;
    let kept = tmp.path().to_path_buf();
    tmp.persist(&args.output)?;
    let reports: Vec<TargetReport> = reports
        .into_iter()
        .map(|mut r| {
            let rel = |p: &Path| args.output.join(p.strip_prefix(&kept).unwrap_or(p));
            r.library = rel(&r.library);
            r.table = rel(&r.table);
            r
        })
        .collect();
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
