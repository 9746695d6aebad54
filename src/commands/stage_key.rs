//! Cached pipeline stages (`alc compile`, `aon compile`): content keys (sha256 over the stage
//! name, the tool's version and commit, and the stage's inputs), filling a stage directory, and
//! checking an entry before reuse: every entry records the size and sha256 of each of its files
//! in [`DIGEST_FILE`], and an entry that no longer matches is removed and rebuilt.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use ava_core::partial::temp_prefix;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The record of a cache entry's files, at the entry's top level.
pub(crate) const DIGEST_FILE: &str = "ava-cache.json";
/// Read buffer of file hashing.
const HASH_BUFFER: usize = 1 << 20;

/// Size and sha256 of one file of a cache entry.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileDigest {
    size: u64,
    sha256: String,
}

/// A stage key: sha256 over the stage name, the tool version and the stage's inputs.
pub(crate) struct Hasher(Sha256);

impl Hasher {
    pub(crate) fn new(stage: &str) -> Self {
        let mut h = Hasher(Sha256::new());
        h.text(stage);
        h.text(env!("CARGO_PKG_VERSION"));
        h.text(crate::GIT_COMMIT);
        h
    }

    /// Adds a length-prefixed string (so concatenations cannot collide).
    pub(crate) fn text(&mut self, s: &str) {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
    }

    /// Adds a file's content.
    pub(crate) fn file(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            len += n as u64;
            self.0.update(&buf[..n]);
        }
        self.0.update(len.to_le_bytes());
        Ok(())
    }

    pub(crate) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// Key of a source directory: its files' names and contents (hidden entries skipped, symlinks
/// followed, as in a hub snapshot), sorted by name.
pub(crate) fn hash_dir(dir: &Path) -> anyhow::Result<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    let mut h = Hasher::new("source");
    for name in names {
        h.text(&name.to_string_lossy());
        h.file(&dir.join(&name))?;
    }
    Ok(h.finish())
}

/// Runs `work` into a private directory beside `dir` and renames it into place, so a cache
/// never holds half a stage. Another run finishing the same stage first is as good.
pub(crate) fn fill_stage(
    dir: &Path,
    label: &str,
    work: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = dir.parent().context("stage directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    crate::output::clean_stale(parent);
    crate::output::watch(parent);
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    work(tmp.path()).with_context(|| label.to_string())?;
    let record = digests(tmp.path())?;
    let path = tmp.path().join(DIGEST_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dir) {
        let _ = std::fs::remove_dir_all(&kept);
        if !dir.is_dir() {
            return Err(e).with_context(|| format!("writing {}", dir.display()));
        }
    }
    Ok(())
}

/// Whether the cache entry `dir` may be reused: it exists and its files match its record. An
/// entry that exists but does not match (damaged, or written before records existed) is
/// removed, with a note through `note`, so that the caller rebuilds it.
pub(crate) fn reusable(dir: &Path, note: &dyn Fn(String)) -> bool {
    if !dir.is_dir() {
        return false;
    }
    match check_entry(dir) {
        Ok(()) => return true,
        Err(e) => note(format!("{}: {e:#}; rebuilding it", dir.display())),
    }
    // Moved aside first: a concurrent reader never sees a half-removed entry under its name.
    let aside = dir.with_file_name(format!("{}stale", temp_prefix()));
    if std::fs::rename(dir, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
    false
}

/// Compares a cache entry's files with its record.
fn check_entry(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(DIGEST_FILE);
    let text = std::fs::read(&path).context("no record of its files")?;
    let recorded: BTreeMap<String, FileDigest> =
        serde_json::from_slice(&text).context("unreadable record of its files")?;
    let present = digests(dir)?;
    for (name, want) in &recorded {
        match present.get(name) {
            None => bail!("{name} is missing"),
            Some(got) if got != want => bail!("{name} does not match its recorded sha256"),
            Some(_) => {}
        }
    }
    if let Some(extra) = present.keys().find(|k| !recorded.contains_key(*k)) {
        bail!("{extra} is not part of the entry");
    }
    Ok(())
}

/// Size and sha256 of every file under `dir` (relative paths with `/`), except the record.
fn digests(dir: &Path) -> anyhow::Result<BTreeMap<String, FileDigest>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel == DIGEST_FILE {
                continue;
            }
            if !kind.is_file() {
                bail!("{rel} is not a regular file");
            }
            out.insert(rel, file_digest(&path)?);
        }
    }
    Ok(out)
}

fn file_digest(path: &Path) -> anyhow::Result<FileDigest> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut h, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; HASH_BUFFER]);
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(h.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_entries_are_rebuilt() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("stage").join("key");
        let fill = |out: &Path| {
            std::fs::create_dir(out.join("checkpoint"))?;
            std::fs::write(out.join("checkpoint/model.bin"), b"weights")?;
            Ok(())
        };
        fill_stage(&dir, "test", fill).unwrap();
        assert!(reusable(&dir, &|_| {}));
        std::fs::write(dir.join("checkpoint/model.bin"), b"weightz").unwrap();
        let notes = std::cell::RefCell::new(Vec::new());
        assert!(!reusable(&dir, &|m| notes.borrow_mut().push(m)));
        assert!(!dir.exists(), "a damaged entry is removed");
        assert!(notes.borrow()[0].contains("checkpoint/model.bin"));
        fill_stage(&dir, "test", fill).unwrap();
        std::fs::write(dir.join("checkpoint/extra"), b"").unwrap();
        assert!(!reusable(&dir, &|_| {}), "an added file damages it too");
    }
}
