//! A GGUF v2/v3 reader: header, metadata of every value type, tensor table, alignment and data
//! offsets, over a memory-mapped file.
//!
//! Source of truth: the GGUF spec (ggml `docs/gguf.md`) and ggml's `gguf.cpp`. Files are
//! untrusted: every count and length is bounded ([`reader`]'s limits, [`MAX_TENSORS`]...) and
//! checked against the bytes present before anything is allocated, offsets use checked
//! arithmetic, and every tensor must lie inside the file before [`GgufFile::open`] succeeds.

pub mod gemma3;
mod reader;
mod value;

pub use reader::{
    MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_KEY_BYTES, MAX_METADATA_VALUES, MAX_STRING_BYTES,
};
pub use value::{Value, ValueType};

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::blocks::{self, GgmlType};
use crate::error::{Error, Result};
use reader::Cursor;

/// `GGUF` read as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Versions this reader understands (v1 had 32-bit counts and is long gone).
pub const SUPPORTED_VERSIONS: [u32; 2] = [2, 3];
/// Alignment of the data section and of every tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// The key that overrides the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The key naming the model family.
pub const ARCHITECTURE_KEY: &str = "general.architecture";
/// Most tensors in one file.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries in one file.
pub const MAX_METADATA_ENTRIES: u64 = 1 << 16;
/// Longest tensor name, in bytes (ggml itself stops at 63).
pub const MAX_TENSOR_NAME_BYTES: u64 = 256;
/// Most dimensions of a tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Fewest bytes a tensor-table entry takes: name length, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 8 + 4 + 8;
/// Fewest bytes a metadata entry takes: key length, value type, one byte of value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;

/// One tensor of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order: innermost (contiguous) first, so a matrix is `[cols, rows]`.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        // Cannot overflow: checked when the table was read.
        self.dims.iter().product()
    }

    /// The shape in PyTorch order (outermost first): `[rows, cols]` for a matrix.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim fits in usize: the numel was checked against the file size.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An opened, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    keys: BTreeMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    keys: BTreeMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
}

impl GgufFile {
    /// Maps and validates `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap reader we rely on the file not being
        // truncated or rewritten while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let parsed = parse(path, &map)?;
        Ok(Self::assemble(path, Storage::Mapped(map), parsed))
    }

    /// Validates a file already in memory (`path` is for messages).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let parsed = parse(path, &bytes)?;
        Ok(Self::assemble(path, Storage::Owned(bytes), parsed))
    }

    fn assemble(path: &Path, storage: Storage, p: Parsed) -> Self {
        GgufFile {
            path: path.to_path_buf(),
            storage,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            metadata: p.metadata,
            keys: p.keys,
            tensors: p.tensors,
            by_name: p.by_name,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of each tensor.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get(ARCHITECTURE_KEY).and_then(Value::as_str)
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of `info`, a tensor of this file (checked in range at open; a
    /// [`TensorInfo`] from elsewhere that does not fit gives an error, not a panic).
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some(start..start.checked_add(info.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        range
            .and_then(|r| self.bytes().get(r))
            .ok_or_else(|| Error::tensor(&self.path, &info.name, "data out of range of the file"))
    }

    /// The tensor's elements as f32.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        self.check_supported(info)?;
        let data = self.tensor_data(info)?;
        let numel = usize::try_from(info.numel())
            .map_err(|_| Error::tensor(&self.path, &info.name, "too many elements"))?;
        blocks::dequantize_to_vec(info.ggml_type, data, numel)
            .map_err(|e| Error::tensor(&self.path, &info.name, e.to_string()))
    }

    /// Fails with [`Error::UnsupportedType`] unless the tensor's type can be dequantized.
    pub fn check_supported(&self, info: &TensorInfo) -> Result<()> {
        if info.ggml_type.is_supported() {
            return Ok(());
        }
        Err(Error::UnsupportedType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.name().to_string(),
        })
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let mut cur = Cursor::new(path, bytes);
    let version = read_preamble(path, &mut cur)?;
    let n_tensors = cur.count("tensor count", MAX_TENSORS, MIN_TENSOR_INFO_BYTES)?;
    let n_kv = cur.count("metadata entry count", MAX_METADATA_ENTRIES, MIN_KV_BYTES)?;
    let (metadata, keys) = read_metadata(&mut cur, n_kv)?;
    let alignment = read_alignment(path, &metadata, &keys)?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut by_name = BTreeMap::new();
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur)?;
        if by_name.insert(info.name.clone(), i).is_some() {
            return Err(cur.err(format!("tensor `{}` appears twice", info.name)));
        }
        tensors.push(info);
    }
    let data_offset = align_up(cur.pos() as u64, alignment)
        .filter(|&d| d <= bytes.len() as u64)
        .ok_or_else(|| cur.err("truncated: the data section starts past the end of the file"))?;
    let data_len = bytes.len() as u64 - data_offset;
    for t in &tensors {
        check_placement(path, t, alignment, data_len)?;
    }
    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        keys,
        tensors,
        by_name,
    })
}

fn read_preamble(path: &Path, cur: &mut Cursor<'_>) -> Result<u32> {
    let magic = cur.take(4, "magic").map_err(|_| Error::NotGguf {
        path: path.to_path_buf(),
        reason: "shorter than the 4-byte magic".into(),
    })?;
    if magic != GGUF_MAGIC {
        return Err(Error::NotGguf {
            path: path.to_path_buf(),
            reason: format!(
                "magic is {:?}, expected \"GGUF\"",
                String::from_utf8_lossy(magic)
            ),
        });
    }
    let version = cur.u32("version")?;
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(version);
    }
    if SUPPORTED_VERSIONS.contains(&version.swap_bytes()) {
        return Err(cur.err("big-endian GGUF files are not supported"));
    }
    Err(Error::UnsupportedVersion {
        path: path.to_path_buf(),
        version,
    })
}

type Metadata = (Vec<(String, Value)>, BTreeMap<String, usize>);

fn read_metadata(cur: &mut Cursor<'_>, n_kv: usize) -> Result<Metadata> {
    let mut metadata = Vec::with_capacity(n_kv);
    let mut keys = BTreeMap::new();
    for i in 0..n_kv {
        let key = cur.string("metadata key", MAX_KEY_BYTES, true)?;
        let ty = cur.value_type(&format!("`{key}`"))?;
        let value = cur.value(ty, &key, 0)?;
        if keys.insert(key.clone(), i).is_some() {
            return Err(cur.err(format!("metadata key `{key}` appears twice")));
        }
        metadata.push((key, value));
    }
    Ok((metadata, keys))
}

fn read_alignment(
    path: &Path,
    metadata: &[(String, Value)],
    keys: &BTreeMap<String, usize>,
) -> Result<u64> {
    let Some(&i) = keys.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let bad = |reason: String| Error::metadata(path, ALIGNMENT_KEY, reason);
    match metadata[i].1 {
        Value::U32(a) if a.is_power_of_two() && u64::from(a) <= MAX_ALIGNMENT => Ok(a.into()),
        Value::U32(a) => Err(bad(format!(
            "{a} is not a power of two no larger than {MAX_ALIGNMENT}"
        ))),
        ref v => Err(bad(format!("must be uint32, found {}", v.value_type()))),
    }
}

fn read_tensor_info(cur: &mut Cursor<'_>) -> Result<TensorInfo> {
    let name = cur.string("tensor name", MAX_TENSOR_NAME_BYTES, true)?;
    let n_dims = cur.u32(&format!("tensor `{name}` dimension count"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(cur.err(format!(
            "tensor `{name}` has {n_dims} dimensions (expected 1 to {MAX_DIMS})"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut numel: u64 = 1;
    for _ in 0..n_dims {
        let d = cur.u64(&format!("tensor `{name}` dimensions"))?;
        numel = numel
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| cur.err(format!("tensor `{name}`: element count overflows")))?;
        dims.push(d);
    }
    let type_id = cur.u32(&format!("tensor `{name}` type"))?;
    let ggml_type = GgmlType::from_id(type_id)
        .ok_or_else(|| cur.err(format!("tensor `{name}` has unknown type id {type_id}")))?;
    let offset = cur.u64(&format!("tensor `{name}` offset"))?;
    if dims[0] % ggml_type.block_size() as u64 != 0 {
        return Err(cur.err(format!(
            "tensor `{name}`: row length {} is not a multiple of the {ggml_type} block size {}",
            dims[0],
            ggml_type.block_size()
        )));
    }
    let n_bytes = ggml_type
        .bytes_for(numel)
        .ok_or_else(|| cur.err(format!("tensor `{name}`: byte size overflows")))?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

fn check_placement(path: &Path, t: &TensorInfo, alignment: u64, data_len: u64) -> Result<()> {
    if t.offset % alignment != 0 {
        return Err(Error::tensor(
            path,
            &t.name,
            format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                t.offset
            ),
        ));
    }
    match t.offset.checked_add(t.n_bytes) {
        Some(end) if end <= data_len => Ok(()),
        _ => Err(Error::tensor(
            path,
            &t.name,
            format!(
                "truncated file: data [{}, +{} bytes) runs past the end of the {data_len}-byte \
                 data section",
                t.offset, t.n_bytes
            ),
        )),
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    pos.checked_add(alignment - 1)
        .map(|p| p / alignment * alignment)
}
