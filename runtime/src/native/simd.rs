//! Dot products, with a faster path picked at run time where the CPU has one.

/// `sum(a[i] * b[i])` over the shorter of the two slices.
///
/// The same bits on every CPU: eight lanes accumulated in a fixed order with separate
/// multiplies and adds (no FMA), the lanes then summed in order (docs/runtime.md, "Numerical
/// contract"). With AVX2 the same code runs eight lanes to a register.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature this function is compiled for was just detected.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// Eight independent accumulators: vectorised by LLVM for the target's baseline SIMD.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let chunks = n / LANES;
    for c in 0..chunks {
        let (x, y) = (
            &a[c * LANES..c * LANES + LANES],
            &b[c * LANES..c * LANES + LANES],
        );
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = 0f32;
    for i in chunks * LANES..n {
        sum += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + sum
}

/// [`dot_portable`] compiled for AVX2: the same operations in the same order (Rust never
/// fuses a multiply and an add), one register of eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_agree() {
        let a: Vec<f32> = (0..1037)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let b: Vec<f32> = (0..1037)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0)
            .collect();
        let exact: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-2);
        // Every path gives the portable code's bits.
        for n in [0, 3, 8, 17, 1037] {
            assert_eq!(
                dot(&a[..n], &b[..n]).to_bits(),
                dot_portable(&a[..n], &b[..n]).to_bits()
            );
        }
        assert_eq!(
            dot(&a[..3], &b[..3]),
            a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
        );
    }
}
