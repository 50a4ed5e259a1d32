//! The MKL backend of the feature extractors' linear layers (`features::blas`).
//!
//! The backend is chosen once per process from `TRIBE_BLAS`, so these tests run only when the
//! process was started with `TRIBE_BLAS=mkl` (as `scripts/test.sh` does where MKL is
//! installed, together with the model golden tests). Started otherwise, they say so and
//! return, unless `TRIBE_TEST_REQUIRE_MKL=1`, which makes a missing MKL a failure.

use candle_core::{Device, Tensor};
use tribe_bids::features::blas;
use tribe_bids::features::matmul::{WeightLayout, linear_bias};

/// True when this process runs on MKL; panics when it must but cannot.
fn on_mkl(test: &str) -> bool {
    let asked = std::env::var(blas::ENV_VAR).is_ok_and(|v| v.eq_ignore_ascii_case("mkl"));
    let required = std::env::var("TRIBE_TEST_REQUIRE_MKL").is_ok_and(|v| v == "1");
    if asked || required {
        if let Err(e) = blas::init() {
            panic!("{test}: {e}");
        }
        assert!(
            blas::is_mkl(),
            "{test}: TRIBE_BLAS=mkl but MKL is not in use"
        );
        return true;
    }
    eprintln!("{test}: not run (start it with TRIBE_BLAS=mkl)");
    false
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `x (m, k) @ w (+ b)` in f64, with `w` stored as `layout` says.
fn reference(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    layout: WeightLayout,
    (m, k, n): (usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = b.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                let wv = match layout {
                    WeightLayout::InOut => w[p * n + j],
                    WeightLayout::OutIn => w[j * k + p],
                };
                acc += x[i * k + p] as f64 * wv as f64;
            }
            out[i * n + j] = acc;
        }
    }
    out
}

#[test]
fn mkl_linear_matches_f64_reference_in_both_layouts() {
    if !on_mkl("mkl_linear_matches_f64_reference_in_both_layouts") {
        return;
    }
    // Small (one call), large with a column count that is not a multiple of the stripe
    // alignment (split over the pool, a short last stripe), and a 3-D input.
    // Then a product cut into a 3 x 3 grid of tiles (rows and columns both split, short last
    // column of tiles).
    let cases: &[(&[usize], usize)] = &[
        (&[3, 5], 7),
        (&[2, 97, 130], 1000),
        (&[300, 64], 129),
        (&[1100, 40], 1100),
    ];
    for &(x_dims, n) in cases {
        let k = *x_dims.last().unwrap();
        let m: usize = x_dims.iter().product::<usize>() / k;
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for with_bias in [false, true] {
                let x = values(m * k, 1);
                let w = values(k * n, 2);
                let b = values(n, 3);
                let w_shape = match layout {
                    WeightLayout::InOut => (k, n),
                    WeightLayout::OutIn => (n, k),
                };
                let xt = Tensor::from_vec(x.clone(), x_dims, &Device::Cpu).unwrap();
                let wt = Tensor::from_vec(w.clone(), w_shape, &Device::Cpu).unwrap();
                let bt = Tensor::from_vec(b.clone(), n, &Device::Cpu).unwrap();
                let y = linear_bias(&xt, &wt, layout, with_bias.then_some(&bt)).unwrap();
                let mut want_dims = x_dims.to_vec();
                *want_dims.last_mut().unwrap() = n;
                assert_eq!(y.dims(), &want_dims[..]);
                let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want = reference(&x, &w, with_bias.then_some(&b[..]), layout, (m, k, n));
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (*g as f64 - w).abs())
                    .fold(0.0f64, f64::max);
                // f32 sums of k products of values in [-1, 1): a few ulps of sqrt(k).
                let bound = 1e-5 * (k as f64).sqrt().max(1.0);
                assert!(
                    worst <= bound,
                    "{x_dims:?} x {n} {layout:?} bias={with_bias}: max |diff| {worst:e} > {bound:e}"
                );
            }
        }
    }
}

#[test]
fn mkl_is_described_for_provenance() {
    if !on_mkl("mkl_is_described_for_provenance") {
        return;
    }
    let d = blas::describe();
    assert!(d.starts_with("Intel MKL ("), "{d}");
    assert!(d.contains("Math Kernel Library"), "{d}");
}

/// Attention in f64: `softmax(q k^T / sqrt(hd)) v` per head, over keys `0..=i` (causal) or
/// `0..len`; output (t, heads * hd), rows from `len` on zero.
#[allow(clippy::too_many_arguments)]
fn attention_f64(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (heads, kv_heads, t, hd, len): (usize, usize, usize, usize, usize),
    causal: bool,
) -> Vec<f64> {
    let mut out = vec![0.0f64; t * heads * hd];
    let scale = 1.0 / (hd as f64).sqrt();
    for h in 0..heads {
        let g = h / (heads / kv_heads);
        for i in 0..len {
            let keys = if causal { i + 1 } else { len };
            let s: Vec<f64> = (0..keys)
                .map(|j| {
                    (0..hd)
                        .map(|d| q[(h * t + i) * hd + d] as f64 * k[(g * t + j) * hd + d] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                out[i * heads * hd + h * hd + d] = (0..keys)
                    .map(|j| e[j] * v[(g * t + j) * hd + d] as f64)
                    .sum::<f64>()
                    / sum;
            }
        }
    }
    out
}

#[test]
fn mkl_attention_kernels_match_f64_reference() {
    use tribe_bids::features::attention::{Mask, full_attention_tiled, gqa_attention};
    if !on_mkl("mkl_attention_kernels_match_f64_reference") {
        return;
    }
    let (heads, kv_heads, t, hd, len) = (4, 2, 37, 16, 33);
    let q = values(heads * t * hd, 11);
    let k = values(kv_heads * t * hd, 12);
    let v = values(kv_heads * t * hd, 13);
    let dims = (heads, kv_heads, t, hd, len);
    let worst = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0f64, f64::max)
    };
    for (mask, causal) in [(Mask::Causal, true), (Mask::Full, false)] {
        let want = attention_f64(&q, &k, &v, dims, causal);
        for block in [1, 8, 64] {
            let got = gqa_attention(&q, &k, &v, heads, kv_heads, t, hd, len, block, mask);
            let d = worst(&got, &want);
            assert!(d < 1e-5, "{mask:?}, query block {block}: max |diff| {d:e}");
        }
    }
    let want = attention_f64(&q, &k, &v, dims, false);
    for (qb, kb) in [(8, 5), (64, 64), (3, 1)] {
        let got = full_attention_tiled(&q, &k, &v, heads, kv_heads, t, hd, len, qb, kb);
        let d = worst(&got, &want);
        assert!(d < 1e-5, "tiled {qb} x {kb}: max |diff| {d:e}");
    }
}
