//! Calibration: runs the model through `ava-runtime` on calibration text and collects, for
//! every projection input, per-input-channel statistics (mean |x|, mean x²), a strided
//! sample of activation rows (AWQ measures each candidate's output error on them) and,
//! for GPTQ, the input's Hessian `XᵀX` (accumulated with `faer`'s parallel matrix product).

use std::collections::HashMap;
use std::path::Path;

use ava_runtime::gemma3::Site;
use ava_runtime::Engine;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::Array2;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Default number of calibration sequences.
pub const DEFAULT_SAMPLES: usize = 32;
/// Default calibration sequence length (tokens, BOS included).
pub const DEFAULT_SEQ_LEN: usize = 512;
/// Default activation rows kept per projection input for AWQ's error measurements.
pub const DEFAULT_KEEP_ROWS: usize = 128;
/// Gemma's BOS token, put first in every calibration sequence.
const BOS: u32 = 2;

/// How much calibration text to run.
#[derive(Clone, Copy, Debug)]
pub struct CalibOptions {
    /// Sequences.
    pub samples: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Activation rows kept per site.
    pub keep_rows: usize,
    /// Accumulate each site's Hessian `XᵀX` (GPTQ).
    pub hessians: bool,
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            samples: DEFAULT_SAMPLES,
            seq_len: DEFAULT_SEQ_LEN,
            keep_rows: DEFAULT_KEEP_ROWS,
            hessians: false,
        }
    }
}

/// Statistics of one projection input.
#[derive(Clone, Debug, Default)]
pub struct SiteStats {
    /// Channels.
    pub width: usize,
    /// Rows seen.
    pub count: usize,
    sum_abs: Vec<f64>,
    sum_sq: Vec<f64>,
    /// Kept rows, `[kept, width]`.
    pub rows: Vec<f32>,
    /// `XᵀX` over every row seen, `[width, width]` (when asked for).
    pub hessian: Option<Array2<f32>>,
}

impl SiteStats {
    /// Mean |x| per channel.
    pub fn mean_abs(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sum_abs.iter().map(|s| (s / n) as f32).collect()
    }

    /// Mean x² per channel.
    pub fn mean_sq(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        self.sum_sq.iter().map(|s| (s / n) as f32).collect()
    }

    /// Number of kept rows.
    pub fn kept(&self) -> usize {
        self.rows.len() / self.width.max(1)
    }

    fn add(&mut self, x: &[f32], width: usize, stride: usize, opts: &CalibOptions) {
        let keep = opts.keep_rows;
        if self.width == 0 {
            self.width = width;
            self.sum_abs = vec![0.0; width];
            self.sum_sq = vec![0.0; width];
            if opts.hessians {
                self.hessian = Some(Array2::zeros((width, width)));
            }
        }
        if let Some(h) = self.hessian.as_mut().and_then(|h| h.as_slice_mut()) {
            add_gram(h, x, width);
        }
        for row in x.chunks_exact(width) {
            for ((a, q), &v) in self.sum_abs.iter_mut().zip(&mut self.sum_sq).zip(row) {
                *a += f64::from(v.abs());
                *q += f64::from(v) * f64::from(v);
            }
            if self.count % stride == 0 && self.kept() < keep {
                self.rows.extend_from_slice(row);
            }
            self.count += 1;
        }
    }
}

/// Everything calibration measured.
#[derive(Debug, Default)]
pub struct CalibStats {
    /// Per (layer, site).
    pub sites: HashMap<(usize, Site), SiteStats>,
    /// sha256 of the calibration file.
    pub sha256: String,
    /// Tokens run.
    pub tokens: usize,
    /// Sequences run.
    pub sequences: usize,
}

impl CalibStats {
    /// The statistics of `site` in `layer`.
    pub fn site(&self, layer: usize, site: Site) -> Result<&SiteStats> {
        self.sites.get(&(layer, site)).ok_or_else(|| {
            Error::Quantize(format!(
                "no calibration statistics for layer {layer} {site:?}"
            ))
        })
    }
}

/// The calibration text used when none is given: prose, dialogue and instructions (see
/// `quantize/data/ATTRIBUTION.md`; not WikiText-2's test split).
pub const DEFAULT_CORPUS: &str = include_str!("../data/calibration.txt");
/// How the built-in corpus is named in reports and the manifest.
pub const DEFAULT_CORPUS_NAME: &str = "built-in (quantize/data/calibration.txt)";

/// Runs `engine` over up to `opts.samples` sequences of `text_file` (evenly spread over it).
pub fn calibrate(engine: &Engine, text_file: &Path, opts: &CalibOptions) -> Result<CalibStats> {
    let bytes = std::fs::read(text_file).map_err(|e| Error::io(text_file, e))?;
    calibrate_bytes(engine, (&bytes, &text_file.display().to_string()), opts)
}

/// [`calibrate`] on text in memory, `label` naming it in errors.
pub fn calibrate_bytes(
    engine: &Engine,
    (bytes, label): (&[u8], &str),
    opts: &CalibOptions,
) -> Result<CalibStats> {
    let text = String::from_utf8_lossy(bytes);
    let tokens = engine.tokenizer().encode_plain(&text)?;
    // A sequence cannot be longer than the model's context.
    let seq_len = opts
        .seq_len
        .min(engine.model().config().max_position_embeddings);
    let body = seq_len.saturating_sub(1).max(1);
    let windows = tokens.len() / body;
    if windows == 0 {
        return Err(Error::Quantize(format!(
            "{label}: {} tokens, fewer than one calibration sequence of {}",
            tokens.len(),
            seq_len
        )));
    }
    let count = opts.samples.clamp(1, windows);
    let stride = (count * seq_len / opts.keep_rows.max(1)).max(1);
    let mut stats = CalibStats {
        sha256: hex::encode(Sha256::digest(bytes)),
        ..CalibStats::default()
    };
    for i in 0..count {
        let start = i * windows / count * body;
        let mut seq = vec![BOS];
        seq.extend_from_slice(&tokens[start..start + body]);
        let mut cache = engine.model().new_cache(seq.len());
        let sites = &mut stats.sites;
        engine
            .model()
            .forward_observed(&seq, &mut cache, &mut |layer, site, x| {
                let width = x.len() / seq.len();
                sites
                    .entry((layer, site))
                    .or_default()
                    .add(x, width, stride, opts);
            })?;
        stats.tokens += seq.len();
        stats.sequences += 1;
    }
    Ok(stats)
}

/// `h += xᵀx` for `x` of `[n, width]` rows (all cores).
fn add_gram(h: &mut [f32], x: &[f32], width: usize) {
    let n = x.len() / width;
    let x = MatRef::from_row_major_slice(&x[..n * width], n, width);
    let h = MatMut::from_row_major_slice_mut(h, width, width);
    matmul(h, Accum::Add, x.transpose(), x, 1.0, Par::rayon(0));
}
