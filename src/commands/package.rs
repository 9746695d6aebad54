//! `package DIR -o OUT`: a model directory becomes a v1 archive.
//!
//! The directory is either a Hugging Face checkpoint or a stage output (or a hub repository id,
//! downloaded into the cache first, whose snapshot path then names the source); an optional
//! `ava-stage.json` in it (see `docs/formats/stage-dir.md`) supplies the manifest fields and
//! stage metadata that earlier stages recorded. Command-line flags override both.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use ava_core::{Checkpoint, DType, ModelFamily};
use ava_packaging::stage::{StageFile, STAGE_FILE};
use ava_packaging::{
    size_label, write_archive, Compression, CreatedBy, InputFile, Manifest, PackageSpec,
    PackageTarget, Role, Source,
};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::args::PackageArgs;
use crate::hub::resolve_checkpoint;
use crate::ui::{human_bytes, Ui};

/// Extensions of pickle-based checkpoints, which execute code when loaded: never packaged.
const PICKLE_EXTENSIONS: [&str; 5] = ["bin", "pt", "pth", "ckpt", "pkl"];

/// What `package --json` prints.
#[derive(Serialize)]
struct PackageReport<'a> {
    path: &'a Path,
    compressed: bool,
    archive_size: u64,
    #[serde(flatten)]
    manifest: &'a Manifest,
}

/// An archive [`package`] wrote.
pub struct Packaged {
    /// Where it is.
    pub path: PathBuf,
    /// Whether it is zstd-compressed.
    pub compressed: bool,
    /// Its size in bytes.
    pub archive_size: u64,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Runs `package`.
pub fn run(args: &PackageArgs, ui: &Ui) -> anyhow::Result<()> {
    let Packaged {
        path: out,
        compressed,
        archive_size,
        manifest,
    } = package(args, ui)?;
    let report = PackageReport {
        path: &out,
        compressed,
        archive_size,
        manifest: &manifest,
    };
    print_report(ui, &report)
}

/// Packs `args.dir` into an archive (the work of `package`, without printing the result).
pub fn package(args: &PackageArgs, ui: &Ui) -> anyhow::Result<Packaged> {
    let dir = &match args.dir.to_str() {
        Some(arg) => resolve_checkpoint(arg, &args.hub.options(ui), ui)?,
        None => args.dir.clone(),
    };
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let stage = StageFile::read(dir)?.unwrap_or_default();
    let exclude = glob_set(&args.exclude)?;
    let inputs = collect_inputs(dir, &exclude)?;
    let checkpoint = if dir.join("config.json").is_file() {
        Some(
            Checkpoint::open(dir)
                .with_context(|| format!("reading checkpoint {}", dir.display()))?,
        )
    } else {
        None
    };
    let mut spec = package_spec(args, dir, ui, stage, checkpoint.as_ref())?;
    let key = crate::trust::signing_key(args.sign.sign_key.as_deref(), &|m| ui.info(m))?;
    ui.detail(format!("signing with key {}", key.public().key_id()));
    spec.sign_with = Some(key);
    let zstd = args.zstd || args.output.extension().is_some_and(|e| e == "zst");
    let total: u64 = inputs
        .iter()
        .map(|i| std::fs::metadata(&i.source).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ui.bytes_progress(2 * total, "packaging");
    let out = output_path(&args.output, &spec, zstd);
    crate::output::claim(&out, crate::output::Expect::Archive, args.force)?;
    ui.detail(format!(
        "packaging {} files ({}) into {}",
        inputs.len(),
        human_bytes(total),
        out.display()
    ));
    let compression = if zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    let manifest = write_archive(&spec, &inputs, &out, compression, &mut |n| bar.inc(n))
        .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    let archive_size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    Ok(Packaged {
        path: out,
        compressed: zstd,
        archive_size,
        manifest,
    })
}

fn print_report(ui: &Ui, report: &PackageReport<'_>) -> anyhow::Result<()> {
    let (out, manifest, archive_size) = (report.path, report.manifest, report.archive_size);
    ui.result(report, || {
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

/// Compiles `--exclude` patterns; `*` does not cross `/`.
fn glob_set(patterns: &[String]) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .with_context(|| format!("--exclude {pattern:?}"))?;
        set.add(glob);
    }
    Ok(set.build()?)
}

/// Every regular file under `dir` (symlinks followed, as in a hub snapshot), hidden entries
/// and the stage file skipped, sorted by archive path.
fn collect_inputs(dir: &Path, exclude: &GlobSet) -> anyhow::Result<Vec<InputFile>> {
    let mut inputs = Vec::new();
    walk(dir, "", &mut inputs)?;
    inputs.retain(|input| !exclude.is_match(&input.path));
    if inputs.is_empty() {
        bail!("{}: no files to package", dir.display());
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inputs)
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<InputFile>) -> anyhow::Result<()> {
    let dir = root.join(prefix);
    let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (prefix.is_empty() && name == STAGE_FILE) {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta =
            std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if meta.is_dir() {
            walk(root, &rel, out)?;
        } else if meta.is_file() {
            let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if PICKLE_EXTENSIONS.contains(&ext) {
                bail!(
                    "{}: pickle checkpoints are refused (loading them executes code); \
                     convert to safetensors or remove the file",
                    path.display()
                );
            }
            out.push(InputFile {
                source: path,
                role: Role::from_path(&rel),
                path: rel,
            });
        }
    }
    Ok(())
}

fn package_spec(
    args: &PackageArgs,
    dir: &Path,
    ui: &Ui,
    stage: StageFile,
    checkpoint: Option<&Checkpoint>,
) -> anyhow::Result<PackageSpec> {
    let family = match (&args.family, stage.family, checkpoint) {
        (Some(f), _, _) => f.clone(),
        (None, Some(f), _) => f,
        (None, None, Some(ck)) => ck.family()?.name().to_string(),
        (None, None, None) => bail!("{}: no config.json: pass --family", dir.display()),
    };
    if let Some(ck) = checkpoint {
        check_checkpoint(ck)?;
    }
    let quantization = match (&args.quantization, stage.quantization, checkpoint) {
        (Some(q), _, _) => q.clone(),
        (None, Some(q), _) => q,
        (None, None, Some(ck)) => weights_quantization(ck),
        (None, None, None) => bail!(
            "{}: cannot tell the quantization: pass --quantization",
            dir.display()
        ),
    };
    let name = match (&args.name, stage.name, checkpoint) {
        (Some(n), _, _) => n.clone(),
        (None, Some(n), _) => n,
        (None, None, Some(ck)) => format!("{family}-{}", size_label(ck.num_parameters())),
        (None, None, None) => bail!("{}: pass --name", dir.display()),
    };
    let mut source = stage.source.unwrap_or_else(|| hub_source(dir));
    if let Some(repo) = &args.source_repo {
        source.repository = repo.clone();
    }
    if let Some(rev) = &args.source_revision {
        source.revision = Some(rev.clone());
    }
    ui.detail(format!(
        "source: {} {}",
        source.repository,
        source.revision.as_deref().unwrap_or("")
    ));
    Ok(PackageSpec {
        name,
        version: args.package_version.clone(),
        family,
        quantization,
        target: args.target.or(stage.target).unwrap_or(PackageTarget::Any),
        created_by: CreatedBy {
            tool: ui.tool.name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: crate::GIT_COMMIT.to_string(),
        },
        source,
        stages: stage
            .stages
            .into_iter()
            .chain(args.extra_stages.clone())
            .collect(),
        sign_with: None,
    })
}

/// A checkpoint of a known family must have every tensor its config implies, with the right shape.
fn check_checkpoint(ck: &Checkpoint) -> anyhow::Result<()> {
    let expected = match ck.family()? {
        ModelFamily::Gemma3 => ck.gemma3()?.expected_tensors(),
        ModelFamily::Albert => ck.albert()?.expected_tensors(),
        _ => return Ok(()),
    };
    ck.check_shapes(&expected)?;
    Ok(())
}

/// The float dtype all weights share (`bf16`, `f32`, ...), or `mixed`.
fn weights_quantization(ck: &Checkpoint) -> String {
    let mut dtypes: Vec<DType> = ck
        .tensor_infos()
        .iter()
        .map(|t| t.dtype)
        .filter(|d| matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64))
        .collect();
    dtypes.sort_by_key(|d| d.name());
    dtypes.dedup();
    match dtypes.as_slice() {
        [one] => one.name().to_string(),
        _ => "mixed".to_string(),
    }
}

/// Repository and commit from a hub cache path (`.../models--org--name/snapshots/<commit>`).
pub(crate) fn hub_source(dir: &Path) -> Source {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let parts: Vec<String> = abs
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let found = parts.windows(3).rev().find_map(|w| {
        let repo = w[0].strip_prefix("models--")?;
        (w[1] == "snapshots").then(|| (repo.replace("--", "/"), w[2].clone()))
    });
    match found {
        Some((repository, revision)) => Source {
            repository,
            revision: Some(revision),
            ..Source::default()
        },
        None => Source {
            repository: "local".into(),
            ..Source::default()
        },
    }
}

/// `OUT` itself, or the conventional archive name inside `OUT` when it is a directory.
fn output_path(out: &Path, spec: &PackageSpec, zstd: bool) -> PathBuf {
    if out.is_dir() {
        out.join(spec.file_name(zstd))
    } else {
        out.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_paths() {
        let s = hub_source(Path::new(
            "/c/hub/models--google--gemma-3-270m/snapshots/abc123",
        ));
        assert_eq!(s.repository, "google/gemma-3-270m");
        assert_eq!(s.revision.as_deref(), Some("abc123"));
        assert_eq!(hub_source(Path::new("/tmp/x")).repository, "local");
    }
}
