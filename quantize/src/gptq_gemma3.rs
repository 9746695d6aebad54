//! GPTQ for Gemma 3: prepares each layer input's Hessian (`XᵀX` from calibration) once and
//! hands it to every projection that reads the input (q/k/v, gate/up, o, down), after AWQ's
//! channel scales when there are any (then the weight's columns are `W s` and its input
//! `x / s`, so the Hessian becomes `S⁻¹ H S⁻¹`).
//!
//! Layer by layer: a layer's Hessians are taken out of the calibration statistics (freed)
//! as the layer is prepared. Without AWQ the group scales are plain round-to-nearest, with
//! AWQ they are its clip-searched ones (the stage writer fixes them before GPTQ runs).

use std::sync::Arc;

use ava_core::Gemma3Config;
use ava_runtime::gemma3::Site;

use crate::calib::CalibStats;
use crate::error::{Error, Result};
use crate::gptq::{prepare, GptqOptions};
use crate::stage::Transform;

/// What GPTQ prepared for one layer input.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GptqReport {
    /// Layer index.
    pub layer: usize,
    /// `attention`, `output`, `mlp` or `down`.
    pub site: &'static str,
    /// Input features.
    pub cols: usize,
    /// Damping used (fraction of the mean diagonal; raised when the factorization failed).
    pub damp: f64,
}

/// The four projection inputs of `layer`: the site, its label and the weights reading it.
pub fn layer_sites(cfg: &Gemma3Config, layer: usize) -> [(Site, &'static str, Vec<String>); 4] {
    let p = &cfg.weight_prefix;
    let name = |s: &str| format!("{p}layers.{layer}.{s}.weight");
    [
        (
            Site::Attention,
            "attention",
            vec![
                name("self_attn.q_proj"),
                name("self_attn.k_proj"),
                name("self_attn.v_proj"),
            ],
        ),
        (Site::Output, "output", vec![name("self_attn.o_proj")]),
        (
            Site::Mlp,
            "mlp",
            vec![name("mlp.gate_proj"), name("mlp.up_proj")],
        ),
        (Site::Down, "down", vec![name("mlp.down_proj")]),
    ]
}

/// Adds the prepared Hessians of every projection of `cfg`'s layers to `tr`.
pub fn add_gptq(
    cfg: &Gemma3Config,
    stats: &mut CalibStats,
    tr: &mut Transform,
    opts: &GptqOptions,
) -> Result<Vec<GptqReport>> {
    let mut reports = Vec::new();
    for layer in 0..cfg.num_hidden_layers {
        for (site, label, names) in layer_sites(cfg, layer) {
            let h = stats
                .sites
                .get_mut(&(layer, site))
                .and_then(|s| s.hessian.take())
                .ok_or_else(|| {
                    Error::Quantize(format!("GPTQ: no Hessian for layer {layer} {label}"))
                })?;
            let scale = tr.col_scale.get(&names[0]).map(Vec::as_slice);
            let prep = prepare(h.view(), scale, opts)
                .map_err(|e| Error::Quantize(format!("layer {layer} {label}: {e}")))?;
            reports.push(GptqReport {
                layer,
                site: label,
                cols: prep.cols(),
                damp: prep.damp,
            });
            let prep = Arc::new(prep);
            for n in names {
                tr.gptq.insert(n, Arc::clone(&prep));
            }
        }
    }
    Ok(reports)
}
