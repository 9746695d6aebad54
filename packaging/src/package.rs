//! The package stage's entry point: a model directory (a Hugging Face checkpoint or a stage
//! output) becomes a v1 archive. An optional `ava-stage.json` in it (`docs/formats/stage-dir.md`)
//! supplies the manifest fields and stage metadata that earlier stages recorded; the options
//! override both. `alc package`, `alc compile` and `aon compile` all go through [`plan`].

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use ava_core::checkpoint::CONFIG_FILE;
use ava_core::{Checkpoint, DType, ModelFamily};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::stage::{StageFile, STAGE_FILE};
use crate::writer::Progress;
use crate::{
    size_label, write_archive, Compression, CreatedBy, Error, InputFile, Manifest, PackageSpec,
    PackageTarget, Result, Role, SecretKey, Source,
};

/// Extensions of pickle-based checkpoints, which execute code when loaded: never packaged.
const PICKLE_EXTENSIONS: [&str; 5] = ["bin", "pt", "pth", "ckpt", "pkl"];

/// What the package stage writes; `None` fields come from `ava-stage.json`, then from the
/// checkpoint.
#[derive(Clone, Default)]
pub struct PackageOptions {
    /// Globs of files left out (`*` does not cross `/`).
    pub exclude: Vec<String>,
    /// Compression of the archive.
    pub zstd: bool,
    /// Archive name.
    pub name: Option<String>,
    /// Archive version.
    pub version: String,
    /// Model family.
    pub family: Option<String>,
    /// Weight format label.
    pub quantization: Option<String>,
    /// Target.
    pub target: Option<PackageTarget>,
    /// Source repository (else the stage file's, else the hub cache path's).
    pub source_repo: Option<String>,
    /// Source revision.
    pub source_revision: Option<String>,
    /// Manifest stages added to the stage file's.
    pub extra_stages: BTreeMap<String, serde_json::Value>,
    /// The writing tool.
    pub created_by: CreatedBy,
    /// Sign with this key.
    pub sign_with: Option<SecretKey>,
}

/// A directory ready to be written as an archive.
pub struct Package {
    /// The manifest fields.
    pub spec: PackageSpec,
    /// The files, sorted by archive path.
    pub inputs: Vec<InputFile>,
    /// Compression.
    pub compression: Compression,
    /// Files of the directory left out because it is a hub download: its kernel libraries
    /// (`lib/`), which nobody this machine trusts built ([`HUB_KERNELS_LEFT_OUT`]).
    pub left_out: Vec<String>,
}

/// Why [`Package::left_out`] is not empty: packaging signs the archive with the user's key,
/// which the user's own tools trust, so a library that came from a hub repository would be
/// loaded as if the user had built it (docs/security.md).
pub const HUB_KERNELS_LEFT_OUT: &str =
    "a hub download's kernel libraries are never packaged (only `alc build` makes kernels \
     that are signed)";

impl Package {
    /// The conventional archive file name.
    pub fn file_name(&self) -> String {
        self.spec.file_name(self.compression == Compression::Zstd)
    }

    /// Bytes of the input files.
    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .map(|i| std::fs::metadata(&i.source).map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Writes the archive to `out` (progress: `2 ×` [`Package::input_bytes`] in all).
    pub fn write(&self, out: &Path, progress: Progress<'_>) -> Result<Manifest> {
        write_archive(&self.spec, &self.inputs, out, self.compression, progress)
    }
}

/// Reads `dir` (files, stage record, checkpoint config) into a [`Package`].
pub fn plan(dir: &Path, opts: &PackageOptions) -> Result<Package> {
    if !dir.is_dir() {
        return Err(Error::Input {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let stage = StageFile::read(dir)?.unwrap_or_default();
    let mut inputs = collect_inputs(dir, &glob_set(&opts.exclude)?)?;
    let mut left_out = Vec::new();
    if is_hub_download(dir) {
        let kernels = format!("{}/", ava_core::kernel_table::LIB_DIR);
        inputs.retain(|input| {
            let keep = !input.path.starts_with(&kernels);
            if !keep {
                left_out.push(input.path.clone());
            }
            keep
        });
    }
    let checkpoint = if dir.join(CONFIG_FILE).is_file() {
        Some(Checkpoint::open(dir)?)
    } else {
        None
    };
    let mut spec = package_spec(opts, dir, stage, checkpoint.as_ref())?;
    spec.sign_with = opts.sign_with.clone();
    let compression = if opts.zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok(Package {
        spec,
        inputs,
        compression,
        left_out,
    })
}

/// Folder `huggingface_hub` (and `alc download --local-dir`) keeps beside a local-dir
/// download.
const HF_LOCAL_DIR_METADATA: &str = ".cache/huggingface";

/// Whether `dir` is a hub download: a snapshot of the hub cache, or a `--local-dir` download.
fn is_hub_download(dir: &Path) -> bool {
    hub_source(dir).revision.is_some() || dir.join(HF_LOCAL_DIR_METADATA).is_dir()
}

/// Packages `dir` into `out_dir` under its conventional name; returns the archive's path and
/// manifest.
pub fn package(dir: &Path, out_dir: &Path, opts: &PackageOptions) -> Result<(PathBuf, Manifest)> {
    let p = plan(dir, opts)?;
    let out = out_dir.join(p.file_name());
    let manifest = p.write(&out, &mut |_| {})?;
    Ok((out, manifest))
}

/// Compiles exclusion patterns; `*` does not cross `/`.
fn glob_set(patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Input {
                path: PathBuf::from(pattern),
                reason: format!("bad exclusion pattern: {e}"),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| Error::Input {
        path: PathBuf::new(),
        reason: format!("bad exclusion patterns: {e}"),
    })
}

/// Every regular file under `dir` (symlinks followed, as in a hub snapshot), hidden entries
/// and the stage file skipped, sorted by archive path.
fn collect_inputs(dir: &Path, exclude: &GlobSet) -> Result<Vec<InputFile>> {
    let mut inputs = Vec::new();
    walk(dir, "", &mut inputs)?;
    inputs.retain(|input| !exclude.is_match(&input.path));
    if inputs.is_empty() {
        return Err(Error::Input {
            path: dir.to_path_buf(),
            reason: "no files to package".into(),
        });
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inputs)
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<InputFile>) -> Result<()> {
    let dir = root.join(prefix);
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
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
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            walk(root, &rel, out)?;
        } else if meta.is_file() {
            let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if PICKLE_EXTENSIONS.contains(&ext) {
                return Err(Error::Input {
                    path,
                    reason: "pickle checkpoints are refused (loading them executes code); \
                             convert to safetensors or remove the file"
                        .into(),
                });
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
    opts: &PackageOptions,
    dir: &Path,
    stage: StageFile,
    checkpoint: Option<&Checkpoint>,
) -> Result<PackageSpec> {
    let missing = |reason: &str| Error::Input {
        path: dir.to_path_buf(),
        reason: reason.into(),
    };
    let family = match (&opts.family, stage.family, checkpoint) {
        (Some(f), _, _) => f.clone(),
        (None, Some(f), _) => f,
        (None, None, Some(ck)) => ck.family()?.name().to_string(),
        (None, None, None) => return Err(missing("no config.json: pass --family")),
    };
    if let Some(ck) = checkpoint {
        check_checkpoint(ck)?;
    }
    let quantization = match (&opts.quantization, stage.quantization, checkpoint) {
        (Some(q), _, _) => q.clone(),
        (None, Some(q), _) => q,
        (None, None, Some(ck)) => weights_quantization(ck),
        (None, None, None) => {
            return Err(missing("cannot tell the quantization: pass --quantization"))
        }
    };
    let name = match (&opts.name, stage.name, checkpoint) {
        (Some(n), _, _) => n.clone(),
        (None, Some(n), _) => n,
        (None, None, Some(ck)) => format!("{family}-{}", size_label(ck.num_parameters())),
        (None, None, None) => return Err(missing("pass --name")),
    };
    let mut source = stage.source.unwrap_or_else(|| hub_source(dir));
    if let Some(repo) = &opts.source_repo {
        source.repository = repo.clone();
    }
    if let Some(rev) = &opts.source_revision {
        source.revision = Some(rev.clone());
    }
    Ok(PackageSpec {
        name,
        version: opts.version.clone(),
        family,
        quantization,
        target: opts.target.or(stage.target).unwrap_or(PackageTarget::Any),
        created_by: opts.created_by.clone(),
        source,
        stages: stage
            .stages
            .into_iter()
            .chain(opts.extra_stages.clone())
            .collect(),
        sign_with: None,
    })
}

/// A checkpoint of a known family must have every tensor its config implies, with the right shape.
fn check_checkpoint(ck: &Checkpoint) -> Result<()> {
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
pub fn hub_source(dir: &Path) -> Source {
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

    #[test]
    fn exclusions_do_not_cross_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("lib")).unwrap();
        for f in ["a.json", "lib/b.json", ".hidden", STAGE_FILE] {
            std::fs::write(dir.path().join(f), b"{}").unwrap();
        }
        let set = glob_set(&["*.json".to_string()]).unwrap();
        let kept: Vec<String> = collect_inputs(dir.path(), &set)
            .unwrap()
            .into_iter()
            .map(|i| i.path)
            .collect();
        assert_eq!(kept, ["lib/b.json"]);
        std::fs::write(dir.path().join("w.pt"), b"").unwrap();
        assert!(collect_inputs(dir.path(), &set).is_err(), "pickle refused");
    }

    /// A directory with a kernel library and a config-less file set (family, name and
    /// quantization come from the options).
    fn model_dir(dir: &Path) {
        std::fs::create_dir_all(dir.join("lib/linux-x86_64")).unwrap();
        for f in ["notes.json", "lib/linux-x86_64/libmodel.so"] {
            std::fs::write(dir.join(f), b"{}").unwrap();
        }
    }

    fn paths(dir: &Path) -> (Vec<String>, Vec<String>) {
        let opts = PackageOptions {
            family: Some("gemma3".into()),
            name: Some("m".into()),
            quantization: Some("f32".into()),
            ..PackageOptions::default()
        };
        let p = plan(dir, &opts).unwrap();
        (p.inputs.into_iter().map(|i| i.path).collect(), p.left_out)
    }

    #[test]
    fn a_hub_downloads_kernels_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let local = tmp.path().join("built");
        model_dir(&local);
        let (kept, left) = paths(&local);
        assert_eq!(kept, ["lib/linux-x86_64/libmodel.so", "notes.json"]);
        assert!(left.is_empty());

        let snapshot = tmp.path().join("hub/models--org--m/snapshots/0123abcd");
        model_dir(&snapshot);
        let local_dir = tmp.path().join("ckpt");
        model_dir(&local_dir);
        std::fs::create_dir_all(local_dir.join(HF_LOCAL_DIR_METADATA)).unwrap();
        for dir in [snapshot, local_dir] {
            let (kept, left) = paths(&dir);
            assert_eq!(kept, ["notes.json"], "{}", dir.display());
            assert_eq!(left, ["lib/linux-x86_64/libmodel.so"]);
        }
    }
}
