//! Tensors, memory-mapped safetensors checkpoints and typed model configs.
//!
//! This is the bottom of the stack: it reads a Hugging Face style checkpoint directory
//! ([`Checkpoint`]), validates every `.safetensors` file before handing out tensor bytes
//! ([`SafetensorsFile`]; the stages that write weights use [`safetensors_writer`]), and
//! parses `config.json` into typed configs for the supported families ([`Gemma3Config`],
//! [`AlbertConfig`]). It also names the deployment [`Target`]s and defines the
//! kernel table ([`KernelTable`], `kernels.json`) that `ava-targets` writes and the runtime reads.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod dtype;
pub mod error;
pub mod footprint;
pub mod kernel_table;
#[cfg(feature = "onnx")]
pub mod onnx_proto;
pub mod partial;
pub mod quant;
pub mod safetensors_file;
pub mod safetensors_writer;
pub mod target;
pub mod tensor;

pub use checkpoint::{Checkpoint, CheckpointFile, FileRole, TOKENIZER_FILE};
pub use config::{AlbertConfig, Gemma3Config, LayerKind, ModelFamily, RopeParams, RopeScaling};
pub use dtype::DType;
pub use error::{Error, Result};
pub use kernel_table::KernelTable;
pub use safetensors_file::SafetensorsFile;
pub use target::Target;
pub use tensor::{TensorInfo, TensorView};
