//! GGUF -> Hugging Face checkpoint: maps a `gemma3` GGUF's tensors to `Gemma3ForCausalLM`
//! names and shapes, dequantizes them to f32 or bf16 into one streamed `model.safetensors`,
//! and writes `config.json` and `generation_config.json`.
//!
//! The caller owns the output directory (write into a temporary one and rename it: see
//! `alc convert`). Before a byte is written the plan is checked against the tensors that
//! `ava_core::Gemma3Config::expected_tensors` asks for, and afterwards the directory is
//! reopened with `ava_core::Checkpoint` to prove it loads.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ava_core::safetensors_writer::{write_header, HeaderTensor};
use ava_core::{Checkpoint, DType, Gemma3Config};

use crate::blocks;
use crate::error::{Error, Result};
use crate::gguf::gemma3::{self, Gemma3Params, NORM_OFFSET};
use crate::gguf::{GgufFile, TensorInfo};

pub use ava_core::checkpoint::{CONFIG_FILE, GENERATION_CONFIG_FILE, WEIGHTS_FILE};
/// Elements dequantized per step while streaming a tensor (bounds memory use).
pub const CHUNK_ELEMENTS: usize = 1 << 20;
/// Write buffer size.
const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// Element type of the written weights.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutDtype {
    /// Exact dequantized values.
    F32,
    /// Rounded to nearest-even bfloat16.
    BF16,
}

impl OutDtype {
    /// The core dtype.
    pub fn dtype(self) -> DType {
        match self {
            OutDtype::F32 => DType::F32,
            OutDtype::BF16 => DType::BF16,
        }
    }

    /// The torch name written into `config.json`.
    pub fn torch_name(self) -> &'static str {
        match self {
            OutDtype::F32 => "float32",
            OutDtype::BF16 => "bfloat16",
        }
    }
}

/// One GGUF tensor and where it goes.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// The tensor in the GGUF file.
    pub source: TensorInfo,
    /// Its Hugging Face name.
    pub name: String,
    /// Its PyTorch shape.
    pub shape: Vec<usize>,
    /// Whether `1.0` is subtracted (an RMSNorm weight stored as `1 + w`).
    pub subtract_one: bool,
}

/// Everything a conversion will do, checked before anything is written.
#[derive(Clone, Debug)]
pub struct ImportPlan {
    /// Hyper-parameters read from the file.
    pub params: Gemma3Params,
    /// The config they give, parsed back by `ava-core`.
    pub config: Gemma3Config,
    /// Tensors sorted by Hugging Face name (the order they are written in).
    pub tensors: Vec<PlannedTensor>,
}

impl ImportPlan {
    /// Reads and checks a `gemma3` GGUF: every tensor must map to a Hugging Face name, have a
    /// supported type, and match the shape the config asks for; none may be missing.
    pub fn gemma3(file: &GgufFile) -> Result<Self> {
        let params = Gemma3Params::from_gguf(file)?;
        let config_path = PathBuf::from(format!("{} (derived config.json)", file.path().display()));
        let config = Gemma3Config::from_json(&config_path, &params.config_json("float32"))?;
        let mut by_name = BTreeMap::new();
        for info in file.tensors() {
            let name = gemma3::hf_name(&info.name).ok_or_else(|| {
                Error::tensor(file.path(), &info.name, "not a known gemma3 tensor name")
            })?;
            file.check_supported(info)?;
            let planned = PlannedTensor {
                subtract_one: gemma3::is_norm(&name),
                shape: info.shape(),
                source: info.clone(),
                name: name.clone(),
            };
            by_name.insert(name, planned);
        }
        let expected = config.expected_tensors();
        for (name, shape) in &expected {
            let Some(t) = by_name.get(name) else {
                let gguf = gemma3::gguf_name(name).unwrap_or_else(|| name.clone());
                return Err(Error::tensor(
                    file.path(),
                    &gguf,
                    format!("missing (needed for {name})"),
                ));
            };
            if t.shape != *shape {
                return Err(Error::tensor(
                    file.path(),
                    &t.source.name,
                    format!(
                        "shape mismatch: GGUF dims {:?} give {:?} but the config needs {shape:?} \
                         for {name}",
                        t.source.dims, t.shape
                    ),
                ));
            }
        }
        if let Some(t) = by_name
            .values()
            .find(|t| !expected.iter().any(|(n, _)| *n == t.name))
        {
            return Err(Error::tensor(
                file.path(),
                &t.source.name,
                format!(
                    "unexpected for this config ({} is not part of the model)",
                    t.name
                ),
            ));
        }
        Ok(ImportPlan {
            params,
            config,
            tensors: by_name.into_values().collect(),
        })
    }

    /// Bytes of tensor data the weights file will hold.
    pub fn output_bytes(&self, dtype: OutDtype) -> u64 {
        let width = dtype.dtype().size_in_bytes() as u64;
        self.tensors.iter().map(|t| t.source.numel() * width).sum()
    }

    /// Source tensor count per GGML type name.
    pub fn source_types(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for t in &self.tensors {
            *out.entry(t.source.ggml_type.name()).or_default() += 1;
        }
        out
    }
}

/// Writes `model.safetensors`, `config.json` and `generation_config.json` into `dir` and
/// checks that `ava_core` loads the result. `progress` receives the bytes written so far.
pub fn write_checkpoint(
    file: &GgufFile,
    plan: &ImportPlan,
    dtype: OutDtype,
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    write_safetensors(file, plan, dtype, &dir.join(WEIGHTS_FILE), progress)?;
    write_json(
        &dir.join(CONFIG_FILE),
        &plan.params.config_json(dtype.torch_name()),
    )?;
    write_json(
        &dir.join(GENERATION_CONFIG_FILE),
        &plan.params.generation_config_json(),
    )?;
    let checkpoint = Checkpoint::open(dir)?;
    let config = checkpoint.gemma3()?;
    checkpoint.check_shapes(&config.expected_tensors())?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::io(path, e.into()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// The safetensors header's metadata and tensors: in plan order, contiguous.
fn safetensors_header(
    plan: &ImportPlan,
    dtype: OutDtype,
) -> (BTreeMap<String, String>, Vec<HeaderTensor>) {
    let width = dtype.dtype().size_in_bytes() as u64;
    let metadata = [("format", "pt"), ("converted_from", "gguf")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let tensors = plan
        .tensors
        .iter()
        .map(|t| HeaderTensor {
            name: t.name.clone(),
            dtype: dtype.dtype(),
            shape: t.shape.clone(),
            bytes: t.source.numel() * width,
        })
        .collect();
    (metadata, tensors)
}

fn write_safetensors(
    file: &GgufFile,
    plan: &ImportPlan,
    dtype: OutDtype,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let io = |e| Error::io(path, e);
    let out = File::create(path).map_err(io)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let (metadata, tensors) = safetensors_header(plan, dtype);
    write_header(&mut out, &metadata, &tensors).map_err(io)?;
    let mut written = 0u64;
    let mut values = Vec::new();
    let mut encoded = Vec::new();
    for t in &plan.tensors {
        let src = file.tensor_data(&t.source)?;
        let row = t.source.dims[0] as usize;
        let row_bytes = t.source.ggml_type.bytes_for(row as u64).unwrap_or(0) as usize;
        let rows_per_chunk = (CHUNK_ELEMENTS / row.max(1)).max(1);
        for chunk in src.chunks(rows_per_chunk * row_bytes.max(1)) {
            let n = chunk.len() / row_bytes.max(1) * row;
            values.resize(n, 0.0);
            blocks::dequantize(t.source.ggml_type, chunk, &mut values)
                .map_err(|e| Error::tensor(file.path(), &t.source.name, e.to_string()))?;
            if t.subtract_one {
                values.iter_mut().for_each(|v| *v -= NORM_OFFSET);
            }
            encode(&values, dtype, &mut encoded);
            out.write_all(&encoded).map_err(io)?;
            written += encoded.len() as u64;
            progress(written);
        }
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

fn encode(values: &[f32], dtype: OutDtype, out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        OutDtype::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        OutDtype::BF16 => out.extend(
            values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
        ),
    }
}
