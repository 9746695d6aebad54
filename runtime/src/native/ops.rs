//! Element-wise and normalisation kernels, and rotary position embeddings.

/// Gemma's RMSNorm of one vector in place: `x / sqrt(mean(x^2) + eps) * (1 + w)`, in f32.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v = *v * scale * (1.0 + w);
    }
}

/// [`rms_norm`] over each `weight.len()`-sized row of `x`.
pub fn rms_norm_rows(x: &mut [f32], weight: &[f32], eps: f32) {
    for row in x.chunks_mut(weight.len()) {
        rms_norm(row, weight, eps);
    }
}

/// `a += b`.
pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// The tanh approximation of GELU, `0.5 * x * (1 + tanh(u))` with
/// `u = sqrt(2 / pi) * (x + 0.044715 * x^3)`, computed as `x / (1 + exp(-2u))`, the same
/// function: glibc's `tanhf` differs in the last bit between x86_64 and aarch64 on about one
/// input in 15,000, its `expf` on none, and the native backend must give the same bits on
/// every CPU (docs/runtime.md, "Numerical contract").
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEFF: f32 = 0.044_715;
    let inner = SQRT_2_OVER_PI * (x + COEFF * x * x * x);
    // exp overflows to infinity for very negative x: x / inf is the limit, -0.
    x / (1.0 + (-2.0 * inner).exp())
}

/// `gate = gelu_tanh(gate) * up`, the gated MLP's activation (`gelu_pytorch_tanh`).
pub fn gelu_tanh_gate(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = gelu_tanh(*g) * u;
    }
}

/// Below this `|x|`, [`tanh`] sums its Taylor series: `1 - exp(-2|x|)` would cancel.
const TANH_SERIES_BELOW: f32 = 0.125;

/// `tanh(x)` from `exp` alone, the same bits on every CPU (see [`gelu_tanh`] for why not
/// `tanhf`): `(1 - e) / (1 + e)` with `e = exp(-2|x|)`, and for small `|x|`, where that
/// subtraction loses digits, the Taylor series to `x^11` (its first omitted term is below
/// f32 rounding there). Within a few ulp of `f32::tanh`.
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    if a < TANH_SERIES_BELOW {
        // tanh x = x (1 - x^2/3 + 2x^4/15 - 17x^6/315 + 62x^8/2835 - 1382x^10/155925 + ...)
        let s = x * x;
        let p = 1.0
            + s * (-1.0 / 3.0
                + s * (2.0 / 15.0
                    + s * (-17.0 / 315.0 + s * (62.0 / 2835.0 + s * (-1382.0 / 155_925.0)))));
        return x * p;
    }
    let e = (-2.0 * a).exp();
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Softmax of `x` in place (max-subtracted, f32).
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Rotary embedding tables for one `theta` and linear scaling `factor`: the
/// "rotate half" form (pairs `i` and `i + d/2`), as in Hugging Face's Gemma.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies `1 / theta^(2i/d) / factor`, computed in f32 as transformers does.
    pub fn new(head_dim: usize, theta: f64, factor: f64) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0 / (theta as f32).powf(exponent) / factor as f32
            })
            .collect();
        Rope { inv_freq }
    }

    /// The frequencies, `head_dim / 2` of them.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates every head (`head_dim` values each) of `x` for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.inv_freq.len();
        for head in x.chunks_mut(2 * half) {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let angle = pos as f32 * f;
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos - b * sin;
                head[i + half] = b * cos + a * sin;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_uses_one_plus_w() {
        let mut x = [3.0, 4.0];
        rms_norm(&mut x, &[0.0, 1.0], 0.0);
        let rms = (12.5f32).sqrt();
        assert!((x[0] - 3.0 / rms).abs() < 1e-6);
        assert!((x[1] - 2.0 * 4.0 / rms).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0, 2.0, 3.0, -1e9];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
    }

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let rope = Rope::new(8, 10_000.0, 1.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let mut x = orig.clone();
        rope.apply(&mut x, 0);
        assert_eq!(x, orig);
        rope.apply(&mut x, 17);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&orig)).abs() < 1e-3);
    }

    #[test]
    fn tanh_from_exp_matches_libm() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.005 + 1e-4;
            let (got, want) = (tanh(x), f32::tanh(x));
            // A few ulp of the result.
            assert!(
                (got - want).abs() <= 4.0 * f32::EPSILON * want.abs(),
                "{x}: {got} {want}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e-30), 1e-30);
        assert_eq!((tanh(100.0), tanh(-100.0)), (1.0, -1.0));
        assert_eq!((tanh(f32::INFINITY), tanh(f32::NEG_INFINITY)), (1.0, -1.0));
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_known_values() {
        let mut g = [0.0, 1.0, -1.0];
        gelu_tanh_gate(&mut g, &[1.0, 1.0, 2.0]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.841_192).abs() < 1e-5);
        assert!((g[2] - 2.0 * -0.158_808).abs() < 1e-5);
        // The tanh form agrees to float rounding; far out it is x and -0.
        for i in -400..400 {
            let x = i as f32 * 0.02;
            let mut g = [x, 1e4, -1e4];
            gelu_tanh_gate(&mut g, &[1.0; 3]);
            let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            let tanh_form = 0.5 * x * (1.0 + f32::tanh(inner));
            assert!((g[0] - tanh_form).abs() <= 1e-6 * (1.0 + x.abs()), "{x}");
            assert_eq!(g[1..], [1e4, -0.0]);
        }
    }
}
