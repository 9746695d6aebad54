//! One `.safetensors` file, memory-mapped and validated before any tensor is handed out.
//!
//! Format: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping tensor names to
//! `{dtype, shape, data_offsets: [start, end]}` (offsets relative to the data section) plus an
//! optional `__metadata__` string map, then the data section. Nothing in the header is trusted:
//! lengths use checked arithmetic and tensors must tile the data section exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorInfo, TensorView};

/// Size of the header-length prefix.
pub const HEADER_PREFIX_BYTES: usize = 8;
/// Largest header we accept (the reference implementation's limit).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Header key of the free-form string map.
pub const METADATA_KEY: &str = "__metadata__";

/// Where a file's bytes live.
enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A tensor's place in the file.
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// A validated `.safetensors` file.
pub struct SafetensorsFile {
    path: PathBuf,
    storage: Storage,
    entries: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

/// Parsed and validated header.
struct Header {
    tensors: Vec<(TensorInfo, Range<usize>)>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile {
    /// Opens and memory-maps `path`, validating the whole header.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < HEADER_PREFIX_BYTES as u64 {
            // Too short to map usefully (and mapping 0 bytes fails): let the parser explain.
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| Error::io(path, e))?;
            return Self::from_bytes(path, bytes);
        }
        // SAFETY: the map is read-only and we only ever read it. The file must not be modified
        // or truncated by another process while this value lives: that would change the bytes
        // under us (or SIGBUS on truncation). Checkpoints are treated as immutable inputs.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::build(path, Storage::Mapped(map))
    }

    /// Validates `bytes` as a safetensors file; `path` is only used in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::build(path, Storage::Owned(bytes))
    }

    fn build(path: &Path, storage: Storage) -> Result<Self> {
        let header = parse(path, storage.bytes())?;
        let entries = header
            .tensors
            .into_iter()
            .map(|(info, range)| {
                let entry = Entry {
                    dtype: info.dtype,
                    shape: info.shape,
                    range,
                };
                (info.name, entry)
            })
            .collect();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            storage,
            entries,
            metadata: header.metadata,
        })
    }

    /// Validates a whole file image and returns every tensor with its absolute byte range in
    /// `bytes`, in file order. Pure: nothing is mapped or kept.
    pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<(TensorInfo, Range<usize>)>> {
        Ok(parse(path, bytes)?.tensors)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let (name, entry) = self.entries.get_key_value(name)?;
        Some(self.view(name, entry))
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.entries.iter().map(|(name, e)| self.view(name, e))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `__metadata__` string map (empty when absent).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.metadata.clone()
    }

    /// Drops the pages of tensor `name` from this process's mapping: the data stays in the
    /// page cache and is read back on the next access. Streaming stages call it after each
    /// tensor so that reading a multi-GB file does not grow the resident set to its size.
    /// A no-op for files held in memory and for unknown names; failures are ignored (the
    /// advice only saves memory).
    pub fn release(&self, name: &str) {
        if let Some(e) = self.entries.get(name) {
            self.release_range(e.range.clone());
        }
    }

    /// Like [`release`](Self::release) for `bytes`, a slice of one of this file's tensors
    /// (a block of rows being streamed); a slice from elsewhere is ignored.
    pub fn release_bytes(&self, bytes: &[u8]) {
        let all = self.storage.bytes();
        let start = (bytes.as_ptr() as usize).wrapping_sub(all.as_ptr() as usize);
        if start <= all.len() && bytes.len() <= all.len() - start {
            self.release_range(start..start + bytes.len());
        }
    }

    fn release_range(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let Storage::Mapped(map) = &self.storage {
            // SAFETY: the map is a read-only shared mapping of a file treated as immutable (see
            // `open`): after MADV_DONTNEED the next read faults the same bytes back in from the
            // file, so every outstanding `&[u8]` into it keeps seeing the same contents.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    range.start,
                    range.len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Size of the whole file in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    fn view<'a>(&'a self, name: &'a str, e: &'a Entry) -> TensorView<'a> {
        TensorView {
            name,
            dtype: e.dtype,
            shape: &e.shape,
            // In range: checked by `parse` against this very buffer.
            data: &self.storage.bytes()[e.range.clone()],
        }
    }
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let err = |reason: String| Error::safetensors(path, reason);
    let prefix: [u8; HEADER_PREFIX_BYTES] = bytes
        .get(..HEADER_PREFIX_BYTES)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            err(format!(
                "truncated header: file is {} bytes, shorter than the {HEADER_PREFIX_BYTES}-byte \
                 header length prefix",
                bytes.len()
            ))
        })?;
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_BYTES {
        return Err(err(format!(
            "header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )));
    }
    // Both fit in usize: header_len <= 100 MiB.
    let data_start = HEADER_PREFIX_BYTES + header_len as usize;
    if data_start > bytes.len() {
        return Err(err(format!(
            "truncated header: header length {header_len} points past the end of the file \
             ({} bytes)",
            bytes.len()
        )));
    }
    let json: Map<String, Value> = serde_json::from_slice(&bytes[HEADER_PREFIX_BYTES..data_start])
        .map_err(|e| err(format!("header is not a valid JSON object: {e}")))?;
    let data_len = bytes.len() - data_start;
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(json.len());
    for (name, value) in &json {
        if name == METADATA_KEY {
            metadata = parse_metadata(path, value)?;
        } else {
            tensors.push(parse_entry(path, name, value, data_len)?);
        }
    }
    check_tiling(path, &mut tensors, data_len)?;
    let tensors = tensors
        .into_iter()
        .map(|(info, r)| (info, data_start + r.start..data_start + r.end))
        .collect();
    Ok(Header { tensors, metadata })
}

fn parse_metadata(path: &Path, value: &Value) -> Result<BTreeMap<String, String>> {
    let bad = || {
        Error::safetensors(
            path,
            format!("`{METADATA_KEY}` must map strings to strings"),
        )
    };
    let obj = value.as_object().ok_or_else(bad)?;
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_string())))
        .collect()
}

/// Parses one tensor entry; the returned range is relative to the data section.
fn parse_entry(
    path: &Path,
    name: &str,
    value: &Value,
    data_len: usize,
) -> Result<(TensorInfo, Range<usize>)> {
    let err = |reason: String| Error::safetensors(path, format!("tensor `{name}`: {reason}"));
    let obj = value
        .as_object()
        .ok_or_else(|| err("entry is not a JSON object".into()))?;
    let dtype_str = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing or non-string `dtype`".into()))?;
    let dtype = DType::from_safetensors(dtype_str).ok_or_else(|| Error::UnsupportedDtype {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        dtype: dtype_str.to_string(),
    })?;
    let shape = usize_array(obj.get("shape"))
        .ok_or_else(|| err("`shape` must be an array of non-negative integers".into()))?;
    let offsets = usize_array(obj.get("data_offsets"))
        .filter(|o| o.len() == 2)
        .ok_or_else(|| err("`data_offsets` must be two non-negative integers".into()))?;
    let (start, end) = (offsets[0], offsets[1]);
    if start > end || end > data_len {
        return Err(err(format!(
            "data_offsets [{start}, {end}] out of range: the data section is {data_len} bytes"
        )));
    }
    let needed = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
    if needed != Some(end - start) {
        let needed = needed.map_or_else(|| "more than usize::MAX".into(), |n| n.to_string());
        return Err(err(format!(
            "shape {shape:?} with dtype {dtype} needs {needed} bytes, but data_offsets \
             [{start}, {end}] span {}",
            end - start
        )));
    }
    let info = TensorInfo {
        name: name.to_string(),
        dtype,
        shape,
    };
    Ok((info, start..end))
}

fn usize_array(value: Option<&Value>) -> Option<Vec<usize>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
        .collect()
}

/// Tensors must cover the data section exactly: no overlap, no gap, no trailing bytes.
/// Sorts `tensors` by offset.
fn check_tiling(
    path: &Path,
    tensors: &mut [(TensorInfo, Range<usize>)],
    data_len: usize,
) -> Result<()> {
    tensors.sort_by_key(|(_, r)| (r.start, r.end));
    let mut cursor = 0usize;
    let mut previous: Option<&str> = None;
    for (info, r) in tensors.iter() {
        let after = previous.map_or_else(
            || "the start of the data section".into(),
            |p| format!("tensor `{p}`"),
        );
        if r.start < cursor {
            return Err(Error::safetensors(
                path,
                format!(
                    "tensor `{}` [{}, {}] overlaps {after} (which ends at {cursor})",
                    info.name, r.start, r.end
                ),
            ));
        }
        if r.start > cursor {
            return Err(Error::safetensors(
                path,
                format!(
                    "gap of {} bytes between {after} and tensor `{}`",
                    r.start - cursor,
                    info.name
                ),
            ));
        }
        cursor = r.end;
        previous = Some(&info.name);
    }
    if cursor != data_len {
        return Err(Error::safetensors(
            path,
            format!(
                "{} trailing bytes after the last tensor (data section is {data_len} bytes)",
                data_len - cursor
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/ckpt/model.safetensors";

    /// A file image from a raw header string and data bytes.
    fn image(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn parse_err(bytes: Vec<u8>) -> String {
        match SafetensorsFile::from_bytes(Path::new(P), bytes) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_err(bytes: Vec<u8>, needles: &[&str]) {
        let msg = parse_err(bytes);
        assert!(msg.starts_with(P), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
    }

    #[test]
    fn round_trip_all_dtypes() -> Result<()> {
        let mut data = Vec::new();
        data.extend([1.0f32, -2.5].iter().flat_map(|x| x.to_le_bytes())); // 0..8
        data.extend(half::f16::from_f32(0.5).to_le_bytes()); // 8..10
        data.extend(half::bf16::from_f32(-4.0).to_le_bytes()); // 10..12
        data.extend([0xfeu8, 3]); // i8 12..14
        data.extend([250u8]); // u8 14..15
        data.extend(123456i32.to_le_bytes()); // i32 15..19 (unaligned on purpose)
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
            "b":{"dtype":"F16","shape":[1,1],"data_offsets":[8,10]},
            "c":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]},
            "d":{"dtype":"I8","shape":[2],"data_offsets":[12,14]},
            "e":{"dtype":"U8","shape":[],"data_offsets":[14,15]},
            "f":{"dtype":"I32","shape":[1],"data_offsets":[15,19]},
            "__metadata__":{"format":"pt"}}"#;
        let f = SafetensorsFile::from_bytes(Path::new(P), image(header, &data))?;
        let get = |n: &str| f.tensor(n).map(|t| t.to_f32_vec());
        assert_eq!(get("a").transpose()?, Some(vec![1.0, -2.5]));
        assert_eq!(get("b").transpose()?, Some(vec![0.5]));
        assert_eq!(get("c").transpose()?, Some(vec![-4.0]));
        assert_eq!(get("d").transpose()?, Some(vec![-2.0, 3.0]));
        assert_eq!(get("e").transpose()?, Some(vec![250.0]));
        assert_eq!(get("f").transpose()?, Some(vec![123456.0]));
        assert!(f.tensor("zz").is_none());
        let names: Vec<_> = f.tensors().map(|t| t.name).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
        Ok(())
    }

    #[test]
    fn absolute_ranges() -> Result<()> {
        let header = r#"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
        let bytes = image(header, &[1, 2]);
        let parsed = SafetensorsFile::parse_header(Path::new(P), &bytes)?;
        let start = 8 + header.len();
        assert_eq!(parsed[0].1, start..start + 2);
        assert_eq!(parsed[0].0.shape, vec![2]);
        Ok(())
    }

    #[test]
    fn reads_files_written_by_the_reference_crate() -> Result<()> {
        use safetensors::tensor::{Dtype, TensorView as StView};
        let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let b = [7u8, 8];
        let tensors = [
            ("w", StView::new(Dtype::F32, vec![2, 2], &w)),
            ("b", StView::new(Dtype::U8, vec![2], &b)),
        ];
        let tensors: Vec<_> = tensors
            .into_iter()
            .map(|(n, v)| v.map(|v| (n, v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::safetensors(Path::new(P), e.to_string()))?;
        let bytes = safetensors::serialize(tensors, None)
            .map_err(|e| Error::safetensors(Path::new(P), e.to_string()))?;
        let f = SafetensorsFile::from_bytes(Path::new(P), bytes)?;
        let w = f.tensor("w").map(|t| t.to_f32_vec()).transpose()?;
        assert_eq!(w, Some(vec![1.0, 2.0, 3.0, 4.0]));
        Ok(())
    }

    #[test]
    fn empty_header_object_is_valid() -> Result<()> {
        let f = SafetensorsFile::from_bytes(Path::new(P), image("{}", &[]))?;
        assert!(f.is_empty());
        Ok(())
    }

    #[test]
    fn shorter_than_prefix() {
        assert_err(vec![1, 2, 3], &["truncated header", "3 bytes"]);
        assert_err(vec![], &["truncated header", "0 bytes"]);
    }

    #[test]
    fn header_length_past_eof() {
        let mut bytes = 500u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        assert_err(
            bytes,
            &["header length 500 points past the end", "10 bytes"],
        );
    }

    #[test]
    fn huge_header_claim() {
        let bytes = (MAX_HEADER_BYTES + 1).to_le_bytes().to_vec();
        assert_err(bytes, &["exceeds the limit"]);
        assert_err(u64::MAX.to_le_bytes().to_vec(), &["exceeds the limit"]);
    }

    #[test]
    fn invalid_json() {
        assert_err(image("{\"a\":", &[]), &["not a valid JSON object"]);
        assert_err(image("[1,2]", &[]), &["not a valid JSON object"]);
        assert_err(image("\u{0}\u{0}", &[]), &["not a valid JSON object"]);
    }

    #[test]
    fn offsets_out_of_range() {
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        assert_err(
            image(h, &[0; 8]),
            &["tensor `a`", "out of range", "8 bytes"],
        );
        let h = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[9,8]}}"#;
        assert_err(image(h, &[0; 8]), &["tensor `a`", "out of range"]);
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,4]}}"#;
        assert_err(image(h, &[0; 8]), &["tensor `a`", "out of range"]);
    }

    #[test]
    fn overlapping_tensors() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                    "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        assert_err(image(h, &[0; 12]), &["tensor `b`", "overlaps tensor `a`"]);
    }

    #[test]
    fn gap_between_tensors() {
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                    "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert_err(image(h, &[0; 12]), &["gap of 4 bytes", "`a`", "`b`"]);
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert_err(image(h, &[0; 6]), &["2 trailing bytes"]);
    }

    #[test]
    fn shape_length_mismatch() {
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert_err(
            image(h, &[0; 8]),
            &["tensor `a`", "needs 12 bytes", "span 8"],
        );
        let h = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert_err(image(h, &[0; 8]), &["tensor `a`", "more than usize::MAX"]);
    }

    #[test]
    fn unsupported_dtype() {
        let h = r#"{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#;
        assert_err(
            image(h, &[0; 2]),
            &["tensor `q`", "unsupported dtype F8_E4M3"],
        );
    }

    #[test]
    fn malformed_entries() {
        let h = r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#;
        assert_err(image(h, &[0; 4]), &["tensor `a`", "`shape`"]);
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#;
        assert_err(image(h, &[0; 4]), &["tensor `a`", "`data_offsets`"]);
        let h = r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#;
        assert_err(image(h, &[0; 4]), &["tensor `a`", "`dtype`"]);
        let h = r#"{"a":3}"#;
        assert_err(image(h, &[]), &["tensor `a`", "not a JSON object"]);
        let h = r#"{"__metadata__":{"k":1}}"#;
        assert_err(image(h, &[]), &["__metadata__"]);
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let h =
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}"#;
        let good = image(h, &[0; 8]);
        for len in 0..good.len() {
            assert!(SafetensorsFile::from_bytes(Path::new(P), good[..len].to_vec()).is_err());
        }
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = SafetensorsFile::from_bytes(Path::new(P), bad);
            }
        }
    }

    #[test]
    fn open_reads_from_disk() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("m.safetensors");
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        std::fs::write(&path, image(h, &2.0f32.to_le_bytes())).map_err(|e| Error::io(&path, e))?;
        let f = SafetensorsFile::open(&path)?;
        assert_eq!(f.path(), path);
        assert_eq!(
            f.tensor("a").map(|t| t.to_f32_vec()).transpose()?,
            Some(vec![2.0])
        );
        let short = dir.path().join("short.safetensors");
        std::fs::write(&short, [1u8, 2]).map_err(|e| Error::io(&short, e))?;
        let msg = SafetensorsFile::open(&short).unwrap_err().to_string();
        assert!(
            msg.contains("short.safetensors") && msg.contains("truncated"),
            "{msg}"
        );
        let missing = dir.path().join("nope.safetensors");
        let msg = SafetensorsFile::open(&missing).unwrap_err().to_string();
        assert!(msg.contains("nope.safetensors"), "{msg}");
        Ok(())
    }

    /// Releasing pages (whole tensors, blocks, foreign slices) never changes what is read.
    #[test]
    fn released_pages_read_back_the_same() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("m.safetensors");
        let values: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5).collect();
        let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let h = r#"{"a":{"dtype":"F32","shape":[1000,3],"data_offsets":[0,12000]}}"#;
        std::fs::write(&path, image(h, &data)).map_err(|e| Error::io(&path, e))?;
        let f = SafetensorsFile::open(&path)?;
        let a = f.tensor("a").map(|t| t.data).unwrap_or_default();
        assert_eq!(a, &data[..]);
        f.release_bytes(&a[5000..9000]);
        assert_eq!(a, &data[..]);
        f.release("a");
        f.release("missing");
        f.release_bytes(&data[..100]);
        assert_eq!(
            f.tensor("a").map(|t| t.to_f32_vec()).transpose()?,
            Some(values)
        );
        Ok(())
    }
}
