//! AWQ for Gemma 3: where each projection's input scales are folded.
//!
//! - q/k/v read `input_layernorm(x)`: fold `1/s` into that norm, `(1 + w') = (1 + w) / s`.
//! - gate/up read `pre_feedforward_layernorm(x)`: the same.
//! - down reads `gelu(gate) * up`: fold `1/s` into the rows of `up_proj` (searched first, so
//!   the gate/up search sees the folded `up`).
//! - o_proj reads the attention output; with grouped-query attention one v row feeds several
//!   heads' channels, so per-channel scales cannot be folded into v_proj: o_proj only gets
//!   the importance-weighted clip search.

use ava_core::{Checkpoint, Gemma3Config};
use ava_runtime::gemma3::Site;

use crate::awq::{search, Group, Search};
use crate::calib::CalibStats;
use crate::error::{Error, Result};
use crate::stage::{StageSpec, Transform};

/// What the search chose for one layer input.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SiteReport {
    /// Layer index.
    pub layer: usize,
    /// `attention`, `mlp` or `down`.
    pub site: &'static str,
    /// The exponent chosen.
    pub alpha: f32,
    /// Output error of round-to-nearest on the calibration rows.
    pub rtn_error: f64,
    /// Output error with the chosen scales.
    pub awq_error: f64,
}

/// Builds the AWQ transform of every layer of a Gemma 3 checkpoint.
pub fn gemma3_transform(
    ck: &Checkpoint,
    cfg: &Gemma3Config,
    stats: &CalibStats,
    (spec, grid): (&StageSpec, usize),
) -> Result<(Transform, Vec<SiteReport>)> {
    let mut tr = Transform::default();
    let mut reports = Vec::new();
    let Some(format) = spec.policy.proj.quant_format() else {
        return Ok((tr, reports));
    };
    let search_one =
        |layer: usize, names: &[String], site: Site, tr: &Transform| -> Result<Search> {
            let mut mats = Vec::new();
            for n in names {
                let view = ck.tensor(n)?;
                let mut w = view.to_f32_vec()?;
                if let Some(d) = tr.row_div.get(n) {
                    let cols = w.len() / d.len();
                    for (row, d) in w.chunks_mut(cols).zip(d) {
                        row.iter_mut().for_each(|x| *x /= d);
                    }
                }
                mats.push((w, view.shape[0]));
            }
            let cols = mats[0].0.len() / mats[0].1;
            let group = Group {
                weights: mats.iter().map(|(w, r)| (w.as_slice(), *r)).collect(),
                cols,
            };
            Ok(search(
                &group,
                stats.site(layer, site)?,
                format,
                spec.group,
                grid,
            ))
        };
    let p = &cfg.weight_prefix;
    for layer in 0..cfg.num_hidden_layers {
        let l = format!("{p}layers.{layer}.");
        let name = |s: &str| format!("{l}{s}.weight");
        // down first: its scales fold into up's rows.
        let down = search_one(layer, &[name("mlp.down_proj")], Site::Down, &tr)
            .map_err(|e| at(layer, e))?;
        let down_sq = stats.site(layer, Site::Down)?.mean_sq();
        tr.importance
            .insert(name("mlp.down_proj"), divide_sq(&down_sq, &down.scales));
        tr.col_scale
            .insert(name("mlp.down_proj"), down.scales.clone());
        tr.row_div.insert(name("mlp.up_proj"), down.scales.clone());
        reports.push(report(layer, "down", &down));
        let sites = [
            (
                Site::Mlp,
                "mlp",
                vec![name("mlp.gate_proj"), name("mlp.up_proj")],
                "pre_feedforward_layernorm",
            ),
            (
                Site::Attention,
                "attention",
                vec![
                    name("self_attn.q_proj"),
                    name("self_attn.k_proj"),
                    name("self_attn.v_proj"),
                ],
                "input_layernorm",
            ),
        ];
        for (site, label, names, norm) in sites {
            let found = search_one(layer, &names, site, &tr).map_err(|e| at(layer, e))?;
            let sq = stats.site(layer, site)?.mean_sq();
            for n in &names {
                tr.importance
                    .insert(n.clone(), divide_sq(&sq, &found.scales));
                tr.col_scale.insert(n.clone(), found.scales.clone());
            }
            let norm_name = name(norm);
            let w = ck.tensor(&norm_name)?.to_f32_vec()?;
            tr.replace.insert(norm_name, fold_norm(&w, &found.scales));
            reports.push(report(layer, label, &found));
        }
        let o_sq = stats.site(layer, Site::Output)?.mean_sq();
        tr.importance.insert(name("self_attn.o_proj"), o_sq);
    }
    Ok((tr, reports))
}

fn at(layer: usize, e: Error) -> Error {
    Error::Quantize(format!("AWQ, layer {layer}: {e}"))
}

fn report(layer: usize, site: &'static str, s: &Search) -> SiteReport {
    SiteReport {
        layer,
        site,
        alpha: s.alpha,
        rtn_error: s.rtn_error,
        awq_error: s.error,
    }
}

/// Importance of the scaled columns: `E[(x/s)²] = E[x²] / s²`.
fn divide_sq(mean_sq: &[f32], scales: &[f32]) -> Vec<f32> {
    mean_sq
        .iter()
        .zip(scales)
        .map(|(q, s)| q / (s * s))
        .collect()
}

/// Gemma's RMSNorm multiplies by `(1 + w)`: dividing its output by `s` gives `w' = (1 + w)/s - 1`.
pub fn fold_norm(w: &[f32], scales: &[f32]) -> Vec<f32> {
    w.iter()
        .zip(scales)
        .map(|(w, s)| (1.0 + w) / s - 1.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_norm_divides_output() {
        let w = [0.5f32, -0.25, 2.0];
        let s = [2.0f32, 0.5, 4.0];
        let folded = fold_norm(&w, &s);
        for i in 0..3 {
            assert!(((1.0 + folded[i]) - (1.0 + w[i]) / s[i]).abs() < 1e-6);
        }
    }
}
