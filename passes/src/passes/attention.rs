//! Attention fusion: the self-attention subgraph as [`crate::albert`] writes it,
//!
//! ```text
//! Qh = Transpose[0,2,1,3](Reshape(q, Concat(bs, [heads, head_dim])))   (K: perm [0,2,3,1])
//! P  = Softmax(Add(Div(MatMul(Qh, Kh), c), mask))          (or Mul(.., 1/c))
//! y  = Reshape(Transpose[0,2,1,3](MatMul(P, Vh)), rows)
//! mask = Unsqueeze[1,2](Mul(Sub(1, Cast(attention_mask)), filter))
//! ```
//!
//! becomes onnxruntime's contrib op `com.microsoft.MultiHeadAttention(q3, k3, v3, "",
//! Cast<int32>(attention_mask))` with `num_heads`, `scale = 1/c` and
//! `mask_filter_value = filter`, where `q3 = Reshape(q, Concat(bs, [heads * head_dim]))` is
//! the `[batch, sequence, hidden]` view the op takes; `y`'s `Reshape` then reads the op's output.
//! The additive mask becomes a key-padding mask: onnxruntime adds `mask_filter_value` to the
//! scores of keys whose mask is 0, which is what `(1 - m) * filter` adds for 0/1 masks.
//!
//! Opset 17 has no attention operator, so only the `onnxruntime` pipeline runs this pass.
//! Every intermediate value must have one reader; anything else (another perm, no scale, a
//! mask that is not a padding mask) is left alone.

use std::collections::{HashMap, HashSet};

use super::{Matcher, Pass};
use crate::error::Result;
use crate::ir::{Attr, Graph, Node, Tensor, MS_DOMAIN};

/// ONNX `TensorProto.DataType` of int32, the key padding mask's type.
const INT32: i64 = 6;
/// ONNX `TensorProto.DataType` of float.
const FLOAT: i64 = 1;
/// Head-split perm of Q and V.
const HEADS_PERM: [i64; 4] = [0, 2, 1, 3];
/// Head-split perm of K (already transposed for `Q K^T`).
const KEY_PERM: [i64; 4] = [0, 2, 3, 1];

/// Fuses self-attention into `MultiHeadAttention`.
pub struct AttentionFusion;

/// One recognised attention block.
struct Found {
    /// Index of the final `Reshape` (it stays, reading the fused output).
    rows: usize,
    scope: String,
    q: String,
    k: String,
    v: String,
    /// `[batch, sequence]` value of the head-split shapes.
    bs: String,
    heads: i64,
    head_dim: i64,
    scale: f32,
    /// Value holding the 0/1 attention mask, and the filter value its padding gets.
    mask: String,
    filter: f32,
}

impl Pass for AttentionFusion {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn run(&self, g: &mut Graph) -> Result<bool> {
        let found: Vec<Found> = {
            let m = Matcher::new(g);
            let uses = g.use_counts();
            g.nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| matches(g, &m, &uses, n).map(|f| Found { rows: i, ..f }))
                .collect()
        };
        if found.is_empty() {
            return Ok(false);
        }
        g.opsets.entry(MS_DOMAIN.to_string()).or_insert(1);
        rewrite(g, found);
        Ok(true)
    }
}

/// Inserts the fused nodes before each block's final `Reshape` and points it at them; the old
/// nodes are left for dead-code elimination.
fn rewrite(g: &mut Graph, found: Vec<Found>) {
    let mut used: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().chain(std::iter::once(&n.name)))
        .chain(g.initializers.keys())
        .chain(g.inputs.iter().map(|i| &i.name))
        .cloned()
        .collect();
    let mut fresh = |stem: &str| {
        let name = (0..)
            .map(|k| match k {
                0 => stem.to_string(),
                k => format!("{stem}_{k}"),
            })
            .find(|c| !used.contains(c))
            .unwrap_or_default();
        used.insert(name.clone());
        name
    };
    let mut masks: HashMap<String, String> = HashMap::new();
    let mut shapes: HashMap<(String, i64), String> = HashMap::new();
    let mut before: HashMap<usize, Vec<Node>> = HashMap::new();
    for f in found {
        let mut new = Vec::new();
        let mask = masks
            .entry(f.mask.clone())
            .or_insert_with(|| {
                let out = fresh(&format!("{}/int32", f.mask));
                new.push(
                    Node::new(out.clone(), "Cast", &[&f.mask], &[&out])
                        .with("to", Attr::Int(INT32)),
                );
                out
            })
            .clone();
        let hidden = f.heads * f.head_dim;
        let shape = shapes
            .entry((f.bs.clone(), hidden))
            .or_insert_with(|| {
                let tail = fresh("attention/hidden");
                g.initializers
                    .insert(tail.clone(), Tensor::i64(vec![1], vec![hidden]));
                let out = fresh("attention/bsh_shape");
                new.push(
                    Node::new(out.clone(), "Concat", &[&f.bs, &tail], &[&out])
                        .with("axis", Attr::Int(0)),
                );
                out
            })
            .clone();
        let mut three_d = |name: &str, x: &str| {
            let out = fresh(&format!("{}/{name}_3d", f.scope));
            new.push(Node::new(out.clone(), "Reshape", &[x, &shape], &[&out]));
            out
        };
        let (q, k, v) = (
            three_d("query", &f.q),
            three_d("key", &f.k),
            three_d("value", &f.v),
        );
        let out = fresh(&format!("{}/mha", f.scope));
        let mut mha = Node::new(
            out.clone(),
            "MultiHeadAttention",
            &[&q, &k, &v, "", &mask],
            &[&out],
        )
        .with("num_heads", Attr::Int(f.heads))
        .with("scale", Attr::Float(f.scale))
        .with("mask_filter_value", Attr::Float(f.filter));
        mha.domain = MS_DOMAIN.to_string();
        new.push(mha);
        g.nodes[f.rows].inputs[0] = out;
        before.insert(f.rows, new);
    }
    let old = std::mem::take(&mut g.nodes);
    for (i, n) in old.into_iter().enumerate() {
        g.nodes.extend(before.remove(&i).into_iter().flatten());
        g.nodes.push(n);
    }
}

/// The producer of `v` if it is a standard `op` read by nobody else.
fn single<'g>(m: &Matcher<'g>, uses: &HashMap<&str, usize>, v: &str, op: &str) -> Option<&'g Node> {
    (uses.get(v) == Some(&1)).then(|| m.op(v, op)).flatten()
}

fn matches(g: &Graph, m: &Matcher<'_>, uses: &HashMap<&str, usize>, rows: &Node) -> Option<Found> {
    if !rows.is("Reshape") {
        return None;
    }
    // A `0` past the first two entries would copy a head dimension the fused output lacks.
    let target = g.initializers.get(rows.inputs.get(1)?)?.to_i64()?;
    if target.iter().skip(2).any(|&d| d == 0) {
        return None;
    }
    let merge = single(m, uses, &rows.inputs[0], "Transpose")?;
    (merge.ints("perm")? == HEADS_PERM).then_some(())?;
    let ctx = single(m, uses, &merge.inputs[0], "MatMul")?;
    let probs = single(m, uses, ctx.inputs.first()?, "Softmax")?;
    let axis = probs.int("axis").unwrap_or(-1);
    (axis == -1 || axis == 3).then_some(())?;
    let masked = single(m, uses, &probs.inputs[0], "Add")?;
    let (scaled, mask_value) = m.split(masked, |v| {
        single(m, uses, v, "Div").or_else(|| single(m, uses, v, "Mul"))
    })?;
    let (scores, scale) = scale_of(m, uses, scaled)?;
    let (mask, filter) = padding_mask(g, m, mask_value)?;
    let qk = (
        heads_of(g, m, uses, scores.inputs.first()?, HEADS_PERM)?,
        heads_of(g, m, uses, scores.inputs.get(1)?, KEY_PERM)?,
        heads_of(g, m, uses, ctx.inputs.get(1)?, HEADS_PERM)?,
    );
    let ((q, bs, heads, head_dim), (k, bs_k, hk, dk), (v, bs_v, hv, dv)) = qk;
    if bs != bs_k || bs != bs_v || (heads, head_dim) != (hk, dk) || (heads, head_dim) != (hv, dv) {
        return None;
    }
    let scope = rows
        .name
        .rsplit_once('/')
        .map_or(rows.name.as_str(), |(s, _)| s)
        .to_string();
    Some(Found {
        rows: 0,
        scope,
        q,
        k,
        v,
        bs,
        heads,
        head_dim,
        scale,
        mask,
        filter,
    })
}

/// `MatMul(Qh, Kh) / c` or `MatMul(Qh, Kh) * c` with a positive scalar constant: the product
/// and the factor.
fn scale_of<'g>(
    m: &Matcher<'g>,
    uses: &HashMap<&str, usize>,
    n: &'g Node,
) -> Option<(&'g Node, f32)> {
    let (scores, factor) = if n.is("Div") {
        let c = m.scalar(n.inputs.get(1)?)?;
        (single(m, uses, &n.inputs[0], "MatMul")?, 1.0 / c)
    } else {
        let (c, s) = m.split(n, |v| m.scalar(v))?;
        (single(m, uses, s, "MatMul")?, c)
    };
    (factor.is_finite() && factor > 0.0).then_some((scores, factor))
}

/// `Unsqueeze[1,2](Mul(Sub(1, Cast<float>(mask)), filter))`: the mask and the filter value.
fn padding_mask(g: &Graph, m: &Matcher<'_>, v: &str) -> Option<(String, f32)> {
    let unsq = m.op(v, "Unsqueeze")?;
    let axes = match unsq.inputs.get(1) {
        Some(a) => g.initializers.get(a)?.to_i64()?,
        None => unsq.ints("axes")?.to_vec(),
    };
    (axes == [1, 2]).then_some(())?;
    let mul = m.op(&unsq.inputs[0], "Mul")?;
    let (filter, inv) = m.split(mul, |c| m.scalar(c))?;
    let sub = m.op(inv, "Sub")?;
    (m.scalar(sub.inputs.first()?)? == 1.0).then_some(())?;
    let cast = m.op(sub.inputs.get(1)?, "Cast")?;
    (cast.int("to")? == FLOAT && filter.is_finite() && filter < 0.0).then_some(())?;
    Some((cast.inputs.first()?.clone(), filter))
}

/// `Transpose[perm](Reshape(x, Concat(bs, [heads, head_dim])))`: `x`, `bs`, heads, head size.
fn heads_of(
    g: &Graph,
    m: &Matcher<'_>,
    uses: &HashMap<&str, usize>,
    v: &str,
    perm: [i64; 4],
) -> Option<(String, String, i64, i64)> {
    let tr = single(m, uses, v, "Transpose")?;
    (tr.ints("perm")? == perm).then_some(())?;
    let split = single(m, uses, &tr.inputs[0], "Reshape")?;
    let shape = m.op(split.inputs.get(1)?, "Concat")?;
    if shape.int("axis") != Some(0) || shape.inputs.len() != 2 {
        return None;
    }
    let tail = g.initializers.get(&shape.inputs[1])?.to_i64()?;
    match tail[..] {
        [heads, head_dim] if heads > 0 && head_dim > 0 => Some((
            split.inputs[0].clone(),
            shape.inputs[0].clone(),
            heads,
            head_dim,
        )),
        _ => None,
    }
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
