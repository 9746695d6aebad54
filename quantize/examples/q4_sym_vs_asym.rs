//! Symmetric vs asymmetric 4-bit groups on a real checkpoint: would a bf16 offset per group
//! (asymmetric) measure better?
//!
//! For every q/k/v/o/gate/up/down projection, each row is quantized in groups of `G` (default
//! 128) with round-to-nearest two ways:
//!
//! - symmetric (the shipped q4bf16, `ava_core::quant::quantize_q4_group`): `scale = m / -8`
//!   (m: the value of largest magnitude), bf16; `value = (q - 8) * scale`;
//! - asymmetric: `scale = (max - min) / 15`, `offset = min`, both bf16;
//!   `value = q * scale + offset`.
//!
//! Reports the relative Frobenius error `||W - Ŵ|| / ||W||` per projection type and overall and,
//! with calibration text, two activation-weighted errors: the diagonal one
//! `sqrt(Σ E[x_j²] e_ij² / Σ E[x_j²] w_ij²)` and the layer-output one `||X Eᵀ|| / ||X Wᵀ||` on
//! the kept calibration rows. Both schemes are also run with the per-group clip search of
//! `grouped::quantize` (ratios `CLIP_RATIOS`, least E[x²]-weighted error; what `--method awq`
//! applies after its scaling): `sym+clip` is `grouped::quantize` itself, `asym+clip` scales
//! `[min, max]` by the same ratios. Pass GROUP = 64 to compare symmetric at the same 4.25
//! bits/weight that asymmetric costs at G = 128.
//!
//! `cargo run --release -p ava-quantize --example q4_sym_vs_asym -- [MODEL_DIR] [CALIB.txt|-]
//! [SAMPLES] [SEQ_LEN] [GROUP]`

use std::collections::BTreeMap;
use std::path::PathBuf;

use ava_core::quant::{
    bf16_to_f32, dequantize_q4_row, f32_to_bf16, quantize_q4_group, QuantFormat,
};
use ava_core::Checkpoint;
use ava_quantize::calib::{calibrate, CalibOptions, CalibStats};
use ava_quantize::grouped::{self, Layout};
use ava_runtime::gemma3::Site;
use ava_runtime::Engine;
use rayon::prelude::*;

const PROJS: [(&str, &str, Site); 7] = [
    ("q", "self_attn.q_proj", Site::Attention),
    ("k", "self_attn.k_proj", Site::Attention),
    ("v", "self_attn.v_proj", Site::Attention),
    ("o", "self_attn.o_proj", Site::Output),
    ("gate", "mlp.gate_proj", Site::Mlp),
    ("up", "mlp.up_proj", Site::Mlp),
    ("down", "mlp.down_proj", Site::Down),
];

/// Which error sum a table shows.
type Pick = fn(&Err3) -> f64;

const SCHEMES: [&str; 4] = ["sym", "asym", "sym+clip", "asym+clip"];

/// Sums of squares of one scheme: plain, diagonal-weighted, layer output on kept rows.
#[derive(Clone, Copy, Default)]
struct Err3 {
    plain: f64,
    diag: f64,
    out: f64,
}

impl std::ops::AddAssign for Err3 {
    fn add_assign(&mut self, o: Err3) {
        self.plain += o.plain;
        self.diag += o.diag;
        self.out += o.out;
    }
}

#[derive(Clone, Copy, Default)]
struct Acc {
    /// Reference sums (||W||², weighted ||W||², ||X Wᵀ||²).
    norm: Err3,
    err: [Err3; 4],
}

impl std::ops::AddAssign for Acc {
    fn add_assign(&mut self, o: Acc) {
        self.norm += o.norm;
        for (a, b) in self.err.iter_mut().zip(o.err) {
            *a += b;
        }
    }
}

/// Asymmetric RTN of one group into `out` (dequantized values), the range `[min, max]`
/// scaled by `clip` (1.0: none).
fn asym_group(x: &[f32], clip: f32, out: &mut [f32]) {
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let (lo, hi) = (lo * clip, hi * clip);
    let d = bf16_to_f32(f32_to_bf16((hi - lo) / 15.0));
    let m = bf16_to_f32(f32_to_bf16(lo));
    let inv = if d == 0.0 { 0.0 } else { 1.0 / d };
    for (o, &v) in out.iter_mut().zip(x) {
        let q = ((v - m) * inv).round().clamp(0.0, 15.0);
        *o = q * d + m;
    }
}

/// Asymmetric with the same per-group clip search as `grouped::quantize` (ratios
/// `grouped::CLIP_RATIOS`, least `imp`-weighted squared error), dequantized.
fn asym_clip(w: &[f32], cols: usize, group: usize, imp: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .for_each(|(o, row)| {
            let mut tmp = vec![0f32; group];
            for (g, (xg, og)) in row.chunks(group).zip(o.chunks_mut(group)).enumerate() {
                let ig = &imp[g * group..(g + 1) * group];
                let mut best = f32::INFINITY;
                for r in grouped::CLIP_RATIOS {
                    asym_group(xg, r, &mut tmp);
                    let e: f32 = xg
                        .iter()
                        .zip(&tmp)
                        .zip(ig)
                        .map(|((a, b), i)| (a - b) * (a - b) * i)
                        .sum();
                    if e < best {
                        best = e;
                        og.copy_from_slice(&tmp);
                    }
                }
            }
        });
    out
}

/// Symmetric RTN (the shipped quantizer) of one row into `out`.
fn sym_row(row: &[f32], group: usize, out: &mut [f32]) {
    let mut codes = vec![0u8; row.len() / 2];
    let scales: Vec<u16> = row
        .chunks(group)
        .zip(codes.chunks_mut(group / 2))
        .map(|(x, c)| quantize_q4_group(x, 1.0, c))
        .collect();
    dequantize_q4_row(&codes, &scales, group, out);
}

/// Error sums of one reconstruction `back` of `w` (`[rows, cols]`).
fn errors(w: &[f32], back: &[f32], cols: usize, imp: Option<&[f32]>, x: Option<&[f32]>) -> Err3 {
    let mut e = Err3::default();
    for (i, (a, b)) in w.iter().zip(back).enumerate() {
        let d = f64::from(a - b).powi(2);
        e.plain += d;
        if let Some(imp) = imp {
            e.diag += d * f64::from(imp[i % cols]);
        }
    }
    if let Some(x) = x {
        e.out = out_sq(x, w, Some(back), cols);
    }
    e
}

/// `||X (W - B)ᵀ||²` (or `||X Wᵀ||²` without `b`), rows of W in parallel.
fn out_sq(x: &[f32], w: &[f32], b: Option<&[f32]>, cols: usize) -> f64 {
    w.par_chunks(cols)
        .enumerate()
        .map(|(r, wr)| {
            let diff: Vec<f32> = match b {
                Some(b) => wr
                    .iter()
                    .zip(&b[r * cols..(r + 1) * cols])
                    .map(|(p, q)| p - q)
                    .collect(),
                None => wr.to_vec(),
            };
            x.chunks_exact(cols)
                .map(|xr| {
                    let y: f32 = xr.iter().zip(&diff).map(|(p, q)| p * q).sum();
                    f64::from(y) * f64::from(y)
                })
                .sum::<f64>()
        })
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .map_or(".cache/models/gemma3-270m-f32", String::as_str),
    );
    let calib = args
        .get(1)
        .map_or("../shared/datasets/wikitext-2/valid.txt", String::as_str);
    let samples: usize = args.get(2).map_or(Ok(8), |s| s.parse())?;
    let seq_len: usize = args.get(3).map_or(Ok(256), |s| s.parse())?;
    let group: usize = args.get(4).map_or(Ok(128), |s| s.parse())?;

    let ck = Checkpoint::open(&dir)?;
    let stats: Option<CalibStats> = if calib != "-" && std::path::Path::new(calib).exists() {
        let t = std::time::Instant::now();
        let engine = Engine::open(&dir)?;
        let opts = CalibOptions {
            samples,
            seq_len,
            ..CalibOptions::default()
        };
        let s = calibrate(&engine, std::path::Path::new(calib), &opts)?;
        eprintln!(
            "calibrated on {calib}: {} x {} tokens ({} tokens) in {:.1} s",
            s.sequences,
            seq_len,
            s.tokens,
            t.elapsed().as_secs_f64()
        );
        Some(s)
    } else {
        eprintln!("no calibration text: plain Frobenius error only");
        None
    };

    let mut by_kind: BTreeMap<usize, Acc> = BTreeMap::new();
    let mut layer = 0;
    loop {
        let probe = format!("model.layers.{layer}.{}.weight", PROJS[0].1);
        if !ck.contains(&probe) {
            break;
        }
        for (k, (_, name, site)) in PROJS.iter().enumerate() {
            let t = ck.tensor(&format!("model.layers.{layer}.{name}.weight"))?;
            let (rows, cols) = (t.info().shape[0], t.info().shape[1]);
            let w = t.to_f32_vec()?;
            assert_eq!(
                cols % group,
                0,
                "{name}: cols {cols} not a multiple of {group}"
            );
            let site_stats = match &stats {
                Some(s) => Some(s.site(layer, *site)?),
                None => None,
            };
            let imp = site_stats.map(|s| s.mean_sq());
            let x = site_stats.map(|s| s.rows.as_slice());

            let mut sym = vec![0f32; rows * cols];
            let mut asym = vec![0f32; rows * cols];
            sym.par_chunks_mut(cols)
                .zip(asym.par_chunks_mut(cols))
                .zip(w.par_chunks(cols))
                .for_each(|((s, a), row)| {
                    sym_row(row, group, s);
                    for (xg, og) in row.chunks(group).zip(a.chunks_mut(group)) {
                        asym_group(xg, 1.0, og);
                    }
                });
            let layout = Layout {
                format: QuantFormat::Q4Bf16,
                rows,
                cols,
                group,
            };
            let clipped = match &imp {
                Some(i) => grouped::dequantize(&grouped::quantize(&w, layout, Some(i)), layout),
                None => sym.clone(),
            };
            let asym_clipped = match &imp {
                Some(i) => asym_clip(&w, cols, group, i),
                None => asym.clone(),
            };
            let mut acc = Acc {
                norm: errors(&w, &vec![0.0; w.len()], cols, imp.as_deref(), None),
                ..Acc::default()
            };
            if let Some(x) = x {
                acc.norm.out = out_sq(x, &w, None, cols);
            }
            for (e, back) in acc
                .err
                .iter_mut()
                .zip([&sym, &asym, &clipped, &asym_clipped])
            {
                *e = errors(&w, back, cols, imp.as_deref(), x);
            }
            *by_kind.entry(k).or_default() += acc;
        }
        layer += 1;
    }
    println!("{layer} layers, group {group}, RTN; relative errors (lower is better)\n");

    let rel = |e: f64, n: f64| if n > 0.0 { (e / n).sqrt() } else { f64::NAN };
    let header = |what: &str| {
        println!("{what}");
        print!("| matrix |");
        for s in SCHEMES {
            print!(" {s} |");
        }
        println!(" asym / sym |");
        println!("|---|---:|---:|---:|---:|---:|");
    };
    let row = |label: &str, acc: &Acc, pick: Pick| {
        print!("| {label} |");
        let v: Vec<f64> = acc
            .err
            .iter()
            .map(|e| rel(pick(e), pick(&acc.norm)))
            .collect();
        for x in &v {
            print!(" {x:.5} |");
        }
        println!(" {:.3} |", v[1] / v[0]);
    };
    let mut total = Acc::default();
    for a in by_kind.values() {
        total += *a;
    }
    let metrics: [(&str, Pick); 3] = [
        ("Frobenius ||W - Ŵ|| / ||W||", |e| e.plain),
        ("activation-weighted (diagonal E[x²])", |e| e.diag),
        (
            "layer output ||X(W - Ŵ)ᵀ|| / ||XWᵀ|| on kept calibration rows",
            |e| e.out,
        ),
    ];
    for (i, (what, pick)) in metrics.iter().enumerate() {
        if i > 0 && stats.is_none() {
            break;
        }
        header(what);
        for (k, a) in &by_kind {
            row(PROJS[*k].0, a, *pick);
        }
        row("all", &total, *pick);
        println!();
    }
    Ok(())
}
