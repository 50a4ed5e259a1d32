//! Causal grouped-query attention on the CPU in f32, as one fused kernel per head.
//!
//! Built from candle ops, attention over a 1,400-token context made five full passes over every
//! score block (scale, mask, softmax, copies) and ~20 allocations per layer; contexts of the
//! exact text mode are that long, so this path computes each head's scores with a faer
//! product, applies scale, causal limit and softmax in one pass per row (only over the keys a
//! query may see), and writes `P @ V` straight into the head's columns of the output. Heads
//! run in parallel. The math is transformers' `sdpa`: `softmax(q k^T / sqrt(d)) v`, f32.

use faer::{MatMut, MatRef};
use rayon::prelude::*;

/// `e^x` for `x <= 0` in f32, to ~1 ulp, written so the compiler vectorizes it (softmax
/// spends most of its time here and libm's scalar `expf` does not vectorize): no libm call,
/// no float-to-int conversion, only arithmetic and bit casts.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a high part exact in f32 and a low correction (Cody-Waite).
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds to the nearest integer (ties to even) in the FPU.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // exp(r) on |r| <= ln2/2: degree-6 Taylor/Horner (error < 2e-8 relative).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n: n + 127 (in [1, 127]) sits in the low mantissa bits of n + 127 + 2^23.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0xFF;
    p * f32::from_bits(biased << 23)
}

const LANES: usize = 16;

/// Softmax of `row[..valid] * scale` in place; `row[valid..]` is set to 0. Reductions run in
/// 16 independent lanes so that they vectorize (a sequential float sum cannot).
#[inline(always)]
fn causal_softmax_row_body(row: &mut [f32], valid: usize, scale: f32) {
    let (live, dead) = row.split_at_mut(valid);
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = live.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (m, x) in lane_max.iter_mut().zip(c.iter_mut()) {
            *x *= scale;
            *m = if *x > *m { *x } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for x in chunks.into_remainder() {
        *x *= scale;
        max = if *x > max { *x } else { max };
    }
    for m in lane_max {
        max = if m > max { m } else { max };
    }
    let mut lane_sum = [0f32; LANES];
    let mut chunks = live.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in lane_sum.iter_mut().zip(c.iter_mut()) {
            *x = exp_nonpositive(*x - max);
            *s += *x;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - max);
        sum += *x;
    }
    sum += lane_sum.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in live.iter_mut() {
        *x *= inv;
    }
    dead.fill(0.0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn causal_softmax_row_avx2(row: &mut [f32], valid: usize, scale: f32) {
    causal_softmax_row_body(row, valid, scale)
}

/// Softmax of one score row, with AVX2 code where the CPU has it (the crate is built for
/// baseline x86-64, i.e. 4-wide SSE2).
fn causal_softmax_row(row: &mut [f32], valid: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected at run time.
        return unsafe { causal_softmax_row_avx2(row, valid, scale) };
    }
    causal_softmax_row_body(row, valid, scale)
}

/// One sequence's attention. `q` is (heads, t, hd), `k` and `v` are (kv_heads, t, hd), all
/// row-major; the first `len` positions are real. Returns (t, heads * hd) row-major; rows
/// from `len` on are zero (padding: nothing reads them).
#[allow(clippy::too_many_arguments)]
pub fn causal_gqa_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    t: usize,
    hd: usize,
    len: usize,
    block: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; t * heads * hd];
    if len == 0 || heads == 0 {
        return out;
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let block = block.max(1);
    // One column block of the output per head (disjoint, so heads can run in parallel).
    let mut views: Vec<MatMut<'_, f32>> = Vec::with_capacity(heads);
    let mut rest = MatMut::from_row_major_slice_mut(&mut out, t, heads * hd);
    for _ in 0..heads {
        let (head, tail) = rest.split_at_col_mut(hd);
        views.push(head);
        rest = tail;
    }
    views.into_par_iter().enumerate().for_each(|(h, mut dst)| {
        let g = h / group;
        let qh = MatRef::from_row_major_slice(&q[h * t * hd..(h + 1) * t * hd], t, hd);
        let kg = MatRef::from_row_major_slice(&k[g * t * hd..(g + 1) * t * hd], t, hd);
        let vg = MatRef::from_row_major_slice(&v[g * t * hd..(g + 1) * t * hd], t, hd);
        let mut scores = vec![0f32; block.min(len) * len];
        let mut a = 0;
        while a < len {
            let e = (a + block).min(len);
            let nq = e - a;
            let s = &mut scores[..nq * e];
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(s, nq, e),
                faer::Accum::Replace,
                qh.subrows(a, nq),
                kg.subrows(0, e).transpose(),
                1.0f32,
                faer::Par::Seq,
            );
            for (r, row) in s.chunks_mut(e).enumerate() {
                causal_softmax_row(row, a + r + 1, scale);
            }
            faer::linalg::matmul::matmul(
                dst.as_mut().subrows_mut(a, nq),
                faer::Accum::Replace,
                MatRef::from_row_major_slice(s, nq, e),
                vg.subrows(0, e),
                1.0f32,
                faer::Par::Seq,
            );
            a = e;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpositive(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    /// Against a direct O(t^2) evaluation in f64.
    #[test]
    fn matches_naive_attention() {
        let (h, kvh, t, hd, len) = (4, 2, 9, 8, 7);
        let make = |n: usize, s: u32| -> Vec<f32> {
            (0..n)
                .map(|i| (((i as u32).wrapping_mul(2654435761u32) ^ s) % 1000) as f32 / 250.0 - 2.0)
                .collect()
        };
        let (q, k, v) = (
            make(h * t * hd, 1),
            make(kvh * t * hd, 2),
            make(kvh * t * hd, 3),
        );
        for block in [1, 3, 16] {
            let out = causal_gqa_attention(&q, &k, &v, h, kvh, t, hd, len, block);
            for hh in 0..h {
                let g = hh / (h / kvh);
                for p in 0..t {
                    for c in 0..hd {
                        let got = out[p * h * hd + hh * hd + c] as f64;
                        if p >= len {
                            assert_eq!(got, 0.0);
                            continue;
                        }
                        let s: Vec<f64> = (0..=p)
                            .map(|j| {
                                (0..hd)
                                    .map(|d| {
                                        q[(hh * t + p) * hd + d] as f64
                                            * k[(g * t + j) * hd + d] as f64
                                    })
                                    .sum::<f64>()
                                    / (hd as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::MIN, f64::max);
                        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                        let want: f64 = (0..=p)
                            .map(|j| (s[j] - m).exp() / z * v[(g * t + j) * hd + c] as f64)
                            .sum();
                        assert!(
                            (got - want).abs() < 1e-5,
                            "head {hh} pos {p} col {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
