//! Where a model's files come from: an archive (mapped `.tar` or unpacked directory with a
//! manifest) or a plain Hugging Face checkpoint directory.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ava_core::checkpoint::CONFIG_FILE;
use ava_core::{Checkpoint, TensorView};
use ava_packaging::MANIFEST_NAME;

use crate::error::{Error, Result};
use crate::package::Package;
use crate::policy::{checkpoint_permission, KernelPolicy, Permission};

/// An opened model: tensors by name plus side files (`config.json`, `tokenizer.json`).
pub enum ModelSource {
    /// A verified archive.
    Package(Box<Package>),
    /// A checkpoint directory (validated safetensors, no manifest).
    Checkpoint(Checkpoint),
}

impl ModelSource {
    /// Opens `path`: an archive file, an unpacked archive (a directory with `manifest.json`),
    /// or a checkpoint directory. No kernel library of it will be loaded (the default policy).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_policy(path, &KernelPolicy::default())
    }

    /// [`ModelSource::open`], judging an archive's kernel library by `policy`.
    pub fn open_with_policy(path: &Path, policy: &KernelPolicy) -> Result<Self> {
        if path.is_dir() && !path.join(MANIFEST_NAME).is_file() {
            return Ok(ModelSource::Checkpoint(Checkpoint::open(path)?));
        }
        if !path.exists() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            });
        }
        Ok(ModelSource::Package(Box::new(Package::open_with_policy(
            path, policy,
        )?)))
    }

    /// Whether the model's kernel library may be loaded, and why (not).
    pub fn kernel_permission(&self) -> Permission {
        match self {
            ModelSource::Package(p) => p.kernel_permission().clone(),
            ModelSource::Checkpoint(_) => checkpoint_permission(),
        }
    }

    /// A kernel library entry to load, if the policy allows.
    pub(crate) fn library_entry(&self, path: &str) -> Result<crate::tvm::LibraryEntry<'_>> {
        match self {
            ModelSource::Package(p) => p.library_entry(path),
            ModelSource::Checkpoint(_) => {
                Err(Error::KernelsRefused(checkpoint_permission().unwrap_err()))
            }
        }
    }

    /// A tensor by full name.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        match self {
            ModelSource::Package(p) => p.tensor(name),
            ModelSource::Checkpoint(c) => c.tensor(name).ok(),
        }
    }

    /// The mapping that holds a tensor's bytes, when they can be used in place (archives).
    pub fn mapping_of(&self, bytes: &[u8]) -> Option<(std::sync::Arc<memmap2::Mmap>, usize)> {
        match self {
            ModelSource::Package(p) => p.mapping_of(bytes),
            ModelSource::Checkpoint(_) => None,
        }
    }

    /// A side file's bytes (`config.json`, `tokenizer.json`, ...).
    pub fn file(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        match self {
            ModelSource::Package(p) => p.entry(name).map(Cow::Borrowed),
            ModelSource::Checkpoint(c) => std::fs::read(c.dir().join(name)).ok().map(Cow::Owned),
        }
    }

    /// Drops an archive's mapped pages from residency ([`Package::release_pages`]); nothing
    /// for a checkpoint directory.
    pub fn release_pages(&self) {
        if let ModelSource::Package(p) = self {
            p.release_pages();
        }
    }

    /// A path naming a file of this model in messages.
    pub fn label(&self, name: &str) -> PathBuf {
        match self {
            ModelSource::Package(p) => p.path().join(name),
            ModelSource::Checkpoint(c) => c.dir().join(name),
        }
    }

    /// `config.json`, parsed.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        let path = self.label(CONFIG_FILE);
        let bytes = self
            .file(CONFIG_FILE)
            .ok_or_else(|| Error::MissingFile { path: path.clone() })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Model(format!("{}: {e}", path.display())))
    }
}
