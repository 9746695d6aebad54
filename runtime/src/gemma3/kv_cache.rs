//! The KV cache of a Gemma 3 session, sized for the session's context: sliding-window layers
//! keep only `sliding_window` positions in a ring buffer; global layers keep the context.
//!
//! Keys and values are stored as f32, f16 (the default) or int8 with one f32 scale per head
//! row ([`KvDtype`]). Attention reads f32: a compact layer is widened into a scratch buffer
//! shared by all layers, so the f32 copy of one layer at most ever exists.

pub use ava_core::footprint::KvDtype;
use ava_core::footprint::{kv_cache_bytes, kv_layer_slots};
use ava_core::Gemma3Config;
use half::f16;

/// Largest int8 code magnitude of the `q8` cache.
const Q8_MAX: f32 = 127.0;

/// One plane (keys or values) of a layer: `cap` slots of `width` values.
#[derive(Debug)]
enum Plane {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8 { codes: Vec<i8>, scales: Vec<f32> },
}

impl Plane {
    fn new(dtype: KvDtype, len: usize, head_dim: usize) -> Self {
        match dtype {
            KvDtype::F32 => Plane::F32(vec![0.0; len]),
            KvDtype::F16 => Plane::F16(vec![f16::ZERO; len]),
            KvDtype::Q8 => Plane::Q8 {
                codes: vec![0; len],
                scales: vec![0.0; len / head_dim.max(1)],
            },
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Plane::F32(v) => v.len() * 4,
            Plane::F16(v) => v.len() * 2,
            Plane::Q8 { codes, scales } => codes.len() + scales.len() * 4,
        }
    }

    /// Writes `src` at value offset `at`.
    fn write(&mut self, at: usize, src: &[f32], head_dim: usize) {
        match self {
            Plane::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Plane::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Plane::Q8 { codes, scales } => {
                let rows = codes[at..at + src.len()].chunks_mut(head_dim);
                for (i, (row, x)) in rows.zip(src.chunks(head_dim)).enumerate() {
                    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / Q8_MAX;
                    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                    for (c, v) in row.iter_mut().zip(x) {
                        *c = (v * inv).round().clamp(-Q8_MAX, Q8_MAX) as i8;
                    }
                    scales[at / head_dim + i] = d;
                }
            }
        }
    }

    /// The first `len` values as f32: borrowed, or widened into `scratch`.
    fn read<'a>(&'a self, len: usize, head_dim: usize, scratch: &'a mut Vec<f32>) -> &'a [f32] {
        if let Plane::F32(v) = self {
            return v;
        }
        let full = self.len();
        scratch.reserve_exact(full.saturating_sub(scratch.len()));
        scratch.resize(full, 0.0);
        match self {
            Plane::F16(v) => {
                for (d, s) in scratch[..len].iter_mut().zip(&v[..len]) {
                    *d = s.to_f32();
                }
            }
            Plane::Q8 { codes, scales } => {
                let rows = scratch[..len]
                    .chunks_mut(head_dim)
                    .zip(codes.chunks(head_dim));
                for ((row, c), d) in rows.zip(scales) {
                    for (o, &q) in row.iter_mut().zip(c) {
                        *o = f32::from(q) * d;
                    }
                }
            }
            Plane::F32(_) => {}
        }
        &scratch[..self.len()]
    }

    fn len(&self) -> usize {
        match self {
            Plane::F32(v) => v.len(),
            Plane::F16(v) => v.len(),
            Plane::Q8 { codes, .. } => codes.len(),
        }
    }
}

/// Keys and values of one layer: `cap` slots of `kv_heads * head_dim` values each.
#[derive(Debug)]
pub(crate) struct LayerCache {
    pub(crate) cap: usize,
    k: Plane,
    v: Plane,
}

/// The cache of every layer plus the number of positions already processed.
#[derive(Debug)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    width: usize,
    head_dim: usize,
    dtype: KvDtype,
    pos: usize,
    max_context: usize,
    /// f32 keys and values of one layer, when the cache is not f32.
    scratch: (Vec<f32>, Vec<f32>),
}

impl KvCache {
    /// A cache for `max_context` positions, stored as `dtype`.
    pub fn new(cfg: &Gemma3Config, max_context: usize, dtype: KvDtype) -> Self {
        let (width, head_dim) = (cfg.num_key_value_heads * cfg.head_dim, cfg.head_dim);
        let layers = cfg
            .layer_types
            .iter()
            .map(|&kind| {
                let cap = kv_layer_slots(cfg, kind, max_context);
                LayerCache {
                    cap,
                    k: Plane::new(dtype, cap * width, head_dim),
                    v: Plane::new(dtype, cap * width, head_dim),
                }
            })
            .collect();
        KvCache {
            layers,
            width,
            head_dim,
            dtype,
            pos: 0,
            max_context,
            scratch: (Vec::new(), Vec::new()),
        }
    }

    /// Bytes the cache holds for a config, context and dtype, without allocating it (the
    /// f32 scratch of the largest layer included for compact dtypes): the memory estimate's
    /// figure, `ava_core::footprint::kv_cache_bytes`.
    pub fn bytes_for(cfg: &Gemma3Config, max_context: usize, dtype: KvDtype) -> usize {
        kv_cache_bytes(cfg, max_context, dtype) as usize
    }

    /// Bytes allocated (keys, values and scratch).
    pub fn bytes(&self) -> usize {
        let planes: usize = self.layers.iter().map(|l| l.k.bytes() + l.v.bytes()).sum();
        planes + (self.scratch.0.capacity() + self.scratch.1.capacity()) * 4
    }

    /// How keys and values are stored.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Slots of layer `i` (its window for sliding layers, else the context).
    pub fn layer_slots(&self, i: usize) -> Option<usize> {
        self.layers.get(i).map(|l| l.cap)
    }

    /// Positions processed so far (the next token's position).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The most positions this cache can hold.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Forgets everything (a new conversation); keeps the allocation.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Layer `i`'s keys and values as f32 `[cap, width]`: the slots written so far are valid.
    pub(crate) fn read(&mut self, i: usize) -> (&[f32], &[f32], usize) {
        let layer = &self.layers[i];
        let len = self.pos.min(layer.cap) * self.width;
        let (sk, sv) = &mut self.scratch;
        (
            layer.k.read(len, self.head_dim, sk),
            layer.v.read(len, self.head_dim, sv),
            layer.cap,
        )
    }

    /// Stores layer `i`'s keys and values of positions `start..start + n` (rows of the
    /// cache's width); only the last `cap` of them survive in a ring.
    pub(crate) fn store(&mut self, i: usize, start: usize, k: &[f32], v: &[f32]) {
        let (width, head_dim) = (self.width, self.head_dim);
        let layer = &mut self.layers[i];
        let n = k.len() / width;
        let first = n.saturating_sub(layer.cap);
        for t in first..n {
            let at = (start + t) % layer.cap * width;
            let rows = t * width..(t + 1) * width;
            layer.k.write(at, &k[rows.clone()], head_dim);
            layer.v.write(at, &v[rows], head_dim);
        }
    }
}
