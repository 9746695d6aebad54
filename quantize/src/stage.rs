//! The quantize stage: plans each tensor's scheme from the policy, and streams the checkpoint
//! tensor by tensor from its mapping into one `model.safetensors` of float tensors and
//! Q4BF16 / Q8BF16 planes (`docs/formats/q4bf16.md`). Only a block of the tensor being written
//! (as f32) and its encoded form are in memory at a time, and each input tensor's pages are
//! released once written; AWQ's scales and GPTQ's prepared Hessians arrive as a [`Transform`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use ava_core::quant::{group_fits, scales_shape, SCALES_SUFFIX};
use ava_core::safetensors_writer::{header_bytes, write_header, HeaderTensor};
use ava_core::{Checkpoint, DType, TensorView};

use crate::error::{Error, Result};
use crate::gptq::{self, Prepared};
use crate::grouped::{self, Layout};
use crate::policy::{Policy, Scheme};

/// The safetensors header's length prefix (a little-endian u64).
const HEADER_LENGTH_BYTES: u64 = 8;
/// Elements converted to f32 at a time while streaming a tensor (bounds memory use).
const BLOCK_ELEMENTS: usize = 1 << 22;
/// Write buffer size.
const WRITE_BUFFER_BYTES: usize = 8 << 20;
/// The scheme a tensor the policy wants quantized falls back to when its shape does not fit.
const FALLBACK: Scheme = Scheme::Bf16;

/// How weights are rounded.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Round to nearest, per group.
    Rtn,
    /// Activation-aware channel scaling plus per-group clip search.
    Awq,
    /// GPTQ error feedback on round-to-nearest group scales.
    Gptq,
    /// AWQ's scaling and clip search, then GPTQ on its group scales.
    AwqGptq,
}

impl Method {
    /// `rtn` / `awq`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Awq => "awq",
            Method::Gptq => "gptq",
            Method::AwqGptq => "awq+gptq",
        }
    }

    /// Whether the method searches AWQ scales.
    pub fn uses_awq(self) -> bool {
        matches!(self, Method::Awq | Method::AwqGptq)
    }

    /// Whether the method runs GPTQ (and so needs Hessians).
    pub fn uses_gptq(self) -> bool {
        matches!(self, Method::Gptq | Method::AwqGptq)
    }

    /// Whether the method needs calibration text.
    pub fn calibrated(self) -> bool {
        self != Method::Rtn
    }
}

/// What to write.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// Scheme per tensor role.
    pub policy: Policy,
    /// Per-tensor schemes that replace the role's (`--policy NAME=SCHEME`, mixed precision).
    pub tensors: BTreeMap<String, Scheme>,
    /// Group size of the quantized schemes.
    pub group: usize,
    /// The method (recorded; AWQ's effect comes through the [`Transform`]).
    pub method: Method,
    /// The overall quantization name (`q4bf16`, ...).
    pub quantization: String,
}

/// Changes applied to weights before they are encoded (from AWQ).
#[derive(Clone, Debug, Default)]
pub struct Transform {
    /// Multiply the columns of these weights by the scales.
    pub col_scale: HashMap<String, Vec<f32>>,
    /// Divide the rows of these weights by the scales.
    pub row_div: HashMap<String, Vec<f32>>,
    /// Replace these tensors' values (folded norms).
    pub replace: HashMap<String, Vec<f32>>,
    /// Per-column importance for the clip search.
    pub importance: HashMap<String, Vec<f32>>,
    /// GPTQ: the prepared Hessian of these weights' input (shared by the weights that read it).
    pub gptq: HashMap<String, Arc<Prepared>>,
}

/// One tensor of the output.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    /// The source tensor name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How it is stored.
    pub scheme: Scheme,
    /// Whether the policy's quantized scheme did not fit its shape.
    pub fell_back: bool,
}

impl PlannedTensor {
    /// `(name, dtype, shape, bytes)` of every tensor this one writes.
    fn outputs(&self, group: usize) -> Vec<(String, DType, Vec<usize>, usize)> {
        match (self.scheme.quant_format(), self.shape.as_slice()) {
            (Some(f), &[rows, cols]) => {
                let scales = scales_shape(rows, cols, group);
                vec![
                    (
                        format!("{}{}", self.name, f.code_suffix()),
                        f.code_dtype(),
                        f.code_shape(rows, cols),
                        rows * f.row_bytes(cols),
                    ),
                    (
                        format!("{}{SCALES_SUFFIX}", self.name),
                        DType::BF16,
                        scales,
                        rows * cols / group * 2,
                    ),
                ]
            }
            _ => {
                let dtype = self.scheme.float_dtype().unwrap_or(DType::BF16);
                let numel: usize = self.shape.iter().product();
                vec![(
                    self.name.clone(),
                    dtype,
                    self.shape.clone(),
                    numel * dtype.size_in_bytes(),
                )]
            }
        }
    }
}

/// The scheme of every tensor of `ck` (sorted by name).
pub fn plan(ck: &Checkpoint, spec: &StageSpec) -> Vec<PlannedTensor> {
    ck.tensor_views()
        .map(|t| {
            let wanted = spec
                .tensors
                .get(t.name)
                .copied()
                .unwrap_or_else(|| spec.policy.scheme_of(t.name));
            let fits = match t.shape {
                [_, cols] => group_fits(*cols, spec.group),
                _ => false,
            };
            let fell_back = wanted.quant_format().is_some() && !fits;
            PlannedTensor {
                name: t.name.to_string(),
                shape: t.shape.to_vec(),
                scheme: if fell_back { FALLBACK } else { wanted },
                fell_back,
            }
        })
        .collect()
}

/// Bytes of the `model.safetensors` that [`write_weights`] writes for `plan`: the header
/// (with its length prefix) and every tensor's data.
pub fn file_bytes(plan: &[PlannedTensor], spec: &StageSpec) -> u64 {
    let (metadata, tensors) = header(plan, spec);
    let header = header_bytes(&metadata, &tensors).len() as u64;
    HEADER_LENGTH_BYTES + header + tensors.iter().map(|t| t.bytes).sum::<u64>()
}

/// Bytes of the tensors `plan` stores in a grouped integer format (codes and scales), and
/// their element count.
pub fn quantized_bytes(plan: &[PlannedTensor], spec: &StageSpec) -> (u64, u64) {
    plan.iter()
        .filter(|t| t.scheme.quant_format().is_some())
        .fold((0, 0), |(bytes, numel), t| {
            let b: usize = t.outputs(spec.group).iter().map(|o| o.3).sum();
            let n: usize = t.shape.iter().product();
            (bytes + b as u64, numel + n as u64)
        })
}

/// Bytes written and read.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteStats {
    /// Tensor bytes read from the checkpoint.
    pub input_bytes: u64,
    /// Tensor bytes written.
    pub output_bytes: u64,
}

/// Writes `path` from `ck` following `plan`, reporting input bytes consumed to `progress`.
pub fn write_weights(
    ck: &Checkpoint,
    (plan, spec): (&[PlannedTensor], &StageSpec),
    transform: &Transform,
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteStats> {
    let io = |e| Error::io(path, e);
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, File::create(path).map_err(io)?);
    let (metadata, tensors) = header(plan, spec);
    write_header(&mut out, &metadata, &tensors).map_err(io)?;
    let mut stats = WriteStats::default();
    for t in plan {
        let view = ck.tensor(&t.name)?;
        let release = |block: &[u8]| ck.release_bytes(&t.name, block);
        write_tensor(&view, t, (spec, transform), &mut out, &release).map_err(io)?;
        stats.input_bytes += view.data.len() as u64;
        stats.output_bytes += t
            .outputs(spec.group)
            .iter()
            .map(|o| o.3 as u64)
            .sum::<u64>();
        progress(stats.input_bytes);
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(stats)
}

/// Fails naming the first tensor of `plan` that holds a NaN or an infinity: no format
/// represents them, and calibration would spread them. Checked before calibrating or writing,
/// in blocks of rows (never a whole tensor as f32 in memory).
pub fn check_finite(ck: &Checkpoint, plan: &[PlannedTensor]) -> Result<()> {
    for t in plan {
        let view = ck.tensor(&t.name)?;
        if !view.dtype.is_float() {
            continue;
        }
        let cols = t.shape.last().copied().unwrap_or(1).max(1);
        let rows = view.numel() / cols;
        let row_bytes = cols * view.dtype.size_in_bytes();
        let block_rows = (BLOCK_ELEMENTS / cols).max(1);
        for r0 in (0..rows).step_by(block_rows) {
            let n = block_rows.min(rows - r0);
            let shape = [n, cols];
            let block = TensorView {
                shape: &shape,
                data: &view.data[r0 * row_bytes..(r0 + n) * row_bytes],
                ..view
            };
            let values = block.to_f32_vec()?;
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                return Err(Error::tensor(
                    ck.dir(),
                    &t.name,
                    format!(
                        "element {} is {}; refusing to quantize it",
                        r0 * cols + i,
                        values[i]
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Streams one tensor in blocks of rows: only a block's f32 values (and, for quantized
/// schemes, the whole scales plane, 1/64 of the f32 size at G = 128) are in memory, and each
/// block's input pages are handed to `release` once encoded.
fn write_tensor(
    view: &TensorView<'_>,
    t: &PlannedTensor,
    (spec, tr): (&StageSpec, &Transform),
    out: &mut impl Write,
    release: &dyn Fn(&[u8]),
) -> std::io::Result<()> {
    let cols = t.shape.last().copied().unwrap_or(1).max(1);
    let rows = view.numel() / cols;
    let row_bytes = cols * view.dtype.size_in_bytes();
    let block_rows = (BLOCK_ELEMENTS / cols).max(1);
    let importance = tr.importance.get(&t.name).map(Vec::as_slice);
    let mut scales = Vec::new();
    for r0 in (0..rows).step_by(block_rows) {
        let n = block_rows.min(rows - r0);
        let shape = [n, cols];
        let block = TensorView {
            shape: &shape,
            data: &view.data[r0 * row_bytes..(r0 + n) * row_bytes],
            ..*view
        };
        let values = match tr.replace.get(&t.name) {
            Some(v) => v[r0 * cols..(r0 + n) * cols].to_vec(),
            None => transformed(
                block.to_f32_vec().map_err(std::io::Error::other)?,
                (r0, cols),
                &t.name,
                tr,
            ),
        };
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "tensor `{}`: element {} is {}; refusing to quantize it",
                    t.name,
                    r0 * cols + i,
                    values[i]
                ),
            ));
        }
        match t.scheme.quant_format() {
            Some(format) if t.shape.len() == 2 => {
                let layout = Layout {
                    format,
                    rows: n,
                    cols,
                    group: spec.group,
                };
                let mut planes = grouped::quantize(&values, layout, importance);
                if let Some(prep) = tr.gptq.get(&t.name) {
                    planes = gptq::quantize(&values, &planes.scales, layout, prep)
                        .map_err(std::io::Error::other)?;
                }
                out.write_all(&planes.codes)?;
                scales.extend(planes.scales.iter().flat_map(|s| s.to_le_bytes()));
            }
            _ => out.write_all(&encode_float(&values, t.scheme))?,
        }
        release(block.data);
    }
    out.write_all(&scales)
}

/// `v` (rows `r0..` of tensor `t`, `cols` wide) with the transform's column scales and row
/// divisors applied.
pub(crate) fn transformed(
    mut v: Vec<f32>,
    (r0, cols): (usize, usize),
    name: &str,
    tr: &Transform,
) -> Vec<f32> {
    if let Some(s) = tr.col_scale.get(name) {
        for row in v.chunks_mut(cols) {
            row.iter_mut().zip(s).for_each(|(x, s)| *x *= s);
        }
    }
    if let Some(d) = tr.row_div.get(name) {
        for (row, d) in v.chunks_mut(cols).zip(&d[r0..]) {
            row.iter_mut().for_each(|x| *x /= d);
        }
    }
    v
}

fn encode_float(values: &[f32], scheme: Scheme) -> Vec<u8> {
    match scheme {
        Scheme::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Scheme::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// The safetensors header's metadata and tensors: in plan order, contiguous.
fn header(
    plan: &[PlannedTensor],
    spec: &StageSpec,
) -> (BTreeMap<String, String>, Vec<HeaderTensor>) {
    let metadata = [
        ("format", "pt".to_string()),
        ("ava.quantization", spec.quantization.clone()),
        ("ava.quantize.method", spec.method.name().to_string()),
        ("ava.quantize.group_size", spec.group.to_string()),
        ("ava.quantize.policy", spec.policy.to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v))
    .into();
    let tensors = plan
        .iter()
        .flat_map(|t| t.outputs(spec.group))
        .map(|(name, dtype, shape, bytes)| HeaderTensor {
            name,
            dtype,
            shape,
            bytes: bytes as u64,
        })
        .collect();
    (metadata, tensors)
}
