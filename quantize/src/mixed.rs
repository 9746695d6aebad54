//! Mixed precision under a budget (`--size-budget BYTES`, `--bpw N`): which q4bf16
//! projections to keep at q8bf16 instead.
//!
//! Each candidate's sensitivity is the output error its q4 rounding causes on the calibration
//! inputs, relative to its output's energy: `tr(D H Dᵀ) / tr(W H Wᵀ)` with `D = W - Q(W)`
//! and `H = XᵀX` the Hessian GPTQ accumulates. Gemma 3 normalises what each projection
//! produces (q/k norms; post-attention and post-feedforward norms before the residual add),
//! so a relative error is what reaches the rest of the model, and tensors of different
//! shapes compare. The gain of promoting a tensor is its q4 relative error minus its q8
//! one, per extra byte (q8 codes take `rows * cols / 2` more bytes; the scales are the same).
//! Tensors are promoted greedily in decreasing gain per byte, each one that still fits the
//! budget, so the result lands within the smallest remaining promotion of the budget.
//! `docs/quantization.md` defines the budgets.

use std::collections::BTreeSet;

use ava_core::quant::QuantFormat;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use ndarray::ArrayView2;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::grouped::{self, Layout};
use crate::policy::{Role, Scheme};
use crate::stage::{file_bytes, quantized_bytes, PlannedTensor, StageSpec};

/// The scheme a candidate starts at and the one it is promoted to.
pub const BASE: Scheme = Scheme::Q4Bf16;
/// See [`BASE`].
pub const PROMOTED: Scheme = Scheme::Q8Bf16;

/// What the written model may take.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Bytes of the whole `model.safetensors` as written (header included).
    FileBytes(u64),
    /// Bits per weight over the tensors stored in a grouped integer format: 8 x (their codes
    /// and scales, in bytes) / (their elements).
    Bpw(f64),
}

impl Budget {
    /// The flag as given, for messages and records.
    pub fn describe(self) -> String {
        match self {
            Budget::FileBytes(b) => format!("--size-budget {b}"),
            Budget::Bpw(b) => format!("--bpw {b}"),
        }
    }

    /// This budget's measure of `plan`, in its unit (bytes, or bits per weight).
    pub fn measure(self, plan: &[PlannedTensor], spec: &StageSpec) -> f64 {
        match self {
            Budget::FileBytes(_) => file_bytes(plan, spec) as f64,
            Budget::Bpw(_) => bits_per_weight(plan, spec),
        }
    }

    /// Whether `plan` is within the budget.
    pub fn fits(self, plan: &[PlannedTensor], spec: &StageSpec) -> bool {
        match self {
            Budget::FileBytes(b) => file_bytes(plan, spec) <= b,
            Budget::Bpw(b) => {
                let (bytes, numel) = quantized_bytes(plan, spec);
                bytes as f64 * 8.0 <= b * numel as f64
            }
        }
    }

    fn unit(self, v: f64) -> String {
        match self {
            Budget::FileBytes(_) => format!("{v:.0} bytes"),
            Budget::Bpw(_) => format!("{v:.4} bits per weight"),
        }
    }
}

/// 8 x bytes / elements of the tensors `plan` stores in a grouped integer format.
pub fn bits_per_weight(plan: &[PlannedTensor], spec: &StageSpec) -> f64 {
    let (bytes, numel) = quantized_bytes(plan, spec);
    bytes as f64 * 8.0 / numel.max(1) as f64
}

/// The tensors a budget may promote: projections planned at [`BASE`] whose scheme no
/// `--policy NAME=SCHEME` fixed.
pub fn candidates(plan: &[PlannedTensor], spec: &StageSpec) -> BTreeSet<String> {
    plan.iter()
        .filter(|t| t.scheme == BASE && Role::of(&t.name) == Role::Proj)
        .filter(|t| !spec.tensors.contains_key(&t.name))
        .map(|t| t.name.clone())
        .collect()
}

/// `plan` with every tensor of `names` at [`PROMOTED`].
pub fn promote(plan: &[PlannedTensor], names: &BTreeSet<String>) -> Vec<PlannedTensor> {
    plan.iter()
        .map(|t| {
            let mut t = t.clone();
            if names.contains(&t.name) {
                t.scheme = PROMOTED;
            }
            t
        })
        .collect()
}

/// Fails when even `plan` (every candidate at [`BASE`]) is over the budget; returns whether
/// every candidate promoted still fits (then nothing needs measuring).
pub fn check(budget: Budget, plan: &[PlannedTensor], spec: &StageSpec) -> Result<bool> {
    if !budget.fits(plan, spec) {
        return Err(Error::BudgetTooSmall {
            budget: budget.describe(),
            minimum: budget.unit(budget.measure(plan, spec)),
        });
    }
    let all = promote(plan, &candidates(plan, spec));
    Ok(budget.fits(&all, spec))
}

/// One candidate's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Sensitivity {
    /// The tensor.
    pub name: String,
    /// Its elements.
    pub numel: usize,
    /// `tr(D H Dᵀ) / tr(W H Wᵀ)` at q4bf16.
    pub q4_error: f64,
    /// The same at q8bf16.
    pub q8_error: f64,
}

impl Sensitivity {
    /// Relative error removed per extra byte of q8bf16 codes.
    pub fn gain_per_byte(&self) -> f64 {
        (self.q4_error - self.q8_error) / extra_bytes(self.numel) as f64
    }
}

/// Extra bytes of a tensor of `numel` elements at [`PROMOTED`] rather than [`BASE`].
fn extra_bytes(numel: usize) -> usize {
    (numel / 2).max(1)
}

/// Measures `w` (`[rows, cols]`, as the writer will encode it) against the Hessian `h` of its
/// inputs (`[cols, cols]`), rounded as the writer rounds before GPTQ (round to nearest, with
/// the clip search when `importance` is given).
pub fn measure(
    name: &str,
    w: &[f32],
    (rows, cols, group): (usize, usize, usize),
    h: ArrayView2<'_, f32>,
    importance: Option<&[f32]>,
) -> Result<Sensitivity> {
    if w.len() != rows * cols || h.dim() != (cols, cols) {
        return Err(Error::Quantize(format!(
            "{name}: a [{rows}, {cols}] weight does not match a Hessian of {:?}",
            h.dim()
        )));
    }
    let h = h.as_standard_layout();
    let h = MatRef::from_row_major_slice(h.as_slice().unwrap_or_default(), cols, cols);
    let energy = quadratic(w, rows, h).max(f64::MIN_POSITIVE);
    let error = |format| {
        let layout = Layout {
            format,
            rows,
            cols,
            group,
        };
        let back = grouped::dequantize(&grouped::quantize(w, layout, importance), layout);
        let d: Vec<f32> = w.iter().zip(&back).map(|(a, b)| a - b).collect();
        quadratic(&d, rows, h) / energy
    };
    Ok(Sensitivity {
        name: name.to_string(),
        numel: rows * cols,
        q4_error: error(QuantFormat::Q4Bf16),
        q8_error: error(QuantFormat::Q8Bf16),
    })
}

/// `tr(M H Mᵀ)` for `m` of `[rows, cols]` rows (all cores).
fn quadratic(m: &[f32], rows: usize, h: MatRef<'_, f32>) -> f64 {
    let cols = h.nrows();
    let m = MatRef::from_row_major_slice(m, rows, cols);
    let mut p = Mat::<f32>::zeros(rows, cols);
    matmul(p.as_mut(), Accum::Replace, m, h, 1.0, Par::rayon(0));
    let mut sum = 0f64;
    for r in 0..rows {
        for c in 0..cols {
            sum += f64::from(p[(r, c)]) * f64::from(m[(r, c)]);
        }
    }
    sum
}

/// Promotes candidates of `plan` in decreasing gain per byte, each one that keeps the plan
/// within `budget`; returns the names promoted.
pub fn choose(
    budget: Budget,
    (plan, spec): (&[PlannedTensor], &StageSpec),
    measured: &[Sensitivity],
) -> BTreeSet<String> {
    let mut order: Vec<&Sensitivity> = measured.iter().collect();
    order.sort_by(|a, b| {
        b.gain_per_byte()
            .total_cmp(&a.gain_per_byte())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut current = plan.to_vec();
    let mut promoted = BTreeSet::new();
    for s in order {
        let Some(i) = current.iter().position(|t| t.name == s.name) else {
            continue;
        };
        current[i].scheme = PROMOTED;
        if budget.fits(&current, spec) {
            promoted.insert(s.name.clone());
        } else {
            current[i].scheme = BASE;
        }
    }
    promoted
}

/// What a budget chose, for `--json` and the stage record.
#[derive(Clone, Debug, Serialize)]
pub struct MixedReport {
    /// The flag as given (`--size-budget N`, `--bpw N`).
    pub budget: String,
    /// `model.safetensors` bytes as written.
    pub file_bytes: u64,
    /// ... with every candidate at q4bf16, and at q8bf16.
    pub file_bytes_range: [u64; 2],
    /// Bits per weight of the quantized tensors as written.
    pub bits_per_weight: f64,
    /// Candidates (q4bf16 projections the budget could promote).
    pub candidates: usize,
    /// The candidates kept at q8bf16, in decreasing gain per byte.
    pub promoted: Vec<String>,
    /// Every measured candidate, in decreasing gain per byte (empty when all fit).
    pub sensitivity: Vec<Sensitivity>,
}

impl MixedReport {
    /// The report of `promoted` chosen for `budget` from `plan` (candidates at [`BASE`]).
    pub fn new(
        budget: Budget,
        (plan, spec): (&[PlannedTensor], &StageSpec),
        mut measured: Vec<Sensitivity>,
        promoted: &BTreeSet<String>,
    ) -> MixedReport {
        let cands = candidates(plan, spec);
        let chosen = promote(plan, promoted);
        measured.sort_by(|a, b| b.gain_per_byte().total_cmp(&a.gain_per_byte()));
        let mut order: Vec<String> = measured
            .iter()
            .filter(|s| promoted.contains(&s.name))
            .map(|s| s.name.clone())
            .collect();
        let rest: Vec<String> = promoted
            .iter()
            .filter(|n| !order.contains(n))
            .cloned()
            .collect();
        order.extend(rest);
        MixedReport {
            budget: budget.describe(),
            file_bytes: file_bytes(&chosen, spec),
            file_bytes_range: [
                file_bytes(plan, spec),
                file_bytes(&promote(plan, &cands), spec),
            ],
            bits_per_weight: bits_per_weight(&chosen, spec),
            candidates: cands.len(),
            promoted: order,
            sensitivity: measured,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::noise;
    use ndarray::Array2;

    use super::*;
    use crate::policy::Policy;
    use crate::stage::Method;

    fn spec() -> StageSpec {
        StageSpec {
            policy: Policy::for_quant(Scheme::Q4Bf16),
            tensors: Default::default(),
            group: 32,
            method: Method::Rtn,
            quantization: "q4bf16".into(),
        }
    }

    fn planned(name: &str, rows: usize, cols: usize) -> PlannedTensor {
        PlannedTensor {
            name: name.into(),
            shape: vec![rows, cols],
            scheme: BASE,
            fell_back: false,
        }
    }

    /// Inputs of `cols` channels over `n` rows; with `outliers`, every 16th channel is 30
    /// times larger, as the inputs of some real projections are.
    fn hessian(cols: usize, n: usize, outliers: bool, seed: usize) -> Array2<f32> {
        let x = Array2::from_shape_fn((n, cols), |(t, c)| {
            let v = noise(seed + t * cols + c);
            if outliers && c % 16 == 3 {
                v * 30.0
            } else {
                v
            }
        });
        x.t().dot(&x)
    }

    /// Weights whose columns read the outlier channels are small (their products are what
    /// matters, as in trained models), and a few weights per row are large: with plain
    /// inputs the large weights cost little, with outlier inputs the coarse grid they force
    /// on the small weights of the outlier channels dominates the output.
    fn weights(rows: usize, cols: usize, seed: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let c = i % cols;
                let v = noise(seed + i) * 0.05;
                if c % 16 == 3 {
                    v * 0.2
                } else if c % 32 == 9 {
                    v * 8.0
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn the_tensor_reading_outlier_channels_is_most_sensitive_and_promoted_first() {
        let (rows, cols) = (32, 128);
        let names = [
            "l0.q_proj.weight",
            "l0.o_proj.weight",
            "l1.down_proj.weight",
        ];
        let outlier = names[1];
        let measured: Vec<Sensitivity> = names
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let h = hessian(cols, 256, n == outlier, 1_000_000 * (i + 1));
                let w = weights(rows, cols, 7_000 * (i + 1));
                measure(n, &w, (rows, cols, 32), h.view(), None).unwrap()
            })
            .collect();
        for s in &measured {
            assert!(s.q8_error < s.q4_error / 10.0, "{s:?}");
        }
        let most = measured
            .iter()
            .max_by(|a, b| a.gain_per_byte().total_cmp(&b.gain_per_byte()))
            .unwrap();
        assert_eq!(most.name, outlier, "{measured:?}");
        for s in measured.iter().filter(|s| s.name != outlier) {
            assert!(most.q4_error > 3.0 * s.q4_error, "{measured:?}");
        }

        let spec = spec();
        let plan: Vec<PlannedTensor> = names.iter().map(|n| planned(n, rows, cols)).collect();
        let base = file_bytes(&plan, &spec);
        let step = (rows * cols / 2) as u64;
        // Room for one promotion (and the header's few extra digits): the outlier one.
        let one = choose(
            Budget::FileBytes(base + step + 64),
            (&plan, &spec),
            &measured,
        );
        assert_eq!(
            one.into_iter().collect::<Vec<_>>(),
            vec![outlier.to_string()]
        );
        let all = choose(
            Budget::FileBytes(base + 4 * step),
            (&plan, &spec),
            &measured,
        );
        assert_eq!(all.len(), 3);
        assert!(choose(Budget::FileBytes(base), (&plan, &spec), &measured).is_empty());
    }

    #[test]
    fn budgets_are_checked_in_their_unit() {
        let spec = spec();
        let plan = vec![
            planned("a.q_proj.weight", 8, 64),
            planned("b.up_proj.weight", 8, 64),
        ];
        // q4bf16 at group 32: 4 bits + 16 bits per 32 weights.
        assert!((bits_per_weight(&plan, &spec) - 4.5).abs() < 1e-9);
        assert_eq!(check(Budget::Bpw(4.5), &plan, &spec).ok(), Some(false));
        assert_eq!(check(Budget::Bpw(8.5), &plan, &spec).ok(), Some(true));
        let err = check(Budget::Bpw(4.0), &plan, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--bpw 4") && err.contains("4.5000 bits"),
            "{err}"
        );
        let min = file_bytes(&plan, &spec);
        let err = check(Budget::FileBytes(min - 1), &plan, &spec)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{min} bytes")), "{err}");
        // A tensor named in --policy is not a candidate.
        let mut fixed = spec.clone();
        fixed.tensors.insert("a.q_proj.weight".into(), BASE);
        assert_eq!(candidates(&plan, &fixed).len(), 1);
    }
}
