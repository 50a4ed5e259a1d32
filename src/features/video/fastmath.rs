//! CPU kernels for the two element-wise steps that dominate a ViT-g layer after the matrix
//! products: the attention softmax (16 x 8192 x 8192 exponentials per layer) and the exact
//! GELU of the MLP (8192 x 6144 error functions per layer). candle's CPU versions call the
//! scalar libm `expf`/`erf` per element; these are branch-free polynomial versions the
//! compiler vectorizes (8 lanes with AVX2+FMA, selected at run time), accurate to a few ulp,
//! far below the 1e-4 parity bound. Other devices and dtypes use candle's own kernels.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

/// e^x for x <= 0 (softmax arguments), relative error about 2e-7. Below -87 returns about
/// 1e-38 instead of a denormal, which no softmax row can tell apart.
#[inline(always)]
pub(crate) fn exp_neg(x: f32) -> f32 {
    exp_neg_with::<false>(x)
}

/// `a * b + c`, as one fused multiply-add when `FUSED`. Only code compiled with the `fma`
/// target feature may ask for it: elsewhere `mul_add` is a call into libm's software `fmaf`.
#[inline(always)]
pub(crate) fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// [`exp_neg`] with its Horner steps fused (`FUSED`) for the AVX2/AVX-512 kernels: 7 fused
/// steps instead of 14 operations, most of the exponential's cost. Each fused step rounds once
/// instead of twice, so the result can differ from the unfused one in the last bit.
#[inline(always)]
pub(crate) fn exp_neg_with<const FUSED: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.max(-87.0);
    let v = madd::<FUSED>(x, LOG2E, ROUND);
    let n = v - ROUND;
    // n as an integer straight from v's mantissa bits: a plain `as i32` saturates and does not
    // vectorize.
    let ni = (v.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = madd::<FUSED>(-n, LN2_LO, madd::<FUSED>(-n, LN2_HI, x));
    // Taylor to degree 7 on |r| <= ln2/2: truncation error < 6e-9.
    let p = 1.0 / 5040.0;
    let p = madd::<FUSED>(p, r, 1.0 / 720.0);
    let p = madd::<FUSED>(p, r, 1.0 / 120.0);
    let p = madd::<FUSED>(p, r, 1.0 / 24.0);
    let p = madd::<FUSED>(p, r, 1.0 / 6.0);
    let p = madd::<FUSED>(p, r, 0.5);
    let p = madd::<FUSED>(p, r, 1.0);
    let p = madd::<FUSED>(p, r, 1.0);
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// Lanes of the explicit partial reductions: floating-point sums and maxima only vectorize
/// when written as independent accumulators (the compiler may not reorder them itself).
const LANES: usize = 16;

#[inline(always)]
fn softmax_row(src: &[f32], dst: &mut [f32]) {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = src.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for m in maxes {
        max = max.max(m);
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = exp_neg(s - max);
    }
    let mut sums = [0f32; LANES];
    let mut chunks = dst.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in sums.iter_mut().zip(c) {
            *a += v;
        }
    }
    let sum = chunks.remainder().iter().sum::<f32>() + sums.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for d in dst.iter_mut() {
        *d *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(src: &[f32], dst: &mut [f32]) {
    softmax_row(src, dst)
}

fn softmax_rows(src: &[f32], dst: &mut [f32], n: usize) {
    #[cfg(target_arch = "x86_64")]
    let fast =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    src.par_chunks(n)
        .zip(dst.par_chunks_mut(n))
        .for_each(|(s, d)| {
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { softmax_row_avx2(s, d) };
                return;
            }
            let _ = fast;
            softmax_row(s, d)
        });
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "vjepa2-softmax-last-dim"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("vjepa2 softmax: f32 only");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("vjepa2 softmax: input must be contiguous");
        };
        let n = *layout.shape().dims().last().unwrap_or(&1);
        let mut out = vec![0f32; b - a];
        softmax_rows(&data[a..b], &mut out, n.max(1));
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Softmax over the last dimension: the vectorized kernel for f32 on the CPU, candle's
/// otherwise.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&Softmax)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// erf(x) from Numerical Recipes' erfc approximation (fractional error < 1.2e-7), branch-free;
/// absolute error below 4e-7 in float32, i.e. GELU within 2e-7 * |x|.
// The coefficients as Numerical Recipes prints them, so they can be checked against it; f32
// rounds each to the nearest float either way.
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn erf<const FUSED: bool>(x: f32) -> f32 {
    // erf(x) = sign(x) * (1 - t * exp(-x^2 + P(t))) with t = 1/(1 + |x|/2).
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = 0.170_872_77f32;
    let p = madd::<FUSED>(p, t, -0.822_152_23);
    let p = madd::<FUSED>(p, t, 1.488_515_87);
    let p = madd::<FUSED>(p, t, -1.135_203_98);
    let p = madd::<FUSED>(p, t, 0.278_868_07);
    let p = madd::<FUSED>(p, t, -0.186_288_06);
    let p = madd::<FUSED>(p, t, 0.096_784_18);
    let p = madd::<FUSED>(p, t, 0.374_091_96);
    let p = madd::<FUSED>(p, t, 1.000_023_68);
    let p = madd::<FUSED>(p, t, -1.265_512_23);
    let erfc = t * exp_neg_with::<FUSED>(madd::<FUSED>(-z, z, p));
    let e = 1.0 - erfc;
    if x < 0.0 { -e } else { e }
}

#[inline(always)]
fn gelu_slice<const FUSED: bool>(src: &[f32], dst: &mut [f32]) {
    const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = 0.5 * x * (1.0 + erf::<FUSED>(x * FRAC_1_SQRT_2));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_slice_avx2(src: &[f32], dst: &mut [f32]) {
    gelu_slice::<true>(src, dst)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "vjepa2-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("vjepa2 gelu: f32 only");
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("vjepa2 gelu: input must be contiguous");
        };
        let src = &data[a..b];
        let mut out = vec![0f32; src.len()];
        #[cfg(target_arch = "x86_64")]
        let fast = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fast = false;
        src.par_chunks(1 << 14)
            .zip(out.par_chunks_mut(1 << 14))
            .for_each(|(s, d)| {
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: the CPU has AVX2 and FMA (checked above).
                    unsafe { gelu_slice_avx2(s, d) };
                    return;
                }
                let _ = fast;
                gelu_slice::<false>(s, d)
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// Exact (erf) GELU: the vectorized kernel for f32 on the CPU, candle's otherwise.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&GeluErf)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms: the plain one and the fused one the AVX2/AVX-512 kernels use (here through
    /// libm's `fmaf`, which rounds exactly as the instruction does).
    #[test]
    fn exp_is_accurate() {
        for (name, exp) in [
            ("plain", exp_neg_with::<false> as fn(f32) -> f32),
            ("fused", exp_neg_with::<true>),
        ] {
            let mut worst = 0f64;
            let mut x = -90.0f32;
            while x <= 0.0 {
                let want = (x as f64).exp();
                if want > 1e-37 {
                    worst = worst.max(((exp(x) as f64 - want) / want).abs());
                }
                x += 0.00731;
            }
            assert!(worst < 5e-7, "{name}: worst relative error {worst:e}");
        }
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0f64;
        let mut x = -6.0f32;
        while x <= 6.0 {
            let want = libm_erf(x as f64);
            let plain = erf::<false>(x) as f64;
            let fused = erf::<true>(x) as f64;
            worst = worst.max((plain - want).abs()).max((fused - want).abs());
            x += 0.000_37;
        }
        assert!(worst < 4e-7, "worst absolute error {worst:e}");
    }

    /// erf in f64 by its Taylor series / continued fraction, as an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            // Taylor: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), accurate for |x| >= 3.
            let z = x.abs();
            let mut f = z;
            for k in (1..60).rev() {
                f = z + (k as f64 / 2.0) / f;
            }
            let erfc = (-z * z).exp() / (std::f64::consts::PI.sqrt() * f);
            (1.0 - erfc) * x.signum()
        }
    }

    /// Largest |a - b| / (1 + |b|): a few float32 ulps of either value, whatever the input draw.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn softmax_and_gelu_match_candle() {
        let dev = candle_core::Device::Cpu;
        // The input is random on every run (candle's CPU generator cannot be seeded), so the
        // tolerances are a few ulps relative to the value, not a fixed absolute bound.
        let x = Tensor::randn(0f32, 3f32, (7, 300), &dev).unwrap();
        let d = rel_diff(
            &softmax_last_dim(&x).unwrap(),
            &candle_nn::ops::softmax_last_dim(&x).unwrap(),
        );
        assert!(d < 1e-6, "softmax differs by {d}");
        let d = rel_diff(&gelu_erf(&x).unwrap(), &x.gelu_erf().unwrap());
        assert!(d < 1e-6, "gelu differs by {d}");
    }
}
