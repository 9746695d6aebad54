//! `--local-dir`: plain files plus the metadata `huggingface_hub` keeps beside them, so either tool
//! resumes and skips the other's downloads:
//!
//! ```text
//! {dir}/{path}
//! {dir}/.cache/huggingface/.gitignore                       "*"
//! {dir}/.cache/huggingface/download/{path}.metadata         commit \n etag \n unix time \n
//! {dir}/.cache/huggingface/download/{sub}/{hash}.{etag}.incomplete
//! ```
//!
//! where `{hash}` is the URL-safe base64 of the sha1 of `{name}.metadata`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

use super::cache::write_atomic;
use super::error::{io_err, Result};
use super::repo::{is_commit, normalize_etag};

/// The tool folder inside a local dir.
const HF_DIR: &str = ".cache/huggingface";
/// Where per-file metadata lives, under [`HF_DIR`].
const DOWNLOAD_DIR: &str = "download";
/// Suffix of a metadata file.
const METADATA_SUFFIX: &str = ".metadata";
/// Seconds of slack between the metadata's time and the file's mtime (as `huggingface_hub`).
const MTIME_SLACK_S: f64 = 1.0;

/// Where one file of a local dir and its metadata live.
#[derive(Clone, Debug)]
pub struct LocalPaths {
    /// `{dir}/{path}`.
    pub file: PathBuf,
    /// `{dir}/.cache/huggingface/download/{path}.metadata`.
    pub metadata: PathBuf,
}

impl LocalPaths {
    /// The paths for `file` (a checked repository path) under `dir`.
    pub fn new(dir: &Path, file: &str) -> Self {
        LocalPaths {
            file: dir.join(file),
            metadata: dir
                .join(HF_DIR)
                .join(DOWNLOAD_DIR)
                .join(format!("{file}{METADATA_SUFFIX}")),
        }
    }

    /// The `.incomplete` file of a download of `etag`.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        let name = self
            .metadata
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let hash = base64_url(&Sha1::digest(name.as_bytes()));
        self.metadata
            .with_file_name(format!("{hash}.{etag}{}", super::cache::INCOMPLETE_SUFFIX))
    }
}

/// One metadata file.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub commit: String,
    pub etag: String,
    pub timestamp: f64,
}

/// The metadata of `paths`, if present, well-formed, and the file was not modified after it was
/// written.
pub fn read_metadata(paths: &LocalPaths) -> Option<Metadata> {
    let text = std::fs::read_to_string(&paths.metadata).ok()?;
    let mut lines = text.lines();
    let commit = lines.next()?.trim().to_string();
    let etag = normalize_etag(lines.next()?, "metadata").ok()?;
    let timestamp: f64 = lines.next()?.trim().parse().ok()?;
    let mtime = std::fs::metadata(&paths.file).ok()?.modified().ok()?;
    let mtime = mtime.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let fresh = mtime - MTIME_SLACK_S <= timestamp;
    (is_commit(&commit) && fresh).then_some(Metadata {
        commit,
        etag,
        timestamp,
    })
}

/// Records that `paths.file` is `etag` at `commit`, now.
pub fn write_metadata(dir: &Path, paths: &LocalPaths, commit: &str, etag: &str) -> Result<()> {
    let gitignore = dir.join(HF_DIR).join(".gitignore");
    if !gitignore.exists() {
        write_atomic(&gitignore, b"*")?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    write_atomic(
        &paths.metadata,
        format!("{commit}\n{etag}\n{now}\n").as_bytes(),
    )
}

/// Every file of a local dir that has fresh metadata, as (repository path, metadata), sorted.
pub fn list(dir: &Path) -> Result<Vec<(String, Metadata)>> {
    let root = dir.join(HF_DIR).join(DOWNLOAD_DIR);
    let mut names = Vec::new();
    if root.is_dir() {
        walk(&root, "", &mut names)?;
    }
    let mut out: Vec<(String, Metadata)> = names
        .into_iter()
        .filter_map(|meta_name| {
            let file = meta_name.strip_suffix(METADATA_SUFFIX)?.to_string();
            let meta = read_metadata(&LocalPaths::new(dir, &file))?;
            Some((file, meta))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let here = root.join(prefix);
    for entry in std::fs::read_dir(&here).map_err(io_err(&here))? {
        let entry = entry.map_err(io_err(&here))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type().map_err(io_err(entry.path()))?.is_dir() {
            walk(root, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// URL-safe base64 with padding (Python's `base64.urlsafe_b64encode`).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_python() {
        // base64.urlsafe_b64encode(b"\xfb\xff\x00ab").decode()
        assert_eq!(base64_url(b"\xfb\xff\x00ab"), "-_8AYWI=");
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"a"), "YQ==");
    }

    #[test]
    fn metadata_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LocalPaths::new(dir.path(), "sub/a.json");
        assert!(paths
            .metadata
            .ends_with(".cache/huggingface/download/sub/a.json.metadata"));
        assert!(read_metadata(&paths).is_none());
        write_atomic(&paths.file, b"{}").unwrap();
        let commit = "b".repeat(40);
        write_metadata(dir.path(), &paths, &commit, "etag1").unwrap();
        let meta = read_metadata(&paths).unwrap();
        assert_eq!(
            (meta.commit.as_str(), meta.etag.as_str()),
            (commit.as_str(), "etag1")
        );
        assert_eq!(list(dir.path()).unwrap().len(), 1);
        let inc = paths.incomplete("e");
        assert!(inc.to_string_lossy().ends_with(".e.incomplete"), "{inc:?}");
        assert_eq!(inc.parent(), paths.metadata.parent());
    }
}
