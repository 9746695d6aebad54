//! Output directories written under a temporary name beside their destination and renamed into
//! place only when complete: an interrupted or failed run leaves nothing under the final name.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ava_core::partial::temp_prefix;

use crate::output;

/// A temporary directory beside the final output, removed on drop unless persisted.
pub struct PartialDir(PathBuf);

impl PartialDir {
    /// Creates `.ava-partial-<pid>-<name>` beside `output` (same file system: the rename is
    /// atomic); the leftovers of killed runs there are removed first.
    pub fn beside(output: &Path) -> anyhow::Result<Self> {
        let name = output
            .file_name()
            .with_context(|| format!("{}: not a directory name", output.display()))?;
        let parent = output::parent_dir(output);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        output::clean_stale(&parent);
        output::watch(&parent);
        let dir = parent.join(format!("{}{}", temp_prefix(), name.to_string_lossy()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(PartialDir(dir))
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Renames the directory to `to`. Whatever is at `to` (the caller has checked that it may
    /// be replaced) is moved aside first and removed afterwards.
    pub fn persist(self, to: &Path) -> anyhow::Result<()> {
        let old = if to.symlink_metadata().is_ok() {
            let aside = self.0.with_file_name(format!(
                "{}old-{}",
                temp_prefix(),
                to.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::rename(to, &aside).with_context(|| format!("replacing {}", to.display()))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.0, to) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, to);
            }
            return Err(e).with_context(|| format!("moving {} into place", to.display()));
        }
        std::mem::forget(self);
        if let Some(old) = old {
            output::remove_entry(&old);
        }
        Ok(())
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
