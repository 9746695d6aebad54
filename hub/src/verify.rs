//! What a downloaded file must match before it enters the cache: its size, and its etag read as
//! a digest (an LFS etag is the sha256 of the content, a git etag the blob sha1
//! `sha1("blob {len}\0" + bytes)`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::{io_err, Error, Result};
use super::repo::{is_sha256, COMMIT_HEX_LEN};

/// Read buffer for hashing.
const HASH_BUF: usize = 1 << 16;

/// What the hub promised about a file.
#[derive(Clone, Debug)]
pub struct Expected {
    /// Path in the repository, for messages.
    pub file: String,
    /// Announced size.
    pub size: Option<u64>,
    /// The sha256 of the content (an LFS etag, or the API's `lfs.sha256`).
    pub sha256: Option<String>,
    /// The git blob sha1 (a non-LFS etag).
    pub git_sha1: Option<String>,
}

impl Expected {
    /// Reads the etag: 64 hex digits are a sha256, 40 a git blob sha1, anything else (a storage
    /// etag) only fixes the size. `lfs_sha256` comes from the revision API.
    pub fn from_etag(file: &str, etag: &str, size: Option<u64>, lfs_sha256: Option<&str>) -> Self {
        let hex40 = etag.len() == COMMIT_HEX_LEN && etag.bytes().all(|b| b.is_ascii_hexdigit());
        let sha256 = if is_sha256(etag) {
            Some(etag.to_ascii_lowercase())
        } else {
            lfs_sha256
                .filter(|s| is_sha256(s))
                .map(|s| s.to_ascii_lowercase())
        };
        Expected {
            file: file.to_string(),
            size,
            sha256,
            git_sha1: hex40.then(|| etag.to_ascii_lowercase()),
        }
    }
}

impl Expected {
    /// Whether the content can be checked: a declared size (which also bounds the bytes
    /// written) and a sha256 or git blob sha1.
    pub fn checkable(&self) -> bool {
        self.size.is_some() && (self.sha256.is_some() || self.git_sha1.is_some())
    }
}

/// Digests of a file on disk.
#[derive(Clone, Debug)]
pub struct Digests {
    /// Length in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
    /// git blob sha1, lowercase hex.
    pub git_sha1: String,
}

/// Hashes `path` (sha256 and git blob sha1 in one pass).
pub fn digest_file(path: &Path) -> Result<Digests> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; HASH_BUF];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
        read += n as u64;
    }
    if read != size {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("file changed while it was hashed"),
        });
    }
    Ok(Digests {
        size,
        sha256: hex::encode(sha256.finalize()),
        git_sha1: hex::encode(sha1.finalize()),
    })
}

/// Checks `path` against `expected`; on a mismatch the file is deleted and the error names it.
pub fn check_file(path: &Path, expected: &Expected) -> Result<Digests> {
    let digests = digest_file(path)?;
    let failure = mismatch(&digests, expected);
    if let Some(err) = failure {
        // The bytes are wrong: keeping them would only make the next resume wrong too.
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(digests)
}

fn mismatch(got: &Digests, expected: &Expected) -> Option<Error> {
    if let Some(size) = expected.size.filter(|s| *s != got.size) {
        return Some(Error::SizeMismatch {
            file: expected.file.clone(),
            expected: size,
            actual: got.size,
        });
    }
    if let Some(sha) = expected.sha256.as_ref().filter(|s| **s != got.sha256) {
        return Some(Error::ChecksumMismatch {
            file: expected.file.clone(),
            algorithm: "sha256",
            expected: sha.clone(),
            actual: got.sha256.clone(),
        });
    }
    if let Some(sha) = expected.git_sha1.as_ref().filter(|s| **s != got.git_sha1) {
        return Some(Error::ChecksumMismatch {
            file: expected.file.clone(),
            algorithm: "git blob sha1",
            expected: sha.clone(),
            actual: got.git_sha1.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_sha1_matches_git() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\n").unwrap();
        let d = digest_file(&path).unwrap();
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(d.git_sha1, "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(
            d.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let ok = Expected::from_etag("f", &d.git_sha1, Some(6), None);
        assert!(check_file(&path, &ok).is_ok());
        let bad = Expected::from_etag("f", &"0".repeat(64), Some(6), None);
        let err = check_file(&path, &bad).unwrap_err().to_string();
        assert!(err.contains("sha256 mismatch"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn etag_kinds() {
        let e = Expected::from_etag("f", "opaque-etag", None, Some(&"A".repeat(64)));
        assert_eq!(e.sha256.as_deref(), Some("a".repeat(64).as_str()));
        assert!(e.git_sha1.is_none());
    }
}
