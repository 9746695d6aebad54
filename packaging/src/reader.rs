//! The verifying reader: every archive is untrusted input.
//!
//! [`scan`] walks a tar stream once, enforcing every rule of the format (see
//! `docs/formats/package-v1.md`, "Reading"), and hands each entry's bytes to a visitor while
//! hashing them. [`verify`], [`unpack`] and the runtime's in-place loader are all built on it.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::manifest::{check_entry_path, FileEntry, Manifest, MANIFEST_NAME};
use crate::signing::{
    check_signature, Signer, MAX_SIGNATURE_BYTES, SIGNATURE_NAME, SIGNED_FORMAT_VERSION,
};
use crate::writer::ALIGNMENT;

/// Most entries an archive may hold, the manifest included.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest `manifest.json` accepted.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Largest zstd window accepted when decompressing (`2^27` = 128 MiB of decoder memory).
pub const MAX_ZSTD_WINDOW_LOG: u32 = 27;
/// The first bytes of a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Tar overhead allowed per entry: a header, a padding extended header of up to
/// [`ALIGNMENT`] bytes with its own header, and the rounding of the data to 512 bytes.
const ENTRY_OVERHEAD: u64 = 3 * 512 + ALIGNMENT;
/// End-of-archive marker plus the padding of the last record (tar writes in 10 KiB records).
const END_OVERHEAD: u64 = 20 * 512;

/// Bytes of the end-of-archive marker required after the last entry (two zero blocks; the
/// first is consumed by the tar reader, the second must follow).
const END_MARKER_REST: u64 = 512;

/// What a verified read returns: the manifest, its exact bytes (what a signature covers) and
/// the signer when the archive is signed (a signature that does not check out is an error).
#[derive(Clone, Debug)]
pub struct Verified {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// `manifest.json` as stored.
    pub manifest_bytes: Vec<u8>,
    /// The signature entry as stored (signed archives).
    pub signature_bytes: Option<Vec<u8>>,
    /// Who signed the archive; `None` for an unsigned one.
    pub signer: Option<Signer>,
}

impl Verified {
    /// The manifest `json` (already parsed and validated as `manifest`), with its signature
    /// fetched and checked by `signature` when the format version says the archive is signed.
    pub(crate) fn with_signature(
        manifest: Manifest,
        json: Vec<u8>,
        signature: impl FnOnce(&[u8]) -> Result<(Vec<u8>, Signer)>,
    ) -> Result<Self> {
        let (signature_bytes, signer) = if manifest.format_version == SIGNED_FORMAT_VERSION {
            let (bytes, signer) = signature(&json)?;
            (Some(bytes), Some(signer))
        } else {
            (None, None)
        };
        Ok(Self {
            manifest,
            manifest_bytes: json,
            signature_bytes,
            signer,
        })
    }
}

/// Called for each entry with its manifest record, the offset of its data in the uncompressed
/// stream, and a reader over its bytes (hashed by [`scan`] as they are read).
pub type Visitor<'a> = &'a mut dyn FnMut(&FileEntry, u64, &mut dyn Read) -> Result<()>;

/// Whether `path` holds a zstd-compressed archive (by its magic number).
pub fn is_zstd(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == ZSTD_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Model files users hand to archive commands by mistake, by their first bytes: a clear error
/// instead of "malformed tar stream".
fn refuse_foreign(path: &Path) -> Result<()> {
    let mut magic = Vec::with_capacity(4);
    File::open(path)
        .and_then(|f| f.take(4).read_to_end(&mut magic))
        .map_err(|e| Error::io(path, e))?;
    let what = match magic.as_slice() {
        b"GGUF" => {
            "a GGUF model file: `alc convert` turns it into a checkpoint directory, \
                    `alc compile` into an archive"
        }
        [b'P', b'K', 3, 4] => "a zip file",
        _ => return Ok(()),
    };
    Err(Error::NotAnArchive {
        path: path.into(),
        what: what.into(),
    })
}

/// Reads and checks only the manifest of the archive at `path` (fast; for `inspect`).
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    read_signed_manifest(path).map(|v| v.manifest)
}

/// Reads and checks the manifest and, in a signed archive, its signature (not the entries).
pub fn read_signed_manifest(path: &Path) -> Result<Verified> {
    let (stream, declared) = open_stream(path)?;
    let head = MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + 8 * 512;
    let mut budget = Budgeted::new(stream, head);
    let guard = budget.guard.clone();
    let mut archive = tar::Archive::new(&mut budget);
    let mut entries = archive.entries().map_err(|e| guard.error(path, e))?;
    let verified = first_manifest(path, &mut entries, &guard)?;
    check_declared(path, &verified.manifest, declared)?;
    Ok(verified)
}

/// Reads the whole archive at `path`, checking every rule and every sha256.
pub fn verify(path: &Path) -> Result<Manifest> {
    verify_signed(path).map(|v| v.manifest)
}

/// [`verify`], also returning the manifest's bytes and the signer.
pub fn verify_signed(path: &Path) -> Result<Verified> {
    let (stream, declared) = open_stream(path)?;
    scan_signed(path, stream, declared, &mut |_, _, _| Ok(()))
}

/// Verifies `path` and extracts it to `dest`, which must not exist.
///
/// Files are written into a temporary directory beside `dest` that is renamed to `dest` only
/// when the whole archive has been verified; on any error it is removed.
pub fn unpack(path: &Path, dest: &Path) -> Result<Manifest> {
    if dest.symlink_metadata().is_ok() {
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&ava_core::partial::temp_prefix())
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let root = tmp.path().to_path_buf();
    let (stream, declared) = open_stream(path)?;
    let verified = scan_signed(path, stream, declared, &mut |entry, _, data| {
        let target = root.join(&entry.path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| Error::io(&target, e))?;
        io::copy(data, &mut out).map_err(|e| Error::io(&target, e))?;
        Ok(())
    })?;
    // The manifest as stored, byte for byte: a signature covers exactly these bytes.
    let manifest_path = root.join(MANIFEST_NAME);
    std::fs::write(&manifest_path, &verified.manifest_bytes)
        .map_err(|e| Error::io(&manifest_path, e))?;
    if let Some(sig) = &verified.signature_bytes {
        let sig_path = root.join(SIGNATURE_NAME);
        std::fs::write(&sig_path, sig).map_err(|e| Error::io(&sig_path, e))?;
    }
    crate::writer::set_mode(&root, crate::writer::OUTPUT_DIR_MODE)?;
    let kept = tmp.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        Error::io(dest, e)
    })?;
    Ok(verified.manifest)
}

/// Opens the archive at `path`, decompressing when it is zstd. Also returns the content size
/// the first zstd frame declares, if any.
pub fn open_stream(path: &Path) -> Result<(Box<dyn Read>, Option<u64>)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    refuse_foreign(path)?;
    if !is_zstd(path)? {
        return Ok((Box::new(BufReader::new(file)), None));
    }
    open_zstd(path, file)
}

#[cfg(not(feature = "zstd"))]
fn open_zstd(path: &Path, _file: File) -> Result<(Box<dyn Read>, Option<u64>)> {
    Err(Error::Unsupported {
        path: path.into(),
        what: "zstd-compressed archives (built without the `zstd` feature)".into(),
    })
}

#[cfg(feature = "zstd")]
fn open_zstd(path: &Path, file: File) -> Result<(Box<dyn Read>, Option<u64>)> {
    let mut head = Vec::with_capacity(18);
    File::open(path)
        .and_then(|f| f.take(18).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let declared = zstd::zstd_safe::get_frame_content_size(&head)
        .ok()
        .flatten();
    let mut decoder = zstd::Decoder::new(file).map_err(|e| Error::io(path, e))?;
    decoder
        .window_log_max(MAX_ZSTD_WINDOW_LOG)
        .map_err(|e| Error::io(path, e))?;
    Ok((Box::new(decoder), declared))
}

/// Walks a tar stream, enforcing the format's rules and checking each entry against the
/// manifest. `declared` is the decompressed size announced by a zstd frame header.
pub fn scan(
    archive: &Path,
    stream: impl Read,
    declared: Option<u64>,
    visit: Visitor<'_>,
) -> Result<Manifest> {
    scan_signed(archive, stream, declared, visit).map(|v| v.manifest)
}

/// [`scan`], also returning the manifest's bytes and the signer of a signed archive (whose
/// signature is checked before any other entry is read).
pub fn scan_signed(
    archive: &Path,
    stream: impl Read,
    declared: Option<u64>,
    visit: Visitor<'_>,
) -> Result<Verified> {
    let head = MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES + 8 * 512;
    let mut budget = Budgeted::new(stream, head);
    let guard = budget.guard.clone();
    let mut tar = tar::Archive::new(&mut budget);
    let mut entries = tar.entries().map_err(|e| guard.error(archive, e))?;
    let verified = first_manifest(archive, &mut entries, &guard)?;
    let manifest = &verified.manifest;
    check_declared(archive, manifest, declared)?;
    guard.limit.set(stream_bound(manifest));

    let mut seen = BTreeSet::new();
    let mut count = 1usize;
    for entry in entries {
        let mut entry = entry.map_err(|e| guard.error(archive, e))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(limit_error(
                archive,
                "number of entries",
                MAX_ENTRIES as u64,
            ));
        }
        let name = entry_name(archive, &entry)?;
        let file = manifest
            .files
            .iter()
            .find(|f| f.path == name)
            .ok_or_else(|| Error::UnlistedEntry {
                archive: archive.into(),
                entry: name.clone(),
            })?;
        if !seen.insert(name.clone()) {
            return Err(Error::DuplicateEntry {
                archive: archive.into(),
                entry: name,
            });
        }
        let size = entry.size();
        if size != file.size {
            return Err(Error::SizeMismatch {
                archive: archive.into(),
                entry: name,
                expected: file.size,
                found: size,
            });
        }
        let offset = entry.raw_file_position();
        let failure = Cell::new(None);
        let mut hashing = HashingReader::new(Recording {
            inner: &mut entry,
            failure: &failure,
        });
        let visited = visit(file, offset, &mut hashing);
        let finished = visited.and_then(|()| {
            hashing
                .finish()
                .map_err(|e| guard.entry_error(archive, &name, e))
        });
        match (finished, failure.take()) {
            // An error of the archive side explains a visitor's failure better than its own.
            (Err(_), Some(e)) => return Err(guard.entry_error(archive, &name, e)),
            (Err(e), None) => return Err(e),
            (Ok((n, sha256)), _) => check_entry(archive, file, n, sha256)?,
        }
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(Error::MissingEntry {
            archive: archive.into(),
            entry: missing.path.clone(),
        });
    }
    check_trailer(archive, tar.into_inner())?;
    Ok(verified)
}

fn check_entry(archive: &Path, file: &FileEntry, n: u64, sha256: String) -> Result<()> {
    if n != file.size {
        return Err(Error::Truncated {
            archive: archive.into(),
            reason: format!(
                "entry {:?} ends after {n} of {} bytes",
                file.path, file.size
            ),
        });
    }
    if sha256 != file.sha256 {
        return Err(Error::ChecksumMismatch {
            archive: archive.into(),
            entry: file.path.clone(),
            expected: file.sha256.clone(),
            found: sha256,
        });
    }
    Ok(())
}

/// Reads the first entry, which must be the manifest, and validates it; in a signed archive
/// also the second, the signature, and checks it.
fn first_manifest<R: Read>(
    archive: &Path,
    entries: &mut tar::Entries<'_, R>,
    guard: &Guard,
) -> Result<Verified> {
    let bad = |reason: String| Error::Manifest {
        archive: archive.into(),
        reason,
    };
    let mut entry = match entries.next() {
        None => return Err(bad(format!("the archive is empty: no {MANIFEST_NAME}"))),
        Some(e) => e.map_err(|e| guard.error(archive, e))?,
    };
    let name = entry_name(archive, &entry)?;
    if name != MANIFEST_NAME {
        return Err(bad(format!(
            "the first entry is {name:?}, not {MANIFEST_NAME}"
        )));
    }
    if entry.size() > MAX_MANIFEST_BYTES {
        return Err(limit_error(archive, "manifest size", MAX_MANIFEST_BYTES));
    }
    let mut json = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut json)
        .map_err(|e| guard.entry_error(archive, MANIFEST_NAME, e))?;
    if json.len() as u64 != entry.size() {
        return Err(Error::Truncated {
            archive: archive.into(),
            reason: format!("{MANIFEST_NAME} is cut short"),
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).map_err(|e| bad(format!("{MANIFEST_NAME}: {e}")))?;
    manifest.validate().map_err(bad)?;
    if manifest.files.len() >= MAX_ENTRIES {
        return Err(limit_error(
            archive,
            "number of entries",
            MAX_ENTRIES as u64,
        ));
    }
    Verified::with_signature(manifest, json, |json| {
        signature_entry(archive, entries, guard, json)
    })
}

/// Reads the signature entry that must follow the manifest of a signed archive and checks it.
fn signature_entry<R: Read>(
    archive: &Path,
    entries: &mut tar::Entries<'_, R>,
    guard: &Guard,
    manifest: &[u8],
) -> Result<(Vec<u8>, Signer)> {
    let bad = |reason: String| Error::BadSignature {
        archive: archive.into(),
        reason,
    };
    let mut entry = match entries.next() {
        None => {
            return Err(bad(format!(
                "format_version {SIGNED_FORMAT_VERSION} without {SIGNATURE_NAME}"
            )))
        }
        Some(e) => e.map_err(|e| guard.error(archive, e))?,
    };
    let name = entry_name(archive, &entry)?;
    if name != SIGNATURE_NAME {
        return Err(bad(format!(
            "the second entry of a signed archive is {name:?}, not {SIGNATURE_NAME}"
        )));
    }
    if entry.size() > MAX_SIGNATURE_BYTES {
        return Err(limit_error(archive, "signature size", MAX_SIGNATURE_BYTES));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| guard.entry_error(archive, SIGNATURE_NAME, e))?;
    let signer = check_signature(manifest, &bytes).map_err(bad)?;
    Ok((bytes, signer))
}

/// The entry's path, after checking it is a safe regular-file entry.
fn entry_name<R: Read>(archive: &Path, entry: &tar::Entry<'_, R>) -> Result<String> {
    let raw = entry.path_bytes();
    let name = String::from_utf8(raw.to_vec()).map_err(|_| Error::UnsafePath {
        archive: archive.into(),
        entry: String::from_utf8_lossy(&raw).into_owned(),
        reason: "not UTF-8".into(),
    })?;
    check_entry_path(&name).map_err(|reason| Error::UnsafePath {
        archive: archive.into(),
        entry: name.clone(),
        reason,
    })?;
    let kind = entry.header().entry_type();
    if kind != EntryType::Regular {
        return Err(Error::ForbiddenEntryType {
            archive: archive.into(),
            entry: name,
            kind: kind_name(kind),
        });
    }
    Ok(name)
}

fn kind_name(kind: EntryType) -> String {
    match kind {
        EntryType::Symlink => "symlink".into(),
        EntryType::Link => "hard link".into(),
        EntryType::Char | EntryType::Block => "device".into(),
        EntryType::Directory => "directory".into(),
        EntryType::Fifo => "fifo".into(),
        EntryType::XGlobalHeader => "global extended header".into(),
        other => format!("type {:?}", other.as_byte() as char),
    }
}

/// Most bytes a well-formed stream with this manifest can have.
fn stream_bound(manifest: &Manifest) -> u64 {
    let entries = manifest.files.len() as u64 + 2;
    let data = manifest
        .files
        .iter()
        .fold(0u64, |acc, f| acc.saturating_add(f.size));
    data.saturating_add(MAX_MANIFEST_BYTES + MAX_SIGNATURE_BYTES)
        .saturating_add(entries.saturating_mul(ENTRY_OVERHEAD))
        .saturating_add(END_OVERHEAD)
}

fn check_declared(archive: &Path, manifest: &Manifest, declared: Option<u64>) -> Result<()> {
    let bound = stream_bound(manifest);
    match declared {
        Some(size) if size > bound => Err(limit_error(
            archive,
            "decompressed size declared by the zstd frame",
            bound,
        )),
        _ => Ok(()),
    }
}

/// The end-of-archive marker must be there (the tar reader also stops at the end of the
/// stream), and after it only zero padding may follow.
fn check_trailer(archive: &Path, budget: &mut Budgeted<impl Read>) -> Result<()> {
    let mut buf = [0u8; 8192];
    let mut zeros = 0u64;
    loop {
        let n = match budget.read(&mut buf) {
            Ok(0) if zeros < END_MARKER_REST => {
                return Err(Error::Truncated {
                    archive: archive.into(),
                    reason: "no end-of-archive marker after the last entry".into(),
                })
            }
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(budget.guard.error(archive, e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::TrailingData {
                archive: archive.into(),
            });
        }
        zeros += n as u64;
    }
}

fn limit_error(archive: &Path, what: &str, limit: u64) -> Error {
    Error::LimitExceeded {
        archive: archive.into(),
        what: what.into(),
        limit,
    }
}

/// Shared between a [`Budgeted`] reader and its user: the current limit and whether it was hit.
#[derive(Clone)]
struct Guard {
    limit: Rc<Cell<u64>>,
    exceeded: Rc<Cell<bool>>,
}

impl Guard {
    /// Maps an I/O error from the tar reader to the most specific archive error.
    fn error(&self, archive: &Path, e: io::Error) -> Error {
        if self.exceeded.get() {
            return limit_error(archive, "decompressed stream", self.limit.get());
        }
        let text = e.to_string();
        if e.kind() == io::ErrorKind::UnexpectedEof || text.contains("entire block") {
            Error::Truncated {
                archive: archive.into(),
                reason: text,
            }
        } else {
            Error::Malformed {
                archive: archive.into(),
                reason: text,
            }
        }
    }

    /// Like [`Guard::error`], naming the entry being read.
    fn entry_error(&self, archive: &Path, entry: &str, e: io::Error) -> Error {
        match self.error(archive, e) {
            Error::Truncated { archive, reason } => Error::Truncated {
                archive,
                reason: format!("entry {entry:?}: {reason}"),
            },
            Error::Malformed { archive, reason } => Error::Malformed {
                archive,
                reason: format!("entry {entry:?}: {reason}"),
            },
            other => other,
        }
    }
}

/// Keeps the first read error of the archive side, so it is not mistaken for a visitor's.
struct Recording<'a, R> {
    inner: R,
    failure: &'a Cell<Option<io::Error>>,
}

impl<R: Read> Read for Recording<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.failure.set(Some(e));
            copy
        })
    }
}

/// A reader that fails once more than the guard's limit of bytes have passed through it.
struct Budgeted<R> {
    inner: R,
    read: u64,
    guard: Guard,
}

impl<R: Read> Budgeted<R> {
    fn new(inner: R, limit: u64) -> Self {
        let guard = Guard {
            limit: Rc::new(Cell::new(limit)),
            exceeded: Rc::new(Cell::new(false)),
        };
        Budgeted {
            inner,
            read: 0,
            guard,
        }
    }
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.guard.limit.get().saturating_sub(self.read);
        if left == 0 && !buf.is_empty() {
            // Probe one byte: reaching exactly the limit at the end of the stream is fine.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.guard.exceeded.set(true);
            return Err(io::Error::other(
                "the archive expands past the bound its manifest allows",
            ));
        }
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        self.read += n as u64;
        Ok(n)
    }
}
