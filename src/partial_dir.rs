//! Output directories written under a temporary name beside their destination and renamed into
//! place only when complete: an interrupted or failed run leaves nothing under the final name.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A temporary directory beside the final output, removed on drop unless persisted.
pub struct PartialDir(PathBuf);

impl PartialDir {
    /// Creates `.{name}.partial-{pid}` beside `output` (same file system: the rename is atomic).
    pub fn beside(output: &Path) -> anyhow::Result<Self> {
        let name = output
            .file_name()
            .with_context(|| format!("{}: not a directory name", output.display()))?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = parent.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(PartialDir(dir))
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Renames the directory to `to`.
    pub fn persist(self, to: &Path) -> anyhow::Result<()> {
        std::fs::rename(&self.0, to)
            .with_context(|| format!("moving {} into place", to.display()))?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
