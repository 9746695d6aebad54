//! The `huggingface_hub` cache layout, read and written byte for byte the same way:
//!
//! ```text
//! {cache}/models--{org}--{name}/
//!     blobs/{etag}                 verified content, named by etag
//!     blobs/{etag}.incomplete      a download in progress (resumed from its length)
//!     refs/{revision}              the commit a branch or tag resolved to (no newline)
//!     snapshots/{commit}/{path}    relative symlink to ../../blobs/{etag}
//! ```

use std::path::{Path, PathBuf};

use super::error::{io_err, Error, Result};
use super::repo::{is_commit, RepoId};

/// Folder of content files.
const BLOBS: &str = "blobs";
/// Folder of revision name -> commit files.
const REFS: &str = "refs";
/// Folder of per-commit trees of symlinks.
const SNAPSHOTS: &str = "snapshots";
/// Suffix of a download in progress.
pub const INCOMPLETE_SUFFIX: &str = ".incomplete";

/// One repository's folder in the cache.
#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    /// `{cache_dir}/models--{org}--{name}`.
    pub fn new(cache_dir: &Path, repo: &RepoId) -> Self {
        RepoCache {
            root: cache_dir.join(repo.folder_name()),
        }
    }

    /// `blobs/{etag}`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join(BLOBS).join(etag)
    }

    /// `blobs/{etag}.incomplete`.
    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root
            .join(BLOBS)
            .join(format!("{etag}{INCOMPLETE_SUFFIX}"))
    }

    /// `snapshots/{commit}`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join(SNAPSHOTS).join(commit)
    }

    /// `snapshots/{commit}/{path}`.
    pub fn pointer(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot(commit).join(file)
    }

    /// The commit `refs/{revision}` names, if that file exists.
    pub fn read_ref(&self, revision: &str) -> Result<Option<String>> {
        let path = self.root.join(REFS).join(revision);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let commit = text.trim();
                if !is_commit(commit) {
                    return Err(Error::Io {
                        path,
                        source: std::io::Error::other("not a commit sha"),
                    });
                }
                Ok(Some(commit.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Writes `refs/{revision}` (unless `revision` is the commit itself, as `huggingface_hub`).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit || self.read_ref(revision)?.as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.root.join(REFS).join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// Makes `snapshots/{commit}/{file}` a relative symlink to `blobs/{etag}` (a copy where
    /// symlinks are unavailable), replacing whatever was there.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<()> {
        let pointer = self.pointer(commit, file);
        let parent = pointer.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let depth = file.split('/').count() + 1;
        let target = format!("{}{BLOBS}/{etag}", "../".repeat(depth));
        let tmp = temp_name(&pointer);
        let _ = std::fs::remove_file(&tmp);
        make_link(&target, &self.blob(etag), &tmp)?;
        std::fs::rename(&tmp, &pointer).map_err(io_err(&pointer))
    }

    /// The etag a snapshot pointer links to (`None` when it is a plain file).
    pub fn pointer_etag(pointer: &Path) -> Option<String> {
        let target = std::fs::read_link(pointer).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Every file of a cached snapshot, as `/`-separated paths, sorted; a pointer whose blob is
    /// gone is an error naming it.
    pub fn snapshot_files(&self, commit: &str) -> Result<Vec<String>> {
        let dir = self.snapshot(commit);
        let mut files = Vec::new();
        walk(&dir, "", &mut files)?;
        for file in &files {
            if !dir.join(file).exists() {
                return Err(Error::Offline(format!(
                    "{file} is in the cached snapshot {} but its blob is missing",
                    dir.display()
                )));
            }
        }
        files.sort();
        Ok(files)
    }
}

fn walk(root: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = root.join(prefix);
    for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type().map_err(io_err(entry.path()))?;
        if kind.is_dir() {
            walk(root, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// `{path}.tmp.{pid}.{n}` beside `path`, unique within the process (download workers may
/// write the same file at once: each renames its own copy).
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}.{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` under a temporary name and renames it to `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(unix)]
fn make_link(target: &str, _blob: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).map_err(io_err(at))
}

#[cfg(not(unix))]
fn make_link(_target: &str, blob: &Path, at: &Path) -> Result<()> {
    std::fs::copy(blob, at).map(|_| ()).map_err(io_err(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId::parse("org/name").unwrap();
        let cache = RepoCache::new(dir.path(), &repo);
        let commit = "a".repeat(40);
        write_atomic(&cache.blob("e1"), b"x").unwrap();
        cache.link(&commit, "sub/f.json", "e1").unwrap();
        let pointer = cache.pointer(&commit, "sub/f.json");
        assert_eq!(std::fs::read(&pointer).unwrap(), b"x");
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&pointer).unwrap(),
            Path::new("../../../blobs/e1")
        );
        assert_eq!(RepoCache::pointer_etag(&pointer).as_deref(), Some("e1"));
        cache.link(&commit, "sub/f.json", "e1").unwrap();
        assert_eq!(cache.snapshot_files(&commit).unwrap(), vec!["sub/f.json"]);

        assert_eq!(cache.read_ref("main").unwrap(), None);
        cache.write_ref("main", &commit).unwrap();
        cache.write_ref(&commit, &commit).unwrap();
        assert_eq!(cache.read_ref("main").unwrap(), Some(commit.clone()));
        let refs = dir.path().join("models--org--name/refs");
        assert_eq!(std::fs::read_dir(refs).unwrap().count(), 1);
    }
}
