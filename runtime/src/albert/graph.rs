//! A read-only view of an exported mALBERT ONNX graph: initializers, the node producing each
//! value, and the constant matrices (f32, or int8 behind a `DequantizeLinear`) and activation
//! `QuantizeLinear`/`DequantizeLinear` pairs the encoder needs.

use std::collections::HashMap;

use prost::Message;

use super::proto::{data_type, ModelProto, NodeProto, TensorProto};
use crate::error::{Error, Result};

/// Default `axis` of `DequantizeLinear` (ONNX opset 13+).
const DQ_DEFAULT_AXIS: i64 = 1;
/// Integer operators of QOperator-format INT8 graphs (`aon quantize --format qoperator`): the
/// encoder reads QDQ graphs only, so these are refused up front with a clear message.
const QOPERATOR_OPS: [&str; 3] = ["MatMulInteger", "QLinearMatMul", "QGemm"];

/// Quantization of an activation: per-tensor scale and zero point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActQuant {
    /// Scale.
    pub scale: f32,
    /// Zero point (int8).
    pub zero_point: i8,
}

impl ActQuant {
    /// `QuantizeLinear(x)`: the int8 codes (round half to even, saturate).
    pub fn codes(&self, x: &[f32]) -> Vec<i8> {
        let (s, z) = (self.scale, f32::from(self.zero_point));
        x.iter()
            .map(|v| ((v / s).round_ties_even() + z).clamp(-128.0, 127.0) as i8)
            .collect()
    }

    /// `DequantizeLinear(QuantizeLinear(x))` in place (round half to even, saturate to int8).
    pub fn fake_quant(&self, x: &mut [f32]) {
        let (s, z) = (self.scale, f32::from(self.zero_point));
        for v in x {
            let q = ((*v / s).round_ties_even() + z).clamp(-128.0, 127.0);
            *v = (q - z) * s;
        }
    }
}

/// A constant 2-D matrix `[rows, cols]`.
pub enum Matrix {
    /// Plain f32, row-major.
    F32 {
        /// Shape.
        dims: [usize; 2],
        /// Values.
        data: Vec<f32>,
    },
    /// int8 with scales along `axis` (0: one per row, 1: one per column; one scale: per tensor).
    I8 {
        /// Shape.
        dims: [usize; 2],
        /// Quantized values, row-major.
        q: Vec<i8>,
        /// Scales.
        scale: Vec<f32>,
        /// Zero points (same length as `scale`).
        zero_point: Vec<i8>,
        /// Quantization axis.
        axis: usize,
    },
}

impl Matrix {
    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Matrix::F32 { dims, .. } | Matrix::I8 { dims, .. } => *dims,
        }
    }

    /// Scale and zero point of element `(r, c)` of an int8 matrix.
    fn qparams(scale: &[f32], zp: &[i8], axis: usize, r: usize, c: usize) -> (f32, f32) {
        let i = if scale.len() == 1 {
            0
        } else if axis == 0 {
            r
        } else {
            c
        };
        (scale[i], f32::from(zp[i]))
    }

    /// Row `r`, dequantized, added into `out`.
    pub fn add_row(&self, r: usize, out: &mut [f32]) {
        let [_, cols] = self.dims();
        match self {
            Matrix::F32 { data, .. } => {
                for (o, v) in out.iter_mut().zip(&data[r * cols..(r + 1) * cols]) {
                    *o += v;
                }
            }
            Matrix::I8 {
                q,
                scale,
                zero_point,
                axis,
                ..
            } => {
                for (c, o) in out.iter_mut().enumerate().take(cols) {
                    let (s, z) = Self::qparams(scale, zero_point, *axis, r, c);
                    *o += (f32::from(q[r * cols + c]) - z) * s;
                }
            }
        }
    }

    /// Element `(r, c)`, dequantized.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        let [_, cols] = self.dims();
        match self {
            Matrix::F32 { data, .. } => data[r * cols + c],
            Matrix::I8 {
                q,
                scale,
                zero_point,
                axis,
                ..
            } => {
                let (s, z) = Self::qparams(scale, zero_point, *axis, r, c);
                (f32::from(q[r * cols + c]) - z) * s
            }
        }
    }
}

/// The parsed graph.
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    inits: HashMap<String, TensorProto>,
    producer: HashMap<String, usize>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Model(msg.into())
}

impl OnnxGraph {
    /// Decodes an ONNX model.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let model = ModelProto::decode(bytes).map_err(|e| bad(format!("ONNX: {e}")))?;
        let graph = model.graph.ok_or_else(|| bad("ONNX: no graph"))?;
        if let Some(n) = graph
            .node
            .iter()
            .find(|n| QOPERATOR_OPS.contains(&n.op_type.as_str()))
        {
            return Err(bad(format!(
                "{} node (output {}): QOperator-format INT8 is not supported by the runtime \
                 classifier; quantize with --format qdq (the default)",
                n.op_type,
                n.output.first().map_or("?", String::as_str)
            )));
        }
        let mut producer = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.clone(), i);
            }
        }
        let inits = graph
            .initializer
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(OnnxGraph {
            nodes: graph.node,
            inits,
            producer,
        })
    }

    /// Nodes in graph order.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.nodes
    }

    /// The node producing `value`.
    pub fn producer(&self, value: &str) -> Option<&NodeProto> {
        self.producer.get(value).map(|&i| &self.nodes[i])
    }

    /// The node producing `value`, which must be a `op`.
    pub fn producer_op(&self, value: &str, op: &str) -> Result<&NodeProto> {
        match self.producer(value) {
            Some(n) if n.op_type == op => Ok(n),
            Some(n) => Err(bad(format!(
                "{value}: produced by {}, expected {op}",
                n.op_type
            ))),
            None => Err(bad(format!("{value}: not in the graph"))),
        }
    }

    fn init(&self, name: &str) -> Result<&TensorProto> {
        self.inits
            .get(name)
            .ok_or_else(|| bad(format!("{name}: not an initializer")))
    }

    /// Whether `name` is an initializer.
    pub fn has_init(&self, name: &str) -> bool {
        self.inits.contains_key(name)
    }

    /// An f32 initializer: dims and values.
    pub fn f32s(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.init(name)?;
        if t.data_type != data_type::FLOAT {
            return Err(bad(format!("{name}: not f32")));
        }
        let v = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        checked(name, dims(name, t)?, v)
    }

    /// An int8 initializer.
    pub fn i8s(&self, name: &str) -> Result<(Vec<usize>, Vec<i8>)> {
        let t = self.init(name)?;
        if t.data_type != data_type::INT8 {
            return Err(bad(format!("{name}: not int8")));
        }
        let v = if t.raw_data.is_empty() {
            t.int32_data.iter().map(|&x| x as i8).collect()
        } else {
            t.raw_data.iter().map(|&b| b as i8).collect()
        };
        checked(name, dims(name, t)?, v)
    }

    /// An int64 initializer's values.
    pub fn i64s(&self, name: &str) -> Result<Vec<i64>> {
        let t = self.init(name)?;
        if t.data_type != data_type::INT64 {
            return Err(bad(format!("{name}: not int64")));
        }
        Ok(if t.raw_data.is_empty() {
            t.int64_data.clone()
        } else {
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect()
        })
    }

    /// A scalar f32 initializer.
    pub fn scalar(&self, name: &str) -> Result<f32> {
        let (_, v) = self.f32s(name)?;
        v.first()
            .copied()
            .ok_or_else(|| bad(format!("{name}: empty")))
    }

    /// The constant matrix `value`: an f32 initializer or `DequantizeLinear` of an int8 one.
    pub fn matrix(&self, value: &str) -> Result<Matrix> {
        if self.has_init(value) {
            let (d, data) = self.f32s(value)?;
            return Ok(Matrix::F32 {
                dims: two_d(value, &d)?,
                data,
            });
        }
        let n = self.producer_op(value, "DequantizeLinear")?;
        let (d, q) = self.i8s(&n.input[0])?;
        let (_, scale) = self.f32s(input(n, 1)?)?;
        let zero_point = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(z) => self.i8s(z)?.1,
            None => vec![0; scale.len()],
        };
        let dims = two_d(value, &d)?;
        let axis = attr_i(n, "axis").unwrap_or(DQ_DEFAULT_AXIS).rem_euclid(2) as usize;
        if zero_point.len() != scale.len() || (scale.len() != 1 && scale.len() != dims[axis]) {
            return Err(bad(format!(
                "{value}: quantization parameters do not fit {dims:?}"
            )));
        }
        Ok(Matrix::I8 {
            dims,
            q,
            scale,
            zero_point,
            axis,
        })
    }

    /// If `value` is `DequantizeLinear(QuantizeLinear(x))`, its parameters and `x`.
    pub fn act_quant<'a>(&'a self, value: &'a str) -> Result<(Option<ActQuant>, &'a str)> {
        let Some(dq) = self
            .producer(value)
            .filter(|n| n.op_type == "DequantizeLinear")
        else {
            return Ok((None, value));
        };
        let q = self.producer_op(&dq.input[0], "QuantizeLinear")?;
        let scale = self.scalar(input(q, 1)?)?;
        let zero_point = match q.input.get(2).filter(|s| !s.is_empty()) {
            Some(z) => self.i8s(z)?.1.first().copied().unwrap_or(0),
            None => 0,
        };
        Ok((Some(ActQuant { scale, zero_point }), &q.input[0]))
    }
}

/// Input `i` of `n`.
pub fn input(n: &NodeProto, i: usize) -> Result<&str> {
    n.input
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("{} node without input {i}", n.op_type)))
}

/// Integer attribute `name` of `n`.
pub fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Float attribute `name` of `n`.
pub fn attr_f(n: &NodeProto, name: &str) -> Option<f32> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

/// An initializer's dimensions; a negative one is an error naming the tensor.
fn dims(name: &str, t: &TensorProto) -> Result<Vec<usize>> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("{name}: negative dimension {d}"))))
        .collect()
}

/// The values, when they are exactly as many as the dimensions say (product checked: dims
/// whose product overflows never match).
fn checked<T>(name: &str, d: Vec<usize>, v: Vec<T>) -> Result<(Vec<usize>, Vec<T>)> {
    let n = d.iter().try_fold(1usize, |acc, &x| acc.checked_mul(x));
    if n != Some(v.len()) {
        return Err(bad(format!("{name}: {} values for dims {d:?}", v.len())));
    }
    Ok((d, v))
}

fn two_d(name: &str, d: &[usize]) -> Result<[usize; 2]> {
    match d {
        [r, c] => Ok([*r, *c]),
        _ => Err(bad(format!("{name}: expected a matrix, got dims {d:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_initializer_dims_are_refused_by_name() {
        let t = |d: Vec<i64>| TensorProto {
            dims: d,
            ..Default::default()
        };
        let err = dims("w", &t(vec![-1, 4])).unwrap_err().to_string();
        assert!(err.contains("w: negative"), "{err}");
        // 2^32 * 2^32 wraps to 0: an empty tensor must not pass for it.
        let d = dims("w", &t(vec![1 << 32, 1 << 32])).unwrap();
        let err = checked("w", d, Vec::<f32>::new()).unwrap_err().to_string();
        assert!(err.contains("w: 0 values"), "{err}");
        assert!(checked("w", vec![2, 3], vec![0f32; 6]).is_ok());
    }

    #[test]
    fn qoperator_graphs_are_refused_clearly() {
        use super::super::proto::GraphProto;
        let node = NodeProto {
            input: vec!["x_quantized".into(), "w_quantized".into()],
            output: vec!["acc".into()],
            op_type: "MatMulInteger".into(),
            ..NodeProto::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![node],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        };
        let err = OnnxGraph::parse(&model.encode_to_vec())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("QOperator") && err.contains("--format qdq"),
            "{err}"
        );
    }

    #[test]
    fn fake_quant_rounds_half_to_even_and_saturates() {
        let q = ActQuant {
            scale: 0.5,
            zero_point: 1,
        };
        let mut x = [0.25, 0.75, 100.0, -100.0];
        q.fake_quant(&mut x);
        // 0.5 -> 0 (+1 -> 1) -> 0.0; 1.5 -> 2 (+1 -> 3) -> 1.0; saturated to 127 / -128.
        assert_eq!(x, [0.0, 1.0, 63.0, -64.5]);
    }

    #[test]
    fn int8_matrix_dequantizes_per_column_and_per_row() {
        let m = |axis| Matrix::I8 {
            dims: [2, 2],
            q: vec![1, 2, 3, 4],
            scale: vec![0.5, 2.0],
            zero_point: vec![0, 1],
            axis,
        };
        assert_eq!(m(1).get(1, 1), 6.0);
        assert_eq!(m(0).get(1, 0), 4.0);
        let mut row = [1.0, 1.0];
        m(1).add_row(0, &mut row);
        assert_eq!(row, [1.5, 3.0]);
    }
}
