//! Unpacked archives: a directory holding `manifest.json` and the files it lists.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};
use crate::hashing::sha256_reader;
use crate::manifest::{Manifest, MANIFEST_NAME};
use crate::reader::{Verified, MAX_ENTRIES, MAX_MANIFEST_BYTES};
use crate::signing::{check_signature, MAX_SIGNATURE_BYTES, SIGNATURE_NAME};

/// Reads and validates `dir/manifest.json`.
pub fn read_dir_manifest(dir: &Path) -> Result<Manifest> {
    read_dir_signed(dir).map(|v| v.manifest)
}

/// Reads and validates `dir/manifest.json` and, when the manifest says the archive is signed,
/// `dir/manifest.sig`, whose signature must check out.
pub fn read_dir_signed(dir: &Path) -> Result<Verified> {
    let json = read_small(dir, MANIFEST_NAME, MAX_MANIFEST_BYTES)?;
    let bad = |reason: String| Error::Manifest {
        archive: dir.into(),
        reason,
    };
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("{MANIFEST_NAME}: {e}")))?;
    manifest.validate().map_err(bad)?;
    Verified::with_signature(manifest, json, |json| {
        let sig = read_small(dir, SIGNATURE_NAME, MAX_SIGNATURE_BYTES)?;
        let signer = check_signature(json, &sig).map_err(|reason| Error::BadSignature {
            archive: dir.into(),
            reason,
        })?;
        Ok((sig, signer))
    })
}

/// Reads `dir/name`, a regular file of at most `limit` bytes.
fn read_small(dir: &Path, name: &str, limit: u64) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let bad = |reason: String| Error::Manifest {
        archive: dir.into(),
        reason,
    };
    let meta = path.symlink_metadata().map_err(|e| Error::io(&path, e))?;
    if !meta.is_file() {
        return Err(bad(format!("{name} is not a regular file")));
    }
    if meta.len() > limit {
        return Err(Error::LimitExceeded {
            archive: dir.into(),
            what: format!("size of {name}"),
            limit,
        });
    }
    std::fs::read(&path).map_err(|e| Error::io(&path, e))
}

/// Checks an unpacked archive: every listed file present as a regular file (no links) with the
/// listed size and sha256, and nothing else in the directory.
pub fn verify_dir(dir: &Path) -> Result<Manifest> {
    verify_dir_signed(dir).map(|v| v.manifest)
}

/// [`verify_dir`], also returning the manifest's bytes and the signer.
pub fn verify_dir_signed(dir: &Path) -> Result<Verified> {
    let verified = read_dir_signed(dir)?;
    let manifest = &verified.manifest;
    let signed = verified.signer.is_some();
    for file in &manifest.files {
        let path = dir.join(&file.path);
        let meta = match path.symlink_metadata() {
            Ok(m) => m,
            Err(_) => {
                return Err(Error::MissingEntry {
                    archive: dir.into(),
                    entry: file.path.clone(),
                })
            }
        };
        if !meta.is_file() {
            return Err(Error::ForbiddenEntryType {
                archive: dir.into(),
                entry: file.path.clone(),
                kind: if meta.file_type().is_symlink() {
                    "symlink"
                } else {
                    "non-regular"
                }
                .into(),
            });
        }
        if meta.len() != file.size {
            return Err(Error::SizeMismatch {
                archive: dir.into(),
                entry: file.path.clone(),
                expected: file.size,
                found: meta.len(),
            });
        }
        let reader = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let (_, sha256) = sha256_reader(reader).map_err(|e| Error::io(&path, e))?;
        if sha256 != file.sha256 {
            return Err(Error::ChecksumMismatch {
                archive: dir.into(),
                entry: file.path.clone(),
                expected: file.sha256.clone(),
                found: sha256,
            });
        }
    }
    let listed: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let mut extra = Vec::new();
    collect_files(dir, "", &mut extra, dir)?;
    if let Some(entry) = extra.into_iter().find(|p| {
        p != MANIFEST_NAME && !(signed && p == SIGNATURE_NAME) && !listed.contains(p.as_str())
    }) {
        return Err(Error::UnlistedEntry {
            archive: dir.into(),
            entry,
        });
    }
    Ok(verified)
}

fn collect_files(root: &Path, prefix: &str, out: &mut Vec<String>, archive: &Path) -> Result<()> {
    let dir = root.join(prefix);
    for item in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let item = item.map_err(|e| Error::io(&dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = item.file_type().map_err(|e| Error::io(item.path(), e))?;
        if kind.is_dir() {
            collect_files(root, &rel, out, archive)?;
        } else {
            out.push(rel);
        }
        if out.len() > MAX_ENTRIES {
            return Err(Error::LimitExceeded {
                archive: archive.into(),
                what: "number of files".into(),
                limit: MAX_ENTRIES as u64,
            });
        }
    }
    Ok(())
}
