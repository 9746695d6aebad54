//! Mixed precision for Gemma 3: measures every candidate projection against the Hessian of
//! its input ([`crate::mixed::measure`]), after AWQ's transform when there is one (then the
//! weight's columns are `W s` and its inputs `x / s`, so the Hessian is `S⁻¹ H S⁻¹`).

use std::collections::BTreeSet;

use ava_core::{Checkpoint, Gemma3Config};
use ndarray::Array2;

use crate::calib::CalibStats;
use crate::error::{Error, Result};
use crate::gptq_gemma3::layer_sites;
use crate::mixed::{measure, Sensitivity};
use crate::stage::{transformed, Transform};

/// The sensitivity of every tensor of `candidates`, layer by layer.
pub fn sensitivities(
    (ck, cfg): (&Checkpoint, &Gemma3Config),
    stats: &CalibStats,
    tr: &Transform,
    group: usize,
    candidates: &BTreeSet<String>,
) -> Result<Vec<Sensitivity>> {
    let mut out = Vec::new();
    for layer in 0..cfg.num_hidden_layers {
        for (site, label, names) in layer_sites(cfg, layer) {
            let names: Vec<&String> = names.iter().filter(|n| candidates.contains(*n)).collect();
            let Some(first) = names.first() else {
                continue;
            };
            let h =
                stats.site(layer, site)?.hessian.as_ref().ok_or_else(|| {
                    Error::Quantize(format!("no Hessian for layer {layer} {label}"))
                })?;
            let h = scaled(h, tr.col_scale.get(*first).map(Vec::as_slice));
            for name in names {
                let view = ck.tensor(name)?;
                let [rows, cols] = *view.shape else {
                    return Err(Error::tensor(ck.dir(), name, "not a matrix"));
                };
                let w = transformed(view.to_f32_vec()?, (0, cols), name, tr);
                let importance = tr.importance.get(name).map(Vec::as_slice);
                out.push(measure(
                    name,
                    &w,
                    (rows, cols, group),
                    h.view(),
                    importance,
                )?);
            }
        }
    }
    Ok(out)
}

/// `S⁻¹ H S⁻¹` (the Hessian of inputs divided by `scale`), or `H` itself.
fn scaled(h: &Array2<f32>, scale: Option<&[f32]>) -> Array2<f32> {
    match scale {
        Some(s) if s.len() == h.nrows() => {
            Array2::from_shape_fn(h.dim(), |(i, j)| h[[i, j]] / (s[i] * s[j]))
        }
        _ => h.clone(),
    }
}
