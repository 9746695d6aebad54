//! ONNX import and export: [`Graph`] <-> `ModelProto` bytes (prost), opset 17.
//!
//! Every initializer is written once with `raw_data` (little-endian); nodes that share a weight
//! name it, so ALBERT's shared layer stays one copy in the file.

pub use ava_core::onnx_proto as proto;

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::error::{Error, Result};
use crate::ir::{Attr, DType, Dim, Graph, Node, Tensor, TensorData, ValueInfo};
use proto::{attribute_type as at, data_type as dt};

/// ONNX IR version written (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;
/// Default `ai.onnx` opset of exported graphs.
pub const OPSET: i64 = 17;
/// `producer_name` written into models.
pub const PRODUCER: &str = "ava-passes";

/// Encodes a graph as ONNX model bytes.
pub fn to_bytes(graph: &Graph) -> Vec<u8> {
    let model = proto::ModelProto {
        ir_version: IR_VERSION,
        opset_import: graph
            .opsets
            .iter()
            .map(|(domain, version)| proto::OperatorSetIdProto {
                domain: domain.clone(),
                version: *version,
            })
            .collect(),
        producer_name: PRODUCER.to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: Some(graph_proto(graph)),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Writes a graph to an `.onnx` file.
pub fn save(graph: &Graph, path: &Path) -> Result<()> {
    std::fs::write(path, to_bytes(graph)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The `producer_name` of ONNX model bytes; `None` when they do not decode as a model.
pub fn producer(bytes: &[u8]) -> Option<String> {
    /// The one field of `ModelProto` read here (the others are skipped undecoded).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Producer {
        #[prost(string, tag = "2")]
        producer_name: String,
    }
    Producer::decode(bytes).ok().map(|m| m.producer_name)
}

/// Reads an `.onnx` file.
pub fn load(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes)
}

/// Decodes ONNX model bytes into a graph.
pub fn from_bytes(bytes: &[u8]) -> Result<Graph> {
    let model = proto::ModelProto::decode(bytes)?;
    let g = model
        .graph
        .ok_or_else(|| Error::Unsupported("model without a graph".into()))?;
    let mut initializers = BTreeMap::new();
    for t in &g.initializer {
        initializers.insert(t.name.clone(), tensor_from_proto(t)?);
    }
    let inputs = g
        .input
        .iter()
        .filter(|v| !initializers.contains_key(&v.name))
        .map(value_info_from_proto)
        .collect::<Result<_>>()?;
    let graph = Graph {
        name: g.name.clone(),
        inputs,
        outputs: g
            .output
            .iter()
            .map(value_info_from_proto)
            .collect::<Result<_>>()?,
        nodes: g.node.iter().map(node_from_proto).collect::<Result<_>>()?,
        initializers,
        opsets: model
            .opset_import
            .iter()
            .map(|o| (o.domain.clone(), o.version))
            .collect(),
    };
    graph.validate()?;
    Ok(graph)
}

fn graph_proto(graph: &Graph) -> proto::GraphProto {
    proto::GraphProto {
        name: graph.name.clone(),
        node: graph.nodes.iter().map(node_proto).collect(),
        initializer: graph
            .initializers
            .iter()
            .map(|(name, t)| tensor_proto(name, t))
            .collect(),
        input: graph.inputs.iter().map(value_info_proto).collect(),
        output: graph.outputs.iter().map(value_info_proto).collect(),
        ..Default::default()
    }
}

fn node_proto(n: &Node) -> proto::NodeProto {
    proto::NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: n.name.clone(),
        op_type: n.op.clone(),
        domain: n.domain.clone(),
        attribute: n.attrs.iter().map(|(k, v)| attr_proto(k, v)).collect(),
        ..Default::default()
    }
}

fn attr_proto(name: &str, a: &Attr) -> proto::AttributeProto {
    let mut p = proto::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Float(f) => (p.f, p.r#type) = (*f, at::FLOAT),
        Attr::Int(i) => (p.i, p.r#type) = (*i, at::INT),
        Attr::String(s) => (p.s, p.r#type) = (s.as_bytes().to_vec(), at::STRING),
        Attr::Tensor(t) => (p.t, p.r#type) = (Some(tensor_proto("", t)), at::TENSOR),
        Attr::Floats(v) => (p.floats, p.r#type) = (v.clone(), at::FLOATS),
        Attr::Ints(v) => (p.ints, p.r#type) = (v.clone(), at::INTS),
    }
    p
}

fn node_from_proto(p: &proto::NodeProto) -> Result<Node> {
    let mut attrs = BTreeMap::new();
    for a in &p.attribute {
        let v = match a.r#type {
            at::FLOAT => Attr::Float(a.f),
            at::INT => Attr::Int(a.i),
            at::STRING => Attr::String(String::from_utf8_lossy(&a.s).into_owned()),
            at::TENSOR => Attr::Tensor(tensor_from_proto(a.t.as_ref().ok_or_else(|| {
                Error::Unsupported(format!("attribute {} without a tensor", a.name))
            })?)?),
            at::FLOATS => Attr::Floats(a.floats.clone()),
            at::INTS => Attr::Ints(a.ints.clone()),
            other => {
                return Err(Error::Unsupported(format!(
                    "attribute type {other} ({})",
                    a.name
                )))
            }
        };
        attrs.insert(a.name.clone(), v);
    }
    Ok(Node {
        name: p.name.clone(),
        op: p.op_type.clone(),
        domain: p.domain.clone(),
        inputs: p.input.clone(),
        outputs: p.output.clone(),
        attrs,
    })
}

fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => dt::FLOAT,
        DType::I64 => dt::INT64,
        DType::I32 => dt::INT32,
        DType::Bool => dt::BOOL,
        DType::I8 => dt::INT8,
    }
}

fn dtype_from_code(code: i32) -> Result<DType> {
    Ok(match code {
        dt::FLOAT => DType::F32,
        dt::INT64 => DType::I64,
        dt::INT32 => DType::I32,
        dt::BOOL => DType::Bool,
        dt::INT8 => DType::I8,
        other => return Err(Error::Unsupported(format!("tensor data type {other}"))),
    })
}

fn tensor_proto(name: &str, t: &Tensor) -> proto::TensorProto {
    let raw_data = match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::I8(v) => v.iter().map(|&b| b as u8).collect(),
    };
    proto::TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: dtype_code(t.dtype()),
        name: name.to_string(),
        raw_data,
        ..Default::default()
    }
}

fn tensor_from_proto(p: &proto::TensorProto) -> Result<Tensor> {
    if p.data_location != 0 {
        return Err(Error::Unsupported(format!(
            "external data for tensor {}",
            p.name
        )));
    }
    let bad = |reason: String| Error::Invalid(format!("tensor `{}`: {reason}", p.name));
    let dims: Vec<usize> = p
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("negative dimension in {:?}", p.dims)))?;
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {:?} overflow", p.dims)))?;
    let raw = &p.raw_data;
    let dtype = dtype_from_code(p.data_type)?;
    // Raw data holds exactly the elements the dimensions declare (checked before decoding).
    let width = match dtype {
        DType::F32 | DType::I32 => 4,
        DType::I64 => 8,
        DType::Bool | DType::I8 => 1,
    };
    if !raw.is_empty() && n.checked_mul(width) != Some(raw.len()) {
        return Err(bad(format!(
            "{} bytes of data for dimensions {:?} ({n} elements of {width} bytes)",
            raw.len(),
            p.dims
        )));
    }
    let data = match dtype {
        DType::F32 if raw.is_empty() => TensorData::F32(p.float_data.clone()),
        DType::F32 => TensorData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        DType::I64 if raw.is_empty() => TensorData::I64(p.int64_data.clone()),
        DType::I64 => TensorData::I64(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        DType::I32 if raw.is_empty() => TensorData::I32(p.int32_data.clone()),
        DType::I32 => TensorData::I32(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        DType::Bool if raw.is_empty() => {
            TensorData::Bool(p.int32_data.iter().map(|&x| x != 0).collect())
        }
        DType::Bool => TensorData::Bool(raw.iter().map(|&x| x != 0).collect()),
        // int8 values in `int32_data` are one per element, widened.
        DType::I8 if raw.is_empty() => {
            TensorData::I8(p.int32_data.iter().map(|&x| x as i8).collect())
        }
        DType::I8 => TensorData::I8(raw.iter().map(|&x| x as i8).collect()),
    };
    let t = Tensor { dims, data };
    let len = match &t.data {
        TensorData::F32(v) => v.len(),
        TensorData::I64(v) => v.len(),
        TensorData::I32(v) => v.len(),
        TensorData::Bool(v) => v.len(),
        TensorData::I8(v) => v.len(),
    };
    if len != n {
        return Err(bad(format!("{len} values for {n} elements")));
    }
    Ok(t)
}

fn value_info_proto(v: &ValueInfo) -> proto::ValueInfoProto {
    let dim = v
        .dims
        .iter()
        .map(|d| proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => proto::DimValue::DimValue(*n as i64),
                Dim::Param(p) => proto::DimValue::DimParam(p.clone()),
            }),
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: dtype_code(v.dtype),
                shape: Some(proto::TensorShapeProto { dim }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_info_from_proto(p: &proto::ValueInfoProto) -> Result<ValueInfo> {
    let tt = p
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| Error::Unsupported(format!("value {} is not a tensor", p.name)))?;
    let dims = tt
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(proto::DimValue::DimValue(n)) => {
                        usize::try_from(*n).map(Dim::Fixed).map_err(|_| {
                            Error::Invalid(format!("value `{}`: negative dimension {n}", p.name))
                        })
                    }
                    Some(proto::DimValue::DimParam(s)) => Ok(Dim::Param(s.clone())),
                    None => Ok(Dim::Param(String::new())),
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(ValueInfo {
        name: p.name.clone(),
        dtype: dtype_from_code(tt.elem_type)?,
        dims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with(t: proto::TensorProto) -> Vec<u8> {
        proto::ModelProto {
            graph: Some(proto::GraphProto {
                initializer: vec![t],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn hostile_initializer_dims_are_rejected_by_name() {
        let tensor = |dims: Vec<i64>, raw: Vec<u8>| proto::TensorProto {
            name: "evil".into(),
            dims,
            data_type: dt::FLOAT,
            raw_data: raw,
            ..Default::default()
        };
        let cases = [
            (vec![-1, 4], vec![0; 16], "negative"),
            // 2^32 * 2^32 wraps to 0 in 64-bit arithmetic: an empty tensor with huge dims.
            (vec![1 << 32, 1 << 32], vec![], "overflow"),
            (vec![1 << 62, 4], vec![0; 4], "overflow"),
            (vec![2, 3], vec![0; 25], "bytes of data"),
            (vec![2, 3], vec![0; 20], "bytes of data"),
        ];
        for (dims, raw, what) in cases {
            let err = from_bytes(&model_with(tensor(dims.clone(), raw))).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("`evil`") && msg.contains(what),
                "{dims:?}: {msg}"
            );
        }
        assert!(from_bytes(&model_with(tensor(vec![2, 3], vec![0; 24]))).is_ok());
    }

    #[test]
    fn round_trip_keeps_graph() {
        let mut g = Graph {
            name: "t".into(),
            ..Default::default()
        };
        g.opsets.insert(String::new(), OPSET);
        g.inputs.push(ValueInfo {
            name: "x".into(),
            dtype: DType::F32,
            dims: vec![Dim::Param("batch".into()), Dim::Fixed(2)],
        });
        g.initializers.insert(
            "w".into(),
            Tensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        );
        g.initializers
            .insert("axes".into(), Tensor::i64(vec![1], vec![-1]));
        g.nodes.push(
            Node::new("mm", "MatMul", &["x", "w"], &["y"])
                .with("alpha", Attr::Float(0.5))
                .with("perm", Attr::Ints(vec![1, 0])),
        );
        g.outputs.push(ValueInfo {
            name: "y".into(),
            dtype: DType::F32,
            dims: vec![Dim::Param("batch".into()), Dim::Fixed(2)],
        });
        assert_eq!(from_bytes(&to_bytes(&g)).unwrap(), g);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(from_bytes(b"\xff\xff\xff").is_err());
    }
}
