//! An opened, verified archive: an uncompressed `.tar` mapped into memory (weights are sliced
//! in place, nothing is extracted) or an unpacked archive directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ava_core::{SafetensorsFile, TensorInfo, TensorView};
use ava_packaging::{reader, Manifest, Role, Signer};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::policy::{KernelPolicy, Permission};

/// Where an archive's bytes live.
enum Storage {
    /// One mapped `.tar`; entries are ranges of it.
    Tar(Arc<Mmap>),
    /// An unpacked directory; each entry mapped on its own.
    Dir(BTreeMap<String, Arc<Mmap>>),
}

/// A tensor inside a weights entry.
struct TensorSlot {
    entry: String,
    info: TensorInfo,
    range: Range<usize>,
}

/// A verified archive whose entries and tensors can be read without copying.
pub struct Package {
    path: PathBuf,
    manifest: Manifest,
    storage: Storage,
    entries: BTreeMap<String, Range<usize>>,
    tensors: BTreeMap<String, TensorSlot>,
    signer: Option<Signer>,
    kernels: Permission,
}

impl Package {
    /// Opens and verifies an archive (`.tar`) or an unpacked archive directory.
    ///
    /// Every entry's sha256 is checked against the manifest before this returns, and the
    /// signature of a signed archive too. Its kernel library may be loaded only when the
    /// default policy allows it (never: see [`Package::open_with_policy`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_policy(path, &KernelPolicy::default())
    }

    /// [`Package::open`], judging the archive's kernel library by `policy`.
    pub fn open_with_policy(path: &Path, policy: &KernelPolicy) -> Result<Self> {
        let (verified, storage, entries) = if path.is_dir() {
            open_dir(path)?
        } else {
            open_tar(path)?
        };
        let kernels = policy.judge(verified.signer.as_ref());
        let mut package = Package {
            path: path.to_path_buf(),
            manifest: verified.manifest,
            storage,
            entries,
            tensors: BTreeMap::new(),
            signer: verified.signer,
            kernels,
        };
        package.index_tensors()?;
        Ok(package)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Who signed the archive (its signature checked out), `None` when unsigned.
    pub fn signer(&self) -> Option<&Signer> {
        self.signer.as_ref()
    }

    /// Whether the policy the archive was opened with lets its kernel library load.
    pub fn kernel_permission(&self) -> &Permission {
        &self.kernels
    }

    /// A kernel library entry to load: its bytes and recorded sha256, if the policy allows.
    pub(crate) fn library_entry(&self, path: &str) -> Result<crate::tvm::LibraryEntry<'_>> {
        self.kernels.clone().map_err(Error::KernelsRefused)?;
        let file = self.manifest.file(path).ok_or_else(|| Error::MissingFile {
            path: self.path.join(path),
        })?;
        let bytes = self.entry(path).ok_or_else(|| Error::MissingFile {
            path: self.path.join(path),
        })?;
        Ok(crate::tvm::LibraryEntry {
            label: self.path.join(path),
            bytes,
            sha256: &file.sha256,
        })
    }

    /// The bytes of an entry, borrowed from the mapping.
    pub fn entry(&self, path: &str) -> Option<&[u8]> {
        match &self.storage {
            Storage::Tar(map) => self.entries.get(path).map(|r| &map[r.clone()]),
            Storage::Dir(maps) => maps.get(path).map(|m| &m[..]),
        }
    }

    /// The mapping that holds `bytes` (a slice this package handed out) and their offset in it,
    /// so weights can be used in place for as long as the mapping lives.
    pub fn mapping_of(&self, bytes: &[u8]) -> Option<(Arc<Mmap>, usize)> {
        let inside = |map: &Arc<Mmap>| {
            let start = map.as_ptr() as usize;
            let at = bytes.as_ptr() as usize;
            (at >= start && at + bytes.len() <= start + map.len())
                .then(|| (map.clone(), at - start))
        };
        match &self.storage {
            Storage::Tar(map) => inside(map),
            Storage::Dir(maps) => maps.values().find_map(inside),
        }
    }

    /// Offset of an entry's data inside the mapped `.tar` (`None` for directories).
    pub fn entry_offset(&self, path: &str) -> Option<u64> {
        match self.storage {
            Storage::Tar(_) => self.entries.get(path).map(|r| r.start as u64),
            Storage::Dir(_) => None,
        }
    }

    /// A tensor from any weights entry in safetensors format, borrowed in place.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let slot = self.tensors.get(name)?;
        let bytes = self.entry(&slot.entry)?;
        Some(TensorView {
            name: &slot.info.name,
            dtype: slot.info.dtype,
            shape: &slot.info.shape,
            data: bytes.get(slot.range.clone())?,
        })
    }

    /// Drops the archive's pages from this process's residency (advice only): what was read
    /// while opening (the tokenizer, the kernel library) stops counting, and the weights are
    /// faulted in again from the file as the model touches them.
    pub fn release_pages(&self) {
        match &self.storage {
            Storage::Tar(map) => release_pages(map),
            Storage::Dir(maps) => maps.values().for_each(|m| release_pages(m)),
        }
    }

    /// Names of all tensors, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    fn index_tensors(&mut self) -> Result<()> {
        let weights: Vec<String> = self
            .manifest
            .files
            .iter()
            .filter(|f| f.role == Role::Weights && f.path.ends_with(".safetensors"))
            .map(|f| f.path.clone())
            .collect();
        let mut tensors = BTreeMap::new();
        for entry in weights {
            let Some(bytes) = self.entry(&entry) else {
                continue;
            };
            let label = self.path.join(&entry);
            for (info, range) in SafetensorsFile::parse_header(&label, bytes)? {
                if let Some(prev) = tensors.get(&info.name) {
                    let prev: &TensorSlot = prev;
                    return Err(Error::DuplicateTensor {
                        name: info.name.clone(),
                        first: prev.entry.clone(),
                        second: entry.clone(),
                    });
                }
                tensors.insert(
                    info.name.clone(),
                    TensorSlot {
                        entry: entry.clone(),
                        info,
                        range,
                    },
                );
            }
        }
        self.tensors = tensors;
        Ok(())
    }
}

type Opened = (reader::Verified, Storage, BTreeMap<String, Range<usize>>);

fn open_tar(path: &Path) -> Result<Opened> {
    if reader::is_zstd(path)? {
        return Err(Error::Compressed {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // SAFETY: the mapping is read-only; the archive must not be modified while it is open
    // (the same contract as every memory-mapped model loader). Contents are verified below.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut entries = BTreeMap::new();
    let verified =
        reader::scan_signed(path, Cursor::new(&map[..]), None, &mut |file, offset, _| {
            let start = offset as usize;
            entries.insert(file.path.clone(), start..start + file.size as usize);
            Ok(())
        })?;
    release_pages(&map);
    Ok((verified, Storage::Tar(Arc::new(map)), entries))
}

/// Verification read every page of the archive: hand them back, so that the process keeps
/// resident only what the model touches afterwards (the pages are read again from the file on
/// first use). Advice only: a failure changes nothing.
fn release_pages(map: &Mmap) {
    #[cfg(unix)]
    // SAFETY: the mapping is read-only and private and was never written: MADV_DONTNEED only
    // drops pages from residency, and later reads fault them in again from the unchanged file,
    // so every slice into the mapping keeps its contents.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    #[cfg(not(unix))]
    let _ = map;
}

fn open_dir(dir: &Path) -> Result<Opened> {
    let verified = ava_packaging::verify_dir_signed(dir)?;
    let mut maps = BTreeMap::new();
    for file in &verified.manifest.files {
        let path = dir.join(&file.path);
        let handle = File::open(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        // SAFETY: read-only mapping of a verified file; see `open_tar`.
        let map = unsafe { Mmap::map(&handle) }.map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        maps.insert(file.path.clone(), Arc::new(map));
    }
    Ok((verified, Storage::Dir(maps), BTreeMap::new()))
}
