//! Graph IR for the encoder pipeline (`aon`), ONNX import/export, graph passes and named
//! pipelines.
//!
//! Data flow: a checkpoint becomes a [`Graph`] ([`albert::build`]), [`passes`] rewrite it (each
//! pass a small type returning whether it changed the graph; [`pipeline`] holds named lists of
//! passes), and [`onnx`] writes it as an ONNX opset-17 model. Weights live once in the graph's
//! initializers: ALBERT's shared layer is referenced by every unrolled layer, never copied.

#![deny(missing_docs)]

pub mod albert;
pub mod error;
pub mod eval;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod pipeline;
pub mod quant;
pub mod shape;

pub use error::{Error, Result};
pub use ir::{Attr, DType, Dim, Graph, Node, Tensor, TensorData, ValueInfo};
pub use passes::Pass;
pub use pipeline::{Pipeline, PipelineReport};
