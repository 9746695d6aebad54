//! ALBERT (`AlbertModel`, `AlbertForSequenceClassification`) as an IR graph, the way
//! transformers' `modeling_albert.py` computes it (eval mode).
//!
//! The graph is the plain, unfused form an exporter writes: weights exactly as in the checkpoint
//! (`[out, in]`, transposed by `Transpose` nodes), LayerNorm and the tanh GELU spelled out in
//! primitive ops. The [`crate::pipeline`]s fold and fuse it. Hidden states are kept as rows
//! `[batch * sequence, hidden]`, so every linear layer is a 2-D `MatMul` + `Add`.
//!
//! Every unrolled layer of a weight group reads the SAME initializers (named as in the
//! checkpoint): the shared layer is stored once.

use ava_core::{AlbertConfig, Checkpoint};

use crate::error::{Error, Result};
use crate::ir::{Attr, DType, Dim, Graph, Node, Tensor, ValueInfo};
use crate::onnx::OPSET;

/// Graph input: token ids `[batch, sequence]`, int64.
pub const INPUT_IDS: &str = "input_ids";
/// Graph input: 1 for real tokens, 0 for padding, int64.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Graph input: segment ids, int64.
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
/// Graph output of classifiers: `[batch, num_labels]`.
pub const LOGITS: &str = "logits";
/// Graph output of bare encoders: the pooler output `[batch, hidden]`.
pub const POOLED: &str = "pooled";

/// Builds the inference graph of an ALBERT checkpoint.
pub fn build(ckpt: &Checkpoint) -> Result<Graph> {
    let cfg = ckpt.albert()?;
    let mut b = Builder::new(ckpt, &cfg)?;
    let rows = b.embeddings()?;
    let mut h = rows;
    for layer in 0..cfg.num_hidden_layers {
        let group = cfg.group_of_layer(layer);
        for inner in 0..cfg.inner_group_num {
            let scope = format!("layer.{layer}.{inner}");
            let prefix = format!(
                "{}encoder.albert_layer_groups.{group}.albert_layers.{inner}.",
                cfg.weight_prefix
            );
            h = b.layer(&scope, &prefix, &h)?;
        }
    }
    let out = b.head(&h)?;
    b.finish(&out)
}

/// Emits nodes and loads weights, one initializer per checkpoint tensor.
struct Builder<'a> {
    ckpt: &'a Checkpoint,
    cfg: &'a AlbertConfig,
    g: Graph,
    /// `[batch, sequence]` as a 1-D int64 value.
    shape_bs: String,
    /// Additive attention mask `[batch, 1, 1, sequence]`.
    mask: String,
}

impl<'a> Builder<'a> {
    fn new(ckpt: &'a Checkpoint, cfg: &'a AlbertConfig) -> Result<Self> {
        let mut g = Graph {
            name: "albert".into(),
            ..Default::default()
        };
        g.opsets.insert(String::new(), OPSET);
        for name in [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS] {
            g.inputs.push(ValueInfo {
                name: name.into(),
                dtype: DType::I64,
                dims: vec![Dim::Param("batch".into()), Dim::Param("sequence".into())],
            });
        }
        let mut b = Builder {
            ckpt,
            cfg,
            g,
            shape_bs: String::new(),
            mask: String::new(),
        };
        b.shape_bs = b.op("shape", "Shape", &[INPUT_IDS], vec![]);
        let m = b.op(
            "mask/cast",
            "Cast",
            &[ATTENTION_MASK],
            vec![("to", Attr::Int(1))],
        );
        let one = b.konst("mask/one", Tensor::scalar(1.0));
        let inv = b.op("mask/invert", "Sub", &[&one, &m], vec![]);
        let min = b.konst("mask/min", Tensor::scalar(f32::MIN));
        let add = b.op("mask/scale", "Mul", &[&inv, &min], vec![]);
        let axes = b.konst("mask/axes", Tensor::i64(vec![2], vec![1, 2]));
        b.mask = b.op("mask/unsqueeze", "Unsqueeze", &[&add, &axes], vec![]);
        Ok(b)
    }

    /// Adds a node whose single output is named after the node.
    fn op(&mut self, name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let mut n = Node::new(name, op, inputs, &[name]);
        for (k, v) in attrs {
            n.attrs.insert(k.to_string(), v);
        }
        self.g.nodes.push(n);
        name.to_string()
    }

    fn konst(&mut self, name: &str, t: Tensor) -> String {
        self.g.initializers.insert(name.to_string(), t);
        name.to_string()
    }

    /// Loads checkpoint tensor `name` as an initializer of the same name (once).
    fn weight(&mut self, name: &str) -> Result<String> {
        if !self.g.initializers.contains_key(name) {
            let view = self.ckpt.tensor(name)?;
            let dims = view.shape.to_vec();
            self.g
                .initializers
                .insert(name.to_string(), Tensor::f32(dims, view.to_f32_vec()?));
        }
        Ok(name.to_string())
    }

    /// `x W^T + b` for checkpoint linear `prefix` (`prefix.weight`, `prefix.bias`).
    fn linear(&mut self, scope: &str, prefix: &str, x: &str) -> Result<String> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let bias = self.weight(&format!("{prefix}.bias"))?;
        let wt = self.op(
            &format!("{scope}/transpose"),
            "Transpose",
            &[&w],
            vec![("perm", Attr::Ints(vec![1, 0]))],
        );
        let y = self.op(&format!("{scope}/matmul"), "MatMul", &[x, &wt], vec![]);
        Ok(self.op(&format!("{scope}/add"), "Add", &[&y, &bias], vec![]))
    }

    /// LayerNorm over the last axis, spelled out as torch's exporter writes it.
    fn layer_norm(&mut self, scope: &str, prefix: &str, x: &str) -> Result<String> {
        let gamma = self.weight(&format!("{prefix}.weight"))?;
        let beta = self.weight(&format!("{prefix}.bias"))?;
        let last = vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
        let mean = self.op(&format!("{scope}/mean"), "ReduceMean", &[x], last.clone());
        let d = self.op(&format!("{scope}/sub"), "Sub", &[x, &mean], vec![]);
        let two = self.konst(&format!("{scope}/two"), Tensor::scalar(2.0));
        let sq = self.op(&format!("{scope}/pow"), "Pow", &[&d, &two], vec![]);
        let var = self.op(&format!("{scope}/var"), "ReduceMean", &[&sq], last);
        let eps = self.konst(
            &format!("{scope}/eps"),
            Tensor::scalar(self.cfg.layer_norm_eps as f32),
        );
        let ve = self.op(&format!("{scope}/add_eps"), "Add", &[&var, &eps], vec![]);
        let sd = self.op(&format!("{scope}/sqrt"), "Sqrt", &[&ve], vec![]);
        let n = self.op(&format!("{scope}/div"), "Div", &[&d, &sd], vec![]);
        let y = self.op(&format!("{scope}/mul"), "Mul", &[&n, &gamma], vec![]);
        Ok(self.op(&format!("{scope}/add"), "Add", &[&y, &beta], vec![]))
    }

    /// The FFN activation; the tanh GELU spelled out in primitive ops.
    fn activation(&mut self, scope: &str, x: &str) -> Result<String> {
        match self.cfg.hidden_act.as_str() {
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => {
                let three = self.konst(&format!("{scope}/three"), Tensor::scalar(3.0));
                let cube = self.op(&format!("{scope}/pow"), "Pow", &[x, &three], vec![]);
                let k = self.konst(
                    &format!("{scope}/k"),
                    Tensor::scalar(crate::eval::GELU_TANH_K),
                );
                let kc = self.op(&format!("{scope}/mul_k"), "Mul", &[&cube, &k], vec![]);
                let inner = self.op(&format!("{scope}/add_x"), "Add", &[x, &kc], vec![]);
                let c = self.konst(
                    &format!("{scope}/c"),
                    Tensor::scalar(crate::eval::GELU_TANH_C),
                );
                let sc = self.op(&format!("{scope}/mul_c"), "Mul", &[&inner, &c], vec![]);
                let t = self.op(&format!("{scope}/tanh"), "Tanh", &[&sc], vec![]);
                let one = self.konst(&format!("{scope}/one"), Tensor::scalar(1.0));
                let t1 = self.op(&format!("{scope}/add_one"), "Add", &[&t, &one], vec![]);
                let half = self.konst(&format!("{scope}/half"), Tensor::scalar(0.5));
                let hx = self.op(&format!("{scope}/mul_half"), "Mul", &[x, &half], vec![]);
                Ok(self.op(&format!("{scope}/mul"), "Mul", &[&hx, &t1], vec![]))
            }
            "relu" => Ok(self.op(&format!("{scope}/relu"), "Relu", &[x], vec![])),
            other => Err(Error::Unsupported(format!(
                "ALBERT activation `{other}` in export"
            ))),
        }
    }

    /// Word + position + token-type embeddings, LayerNorm, projection to hidden rows.
    fn embeddings(&mut self) -> Result<String> {
        let p = format!("{}embeddings.", self.cfg.weight_prefix);
        let we = self.weight(&format!("{p}word_embeddings.weight"))?;
        let pe = self.weight(&format!("{p}position_embeddings.weight"))?;
        let te = self.weight(&format!("{p}token_type_embeddings.weight"))?;
        let words = self.op("embeddings/words", "Gather", &[&we, INPUT_IDS], vec![]);
        let (s1, s2, zero) = (
            self.konst("embeddings/one", Tensor::i64(vec![1], vec![1])),
            self.konst("embeddings/two", Tensor::i64(vec![1], vec![2])),
            self.konst("embeddings/zero", Tensor::i64(vec![1], vec![0])),
        );
        let shape_bs = self.shape_bs.clone();
        let seq = self.op(
            "embeddings/seq_len",
            "Slice",
            &[&shape_bs, &s1, &s2],
            vec![],
        );
        let pos = self.op(
            "embeddings/positions",
            "Slice",
            &[&pe, &zero, &seq, &zero],
            vec![],
        );
        let types = self.op("embeddings/types", "Gather", &[&te, TOKEN_TYPE_IDS], vec![]);
        let sum = self.op("embeddings/add_pos", "Add", &[&words, &pos], vec![]);
        let sum = self.op("embeddings/add_types", "Add", &[&sum, &types], vec![]);
        let ln = self.layer_norm("embeddings/norm", &format!("{p}LayerNorm"), &sum)?;
        let e = self.cfg.embedding_size as i64;
        let flat = self.konst("embeddings/rows_shape", Tensor::i64(vec![2], vec![-1, e]));
        let rows = self.op("embeddings/rows", "Reshape", &[&ln, &flat], vec![]);
        let mapping = format!(
            "{}encoder.embedding_hidden_mapping_in",
            self.cfg.weight_prefix
        );
        self.linear("embeddings/mapping_in", &mapping, &rows)
    }

    /// Splits rows `[N, H]` into heads `[B, heads, S, head_dim]` (`perm` picks the layout).
    fn heads(&mut self, scope: &str, x: &str, perm: Vec<i64>) -> String {
        let nh = self.cfg.num_attention_heads as i64;
        let hd = self.cfg.head_dim() as i64;
        let tail = self.konst(
            "attention/heads_shape_tail",
            Tensor::i64(vec![2], vec![nh, hd]),
        );
        let shape_bs = self.shape_bs.clone();
        let shape = self.op(
            &format!("{scope}/heads_shape"),
            "Concat",
            &[&shape_bs, &tail],
            vec![("axis", Attr::Int(0))],
        );
        let r = self.op(
            &format!("{scope}/split_heads"),
            "Reshape",
            &[x, &shape],
            vec![],
        );
        self.op(
            &format!("{scope}/transpose_heads"),
            "Transpose",
            &[&r],
            vec![("perm", Attr::Ints(perm))],
        )
    }

    fn attention(&mut self, scope: &str, prefix: &str, h: &str) -> Result<String> {
        let q = self.linear(
            &format!("{scope}/query"),
            &format!("{prefix}attention.query"),
            h,
        )?;
        let k = self.linear(
            &format!("{scope}/key"),
            &format!("{prefix}attention.key"),
            h,
        )?;
        let v = self.linear(
            &format!("{scope}/value"),
            &format!("{prefix}attention.value"),
            h,
        )?;
        let q = self.heads(&format!("{scope}/query"), &q, vec![0, 2, 1, 3]);
        let k = self.heads(&format!("{scope}/key"), &k, vec![0, 2, 3, 1]);
        let v = self.heads(&format!("{scope}/value"), &v, vec![0, 2, 1, 3]);
        let s = self.op(&format!("{scope}/scores"), "MatMul", &[&q, &k], vec![]);
        let hd = self.konst(
            "attention/head_dim",
            Tensor::scalar(self.cfg.head_dim() as f32),
        );
        let scale = self.op(&format!("{scope}/scale"), "Sqrt", &[&hd], vec![]);
        let s = self.op(&format!("{scope}/scaled"), "Div", &[&s, &scale], vec![]);
        let mask = self.mask.clone();
        let s = self.op(&format!("{scope}/masked"), "Add", &[&s, &mask], vec![]);
        let p = self.op(
            &format!("{scope}/softmax"),
            "Softmax",
            &[&s],
            vec![("axis", Attr::Int(-1))],
        );
        let c = self.op(&format!("{scope}/context"), "MatMul", &[&p, &v], vec![]);
        let c = self.op(
            &format!("{scope}/merge"),
            "Transpose",
            &[&c],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let rows = self.konst(
            "attention/rows_shape",
            Tensor::i64(vec![2], vec![-1, self.cfg.hidden_size as i64]),
        );
        let c = self.op(&format!("{scope}/rows"), "Reshape", &[&c, &rows], vec![]);
        let o = self.linear(
            &format!("{scope}/dense"),
            &format!("{prefix}attention.dense"),
            &c,
        )?;
        let r = self.op(&format!("{scope}/residual"), "Add", &[h, &o], vec![]);
        self.layer_norm(
            &format!("{scope}/norm"),
            &format!("{prefix}attention.LayerNorm"),
            &r,
        )
    }

    fn layer(&mut self, scope: &str, prefix: &str, h: &str) -> Result<String> {
        let a = self.attention(&format!("{scope}/attention"), prefix, h)?;
        let f = self.linear(&format!("{scope}/ffn"), &format!("{prefix}ffn"), &a)?;
        let f = self.activation(&format!("{scope}/act"), &f)?;
        let f = self.linear(
            &format!("{scope}/ffn_output"),
            &format!("{prefix}ffn_output"),
            &f,
        )?;
        let r = self.op(&format!("{scope}/residual"), "Add", &[&f, &a], vec![]);
        self.layer_norm(
            &format!("{scope}/norm"),
            &format!("{prefix}full_layer_layer_norm"),
            &r,
        )
    }

    /// Pooler (`tanh(dense(h[:, 0]))`) and, for classifiers, the classifier.
    fn head(&mut self, h: &str) -> Result<String> {
        if !self.cfg.has_pooler() {
            return Err(Error::Unsupported(
                "ALBERT export needs the pooler (AlbertModel or a sequence classifier)".into(),
            ));
        }
        let hs = self.konst(
            "pooler/hidden",
            Tensor::i64(vec![1], vec![self.cfg.hidden_size as i64]),
        );
        let shape_bs = self.shape_bs.clone();
        let shape = self.op(
            "pooler/shape",
            "Concat",
            &[&shape_bs, &hs],
            vec![("axis", Attr::Int(0))],
        );
        let h3 = self.op("pooler/unflatten", "Reshape", &[h, &shape], vec![]);
        let zero = self.konst("pooler/cls_index", Tensor::i64(vec![], vec![0]));
        let cls = self.op(
            "pooler/cls",
            "Gather",
            &[&h3, &zero],
            vec![("axis", Attr::Int(1))],
        );
        let d = self.linear(
            "pooler/dense",
            &format!("{}pooler", self.cfg.weight_prefix),
            &cls,
        )?;
        let pooled = self.op("pooler/tanh", "Tanh", &[&d], vec![]);
        if self.cfg.is_classifier() && self.ckpt.contains("classifier.weight") {
            return self.linear("classifier", "classifier", &pooled);
        }
        Ok(pooled)
    }

    fn finish(mut self, out: &str) -> Result<Graph> {
        let classifier = out != "pooler/tanh";
        let (name, width) = if classifier {
            (LOGITS, self.cfg.num_labels())
        } else {
            (POOLED, self.cfg.hidden_size)
        };
        // Rename the last node's output to the public name.
        if let Some(n) = self.g.nodes.last_mut() {
            n.outputs[0] = name.to_string();
        }
        self.g.outputs.push(ValueInfo {
            name: name.into(),
            dtype: DType::F32,
            dims: vec![Dim::Param("batch".into()), Dim::Fixed(width)],
        });
        self.g.validate()?;
        Ok(self.g)
    }
}
