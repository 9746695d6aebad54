//! Activation calibration: runs the float graph in the reference evaluator on sample inputs and
//! turns what the observed values did into a `[min, max]` range per value (MinMax, Percentile
//! or Entropy, as onnxruntime's `quantize_static` names them).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::eval;
use crate::ir::{Graph, Tensor};

/// Histogram bins of Percentile and Entropy calibration.
pub const BINS: usize = 2048;
/// Default percentile kept by `Percentile` calibration (of |x|, per side).
pub const DEFAULT_PERCENTILE: f64 = 99.999;
/// Quantization levels per side that Entropy calibration merges the histogram into.
const ENTROPY_LEVELS: usize = 128;

/// How observed values become a range.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// Smallest and largest value seen.
    MinMax,
    /// Clip each side at this percentile of the values seen.
    Percentile(f64),
    /// Clip |x| where the KL divergence between the clipped and the 8-bit distribution is least.
    Entropy,
}

impl Method {
    /// Parses `minmax`, `percentile` or `entropy`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "minmax" => Method::MinMax,
            "percentile" => Method::Percentile(DEFAULT_PERCENTILE),
            "entropy" => Method::Entropy,
            other => {
                return Err(Error::Invalid(format!(
                    "calibration method `{other}` (known: minmax, percentile, entropy)"
                )))
            }
        })
    }
}

/// Calibrated `[min, max]` per value name.
pub type Ranges = BTreeMap<String, (f32, f32)>;

/// Runs `graph` on every sample and returns the ranges of `values`.
pub fn calibrate(
    graph: &Graph,
    samples: &[HashMap<String, Tensor>],
    values: &HashSet<String>,
    method: Method,
) -> Result<Ranges> {
    let mut minmax: Ranges = BTreeMap::new();
    observe(graph, samples, values, &mut |name, v| {
        let e = minmax.entry(name.to_string()).or_insert((0.0, 0.0));
        for &x in v {
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
        }
    })?;
    if method == Method::MinMax {
        return Ok(minmax);
    }
    // Second pass: histograms of |x| per side over [0, max |x|].
    let mut hists: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
    observe(graph, samples, values, &mut |name, v| {
        let (lo, hi) = minmax[name];
        let (neg, pos) = hists
            .entry(name.to_string())
            .or_insert_with(|| (vec![0.0; BINS], vec![0.0; BINS]));
        for &x in v {
            let (h, edge) = if x < 0.0 {
                (&mut *neg, -lo)
            } else {
                (&mut *pos, hi)
            };
            let b = ((x.abs() / edge.max(f32::MIN_POSITIVE)) * BINS as f32) as usize;
            h[b.min(BINS - 1)] += 1.0;
        }
    })?;
    Ok(minmax
        .into_iter()
        .map(|(name, (lo, hi))| {
            let (neg, pos) = &hists[&name];
            let pick = |h: &[f64], edge: f32| match method {
                Method::Percentile(p) => percentile(h, p) * edge,
                _ => entropy_threshold(h) * edge,
            };
            (name, (-pick(neg, -lo), pick(pos, hi)))
        })
        .collect())
}

/// Runs the graph on every sample, handing the f32 values of `values` to `f`.
fn observe(
    graph: &Graph,
    samples: &[HashMap<String, Tensor>],
    values: &HashSet<String>,
    f: &mut dyn FnMut(&str, &[f32]),
) -> Result<()> {
    for s in samples {
        for (name, t) in s.iter().filter(|(n, _)| values.contains(*n)) {
            if let Some(v) = t.as_f32() {
                f(name, v);
            }
        }
        eval::run_observed(graph, s, &mut |name, t| {
            if values.contains(name) {
                if let Some(v) = t.as_f32() {
                    f(name, v);
                }
            }
        })?;
    }
    Ok(())
}

/// Fraction of the histogram's range below which `p` percent of its mass lies.
fn percentile(h: &[f64], p: f64) -> f32 {
    let total: f64 = h.iter().sum();
    if total == 0.0 {
        return 0.0;
    }
    let mut acc = 0.0;
    for (i, &c) in h.iter().enumerate() {
        acc += c;
        if acc >= total * p / 100.0 {
            return (i + 1) as f32 / h.len() as f32;
        }
    }
    1.0
}

/// TensorRT's entropy calibration on one side's histogram: the clip point (as a fraction of the
/// range) whose clipped distribution loses least information when merged into 128 levels.
fn entropy_threshold(h: &[f64]) -> f32 {
    let n = h.len();
    if h.iter().sum::<f64>() == 0.0 {
        return 0.0;
    }
    let mut best = (f64::INFINITY, n);
    for i in (ENTROPY_LEVELS..=n).step_by(ENTROPY_LEVELS / 8) {
        let mut p: Vec<f64> = h[..i].to_vec();
        p[i - 1] += h[i..].iter().sum::<f64>();
        let mut q = vec![0.0; i];
        let per = i as f64 / ENTROPY_LEVELS as f64;
        for level in 0..ENTROPY_LEVELS {
            let (a, b) = (
                (level as f64 * per) as usize,
                (((level + 1) as f64 * per) as usize).min(i),
            );
            let mass: f64 = h[a..b].iter().sum();
            let nonzero = h[a..b].iter().filter(|&&c| c > 0.0).count();
            for j in a..b {
                if h[j] > 0.0 {
                    q[j] = mass / nonzero as f64;
                }
            }
        }
        q[i - 1] += h[i..].iter().sum::<f64>();
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&a, _)| a > 0.0)
            .map(|(&a, &b)| {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                a * (a / b).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 / n as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_clips_outliers() {
        let mut h = vec![0.0; 100];
        h[9] = 999.0;
        h[99] = 1.0;
        assert_eq!(percentile(&h, 99.0), 0.1);
        assert_eq!(percentile(&h, 100.0), 1.0);
    }

    #[test]
    fn entropy_keeps_a_dense_range_and_clips_a_lone_outlier() {
        let mut h = vec![0.0; BINS];
        for (i, c) in h.iter_mut().enumerate().take(BINS / 4) {
            *c = 1000.0 / (1.0 + i as f64);
        }
        h[BINS - 1] = 1.0;
        let t = entropy_threshold(&h);
        assert!(t > 0.05 && t < 0.5, "{t}");
    }

    #[test]
    fn method_names() {
        assert_eq!(Method::parse("minmax").unwrap(), Method::MinMax);
        assert!(Method::parse("kl").is_err());
    }
}
