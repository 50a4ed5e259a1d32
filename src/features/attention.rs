//! Grouped-query attention on the CPU in f32, as one fused kernel per head: causal for the
//! LLaMA text model, over every token for V-JEPA2's ViT-g.
//!
//! Built from candle ops, attention made five full passes over every score block (scale, mask,
//! softmax, copies) and fresh allocations per block; a 1,400-token text context and a
//! 8,192-token video clip (16 x 8192 x 8192 scores per layer) both spent a large share of
//! their time there, much of it clearing newly mapped pages. This path computes a block of
//! queries' scores with a faer product into a buffer each thread reuses, applies scale,
//! causal limit and the unnormalized softmax in one pass per row (only over the keys a query
//! may see), and writes `P @ V`, each row scaled by its softmax's `1 / sum`, straight into the
//! head's columns of the output, which is the `(tokens, heads * head_dim)` layout the output
//! projection reads. Heads run in parallel. The math is transformers' `sdpa`:
//! `softmax(q k^T / sqrt(d)) v`, f32.
//!
//! V-JEPA2 uses [`full_attention_tiled`], which also splits the keys into blocks and keeps
//! a running softmax (maximum and sum per query), so that a block of scores stays in L2:
//! 512 queries against all 8,192 keys of a clip were 16 MiB per thread, written to memory and
//! read back twice.

use faer::{MatMut, MatRef};
use rayon::prelude::*;

use crate::features::video::fastmath::{exp_neg, exp_neg_with};

const LANES: usize = 16;

/// One key block of an online softmax: `row * scale`, then `exp(x - max)` in place, where
/// `max` is the larger of `prev_max` and this block's maximum. Returns `(max, sum of the
/// exponentials)`; the caller rescales what it accumulated under `prev_max` by
/// `exp(prev_max - max)`. Reductions run in 16 independent lanes so that they vectorize (a
/// sequential float sum cannot).
#[inline(always)]
fn online_softmax_body<const FUSED: bool>(
    row: &mut [f32],
    scale: f32,
    prev_max: f32,
) -> (f32, f32) {
    let mut lane_max = [prev_max; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (m, x) in lane_max.iter_mut().zip(c.iter_mut()) {
            *x *= scale;
            *m = if *x > *m { *x } else { *m };
        }
    }
    let mut max = prev_max;
    for x in chunks.into_remainder() {
        *x *= scale;
        max = if *x > max { *x } else { max };
    }
    for m in lane_max {
        max = if m > max { m } else { max };
    }
    let mut lane_sum = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, x) in lane_sum.iter_mut().zip(c.iter_mut()) {
            *x = exp_neg_with::<FUSED>(*x - max);
            *s += *x;
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_neg_with::<FUSED>(*x - max);
        sum += *x;
    }
    (max, sum + lane_sum.iter().sum::<f32>())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn online_softmax_avx2(row: &mut [f32], scale: f32, prev_max: f32) -> (f32, f32) {
    online_softmax_body::<true>(row, scale, prev_max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn online_softmax_avx512(row: &mut [f32], scale: f32, prev_max: f32) -> (f32, f32) {
    online_softmax_body::<true>(row, scale, prev_max)
}

/// The widest vector code this CPU runs (the crate is built for baseline x86-64, i.e. 4-wide
/// SSE2): on the 16-lane AVX-512 the ViT-g softmax takes about half the time of AVX2.
#[derive(Clone, Copy)]
enum Simd {
    Base,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if avx2 {
                return Simd::Avx2;
            }
        }
        Simd::Base
    }

    /// The unnormalized softmax of `row[..valid] * scale` in place, `exp(x * scale - max)`,
    /// and `1 / sum` of it; `row[valid..]` is set to 0. The caller scales the `P @ V` row by the
    /// returned factor instead of this row: `head_dim` multiplies instead of `keys` (88 against
    /// 8,192 for ViT-g), one pass over the scores fewer. The online softmax of one block that
    /// starts from no maximum.
    fn softmax_numerators(self, row: &mut [f32], valid: usize, scale: f32) -> f32 {
        let (live, dead) = row.split_at_mut(valid);
        let (_, sum) = self.online_softmax(live, scale, f32::NEG_INFINITY);
        dead.fill(0.0);
        1.0 / sum
    }

    /// See [`online_softmax_body`].
    fn online_softmax(self, row: &mut [f32], scale: f32, prev_max: f32) -> (f32, f32) {
        match self {
            Simd::Base => online_softmax_body::<false>(row, scale, prev_max),
            // SAFETY: `detect` found the features at run time.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { online_softmax_avx2(row, scale, prev_max) },
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { online_softmax_avx512(row, scale, prev_max) },
        }
    }
}

/// Which keys a query may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Query `i` sees keys `0..=i` (decoder language models).
    Causal,
    /// Every query sees every real key (vision encoders).
    Full,
}

/// One sequence's attention. `q` is (heads, t, hd), `k` and `v` are (kv_heads, t, hd), all
/// row-major; the first `len` positions are real. Queries are taken `block` at a time (the
/// score buffer is `block x len`). Returns (t, heads * hd) row-major; rows from `len` on are
/// zero (padding: nothing reads them).
#[allow(clippy::too_many_arguments)]
pub fn gqa_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    t: usize,
    hd: usize,
    len: usize,
    block: usize,
    mask: Mask,
) -> Vec<f32> {
    let mut out = vec![0f32; t * heads * hd];
    if len == 0 || heads == 0 {
        return out;
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let block = block.max(1);
    let views = head_columns(&mut out, t, heads, hd);
    let simd = Simd::detect();
    let scores_len = block.min(len) * len;
    views.into_par_iter().enumerate().for_each_init(
        || (vec![0f32; scores_len], vec![0f32; block.min(len)]),
        |(scores, inv), (h, mut dst)| {
            let (qh, kg, vg) = head_operands(q, k, v, h / group, h, t, hd);
            let mut a = 0;
            while a < len {
                let e = (a + block).min(len);
                let nq = e - a;
                let keys = match mask {
                    Mask::Causal => e,
                    Mask::Full => len,
                };
                let s = &mut scores[..nq * keys];
                product(
                    MatMut::from_row_major_slice_mut(s, nq, keys),
                    faer::Accum::Replace,
                    qh.subrows(a, nq),
                    kg.subrows(0, keys).transpose(),
                );
                for (r, row) in s.chunks_mut(keys).enumerate() {
                    let valid = match mask {
                        Mask::Causal => a + r + 1,
                        Mask::Full => len,
                    };
                    inv[r] = simd.softmax_numerators(row, valid, scale);
                }
                product(
                    dst.as_mut().subrows_mut(a, nq),
                    faer::Accum::Replace,
                    MatRef::from_row_major_slice(s, nq, keys),
                    vg.subrows(0, keys),
                );
                scale_rows(dst.as_mut().subrows_mut(a, nq), &inv[..nq]);
                a = e;
            }
        },
    );
    out
}

/// Attention over every key (no mask) in query blocks of `q_block` and key blocks of
/// `k_block`, with an online softmax: a block's scores stay in the thread's L2 cache instead
/// of being written to memory and read back twice (a ViT-g layer has 16 x 8,192 x 8,192 of
/// them). Each query row keeps its running maximum and sum; its accumulated `P @ V` is
/// rescaled when the maximum grows, and divided by the sum at the end. Same inputs and
/// output layout as [`gqa_attention`].
#[allow(clippy::too_many_arguments)]
pub fn full_attention_tiled(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    t: usize,
    hd: usize,
    len: usize,
    q_block: usize,
    k_block: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; t * heads * hd];
    if len == 0 || heads == 0 {
        return out;
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (qb, kb) = (q_block.max(1).min(len), k_block.max(1).min(len));
    let views = head_columns(&mut out, t, heads, hd);
    let simd = Simd::detect();
    views.into_par_iter().enumerate().for_each_init(
        || (vec![0f32; qb * kb], vec![0f32; qb], vec![0f32; qb]),
        |(scores, max, sum), (h, mut dst)| {
            let (qh, kg, vg) = head_operands(q, k, v, h / group, h, t, hd);
            let mut a = 0;
            while a < len {
                let nq = qb.min(len - a);
                max[..nq].fill(f32::NEG_INFINITY);
                sum[..nq].fill(0.0);
                let mut c = 0;
                while c < len {
                    let nk = kb.min(len - c);
                    let s = &mut scores[..nq * nk];
                    product(
                        MatMut::from_row_major_slice_mut(s, nq, nk),
                        faer::Accum::Replace,
                        qh.subrows(a, nq),
                        kg.subrows(c, nk).transpose(),
                    );
                    let mut acc = dst.as_mut().subrows_mut(a, nq);
                    for (r, row) in s.chunks_mut(nk).enumerate() {
                        let (m, block_sum) = simd.online_softmax(row, scale, max[r]);
                        if c > 0 && m > max[r] {
                            let f = exp_neg(max[r] - m);
                            sum[r] *= f;
                            scale_rows(acc.as_mut().subrows_mut(r, 1), &[f]);
                        }
                        max[r] = m;
                        sum[r] += block_sum;
                    }
                    product(
                        acc,
                        if c == 0 {
                            faer::Accum::Replace
                        } else {
                            faer::Accum::Add
                        },
                        MatRef::from_row_major_slice(s, nq, nk),
                        vg.subrows(c, nk),
                    );
                    c += nk;
                }
                for total in &mut sum[..nq] {
                    *total = 1.0 / *total;
                }
                scale_rows(dst.as_mut().subrows_mut(a, nq), &sum[..nq]);
                a += nq;
            }
        },
    );
    out
}

/// `dst = lhs @ rhs` (or `+=`) on this thread: MKL where it is the backend (its kernels are
/// faster on these thin shapes, `head_dim` wide), faer otherwise.
fn product(
    mut dst: MatMut<'_, f32>,
    accum: faer::Accum,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
) {
    if !crate::features::blas::matmul_seq(dst.as_mut(), accum, lhs, rhs) {
        faer::linalg::matmul::matmul(dst, accum, lhs, rhs, 1.0f32, faer::Par::Seq);
    }
}

/// Head `h`'s queries and its KV group `g`'s keys and values, each a (t, hd) view.
fn head_operands<'a>(
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: usize,
    h: usize,
    t: usize,
    hd: usize,
) -> (MatRef<'a, f32>, MatRef<'a, f32>, MatRef<'a, f32>) {
    let view = |x: &'a [f32], i: usize| {
        MatRef::from_row_major_slice(&x[i * t * hd..(i + 1) * t * hd], t, hd)
    };
    (view(q, h), view(k, g), view(v, g))
}

/// The output `(t, heads * hd)` as one column block per head: disjoint, so heads can run in
/// parallel and each writes its `P @ V` straight into the layout the output projection reads.
fn head_columns(out: &mut [f32], t: usize, heads: usize, hd: usize) -> Vec<MatMut<'_, f32>> {
    let mut views = Vec::with_capacity(heads);
    let mut rest = MatMut::from_row_major_slice_mut(out, t, heads * hd);
    for _ in 0..heads {
        let (head, tail) = rest.split_at_col_mut(hd);
        views.push(head);
        rest = tail;
    }
    views
}

/// Row `r` of `m` times `factors[r]`.
fn scale_rows(mut m: MatMut<'_, f32>, factors: &[f32]) {
    for (r, &f) in factors.iter().enumerate() {
        for c in 0..m.ncols() {
            *m.as_mut().get_mut(r, c) *= f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_neg(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1000.0) < 1e-37);
    }

    /// Against a direct O(t^2) evaluation in f64, causal and full (the fused and the key-tiled
    /// kernels), for block sizes that do and do not divide the length.
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
        for (block, mask) in [1, 3, 16]
            .into_iter()
            .flat_map(|b| [(b, Mask::Causal), (b, Mask::Full)])
        {
            let mut outs = vec![gqa_attention(&q, &k, &v, h, kvh, t, hd, len, block, mask)];
            if mask == Mask::Full {
                // The key-tiled online softmax, with key blocks of one key (the running
                // maximum rescaled at almost every step) up to all of them.
                for k_block in [1, 2, 5, 16] {
                    outs.push(full_attention_tiled(
                        &q, &k, &v, h, kvh, t, hd, len, block, k_block,
                    ));
                }
            }
            let seen = |p: usize| if mask == Mask::Causal { p + 1 } else { len };
            for out in &outs {
                for hh in 0..h {
                    let g = hh / (h / kvh);
                    for p in 0..t {
                        for c in 0..hd {
                            let got = out[p * h * hd + hh * hd + c] as f64;
                            if p >= len {
                                assert_eq!(got, 0.0);
                                continue;
                            }
                            let s: Vec<f64> = (0..seen(p))
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
                            let want: f64 = (0..seen(p))
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
}
