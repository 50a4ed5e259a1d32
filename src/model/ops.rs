//! The few numeric kernels the brain model needs, each with a portable candle version (any
//! device) and, for f32 on the CPU, a faster version.
//!
//! Why a CPU path of our own: the brain model is 72 GFLOP per 100 s window, almost all of it
//! GEMM with only 200 rows, and on that shape candle's CPU matmul (the `gemm` crate) ran at
//! roughly a third of the speed of faer's f32 GEMM (`private-gemm-x86`, 180-200 GFLOP/s on this
//! 2-core AVX-512 machine, about 75% of MKL). With the fused head, GELU and attention below, a
//! window runs about 2x faster than with candle's ops (benches/brain_model.rs). The fast path
//! computes the same sums in f32 (only the summation order differs) and is checked against the
//! same golden fixtures as the portable path (`Kernels::Portable` forces the latter, so both
//! stay tested on a CPU-only CI).

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::features::matmul::{WeightLayout, mkl_product};

/// Which implementation of the kernels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// faer GEMM and fused loops for f32 on the CPU, candle ops elsewhere.
    #[default]
    Auto,
    /// Only candle tensor ops (what runs on CUDA); used to test that path on a CPU.
    Portable,
}

impl Kernels {
    /// True when the fast CPU path applies to `t`.
    fn fast(self, t: &Tensor) -> bool {
        self == Kernels::Auto && t.device().is_cpu() && t.dtype() == DType::F32
    }
}

fn threads() -> faer::Par {
    faer::Par::rayon(candle_core::utils::get_num_threads())
}

/// faer's f32 GEMM (private-gemm-x86 0.1.22) runs hand-written AVX-512 kernels that return with
/// the upper halves of the vector registers still dirty (no `vzeroupper`). Until something
/// clears them, every SSE instruction on that core pays a state-transition penalty: the softmax
/// after a GEMM ran 30x slower (8 ms instead of 0.25 ms per head), and so did GELU and candle's
/// element-wise ops. So after each faer call we clear the state on every thread that may have
/// run a kernel.
fn faer_matmul(
    dst: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
    par: faer::Par,
) {
    faer::linalg::matmul::matmul(dst, accum, lhs, rhs, 1.0f32, par);
    match par {
        faer::Par::Seq => zero_upper(),
        _ => {
            rayon::broadcast(|_| zero_upper());
            zero_upper();
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn zero_upper() {
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above), which is all vzeroupper needs; it
        // only clears upper register halves, which hold no live value between calls.
        unsafe { zero_upper_avx() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zero_upper_avx() {
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(not(target_arch = "x86_64"))]
fn zero_upper() {}

/// Run `f` on the contiguous f32 CPU data of `t` (None if `t` is not such a tensor).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => Some(f(&v[start..end])),
        _ => None,
    }
}

/// `x @ w^T (+ b)` with `w` in nn.Linear layout (N, K); `x` is (..., K).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, k: Kernels) -> Result<Tensor> {
    gemm(x, w, true, b, false, k)
}

/// `GELU(x @ w^T + b)`: the feed-forward's first half. On the CPU the GELU runs in place on the
/// GEMM's output buffer (no extra pass over a copy).
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: Option<&Tensor>, k: Kernels) -> Result<Tensor> {
    gemm(x, w, true, b, true, k)
}

/// `x @ w (+ b)` with `w` stored (K, N), as the subject-layers predictor is.
pub fn matmul(x: &Tensor, w: &Tensor, b: Option<&Tensor>, k: Kernels) -> Result<Tensor> {
    gemm(x, w, false, b, false, k)
}

fn gemm(
    x: &Tensor,
    w: &Tensor,
    w_is_nk: bool,
    b: Option<&Tensor>,
    gelu: bool,
    kern: Kernels,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let kdim = *dims.last().expect("rank >= 1");
    let m: usize = dims[..dims.len() - 1].iter().product();
    let n = if w_is_nk { w.dim(0)? } else { w.dim(1)? };
    let mut out_dims = dims.clone();
    *out_dims.last_mut().expect("rank >= 1") = n;
    let x2 = x.reshape((m, kdim))?;
    if kern.fast(x) && kern.fast(w) && b.is_none_or(|b| kern.fast(b)) {
        let x2 = x2.contiguous()?;
        let w = w.contiguous()?;
        let bias = match b {
            Some(b) => Some(b.flatten_all()?.contiguous()?),
            None => None,
        };
        let layout = if w_is_nk {
            WeightLayout::OutIn
        } else {
            WeightLayout::InOut
        };
        if let Some(mut out) = mkl_product(&x2, &w, layout, bias.as_ref(), (m, kdim, n)) {
            if gelu {
                gelu_in_place(&mut out);
            }
            return Ok(Tensor::from_vec(out, out_dims, &Device::Cpu)?);
        }
        let out = with_f32(&x2, |xv| {
            with_f32(&w, |wv| {
                let mut out = vec![0f32; m * n];
                let accum = match &bias {
                    Some(bias) => {
                        with_f32(bias, |bv| {
                            out.chunks_exact_mut(n)
                                .for_each(|row| row.copy_from_slice(bv))
                        });
                        faer::Accum::Add
                    }
                    None => faer::Accum::Replace,
                };
                let lhs = faer::MatRef::from_row_major_slice(xv, m, kdim);
                let dst = faer::MatMut::from_row_major_slice_mut(&mut out, m, n);
                if w_is_nk {
                    let rhs = faer::MatRef::from_row_major_slice(wv, n, kdim);
                    faer_matmul(dst, accum, lhs, rhs.transpose(), threads());
                } else {
                    let rhs = faer::MatRef::from_row_major_slice(wv, kdim, n);
                    faer_matmul(dst, accum, lhs, rhs, threads());
                }
                if gelu {
                    gelu_in_place(&mut out);
                }
                out
            })
        })
        .flatten();
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, out_dims, &Device::Cpu)?);
        }
    }
    let wt = if w_is_nk { w.t()? } else { w.clone() };
    let mut y = x2.matmul(&wt)?;
    if let Some(b) = b {
        y = y.broadcast_add(&b.flatten_all()?)?;
    }
    if gelu {
        y = y.gelu_erf()?;
    }
    Ok(y.reshape(out_dims)?)
}

/// x_transformers ScaleNorm: `x / max(||x||, eps) * sqrt(dim) * g` (F.normalize, then the scales).
/// Computed in f32 whatever `x`'s dtype (the sum of squares needs f32's mantissa); the result
/// has `x`'s dtype. `g` is f32.
pub fn scale_norm(x: &Tensor, g: &Tensor, eps: f64) -> Result<Tensor> {
    let dim = x.dim(candle_core::D::Minus1)?;
    let xf = x.to_dtype(DType::F32)?;
    let norm = xf
        .sqr()?
        .sum_keepdim(candle_core::D::Minus1)?
        .sqrt()?
        .clamp(eps, f64::INFINITY)?;
    let y = xf.broadcast_div(&norm)?.affine((dim as f64).sqrt(), 0.0)?;
    Ok(y.broadcast_mul(g)?.to_dtype(x.dtype())?)
}

/// Exact (erf) GELU over a buffer, in parallel: `(erf(x / sqrt 2) + 1) * 0.5 * x`, the
/// operation order of candle's and torch's f32 GELU.
fn gelu_in_place(v: &mut [f32]) {
    v.par_chunks_mut(16 * 1024).for_each(gelu_chunk);
}

/// erf of an f32, evaluated in f64 as `u P(u^2) / Q(u^2)` on [-4, 4] (a rational fit of ours,
/// max error 2e-9 in f64) and rounded to f32: within 1 ulp of the correctly rounded value over
/// the whole line (checked against scipy on 2M points; libm's erff and torch's are too). Unlike
/// libm's piecewise erff it has no branches, so the GELU loop vectorises, which made GELU 15x
/// faster (it was 15% of a window's time). Beyond |u| = 4, erf rounds to +-1 in f32.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    const P: [f64; 6] = [
        1.128_379_186_666_992_3,
        0.192_584_781_052_453_05,
        0.055_833_830_045_951_216,
        0.004_230_295_399_223_294,
        0.000_416_681_572_283_104_66,
        7.010_356_463_652_766e-6,
    ];
    const Q: [f64; 7] = [
        1.0,
        0.504_007_425_212_333_3,
        0.117_482_673_290_809_28,
        0.016_321_284_987_611_647,
        0.001_428_879_653_814_277_8,
        7.415_101_229_152_276e-5,
        2.722_974_549_012_41e-7,
    ];
    let u = (x as f64).clamp(-4.0, 4.0);
    let z = u * u;
    let p = ((((P[5] * z + P[4]) * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
    let q = (((((Q[6] * z + Q[5]) * z + Q[4]) * z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
    (u * p / q) as f32
}

#[inline(always)]
fn gelu_scalar_loop(v: &mut [f32]) {
    for e in v {
        let a = *e;
        *e = (erf_f32(a * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * a;
    }
}

/// The same loop compiled for the widest vector unit present (plain IEEE mul/add/div, no FMA
/// contraction, so every variant gives identical results).
fn gelu_chunk(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { gelu_avx512(v) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { gelu_avx2(v) };
        }
    }
    gelu_scalar_loop(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(v: &mut [f32]) {
    gelu_scalar_loop(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_avx2(v: &mut [f32]) {
    gelu_scalar_loop(v)
}

/// Rotary frequencies `[p * inv_freq, p * inv_freq]` for p = 0..T-1, shape (T, rotary_dim), f32
/// as x_transformers computes them (autocast off).
pub fn rotary_freqs(inv_freq: &Tensor, t: usize) -> Result<Tensor> {
    let pos = Tensor::arange(0u32, t as u32, inv_freq.device())?.to_dtype(DType::F32)?;
    let f = pos.unsqueeze(1)?.broadcast_mul(&inv_freq.unsqueeze(0)?)?;
    Ok(Tensor::cat(&[&f, &f], 1)?)
}

/// Half-split ("NeoX") rotary on the first `cos.dim(1)` dims of each head of `x` (B, H, T, dh).
fn apply_rotary_portable(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (_, _, _, dh) = x.dims4()?;
    let rd = cos.dim(1)?;
    let xr = x.narrow(3, 0, rd)?;
    let x1 = xr.narrow(3, 0, rd / 2)?;
    let x2 = xr.narrow(3, rd / 2, rd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    let y = xr.broadcast_mul(cos)?.add(&rotated.broadcast_mul(sin)?)?;
    if rd == dh {
        Ok(y)
    } else {
        Ok(Tensor::cat(&[&y, &x.narrow(3, rd, dh - rd)?], 3)?)
    }
}

/// Multi-head self-attention core, after the fused q/k/v projection: rotary on q and k,
/// softmax(q k^T * dh^-0.5) in f32, times v, heads merged back. `qkv`: (B, T, 3*H*dh), the
/// columns being [q | k | v]. Returns (B, T, H*dh) and, when `want_probs`, the probabilities
/// (B, H, T, T) for tracing.
pub fn attention(
    qkv: &Tensor,
    heads: usize,
    freqs: &Tensor,
    want_probs: bool,
    kern: Kernels,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, t, hd3) = qkv.dims3()?;
    let hd = hd3 / 3;
    let dh = hd / heads;
    let scale = (dh as f64).powf(-0.5);
    if kern.fast(qkv)
        && let Some(r) = attention_cpu(qkv, heads, freqs, want_probs, scale)?
    {
        return Ok(r);
    }
    // The frequencies are f32 (SPEC §2.3); cos/sin are rounded to q/k's dtype, as torch's
    // autocast would multiply them.
    let cos = freqs.cos()?.to_dtype(qkv.dtype())?;
    let sin = freqs.sin()?.to_dtype(qkv.dtype())?;
    let split = |i: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(2, i * hd, hd)?
            .reshape((b, t, heads, dh))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let qh = apply_rotary_portable(&split(0)?, &cos, &sin)?;
    let kh = apply_rotary_portable(&split(1)?, &cos, &sin)?;
    let vh = split(2)?;
    let scores = (qh.matmul(&kh.t()?.contiguous()?)? * scale)?;
    // Softmax in f32 whatever the compute dtype (SPEC §2.3), probabilities back to v's dtype.
    let probs = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?;
    let o = probs
        .to_dtype(vh.dtype())?
        .matmul(&vh)?
        .transpose(1, 2)?
        .reshape((b, t, hd))?;
    Ok((o, want_probs.then_some(probs)))
}

/// The CPU version: rotary on copies of q and k, then one task per (batch, head), each doing two
/// single-threaded faer GEMMs on strided views of the (B, T, 3*H*dh) layout (no head transposes
/// are materialised); the heads run in parallel.
fn attention_cpu(
    qkv: &Tensor,
    heads: usize,
    freqs: &Tensor,
    want_probs: bool,
    scale: f64,
) -> Result<Option<(Tensor, Option<Tensor>)>> {
    let (b, t, hd3) = qkv.dims3()?;
    let hd = hd3 / 3;
    let dh = hd / heads;
    let rd = freqs.dim(1)?;
    // cos/sin computed by candle (the same f32 cos/sin as the portable path).
    let (Some(cos), Some(sin)) = (
        with_f32(&freqs.cos()?.contiguous()?, <[f32]>::to_vec),
        with_f32(&freqs.sin()?.contiguous()?, <[f32]>::to_vec),
    ) else {
        return Ok(None);
    };
    let half = rd / 2;
    let qkv = qkv.contiguous()?;
    let out = with_f32(&qkv, |all| {
        // q and k with rotary applied, each (B*T, H*dh).
        let rotated = |col: usize| {
            let mut buf = vec![0f32; b * t * hd];
            buf.par_chunks_mut(hd).enumerate().for_each(|(row, r)| {
                r.copy_from_slice(&all[row * hd3 + col..row * hd3 + col + hd]);
                let p = row % t;
                let (c, s) = (&cos[p * rd..(p + 1) * rd], &sin[p * rd..(p + 1) * rd]);
                for h in 0..heads {
                    let x = &mut r[h * dh..h * dh + rd];
                    for j in 0..half {
                        let (x1, x2) = (x[j], x[j + half]);
                        // t*cos + rotate_half(t)*sin, rotate_half([x1, x2]) = [-x2, x1]
                        x[j] = x1 * c[j] + (-x2) * s[j];
                        x[j + half] = x2 * c[j + half] + x1 * s[j + half];
                    }
                }
            });
            buf
        };
        let (qr, kr) = (rotated(0), rotated(hd));
        let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..b * heads)
            .into_par_iter()
            .map(|task| {
                let (bi, h) = (task / heads, task % heads);
                let base = bi * t * hd + h * dh;
                let qm = faer::MatRef::from_row_major_slice_with_stride(&qr[base..], t, dh, hd);
                let km = faer::MatRef::from_row_major_slice_with_stride(&kr[base..], t, dh, hd);
                let vbase = bi * t * hd3 + 2 * hd + h * dh;
                let vm = faer::MatRef::from_row_major_slice_with_stride(&all[vbase..], t, dh, hd3);
                let mut scores = vec![0f32; t * t];
                let dst = faer::MatMut::from_row_major_slice_mut(&mut scores, t, t);
                faer_matmul(
                    dst,
                    faer::Accum::Replace,
                    qm,
                    km.transpose(),
                    faer::Par::Seq,
                );
                scores
                    .chunks_exact_mut(t)
                    .for_each(|row| softmax_row(row, scale as f32));
                // faer 0.24 / private-gemm-x86 0.1.22 segfaults when the destination is a
                // row-major view with row stride > ncols, so each head is written packed.
                let mut head_out = vec![0f32; t * dh];
                let pm = faer::MatRef::from_row_major_slice(&scores, t, t);
                let dst = faer::MatMut::from_row_major_slice_mut(&mut head_out, t, dh);
                faer_matmul(dst, faer::Accum::Replace, pm, vm, faer::Par::Seq);
                (head_out, if want_probs { scores } else { Vec::new() })
            })
            .collect();
        let mut out = vec![0f32; b * t * hd];
        let mut probs = Vec::with_capacity(if want_probs { b * heads * t * t } else { 0 });
        for (task, (head_out, p)) in per_head.into_iter().enumerate() {
            let (bi, h) = (task / heads, task % heads);
            for (r, src) in head_out.chunks_exact(dh).enumerate() {
                let o = bi * t * hd + r * hd + h * dh;
                out[o..o + dh].copy_from_slice(src);
            }
            probs.extend_from_slice(&p);
        }
        (out, probs)
    });
    let Some((out, probs)) = out else {
        return Ok(None);
    };
    let o = Tensor::from_vec(out, (b, t, hd), &Device::Cpu)?;
    let p = if want_probs {
        Some(Tensor::from_vec(probs, (b, heads, t, t), &Device::Cpu)?)
    } else {
        None
    };
    Ok(Some((o, p)))
}

/// softmax(row * scale) in f32, as torch: subtract the max, exp, divide by the sum.
/// Arguments below ln(f32::MIN_POSITIVE) give 0 instead of a subnormal (a difference under
/// 1.2e-38), which keeps very sharp rows off libm's underflow/subnormal handling.
fn softmax_row(row: &mut [f32], scale: f32) {
    const LN_MIN_POSITIVE: f32 = -87.336_55;
    let mut max = f32::NEG_INFINITY;
    for x in row.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        let d = *x - max;
        *x = if d < LN_MIN_POSITIVE { 0.0 } else { d.exp() };
        sum += *x;
    }
    for x in row.iter_mut() {
        *x /= sum;
    }
}

/// `nn.AdaptiveAvgPool1d(n)` over the time axis (dim 1) of `x` (B, T, C): bin j averages rows
/// floor(j*T/n) ..= ceil((j+1)*T/n)-1, which overlap or repeat when n does not divide T.
pub fn adaptive_avg_pool_time(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, t, c) = x.dims3()?;
    if t % n == 0 {
        let k = t / n;
        if k == 1 {
            return Ok(x.clone());
        }
        return Ok((x.reshape((b, n, k, c))?.sum(2)? / k as f64)?);
    }
    let mut bins = Vec::with_capacity(n);
    for j in 0..n {
        let start = j * t / n;
        let end = ((j + 1) * t).div_ceil(n);
        bins.push((x.narrow(1, start, end - start)?.sum_keepdim(1)? / (end - start) as f64)?);
    }
    Ok(Tensor::cat(&bins, 1)?)
}

/// Pool `w` columns of a (T rows, row stride `stride`) block over time into `dst`, which holds
/// `w` output rows of `n` steps: `dst[c * n + j]` = mean of `src[t * stride + c]` over bin j.
/// Each bin is summed in time order and divided by its size, as torch's AdaptiveAvgPool1d does.
fn pool_block(
    src: &[f32],
    stride: usize,
    t: usize,
    w: usize,
    n: usize,
    acc: &mut [f32],
    dst: &mut [f32],
) {
    let acc = &mut acc[..w];
    for j in 0..n {
        let (start, end) = (j * t / n, ((j + 1) * t).div_ceil(n));
        let row = |ti: usize| &src[ti * stride..ti * stride + w];
        acc.copy_from_slice(row(start));
        for ti in start + 1..end {
            for (a, x) in acc.iter_mut().zip(row(ti)) {
                *a += *x;
            }
        }
        let cnt = (end - start) as f32;
        for (k, a) in acc.iter().enumerate() {
            dst[k * n + j] = if end - start == 1 { *a } else { *a / cnt };
        }
    }
}

/// Output columns handled per task by the fused CPU kernels below.
const COLUMN_BLOCK: usize = 512;

/// `adaptive_avg_pool_time` followed by a transpose to (B, C, n): the model's output layout.
/// On the CPU one parallel pass over column blocks does both (candle's strided transpose of the
/// 20,484 x 100 output was 5% of a window and single-threaded).
pub fn pool_time_transposed(y: &Tensor, n: usize, kern: Kernels) -> Result<Tensor> {
    let (b, t, c) = y.dims3()?;
    if kern.fast(y) && y.is_contiguous() {
        let out = with_f32(y, |v| {
            let mut out = vec![0f32; b * c * n];
            for (bi, out_b) in out.chunks_exact_mut(c * n).enumerate() {
                let src = &v[bi * t * c..(bi + 1) * t * c];
                out_b
                    .par_chunks_mut(COLUMN_BLOCK * n)
                    .enumerate()
                    .for_each(|(blk, dst)| {
                        let c0 = blk * COLUMN_BLOCK;
                        let mut acc = vec![0f32; COLUMN_BLOCK];
                        pool_block(&src[c0..], c, t, dst.len() / n, n, &mut acc, dst);
                    });
            }
            out
        });
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, (b, c, n), &Device::Cpu)?);
        }
    }
    let pooled = if t == n {
        y.clone()
    } else {
        adaptive_avg_pool_time(y, n)?
    };
    Ok(pooled.transpose(1, 2)?.contiguous()?)
}

/// The exact head's last two steps in one: `pool(z @ w + b)` laid out (B, N, n), for z (B, T,
/// K) and w (K, N). On the CPU each task multiplies z by one block of 512 predictor columns
/// (a single-threaded GEMM; blocks run in parallel, which beat faer's own threading on this
/// 200 x 2048 x 20,484 shape) and pools the block straight into the output, so the (T, N)
/// pre-pool matrix is never materialised. Same sums as the unfused path, same order per element.
pub fn matmul_pool_transposed(
    z: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    n: usize,
    kern: Kernels,
) -> Result<Tensor> {
    let (b, t, k) = z.dims3()?;
    let cols = w.dim(1)?;
    if kern.fast(z) && kern.fast(w) && bias.is_none_or(|b| kern.fast(b)) {
        let (z, w) = (z.contiguous()?, w.contiguous()?);
        let bias = match bias {
            Some(b) => Some(b.flatten_all()?.contiguous()?),
            None => None,
        };
        let out = with_f32(&z, |zv| {
            with_f32(&w, |wv| {
                let bv: Option<Vec<f32>> = bias.as_ref().and_then(|b| with_f32(b, <[f32]>::to_vec));
                let mut out = vec![0f32; b * cols * n];
                for (bi, out_b) in out.chunks_exact_mut(cols * n).enumerate() {
                    let lhs =
                        faer::MatRef::from_row_major_slice(&zv[bi * t * k..(bi + 1) * t * k], t, k);
                    out_b
                        .par_chunks_mut(COLUMN_BLOCK * n)
                        .enumerate()
                        .for_each(|(blk, dst)| {
                            let c0 = blk * COLUMN_BLOCK;
                            let wd = dst.len() / n;
                            let mut local = vec![0f32; t * wd];
                            let accum = match &bv {
                                Some(bv) => {
                                    local
                                        .chunks_exact_mut(wd)
                                        .for_each(|r| r.copy_from_slice(&bv[c0..c0 + wd]));
                                    faer::Accum::Add
                                }
                                None => faer::Accum::Replace,
                            };
                            let rhs = faer::MatRef::from_row_major_slice_with_stride(
                                &wv[c0..],
                                k,
                                wd,
                                cols,
                            );
                            let dst_m = faer::MatMut::from_row_major_slice_mut(&mut local, t, wd);
                            faer_matmul(dst_m, accum, lhs, rhs, faer::Par::Seq);
                            let mut acc = vec![0f32; wd];
                            pool_block(&local, wd, t, wd, n, &mut acc, dst);
                        });
                }
                out
            })
        })
        .flatten();
        if let Some(out) = out {
            return Ok(Tensor::from_vec(out, (b, cols, n), &Device::Cpu)?);
        }
    }
    pool_time_transposed(&matmul(z, w, bias, kern)?, n, kern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maxdiff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The faer path agrees with candle's matmul over many shapes, both weight layouts, with and
    /// without bias (it guards the fast path against GEMM-library corner cases).
    #[test]
    fn fast_gemm_matches_portable_over_shapes() {
        let d = Device::Cpu;
        for &m in &[1usize, 3, 17, 40, 201] {
            for &k in &[1usize, 5, 32, 96, 130] {
                for &n in &[1usize, 7, 64, 300] {
                    let x = Tensor::randn(0f32, 1.0, (m, k), &d).unwrap();
                    let w_nk = Tensor::randn(0f32, 1.0, (n, k), &d).unwrap();
                    let w_kn = Tensor::randn(0f32, 1.0, (k, n), &d).unwrap();
                    let b = Tensor::randn(0f32, 1.0, n, &d).unwrap();
                    for bias in [None, Some(&b)] {
                        let f = linear(&x, &w_nk, bias, Kernels::Auto).unwrap();
                        let p = linear(&x, &w_nk, bias, Kernels::Portable).unwrap();
                        assert!(maxdiff(&f, &p) < 1e-4, "linear {m}x{k}x{n}");
                        let f = matmul(&x, &w_kn, bias, Kernels::Auto).unwrap();
                        let p = matmul(&x, &w_kn, bias, Kernels::Portable).unwrap();
                        assert!(maxdiff(&f, &p) < 1e-4, "matmul {m}x{k}x{n}");
                    }
                }
            }
        }
    }

    #[test]
    fn fast_attention_matches_portable() {
        let d = Device::Cpu;
        for &(b, t, heads, dh) in &[
            (1usize, 1usize, 1usize, 64usize),
            (2, 7, 3, 64),
            (1, 33, 2, 96),
            (2, 20, 4, 40),
        ] {
            let hd = heads * dh;
            let rd = (dh / 2).max(32).min(dh);
            let inv: Vec<f32> = (0..rd / 2)
                .map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / rd as f32))
                .collect();
            let inv = Tensor::from_vec(inv, rd / 2, &d).unwrap();
            let freqs = rotary_freqs(&inv, t).unwrap();
            let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * hd), &d).unwrap();
            let (of, pf) = attention(&qkv, heads, &freqs, true, Kernels::Auto).unwrap();
            let (op, pp) = attention(&qkv, heads, &freqs, true, Kernels::Portable).unwrap();
            assert!(maxdiff(&of, &op) < 1e-5, "out {b} {t} {heads} {dh}");
            assert!(maxdiff(&pf.unwrap(), &pp.unwrap()) < 4e-6, "probs");
        }
    }

    /// Our vectorisable erf stays within 1 ulp (and 1.2e-7) of libm's erff everywhere.
    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 3e-6;
            for x in [x, x * 1000.0] {
                let (a, b) = (erf_f32(x), candle_core::cpu::erf::erf_f32(x));
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(
                    ulps <= 2 && (a - b).abs() <= 1.2e-7,
                    "erf({x}): {a} vs libm {b}"
                );
                worst = worst.max((a - b).abs());
            }
        }
        assert!(erf_f32(f32::INFINITY) == 1.0 && erf_f32(f32::NEG_INFINITY) == -1.0);
        assert!(worst > 0.0);
    }

    #[test]
    fn fused_gelu_matches_candle() {
        let d = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 33, 64), &d).unwrap();
        let w = Tensor::randn(0f32, 0.3, (100, 64), &d).unwrap();
        let b = Tensor::randn(0f32, 1.0, 100, &d).unwrap();
        let f = linear_gelu(&x, &w, Some(&b), Kernels::Auto).unwrap();
        let p = linear(&x, &w, Some(&b), Kernels::Portable)
            .unwrap()
            .gelu_erf()
            .unwrap();
        assert!(maxdiff(&f, &p) < 1e-5);
    }

    #[test]
    fn fused_pool_transpose_matches_portable() {
        let d = Device::Cpu;
        for &(b, t, c, n) in &[
            (1usize, 200usize, 1300usize, 100usize),
            (2, 27, 700, 10),
            (3, 5, 1025, 5),
            (1, 2, 9, 4),
        ] {
            let y = Tensor::randn(0f32, 1.0, (b, t, c), &d).unwrap();
            let f = pool_time_transposed(&y, n, Kernels::Auto).unwrap();
            let p = pool_time_transposed(&y, n, Kernels::Portable).unwrap();
            assert_eq!(f.dims(), &[b, c, n]);
            assert!(maxdiff(&f, &p) < 1e-6, "{b} {t} {c} {n}");
        }
    }

    #[test]
    fn fused_head_matches_portable() {
        let d = Device::Cpu;
        for &(b, t, k, c, n) in &[
            (1usize, 200usize, 64usize, 1300usize, 100usize),
            (2, 27, 32, 700, 10),
            (1, 3, 8, 513, 5),
        ] {
            let z = Tensor::randn(0f32, 1.0, (b, t, k), &d).unwrap();
            let w = Tensor::randn(0f32, 0.2, (k, c), &d).unwrap();
            let bias = Tensor::randn(0f32, 1.0, c, &d).unwrap();
            for bb in [None, Some(&bias)] {
                let f = matmul_pool_transposed(&z, &w, bb, n, Kernels::Auto).unwrap();
                let p = matmul_pool_transposed(&z, &w, bb, n, Kernels::Portable).unwrap();
                assert_eq!(f.dims(), &[b, c, n]);
                assert!(maxdiff(&f, &p) < 1e-5, "{b} {t} {k} {c} {n}");
            }
        }
    }

    #[test]
    fn adaptive_pool_bins() {
        // T = 5 -> 3 bins: [0,1], [1,2,3], [3,4]
        let x = Tensor::arange(0f32, 5.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 5, 1))
            .unwrap();
        let y: Vec<f32> = adaptive_avg_pool_time(&x, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![0.5, 2.0, 3.5]);
        let y: Vec<f32> = adaptive_avg_pool_time(&x, 5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![0., 1., 2., 3., 4.]);
        // T smaller than the output: bins repeat.
        let y: Vec<f32> = adaptive_avg_pool_time(&x.narrow(1, 0, 2).unwrap(), 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(y, vec![0., 0., 1., 1.]);
    }
}
