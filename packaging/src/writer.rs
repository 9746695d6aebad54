//! Writes deterministic v1 archives.
//!
//! Entries are sorted, with zero mtimes, uid/gid 0, mode 0644 and empty owner names, so the
//! same inputs give a byte-identical archive. Weight and library entries start at
//! [`ALIGNMENT`]-byte offsets of the uncompressed tar: a pax `comment` record in an extended
//! header before the entry pads the stream, which every tar reader ignores.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{Error, Result};
use crate::hashing::{sha256_reader, CountingWriter, HashingReader};
use crate::manifest::{
    check_entry_path, CreatedBy, FileEntry, Manifest, PackageTarget, Role, Source, FORMAT_VERSION,
    MANIFEST_NAME,
};
use crate::signing::{SecretKey, SIGNATURE_NAME, SIGNED_FORMAT_VERSION};

/// Alignment of weight and library data inside an uncompressed archive.
pub const ALIGNMENT: u64 = 4096;
/// zstd level used for `.tar.zst` (a balance of speed and ratio for weights).
pub const ZSTD_LEVEL: i32 = 10;
const BLOCK: u64 = 512;
const FILE_MODE: u32 = 0o644;
/// Permissions of a written archive and of unpacked files.
pub(crate) const OUTPUT_FILE_MODE: u32 = 0o644;
/// Permissions of an unpacked directory.
pub(crate) const OUTPUT_DIR_MODE: u32 = 0o755;
/// The pax record key used for padding.
const PAD_KEY: &str = "comment";
/// Name of the padding extended header (readers apply it to the next entry, never extract it).
const PAD_HEADER_NAME: &str = "PaxHeaders/padding";

/// One file to put into an archive.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// Where the bytes are on disk.
    pub source: PathBuf,
    /// Path inside the archive.
    pub path: String,
    /// What it is for.
    pub role: Role,
}

/// Manifest fields chosen by the caller; `files` is computed by [`write_archive`].
#[derive(Clone, Debug)]
pub struct PackageSpec {
    /// Package name (`gemma3-270m`).
    pub name: String,
    /// Package version.
    pub version: String,
    /// Model family.
    pub family: String,
    /// Quantization label.
    pub quantization: String,
    /// Target.
    pub target: PackageTarget,
    /// Writing tool.
    pub created_by: CreatedBy,
    /// Provenance; when `files` is empty it is filled with the archived files' digests.
    pub source: Source,
    /// Stage metadata.
    pub stages: BTreeMap<String, serde_json::Value>,
    /// Sign the archive with this key (format version 2, `manifest.sig` entry).
    pub sign_with: Option<SecretKey>,
}

/// Compression of the written archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain `.tar`, mappable in place.
    None,
    /// `.tar.zst` for transport.
    Zstd,
}

/// Receives progress as bytes processed; the total is `2 ×` the input size (hash, then write).
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Hashes the inputs, writes the archive to a temporary file beside `out` and renames it into
/// place. Returns the manifest written.
pub fn write_archive(
    spec: &PackageSpec,
    inputs: &[InputFile],
    out: &Path,
    compression: Compression,
    progress: Progress<'_>,
) -> Result<Manifest> {
    let manifest = build_manifest(spec, inputs, progress)?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&ava_core::partial::temp_prefix())
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| Error::io(tmp.path(), e))?;
    let sink = BufWriter::new(file);
    let written = match compression {
        Compression::None => write_tar(sink, &manifest, inputs, spec.sign_with.as_ref(), progress)
            .and_then(finish_buf),
        #[cfg(not(feature = "zstd"))]
        Compression::Zstd => {
            return Err(Error::Unsupported {
                path: out.into(),
                what: "zstd compression (built without the `zstd` feature)".into(),
            })
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(sink, ZSTD_LEVEL).map_err(|e| Error::io(out, e))?;
            enc.include_checksum(true).map_err(|e| Error::io(out, e))?;
            write_tar(enc, &manifest, inputs, spec.sign_with.as_ref(), progress)
                .and_then(|enc| enc.finish())
                .and_then(finish_buf)
        }
    };
    written.map_err(|e| Error::io(out, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    set_mode(tmp.path(), OUTPUT_FILE_MODE)?;
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(manifest)
}

/// Signs the archive at `path` with `key`, replacing it (a signature it had is replaced too).
///
/// The archive is verified, unpacked into a temporary directory beside it, and written again
/// with the same manifest (format version 2) and the signature entry; compression is kept.
pub fn sign_archive(path: &Path, key: &SecretKey) -> Result<Manifest> {
    let compression = if crate::reader::is_zstd(path)? {
        Compression::Zstd
    } else {
        Compression::None
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(&ava_core::partial::temp_prefix())
        .tempdir_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    let unpacked = work.path().join("archive");
    let manifest = crate::reader::unpack(path, &unpacked)?;
    let inputs: Vec<InputFile> = manifest
        .files
        .iter()
        .map(|f| InputFile {
            source: unpacked.join(&f.path),
            path: f.path.clone(),
            role: f.role,
        })
        .collect();
    let spec = PackageSpec {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        family: manifest.family.clone(),
        quantization: manifest.quantization.clone(),
        target: manifest.target,
        created_by: manifest.created_by.clone(),
        source: manifest.source.clone(),
        stages: manifest.stages.clone(),
        sign_with: Some(key.clone()),
    };
    write_archive(&spec, &inputs, path, compression, &mut |_| {})
}

/// Temporary files are created private (0600); outputs get ordinary permissions.
pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn finish_buf(w: BufWriter<File>) -> io::Result<()> {
    w.into_inner().map_err(|e| e.into_error())?.flush()
}

fn build_manifest(
    spec: &PackageSpec,
    inputs: &[InputFile],
    progress: Progress<'_>,
) -> Result<Manifest> {
    let mut seen = BTreeSet::new();
    let mut files = Vec::with_capacity(inputs.len());
    let mut sorted: Vec<&InputFile> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for input in sorted {
        check_entry_path(&input.path).map_err(|reason| Error::Input {
            path: input.source.clone(),
            reason: format!("archive path {:?}: {reason}", input.path),
        })?;
        if input.path == MANIFEST_NAME
            || input.path == SIGNATURE_NAME
            || !seen.insert(input.path.as_str())
        {
            return Err(Error::Input {
                path: input.source.clone(),
                reason: format!("archive path {:?} is reserved or used twice", input.path),
            });
        }
        let file = File::open(&input.source).map_err(|e| Error::io(&input.source, e))?;
        let (size, sha256) = sha256_reader(ProgressReader {
            inner: file,
            progress: &mut *progress,
        })
        .map_err(|e| Error::io(&input.source, e))?;
        files.push(FileEntry {
            path: input.path.clone(),
            size,
            sha256,
            role: input.role,
        });
    }
    let mut source = spec.source.clone();
    if source.files.is_empty() {
        source.files = files
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect();
    }
    let manifest = Manifest {
        format_version: if spec.sign_with.is_some() {
            SIGNED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        },
        name: spec.name.clone(),
        version: spec.version.clone(),
        family: spec.family.clone(),
        quantization: spec.quantization.clone(),
        target: spec.target,
        created_by: spec.created_by.clone(),
        source,
        files,
        stages: spec.stages.clone(),
    };
    manifest.validate().map_err(|reason| Error::Input {
        path: PathBuf::from(&spec.name),
        reason,
    })?;
    Ok(manifest)
}

struct ProgressReader<'a, R> {
    inner: R,
    progress: Progress<'a>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

fn write_tar<W: Write>(
    sink: W,
    manifest: &Manifest,
    inputs: &[InputFile],
    key: Option<&SecretKey>,
    progress: Progress<'_>,
) -> io::Result<W> {
    let by_path: BTreeMap<&str, &InputFile> = inputs.iter().map(|i| (i.path.as_str(), i)).collect();
    let mut builder = tar::Builder::new(CountingWriter {
        inner: sink,
        count: 0,
    });
    let json = manifest_bytes(manifest)?;
    builder.append(
        &file_header(MANIFEST_NAME, json.len() as u64)?,
        json.as_slice(),
    )?;
    if let Some(key) = key {
        let signature = key.sign_manifest(&json);
        builder.append(
            &file_header(SIGNATURE_NAME, signature.len() as u64)?,
            signature.as_slice(),
        )?;
    }
    for entry in &manifest.files {
        let input = by_path
            .get(entry.path.as_str())
            .ok_or_else(|| io::Error::other(format!("no input for {}", entry.path)))?;
        if entry.role.is_aligned() {
            pad_to_alignment(&mut builder)?;
        }
        let file = File::open(&input.source)?;
        let mut reader = HashingReader::new(
            ProgressReader {
                inner: file,
                progress: &mut *progress,
            }
            .take(entry.size),
        );
        builder.append(&file_header(&entry.path, entry.size)?, &mut reader)?;
        let (count, sha256) = reader.finish()?;
        if count != entry.size || sha256 != entry.sha256 {
            return Err(io::Error::other(format!(
                "{} changed while it was being packaged",
                input.source.display()
            )));
        }
    }
    builder.into_inner().map(|c| c.inner)
}

/// The manifest as written: pretty JSON with a trailing newline.
pub fn manifest_bytes(manifest: &Manifest) -> io::Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(manifest).map_err(io::Error::other)?;
    json.push(b'\n');
    Ok(json)
}

fn file_header(path: &str, size: u64) -> io::Result<Header> {
    let mut header = Header::new_ustar();
    header.set_path(path)?;
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(FILE_MODE);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    Ok(header)
}

/// Writes a pax extended header whose padding makes the next entry's data start at an
/// [`ALIGNMENT`] boundary (nothing when it already would).
fn pad_to_alignment<W: Write>(builder: &mut tar::Builder<CountingWriter<W>>) -> io::Result<()> {
    let offset = builder.get_ref().count;
    // Data of an entry written now would start after its 512-byte header.
    if (offset + BLOCK) % ALIGNMENT == 0 {
        return Ok(());
    }
    // With a pax header of k data blocks: offset + 512 + 512k + 512 must be aligned.
    let blocks_needed = (ALIGNMENT - (offset + 2 * BLOCK) % ALIGNMENT) % ALIGNMENT / BLOCK;
    let blocks = if blocks_needed == 0 {
        ALIGNMENT / BLOCK
    } else {
        blocks_needed
    };
    let record = pax_padding_record((blocks * BLOCK) as usize);
    let mut header = Header::new_ustar();
    header.set_path(PAD_HEADER_NAME)?;
    header.set_entry_type(EntryType::XHeader);
    header.set_size(record.len() as u64);
    header.set_mode(FILE_MODE);
    header.set_mtime(0);
    header.set_cksum();
    builder.append(&header, record.as_slice())
}

/// A pax record `"<len> comment=<padding>\n"` of exactly `len` bytes.
fn pax_padding_record(len: usize) -> Vec<u8> {
    let digits = len.to_string().len();
    let fill = len - digits - 1 - PAD_KEY.len() - 1 - 1;
    let mut record = format!("{len} {PAD_KEY}=").into_bytes();
    record.extend(std::iter::repeat_n(b'0', fill));
    record.push(b'\n');
    debug_assert_eq!(record.len(), len);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_has_exact_length() {
        for len in [512, 1024, 3584, 4096] {
            let r = pax_padding_record(len);
            assert_eq!(r.len(), len);
            let text = String::from_utf8(r).unwrap();
            let (n, rest) = text.split_once(' ').unwrap();
            assert_eq!(n.parse::<usize>().unwrap(), len);
            assert!(rest.starts_with("comment="));
        }
    }
}
