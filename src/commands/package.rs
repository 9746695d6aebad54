//! `package DIR -o OUT`: a model directory (or a hub repository id, downloaded into the hub
//! cache first, whose snapshot path then names the source) becomes a v1 archive through the
//! package stage ([`ava_packaging::package`]).

use std::path::{Path, PathBuf};

use ava_packaging::package::{plan, PackageOptions, HUB_KERNELS_LEFT_OUT};
use ava_packaging::Manifest;
use serde::Serialize;

use crate::args::PackageArgs;
use crate::hub::resolve_checkpoint;
use crate::ui::{human_bytes, Ui};

/// What `package --json` prints.
#[derive(Serialize)]
struct PackageReport<'a> {
    path: &'a Path,
    compressed: bool,
    archive_size: u64,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

/// Runs `package`.
pub fn run(args: &PackageArgs, ui: &Ui) -> anyhow::Result<()> {
    let dir = &match args.dir.to_str() {
        Some(arg) => resolve_checkpoint(arg, &args.hub.options(ui), ui)?,
        None => args.dir.clone(),
    };
    let opts = args.options(ui)?;
    let (out, manifest, archive_size) = write(dir, &args.output, args.force, &opts, ui)?;
    let report = PackageReport {
        path: &out,
        compressed: opts.zstd,
        archive_size,
        manifest: &manifest,
    };
    ui.result(&report, || {
        format!(
            "{}\n  {} {} ({}, {}, {}), {} files, {}\n",
            out.display(),
            manifest.name,
            manifest.version,
            manifest.family,
            manifest.quantization,
            manifest.target,
            manifest.files.len(),
            human_bytes(archive_size)
        )
    })
}

/// Packages `dir` as `output` (a file, or a directory to put it in under the conventional
/// name), with a progress bar; `force` as `--force`. Returns the archive's path, manifest and
/// size.
pub fn write(
    dir: &Path,
    output: &Path,
    force: bool,
    opts: &PackageOptions,
    ui: &Ui,
) -> anyhow::Result<(PathBuf, Manifest, u64)> {
    let package = plan(dir, opts)?;
    if !package.left_out.is_empty() {
        ui.info(format!(
            "note: {} is a hub download: left out {} ({HUB_KERNELS_LEFT_OUT})",
            dir.display(),
            package.left_out.join(", ")
        ));
    }
    let source = &package.spec.source;
    ui.detail(format!(
        "source: {} {}",
        source.repository,
        source.revision.as_deref().unwrap_or("")
    ));
    let out = output_path(output, &package.file_name());
    crate::output::claim(&out, crate::output::Expect::Archive, force)?;
    let total = package.input_bytes();
    ui.detail(format!(
        "packaging {} files ({}) into {}",
        package.inputs.len(),
        human_bytes(total),
        out.display()
    ));
    let bar = ui.bytes_progress(2 * total, "packaging");
    let manifest = package
        .write(&out, &mut |n| bar.inc(n))
        .map_err(|e| anyhow::Error::new(e).context(format!("writing {}", out.display())))?;
    bar.finish_and_clear();
    let archive_size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok((out, manifest, archive_size))
}

/// The archive path for `out` (a file, or a directory to put it in).
fn output_path(out: &Path, file_name: &str) -> PathBuf {
    if out.is_dir() {
        out.join(file_name)
    } else {
        out.to_path_buf()
    }
}
