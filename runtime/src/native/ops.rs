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

/// `gate = gelu_tanh(gate) * up`, the gated MLP's activation (`gelu_pytorch_tanh`).
///
/// `0.5 * x * (1 + tanh(u))` is computed as `x / (1 + exp(-2u))`, the same function: glibc's
/// `tanhf` differs in the last bit between x86_64 and aarch64 on about one input in 15,000,
/// its `expf` on none, and the native backend must give the same bits on every CPU
/// (docs/runtime.md, "Numerical contract").
pub fn gelu_tanh_gate(gate: &mut [f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEFF: f32 = 0.044_715;
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        let inner = SQRT_2_OVER_PI * (x + COEFF * x * x * x);
        // exp overflows to infinity for very negative x: x / inf is the limit, -0.
        *g = x / (1.0 + (-2.0 * inner).exp()) * u;
    }
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
