//! What `compile` names its archives after and how it keeps them from colliding.
//!
//! An archive's name comes from its source: the repository name of a hub id
//! (`google/gemma-3-270m-it` -> `gemma-3-270m-it`), the directory name of a checkpoint, the file
//! stem of a `.gguf`. Two sources that share a name still never replace each other's archives:
//! an archive already in `-o` whose manifest records another source stops the command, unless
//! `--force`. `--package-version auto` picks one above the highest version of the same name in
//! `-o`.

use std::path::{Component, Path};
use std::str::FromStr;

use anyhow::bail;
use ava_packaging::naming::slug;
use ava_packaging::naming::{TAR_EXTENSION, TAR_ZST_EXTENSION};
use ava_packaging::Source;

/// The version given to `--package-version`: a number, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageVersion {
    /// This version.
    Fixed(u64),
    /// One above the highest version of the same name in the output directory (1 if none).
    Auto,
}

impl FromStr for PackageVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(PackageVersion::Auto);
        }
        match s.trim_start_matches('v').parse::<u64>() {
            Ok(n) if n > 0 => Ok(PackageVersion::Fixed(n)),
            _ => Err(format!(
                "`{s}` is not a version: a number from 1, or `auto`"
            )),
        }
    }
}

/// The archive name of a compile source: repository name, directory name or file stem.
pub fn source_name(source: &str) -> String {
    let path = Path::new(source);
    let last = if source.to_ascii_lowercase().ends_with(".gguf") {
        // A GGUF file, local or named in a repository by `--gguf`.
        path.file_stem().map(|s| s.to_string_lossy().into_owned())
    } else if path.exists() {
        // `.` or `dir/..` name nothing by themselves: the directory they mean does.
        let named = path
            .components()
            .next_back()
            .is_some_and(|c| matches!(c, Component::Normal(_)));
        let owned;
        let p = if named {
            path
        } else {
            owned = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            &owned
        };
        p.file_name().map(|s| s.to_string_lossy().into_owned())
    } else {
        // A hub id, `org/name[@REV]`.
        let id = source.split('@').next().unwrap_or(source);
        id.rsplit('/').next().map(str::to_string)
    };
    let name = slug(&last.unwrap_or_default());
    if name.is_empty() {
        "model".to_string()
    } else {
        name
    }
}

/// The version the archives of `name` get in `dir` for these targets (`linux-x86_64`, `any`).
pub fn resolve_version(
    version: PackageVersion,
    dir: &Path,
    name: &str,
    quantization: &str,
    targets: &[&str],
) -> u64 {
    match version {
        PackageVersion::Fixed(n) => n,
        PackageVersion::Auto => highest_version(dir, name, quantization, targets) + 1,
    }
}

/// The highest `vN` of an archive of `name` (any of `targets`) in `dir`; 0 when none.
fn highest_version(dir: &Path, name: &str, quantization: &str, targets: &[&str]) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let prefixes: Vec<String> = targets
        .iter()
        .map(|t| format!("{}-{}-{t}-v", slug(name), slug(quantization)))
        .collect();
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = prefixes
                .iter()
                .find_map(|p| file.strip_prefix(p.as_str()))?;
            let number = rest
                .strip_suffix(TAR_ZST_EXTENSION)
                .or_else(|| rest.strip_suffix(TAR_EXTENSION))?;
            number.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Fails when `dest` is an archive made from a source other than `source` (`--force` replaces
/// it anyway). Archives whose manifest cannot be read are reported as such.
pub fn check_replace(dest: &Path, source: &Source, force: bool) -> anyhow::Result<()> {
    if force || !dest.exists() {
        return Ok(());
    }
    let existing = match ava_packaging::read_manifest(dest) {
        Ok(m) => m.source,
        Err(e) => bail!(
            "{} exists and is not a readable archive ({e}); remove it or pass --force",
            dest.display()
        ),
    };
    if existing.repository == source.repository && existing.revision == source.revision {
        return Ok(());
    }
    bail!(
        "{} exists and was made from another source ({}); pass --force to replace it, or \
         --package-version auto for a new version",
        dest.display(),
        describe(&existing)
    )
}

/// `repository@revision` of a source (`local` sources show their content digest).
pub fn describe(source: &Source) -> String {
    match &source.revision {
        Some(rev) => format!("{}@{rev}", source.repository),
        None => source.repository.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_source() {
        assert_eq!(source_name("google/gemma-3-270m-it"), "gemma-3-270m-it");
        assert_eq!(source_name("google/gemma-3-270m@abc"), "gemma-3-270m");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("My Model");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(source_name(dir.to_str().unwrap()), "my-model");
        let gguf = tmp.path().join("gemma-3-270m-Q4_K_M.gguf");
        std::fs::write(&gguf, b"").unwrap();
        assert_eq!(source_name(gguf.to_str().unwrap()), "gemma-3-270m-q4_k_m");
        assert_eq!(
            source_name("Q8/gemma-3-270m-Q8_0.gguf"),
            "gemma-3-270m-q8_0"
        );
        assert_eq!(
            source_name(dir.join(".").to_str().unwrap()),
            "my-model",
            "`.` names its directory"
        );
    }

    #[test]
    fn versions() {
        assert_eq!("3".parse(), Ok(PackageVersion::Fixed(3)));
        assert_eq!("auto".parse(), Ok(PackageVersion::Auto));
        assert!("0".parse::<PackageVersion>().is_err());
        assert!("x".parse::<PackageVersion>().is_err());
        let tmp = tempfile::tempdir().unwrap();
        let t = ["linux-x86_64"];
        let auto = |dir: &Path| resolve_version(PackageVersion::Auto, dir, "m", "q4bf16", &t);
        assert_eq!(auto(tmp.path()), 1);
        assert_eq!(auto(&tmp.path().join("missing")), 1);
        for f in [
            "m-q4bf16-linux-x86_64-v2.tar",
            "m-q4bf16-linux-x86_64-v7.tar.zst",
            "m-f32-linux-x86_64-v9.tar",
            "other-q4bf16-linux-x86_64-v12.tar",
            "m-q4bf16-linux-arm64-v11.tar",
        ] {
            std::fs::write(tmp.path().join(f), b"").unwrap();
        }
        assert_eq!(auto(tmp.path()), 8);
    }
}
