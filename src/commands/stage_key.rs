//! Cached pipeline stages (`alc compile`, `aon compile`): content keys (sha256 over the stage
//! name, the tool's version and commit, and the stage's inputs) and filling a stage directory.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

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
    let tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    work(tmp.path()).with_context(|| label.to_string())?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, dir) {
        let _ = std::fs::remove_dir_all(&kept);
        if !dir.is_dir() {
            return Err(e).with_context(|| format!("writing {}", dir.display()));
        }
    }
    Ok(())
}
