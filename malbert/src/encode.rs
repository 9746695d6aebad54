//! The frozen encoder's pooled output for head fitting, computed in f32 the way the exported
//! graph does (`ava_passes::albert`: embeddings, LayerNorm, shared layer groups, tanh pooler
//! on `[CLS]`), but over many utterances at once: the tokens of a batch of sequences are
//! packed into one row matrix (no padding), so every linear layer is one large matrix product
//! (`matrixmultiply`), and batches run on all threads. The last layer is computed for the
//! `[CLS]` rows only (the pooler reads nothing else).

use ava_core::AlbertConfig;
use rayon::prelude::*;

use crate::error::{bail, Context};
use crate::{Progress, Weights};

/// Tokens per batch: large enough for efficient products, small enough to stay in cache.
const BATCH_TOKENS: usize = 2048;
/// `sqrt(2 / pi)`, of the tanh GELU.
const GELU_TANH_C: f32 = 0.797_884_6;
/// Cubic coefficient of the tanh GELU.
const GELU_TANH_K: f32 = 0.044_715;

/// `y = x W^T + b` with `W` stored `[out, in]` (the checkpoint's layout).
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Linear {
    /// Loads `prefix.weight` / `prefix.bias`, checking the shape `[n_out, n_in]`.
    fn load(w: &Weights, prefix: &str, n_out: usize, n_in: usize) -> crate::Result<Self> {
        let weight = tensor(w, &format!("{prefix}.weight"), &[n_out, n_in])?;
        let b = tensor(w, &format!("{prefix}.bias"), &[n_out])?;
        Ok(Linear {
            w: weight,
            b,
            n_in,
            n_out,
        })
    }

    /// Applies the layer to `x`, `rows` rows of `n_in`.
    fn run(&self, x: &[f32], rows: usize) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.n_in, "linear input size");
        let mut y: Vec<f32> = self
            .b
            .iter()
            .copied()
            .cycle()
            .take(rows * self.n_out)
            .collect();
        // SAFETY: `x` is `rows x n_in` (asserted), `w` is `n_out x n_in` (checked at load),
        // `y` is `rows x n_out`; the strides below stay inside those buffers.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                self.n_in,
                self.n_out,
                1.0,
                x.as_ptr(),
                self.n_in as isize,
                1,
                self.w.as_ptr(),
                1,
                self.n_in as isize,
                1.0,
                y.as_mut_ptr(),
                self.n_out as isize,
                1,
            );
        }
        y
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Weights, prefix: &str, width: usize, eps: f32) -> crate::Result<Self> {
        Ok(LayerNorm {
            gamma: tensor(w, &format!("{prefix}.weight"), &[width])?,
            beta: tensor(w, &format!("{prefix}.bias"), &[width])?,
            eps,
        })
    }

    /// Normalizes every row of `x` (plus `residual`, when given) in place.
    fn apply(&self, x: &mut [f32], residual: Option<&[f32]>) {
        if let Some(r) = residual {
            x.iter_mut().zip(r).for_each(|(v, r)| *v += r);
        }
        let width = self.gamma.len();
        for row in x.chunks_exact_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

/// The FFN activations the export supports.
#[derive(Clone, Copy)]
enum Activation {
    GeluTanh,
    Relu,
}

impl Activation {
    fn parse(name: &str) -> crate::Result<Self> {
        match name {
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => bail!("ALBERT activation `{other}` is not supported"),
        }
    }

    fn apply(self, x: &mut [f32]) {
        match self {
            Activation::GeluTanh => x.iter_mut().for_each(|v| {
                *v = 0.5 * *v * (1.0 + (GELU_TANH_C * (*v + GELU_TANH_K * *v * *v * *v)).tanh());
            }),
            Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// One transformer layer's weights (shared by every layer of its group).
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    attention_norm: LayerNorm,
    ffn: Linear,
    ffn_output: Linear,
    norm: LayerNorm,
}

impl Layer {
    fn load(w: &Weights, p: &str, cfg: &AlbertConfig) -> crate::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.layer_norm_eps as f32;
        Ok(Layer {
            query: Linear::load(w, &format!("{p}attention.query"), h, h)?,
            key: Linear::load(w, &format!("{p}attention.key"), h, h)?,
            value: Linear::load(w, &format!("{p}attention.value"), h, h)?,
            dense: Linear::load(w, &format!("{p}attention.dense"), h, h)?,
            attention_norm: LayerNorm::load(w, &format!("{p}attention.LayerNorm"), h, eps)?,
            ffn: Linear::load(w, &format!("{p}ffn"), i, h)?,
            ffn_output: Linear::load(w, &format!("{p}ffn_output"), h, i)?,
            norm: LayerNorm::load(w, &format!("{p}full_layer_layer_norm"), h, eps)?,
        })
    }
}

/// Where each packed sequence's rows are: `(first row, length)`.
type Spans = [(usize, usize)];

/// The encoder up to the pooler, with weights as f32 matrices.
pub struct Encoder {
    words: Vec<f32>,
    positions: Vec<f32>,
    types: Vec<f32>,
    embedding_norm: LayerNorm,
    mapping: Linear,
    /// Weight groups, each `inner_group_num` layers.
    groups: Vec<Vec<Layer>>,
    /// Group run by each layer.
    schedule: Vec<usize>,
    pooler: Linear,
    act: Activation,
    heads: usize,
    embedding: usize,
    vocab: usize,
}

impl Encoder {
    /// Builds the encoder from checkpoint tensors (encoder weights named with
    /// `cfg.weight_prefix`), checking every shape against `cfg`.
    pub fn new(w: &Weights, cfg: &AlbertConfig) -> crate::Result<Self> {
        let p = &cfg.weight_prefix;
        let (e, h) = (cfg.embedding_size, cfg.hidden_size);
        let words_name = format!("{p}embeddings.word_embeddings.weight");
        let rows = |name: &str| w.get(name).and_then(|(s, _)| s.first().copied());
        let vocab = rows(&words_name).unwrap_or(0);
        let positions_name = format!("{p}embeddings.position_embeddings.weight");
        let positions = rows(&positions_name).unwrap_or(0);
        let groups = (0..cfg.num_hidden_groups)
            .map(|g| {
                (0..cfg.inner_group_num)
                    .map(|i| {
                        let prefix =
                            format!("{p}encoder.albert_layer_groups.{g}.albert_layers.{i}.");
                        Layer::load(w, &prefix, cfg)
                    })
                    .collect()
            })
            .collect::<crate::Result<_>>()?;
        Ok(Encoder {
            words: tensor(w, &words_name, &[vocab, e])?,
            positions: tensor(w, &positions_name, &[positions, e])?,
            types: tensor(
                w,
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[cfg.type_vocab_size, e],
            )?,
            embedding_norm: LayerNorm::load(
                w,
                &format!("{p}embeddings.LayerNorm"),
                e,
                cfg.layer_norm_eps as f32,
            )?,
            mapping: Linear::load(w, &format!("{p}encoder.embedding_hidden_mapping_in"), h, e)?,
            groups,
            schedule: (0..cfg.num_hidden_layers)
                .map(|l| cfg.group_of_layer(l))
                .collect(),
            pooler: Linear::load(w, &format!("{p}pooler"), h, h)?,
            act: Activation::parse(&cfg.hidden_act)?,
            heads: cfg.num_attention_heads,
            embedding: e,
            vocab,
        })
    }

    /// Feature width (the pooler's).
    pub fn hidden(&self) -> usize {
        self.pooler.n_out
    }

    /// Pooled output of every sequence (token ids with `[CLS]` first), `hidden` values a row,
    /// in the order given. Sequences are batched by length and run on all threads; `progress`
    /// advances by one per sequence.
    pub fn pooled(&self, seqs: &[Vec<u32>], progress: &dyn Progress) -> crate::Result<Vec<f32>> {
        let max = self.positions.len() / self.embedding.max(1);
        if let Some(s) = seqs.iter().find(|s| s.is_empty() || s.len() > max) {
            bail!(
                "a sequence of {} tokens (the model takes 1 to {max})",
                s.len()
            );
        }
        if let Some(id) = seqs.iter().flatten().find(|&&id| id as usize >= self.vocab) {
            bail!("token id {id} outside the vocabulary of {}", self.vocab);
        }
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut batches = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len()
                && (end == start || tokens + seqs[order[end]].len() <= BATCH_TOKENS)
            {
                tokens += seqs[order[end]].len();
                end += 1;
            }
            batches.push(&order[start..end]);
            start = end;
        }
        let h = self.hidden();
        let done: Vec<(&[usize], Vec<f32>)> = batches
            .par_iter()
            .map(|&batch| {
                let refs: Vec<&[u32]> = batch.iter().map(|&i| seqs[i].as_slice()).collect();
                let out = self.batch(&refs);
                progress.advance(batch.len() as u64);
                (batch, out)
            })
            .collect();
        let mut out = vec![0f32; seqs.len() * h];
        for (batch, pooled) in done {
            for (&i, row) in batch.iter().zip(pooled.chunks_exact(h)) {
                out[i * h..(i + 1) * h].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    /// Pooled rows of one batch of validated sequences.
    fn batch(&self, seqs: &[&[u32]]) -> Vec<f32> {
        let mut spans = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for s in seqs {
            spans.push((rows, s.len()));
            rows += s.len();
        }
        let e = self.embedding;
        let mut x = vec![0f32; rows * e];
        let tokens = seqs.iter().flat_map(|s| s.iter().enumerate());
        for ((t, &id), row) in tokens.zip(x.chunks_exact_mut(e)) {
            let word = &self.words[id as usize * e..(id as usize + 1) * e];
            let pos = &self.positions[t * e..(t + 1) * e];
            for (i, v) in row.iter_mut().enumerate() {
                *v = word[i] + pos[i] + self.types[i];
            }
        }
        self.embedding_norm.apply(&mut x, None);
        let mut h = self.mapping.run(&x, rows);
        let last = self.schedule.len().saturating_sub(1);
        let inner = self.groups.first().map_or(0, Vec::len);
        for (l, &g) in self.schedule.iter().enumerate() {
            for (i, layer) in self.groups[g].iter().enumerate() {
                let cls_only = l == last && i + 1 == inner;
                h = self.layer(layer, &h, &spans, cls_only);
            }
        }
        // The last layer left one `[CLS]` row a sequence (the config has at least one layer).
        let mut pooled = self.pooler.run(&h, seqs.len());
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        pooled
    }

    /// One layer over the packed rows `h`; with `cls_only`, only the `[CLS]` rows come out
    /// (one a sequence), as the pooler needs nothing else.
    fn layer(&self, l: &Layer, h: &[f32], spans: &Spans, cls_only: bool) -> Vec<f32> {
        let width = self.hidden();
        let rows = h.len() / width;
        let (resid, q_spans): (Vec<f32>, Vec<(usize, usize)>) = if cls_only {
            let cls = spans
                .iter()
                .flat_map(|&(r, _)| h[r * width..(r + 1) * width].iter().copied())
                .collect();
            (cls, (0..spans.len()).map(|i| (i, 1)).collect())
        } else {
            (h.to_vec(), spans.to_vec())
        };
        let q_rows = resid.len() / width;
        let q = l.query.run(&resid, q_rows);
        let (k, v) = (l.key.run(h, rows), l.value.run(h, rows));
        let ctx = self.attention(&q, &q_spans, (&k, &v), spans);
        let mut a = l.dense.run(&ctx, q_rows);
        l.attention_norm.apply(&mut a, Some(&resid));
        let mut f = l.ffn.run(&a, q_rows);
        self.act.apply(&mut f);
        let mut o = l.ffn_output.run(&f, q_rows);
        l.norm.apply(&mut o, Some(&a));
        o
    }

    /// Scaled dot-product attention of each sequence's query rows over its key/value rows.
    fn attention(
        &self,
        q: &[f32],
        q_spans: &Spans,
        (k, v): (&[f32], &[f32]),
        kv_spans: &Spans,
    ) -> Vec<f32> {
        let d = self.hidden();
        let hd = d / self.heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut ctx = vec![0f32; q.len()];
        let mut p = Vec::new();
        for (&(qr, qn), &(kr, kn)) in q_spans.iter().zip(kv_spans) {
            p.resize(qn * kn, 0.0);
            for head in 0..self.heads {
                let off = head * hd;
                // SAFETY: rows `qr..qr+qn` of `q`/`ctx` and `kr..kr+kn` of `k`/`v` are inside
                // the packed buffers (spans come from the same packing); column `off + hd <= d`.
                unsafe {
                    matrixmultiply::sgemm(
                        qn,
                        hd,
                        kn,
                        scale,
                        q.as_ptr().add(qr * d + off),
                        d as isize,
                        1,
                        k.as_ptr().add(kr * d + off),
                        1,
                        d as isize,
                        0.0,
                        p.as_mut_ptr(),
                        kn as isize,
                        1,
                    );
                }
                p.chunks_exact_mut(kn).for_each(softmax);
                // SAFETY: as above.
                unsafe {
                    matrixmultiply::sgemm(
                        qn,
                        kn,
                        hd,
                        1.0,
                        p.as_ptr(),
                        kn as isize,
                        1,
                        v.as_ptr().add(kr * d + off),
                        d as isize,
                        1,
                        0.0,
                        ctx.as_mut_ptr().add(qr * d + off),
                        d as isize,
                        1,
                    );
                }
            }
        }
        ctx
    }
}

fn softmax(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    row.iter_mut().for_each(|v| *v /= s);
}

/// Tensor `name` of `w`, which must have shape `dims`.
fn tensor(w: &Weights, name: &str, dims: &[usize]) -> crate::Result<Vec<f32>> {
    let (shape, data) = w
        .get(name)
        .with_context(|| format!("tensor {name} missing"))?;
    if shape != dims || data.len() != dims.iter().product::<usize>() {
        bail!("tensor {name}: shape {shape:?}, expected {dims:?}");
    }
    Ok(data.clone())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::sync::atomic::{AtomicU64, Ordering};

    use ava_core::Checkpoint;
    use serde_json::Value;

    use super::*;

    /// Counts what it is told, as a progress bar would.
    #[derive(Default)]
    struct Count(AtomicU64);

    impl Progress for Count {
        fn set_total(&self, _count: u64) {}
        fn advance(&self, count: u64) {
            self.0.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// The pooled output of the bundled CLINC encoder matches transformers' (goldens.json),
    /// one utterance at a time and all in one call (packed into shared batches).
    #[test]
    fn pooled_output_matches_transformers() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/albert-clinc");
        let ckpt = Checkpoint::open(&dir).unwrap();
        let cfg = ckpt.albert().unwrap();
        let w = crate::convert::load_weights(&ckpt).unwrap();
        let enc = Encoder::new(&w, &cfg).unwrap();
        let goldens: Value =
            serde_json::from_slice(&std::fs::read(dir.join("goldens.json")).unwrap()).unwrap();
        let utterances = goldens["utterances"].as_array().unwrap();
        let ids: Vec<Vec<u32>> = utterances
            .iter()
            .map(|u| {
                let ids = u["input_ids"].as_array().unwrap();
                ids.iter().map(|v| v.as_u64().unwrap() as u32).collect()
            })
            .collect();
        let bar = Count::default();
        let all = enc.pooled(&ids, &bar).unwrap();
        let h = enc.hidden();
        let mut worst = 0f32;
        for (i, u) in utterances.iter().enumerate() {
            let one = enc.pooled(&ids[i..i + 1], &bar).unwrap();
            let want = u["pooled"].as_array().unwrap();
            for (j, v) in want.iter().enumerate() {
                let v = v.as_f64().unwrap() as f32;
                worst = worst
                    .max((all[i * h + j] - v).abs())
                    .max((one[j] - v).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "largest difference from transformers: {worst}"
        );
        assert_eq!(bar.0.load(Ordering::Relaxed), 2 * ids.len() as u64);
    }

    #[test]
    fn refuses_out_of_range_input() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/models/albert-clinc");
        let ckpt = Checkpoint::open(&dir).unwrap();
        let w = crate::convert::load_weights(&ckpt).unwrap();
        let enc = Encoder::new(&w, &ckpt.albert().unwrap()).unwrap();
        let bar = crate::NoProgress;
        assert!(enc.pooled(&[vec![2, 1_000_000, 3]], &bar).is_err());
        assert!(enc.pooled(&[vec![]], &bar).is_err());
        assert!(enc.pooled(&[vec![2; 500]], &bar).is_err());
        let mut bad = w.clone();
        bad.get_mut("albert.pooler.weight").unwrap().0 = vec![1, 2];
        assert!(Encoder::new(&bad, &ckpt.albert().unwrap()).is_err());
    }
}
