//! Calibration: runs the model through `ava-runtime` on calibration text and collects, for
//! every projection input, per-input-channel statistics (mean |x|, mean x²) and a strided
//! sample of activation rows (AWQ measures each candidate's output error on them).

use std::collections::HashMap;
use std::path::Path;

use ava_runtime::gemma3::Site;
use ava_runtime::Engine;
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
}

impl Default for CalibOptions {
    fn default() -> Self {
        CalibOptions {
            samples: DEFAULT_SAMPLES,
            seq_len: DEFAULT_SEQ_LEN,
            keep_rows: DEFAULT_KEEP_ROWS,
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

    fn add(&mut self, x: &[f32], width: usize, stride: usize, keep: usize) {
        if self.width == 0 {
            self.width = width;
            self.sum_abs = vec![0.0; width];
            self.sum_sq = vec![0.0; width];
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

/// Runs `engine` over up to `opts.samples` sequences of `text_file` (evenly spread over it).
pub fn calibrate(engine: &Engine, text_file: &Path, opts: &CalibOptions) -> Result<CalibStats> {
    let bytes = std::fs::read(text_file).map_err(|e| Error::io(text_file, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let tokens = engine.tokenizer().encode_plain(&text)?;
    let body = opts.seq_len.saturating_sub(1).max(1);
    let windows = tokens.len() / body;
    if windows == 0 {
        return Err(Error::Quantize(format!(
            "{}: {} tokens, fewer than one calibration sequence of {}",
            text_file.display(),
            tokens.len(),
            opts.seq_len
        )));
    }
    let count = opts.samples.clamp(1, windows);
    let stride = (count * opts.seq_len / opts.keep_rows.max(1)).max(1);
    let mut stats = CalibStats {
        sha256: hex::encode(Sha256::digest(&bytes)),
        ..CalibStats::default()
    };
    for i in 0..count {
        let start = i * windows / count * body;
        let mut seq = vec![BOS];
        seq.extend_from_slice(&tokens[start..start + body]);
        let mut cache = engine.model().new_cache(seq.len());
        let sites = &mut stats.sites;
        let keep = opts.keep_rows;
        engine
            .model()
            .forward_observed(&seq, &mut cache, &mut |layer, site, x| {
                let width = x.len() / seq.len();
                sites
                    .entry((layer, site))
                    .or_default()
                    .add(x, width, stride, keep);
            })?;
        stats.tokens += seq.len();
        stats.sequences += 1;
    }
    Ok(stats)
}
