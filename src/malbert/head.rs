//! The intent head: pooled features from the frozen encoder (run by the IR's reference
//! evaluator) and a multinomial logistic regression fitted on them by full-batch gradient
//! descent with momentum from zero weights: deterministic, no randomness anywhere.

use std::collections::HashMap;

use anyhow::Context;
use ava_passes::{eval, Graph, Tensor};
use rayon::prelude::*;
use tokenizers::Tokenizer;

/// Utterances per evaluator call.
const BATCH: usize = 64;
/// Gradient steps.
const STEPS: usize = 300;
/// Step size (features are tanh outputs in [-1, 1]).
const LEARNING_RATE: f32 = 2.0;
/// Momentum.
const MOMENTUM: f32 = 0.9;

/// Pooled encoder output for each text, `hidden` values a row.
pub fn features(graph: &Graph, tok: &Tokenizer, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        let enc = tok
            .encode_batch(chunk.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let len = enc.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; chunk.len() * len];
        let mut mask = vec![0i64; chunk.len() * len];
        for (r, e) in enc.iter().enumerate() {
            for (c, &id) in e.get_ids().iter().enumerate() {
                ids[r * len + c] = id as i64;
                mask[r * len + c] = 1;
            }
        }
        let dims = vec![chunk.len(), len];
        let inputs = HashMap::from([
            ("input_ids".to_string(), Tensor::i64(dims.clone(), ids)),
            (
                "attention_mask".to_string(),
                Tensor::i64(dims.clone(), mask),
            ),
            (
                "token_type_ids".to_string(),
                Tensor::i64(dims, vec![0; chunk.len() * len]),
            ),
        ]);
        let pooled = eval::run(graph, &inputs)
            .context("running the encoder")?
            .remove(0);
        let v = pooled.as_f32().context("pooled output is not f32")?;
        let h = v.len() / chunk.len();
        out.extend(v.chunks(h).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// A linear classifier `logits = W x + b`, `W` as `[classes, hidden]` (transformers' layout).
pub struct Head {
    /// `[classes * hidden]`, row-major.
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// Feature width.
    pub hidden: usize,
}

impl Head {
    fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.bias
            .iter()
            .enumerate()
            .map(|(c, b)| {
                b + self.weight[c * self.hidden..(c + 1) * self.hidden]
                    .iter()
                    .zip(x)
                    .map(|(w, v)| w * v)
                    .sum::<f32>()
            })
            .collect()
    }

    /// Index of the largest logit.
    pub fn predict(&self, x: &[f32]) -> usize {
        let l = self.logits(x);
        (0..l.len()).fold(0, |best, c| if l[c] > l[best] { c } else { best })
    }

    /// Fraction of `(x, label)` predicted right.
    pub fn accuracy(&self, xs: &[Vec<f32>], ys: &[usize]) -> f64 {
        let right = xs
            .iter()
            .zip(ys)
            .filter(|(x, &y)| self.predict(x) == y)
            .count();
        right as f64 / xs.len().max(1) as f64
    }
}

/// Softmax probabilities minus the one-hot label, per example.
fn residuals(head: &Head, xs: &[Vec<f32>], ys: &[usize]) -> Vec<Vec<f32>> {
    xs.par_iter()
        .zip(ys)
        .map(|(x, &y)| {
            let mut p = head.logits(x);
            let m = p.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s: f32 = p
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            p.iter_mut().for_each(|v| *v /= s);
            p[y] -= 1.0;
            p
        })
        .collect()
}

/// Fits a multinomial logistic regression with L2 penalty `l2` on the weights.
pub fn fit(xs: &[Vec<f32>], ys: &[usize], classes: usize, l2: f32) -> Head {
    let hidden = xs.first().map_or(0, Vec::len);
    let mut head = Head {
        weight: vec![0.0; classes * hidden],
        bias: vec![0.0; classes],
        hidden,
    };
    let mut vel_w = vec![0.0f32; classes * hidden];
    let mut vel_b = vec![0.0f32; classes];
    let n = xs.len().max(1) as f32;
    for _ in 0..STEPS {
        let r = residuals(&head, xs, ys);
        let grad_w: Vec<f32> = (0..classes * hidden)
            .into_par_iter()
            .map(|k| {
                let (c, j) = (k / hidden, k % hidden);
                r.iter().zip(xs).map(|(ri, x)| ri[c] * x[j]).sum::<f32>() / n + l2 * head.weight[k]
            })
            .collect();
        let grad_b: Vec<f32> = (0..classes)
            .map(|c| r.iter().map(|ri| ri[c]).sum::<f32>() / n)
            .collect();
        for (k, g) in grad_w.iter().enumerate() {
            vel_w[k] = MOMENTUM * vel_w[k] - LEARNING_RATE * g;
            head.weight[k] += vel_w[k];
        }
        for (c, g) in grad_b.iter().enumerate() {
            vel_b[c] = MOMENTUM * vel_b[c] - LEARNING_RATE * g;
            head.bias[c] += vel_b[c];
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_points_are_learned() {
        let xs: Vec<Vec<f32>> = (0..30)
            .map(|i| vec![(i % 3) as f32 - 1.0, ((i % 3) * 2 % 3) as f32 * 0.5])
            .collect();
        let ys: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let head = fit(&xs, &ys, 3, 0.0);
        assert_eq!(head.accuracy(&xs, &ys), 1.0);
        let again = fit(&xs, &ys, 3, 0.0);
        assert_eq!(head.weight, again.weight, "deterministic");
    }
}
