//! The graph IR: ONNX-shaped (values named by strings, nodes in topological order, weights as
//! named initializers) so import and export are one-to-one, with helpers the passes share.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};

/// Operator domain of onnxruntime's contrib ops (`FastGelu`, ...).
pub const MS_DOMAIN: &str = "com.microsoft";

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit signed integer (ids, shapes).
    I64,
    /// 32-bit signed integer.
    I32,
    /// Boolean.
    Bool,
    /// 8-bit signed integer (quantized weights and activations).
    I8,
}

/// Tensor contents.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TensorData {
    /// `F32` values.
    F32(Vec<f32>),
    /// `I64` values.
    I64(Vec<i64>),
    /// `I32` values.
    I32(Vec<i32>),
    /// `Bool` values.
    Bool(Vec<bool>),
    /// `I8` values.
    I8(Vec<i8>),
}

/// A constant tensor (initializer, attribute or evaluation result), row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, `dims.iter().product()` of them.
    pub data: TensorData,
}

impl Tensor {
    /// An f32 tensor.
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        debug_assert_eq!(element_count(&dims), v.len());
        Tensor {
            dims,
            data: TensorData::F32(v),
        }
    }

    /// An i64 tensor.
    pub fn i64(dims: Vec<usize>, v: Vec<i64>) -> Self {
        debug_assert_eq!(element_count(&dims), v.len());
        Tensor {
            dims,
            data: TensorData::I64(v),
        }
    }

    /// A 0-d f32 tensor.
    pub fn scalar(v: f32) -> Self {
        Tensor::f32(vec![], vec![v])
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
            TensorData::I8(_) => DType::I8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.dims)
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of data.
    pub fn nbytes(&self) -> usize {
        self.len()
            * match self.dtype() {
                DType::F32 | DType::I32 => 4,
                DType::I8 | DType::Bool => 1,
                _ => 8,
            }
    }

    /// The values as f32, if it is f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values as i64 (i32 and bool widened), if integral.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::F32(_) => None,
        }
    }

    /// The single value of a one-element f32 tensor.
    pub fn scalar_f32(&self) -> Option<f32> {
        match self.as_f32() {
            Some([v]) => Some(*v),
            _ => None,
        }
    }
}

/// Elements of a tensor of `dims`: 0 when any dimension is 0, however large the others (an empty
/// tensor's other dimensions are not bounded by its data, so their product may not fit).
pub fn element_count(dims: &[usize]) -> usize {
    if dims.contains(&0) {
        return 0;
    }
    dims.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Attr {
    /// `f`.
    Float(f32),
    /// `i`.
    Int(i64),
    /// `s`.
    String(String),
    /// `t`.
    Tensor(Tensor),
    /// `floats`.
    Floats(Vec<f32>),
    /// `ints`.
    Ints(Vec<i64>),
}

/// One operator application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Unique node name.
    pub name: String,
    /// Operator (`MatMul`, `LayerNormalization`, ...).
    pub op: String,
    /// Operator domain: empty for the standard `ai.onnx` ops.
    pub domain: String,
    /// Input value names (`""` for an absent optional input).
    pub inputs: Vec<String>,
    /// Output value names.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    /// A standard-domain node.
    pub fn new(name: impl Into<String>, op: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        Node {
            name: name.into(),
            op: op.to_string(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with(mut self, key: &str, value: Attr) -> Self {
        self.attrs.insert(key.to_string(), value);
        self
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attrs.get(key) {
            Some(Attr::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A float attribute.
    pub fn float(&self, key: &str) -> Option<f32> {
        match self.attrs.get(key) {
            Some(Attr::Float(v)) => Some(*v),
            _ => None,
        }
    }

    /// An integer-list attribute.
    pub fn ints(&self, key: &str) -> Option<&[i64]> {
        match self.attrs.get(key) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// Whether this is the standard-domain operator `op`.
    pub fn is(&self, op: &str) -> bool {
        self.domain.is_empty() && self.op == op
    }
}

/// A dimension of a graph input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dim {
    /// Known size.
    Fixed(usize),
    /// Symbolic size (`batch`, `sequence`).
    Param(String),
}

/// Name, element type and shape of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub dims: Vec<Dim>,
}

/// A computation graph: inputs, initializers, nodes in topological order, outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Runtime inputs.
    pub inputs: Vec<ValueInfo>,
    /// Outputs.
    pub outputs: Vec<ValueInfo>,
    /// Nodes, topologically sorted.
    pub nodes: Vec<Node>,
    /// Constant tensors by value name.
    pub initializers: BTreeMap<String, Tensor>,
    /// Operator-set versions by domain (`""` is `ai.onnx`).
    pub opsets: BTreeMap<String, i64>,
}

impl Graph {
    /// Index of the node producing each value.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut map = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                map.insert(o.as_str(), i);
            }
        }
        map
    }

    /// How many node inputs and graph outputs read each value.
    pub fn use_counts(&self) -> HashMap<&str, usize> {
        let mut map: HashMap<&str, usize> = HashMap::new();
        let reads = self.nodes.iter().flat_map(|n| n.inputs.iter());
        for v in reads.chain(self.outputs.iter().map(|o| &o.name)) {
            *map.entry(v.as_str()).or_default() += 1;
        }
        map
    }

    /// Whether `value` is a graph output.
    pub fn is_output(&self, value: &str) -> bool {
        self.outputs.iter().any(|o| o.name == value)
    }

    /// Replaces every read of `from` by `to` (node inputs; graph outputs keep their names, so
    /// a graph output is renamed at its producer instead).
    pub fn replace_uses(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for i in &mut n.inputs {
                if i == from {
                    *i = to.to_string();
                }
            }
        }
    }

    /// A value or node name not used yet, starting with `stem`.
    pub fn fresh_name(&self, stem: &str) -> String {
        let used: HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().chain(std::iter::once(&n.name)))
            .map(String::as_str)
            .chain(self.initializers.keys().map(String::as_str))
            .collect();
        (0..)
            .map(|k| {
                if k == 0 {
                    stem.to_string()
                } else {
                    format!("{stem}_{k}")
                }
            })
            .find(|c| !used.contains(c.as_str()))
            .unwrap_or_default()
    }

    /// Node count per operator, for reports.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut map = BTreeMap::new();
        for n in &self.nodes {
            *map.entry(n.op.clone()).or_default() += 1;
        }
        map
    }

    /// Bytes of all initializers.
    pub fn weight_bytes(&self) -> usize {
        self.initializers.values().map(Tensor::nbytes).sum()
    }

    /// Checks that every read value is defined once before use and every output exists.
    pub fn validate(&self) -> Result<()> {
        let mut defined: HashSet<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
        defined.extend(self.initializers.keys().map(String::as_str));
        for n in &self.nodes {
            check_arity(n)?;
            if let Some(missing) = n
                .inputs
                .iter()
                .find(|i| !i.is_empty() && !defined.contains(i.as_str()))
            {
                return Err(Error::Invalid(format!(
                    "node {} reads undefined `{missing}`",
                    n.name
                )));
            }
            for o in &n.outputs {
                if !defined.insert(o) {
                    return Err(Error::Invalid(format!("`{o}` is defined twice")));
                }
            }
        }
        match self
            .outputs
            .iter()
            .find(|o| !defined.contains(o.name.as_str()))
        {
            Some(o) => Err(Error::Invalid(format!(
                "output `{}` is never produced",
                o.name
            ))),
            None => Ok(()),
        }
    }
}

/// Fewest inputs each standard operator the passes and the evaluator read takes (ONNX opset 17;
/// optional trailing inputs not counted).
const MIN_INPUTS: [(&str, usize); 29] = [
    ("Add", 2),
    ("Sub", 2),
    ("Mul", 2),
    ("Div", 2),
    ("Pow", 2),
    ("Equal", 2),
    ("MatMul", 2),
    ("MatMulInteger", 2),
    ("Gemm", 2),
    ("Gather", 2),
    ("Reshape", 2),
    ("Expand", 2),
    ("QuantizeLinear", 2),
    ("DequantizeLinear", 2),
    ("LayerNormalization", 2),
    ("Where", 3),
    ("Slice", 3),
    ("Identity", 1),
    ("Transpose", 1),
    ("Sqrt", 1),
    ("Tanh", 1),
    ("Neg", 1),
    ("Cast", 1),
    ("Shape", 1),
    ("Softmax", 1),
    ("ReduceMean", 1),
    ("Unsqueeze", 1),
    ("Squeeze", 1),
    ("Concat", 1),
];

/// A node has an output, and a standard operator at least the inputs it needs (the passes
/// index them by position).
fn check_arity(n: &Node) -> Result<()> {
    if n.outputs.is_empty() {
        return Err(Error::Invalid(format!("node {} has no output", n.name)));
    }
    let needed = n
        .domain
        .is_empty()
        .then(|| MIN_INPUTS.iter().find(|(op, _)| *op == n.op))
        .flatten()
        .map_or(0, |&(_, k)| k);
    if n.inputs.len() < needed {
        return Err(Error::Invalid(format!(
            "node {} ({}) has {} inputs; it takes at least {needed}",
            n.name,
            n.op,
            n.inputs.len()
        )));
    }
    Ok(())
}
