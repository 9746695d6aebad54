//! Greedy decoding one step at a time with every step's logits in view, optionally
//! teacher-forced: what `alc validate` runs on the device and on the host to compare two
//! backends logit by logit (docs/validate.md, docs/runtime.md "Numerical contract").

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::gemma3::KvDtype;
use crate::generate::Engine;
use crate::sampling::argmax;

/// One decoding step: the greedy token and the highest logits, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The argmax of this step's logits (ties: the lowest id, as [`argmax`]).
    pub argmax: u32,
    /// The `top` highest `(id, logit)` pairs, best first (ties: lower id first).
    pub top: Vec<(u32, f32)>,
}

/// The steps of one prompt and how long they took.
#[derive(Clone, Debug)]
pub struct Steps {
    /// One entry per new token.
    pub steps: Vec<Step>,
    /// The tokens fed after each step: the forced ones where given, else the argmax.
    pub tokens: Vec<u32>,
    /// The prompt's prefill (the first step's logits).
    pub prefill: Duration,
    /// The single-token forwards after it.
    pub decode: Duration,
}

/// How many steps a run takes and the cache it runs in.
#[derive(Clone, Copy, Debug)]
pub struct StepSizes {
    /// New tokens.
    pub steps: usize,
    /// Positions the KV cache holds.
    pub context: usize,
    /// How the KV cache stores keys and values.
    pub kv: KvDtype,
}

/// Runs `prompt` and `sizes.steps` greedy steps on `engine` in a fresh cache of
/// `sizes.context` positions stored as `sizes.kv`. After step `s` the token fed is `forced[s]`
/// when `forced` has it (teacher forcing), else the step's argmax. `each(s, logits)` sees
/// every step's full logits. Each step keeps its `top` best logits.
pub fn run_steps(
    engine: &Engine,
    prompt: &[u32],
    sizes: StepSizes,
    forced: Option<&[u32]>,
    top: usize,
    each: &mut dyn FnMut(usize, &[f32]),
) -> Result<Steps> {
    if prompt.is_empty() {
        return Err(Error::Request("empty prompt".into()));
    }
    let steps = sizes.steps;
    let mut cache = engine.model().new_cache_as(sizes.context, sizes.kv);
    let t0 = Instant::now();
    let mut logits = engine.prefill(prompt, &mut cache)?;
    let prefill = t0.elapsed();
    let t1 = Instant::now();
    let mut out = Steps {
        steps: Vec::with_capacity(steps),
        tokens: Vec::with_capacity(steps),
        prefill,
        decode: Duration::ZERO,
    };
    for s in 0..steps {
        each(s, &logits);
        let step = Step {
            argmax: argmax(&logits),
            top: top_logits(&logits, top),
        };
        let next = forced
            .and_then(|f| f.get(s))
            .copied()
            .unwrap_or(step.argmax);
        out.steps.push(step);
        out.tokens.push(next);
        if s + 1 < steps {
            logits = engine.forward(&[next], &mut cache)?;
        }
    }
    out.decode = t1.elapsed();
    Ok(out)
}

/// The `k` highest `(id, logit)` pairs of `logits`, best first; ties keep the lower id first.
/// NaN logits are never chosen.
pub fn top_logits(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() || (best.len() == k && v <= best[k - 1].1) {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= v);
        best.insert(at, (i as u32, v));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logits_are_ordered_and_stable() {
        let v = [0.5, 2.0, f32::NAN, 2.0, -1.0, 3.0];
        assert_eq!(top_logits(&v, 3), vec![(5, 3.0), (1, 2.0), (3, 2.0)]);
        assert_eq!(top_logits(&v, 0), vec![]);
        assert_eq!(top_logits(&v, 10).len(), 5);
        assert_eq!(top_logits(&v, 1)[0].0, argmax(&v));
    }
}
