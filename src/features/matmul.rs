//! Matrix products for the language model, with a faster CPU kernel than candle's.
//!
//! On this project's CPUs candle's f32 matmul (the `gemm` crate) reaches about a third of
//! PyTorch/MKL, and the LLaMA forward is >90 % matrix products. faer's kernels (already a
//! dependency for the GLM) are about twice as fast, measured side by side (benches/llama.rs).
//! So contiguous f32 CPU tensors go through faer and everything else (CUDA, bf16) through
//! candle; both compute the same product, only summation order differs.

use candle_core::{DType, Device, Result, Storage, Tensor};

/// Borrow the f32 row-major data of a 2-D CPU tensor and run `f` on it.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.rank() != 2 {
        return None;
    }
    with_cpu_f32_data(t, f)
}

/// Borrow the data of a contiguous f32 CPU tensor (any rank) and run `f` on it; `None` for
/// other devices, dtypes or layouts.
pub fn with_cpu_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !matches!(t.device(), Device::Cpu) || t.dtype() != DType::F32 {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    if !layout.is_contiguous() {
        return None;
    }
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let data = cpu.as_slice::<f32>().ok()?;
    let start = layout.start_offset();
    let n = layout.shape().elem_count();
    Some(f(&data[start..start + n]))
}

/// `dst = lhs @ rhs`, split into one sequential faer product per thread.
///
/// faer's own rayon parallelism synchronizes inside the product; on a loaded 2-core machine
/// that halved throughput and spent half its CPU time waiting (measured: 20 vs 45 GFLOP/s
/// wall for 512x3072x16384). One independent block per thread has a single join at the end.
fn par_matmul(
    dst: faer::MatMut<'_, f32>,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
    parts: usize,
) {
    let (m, n) = (dst.nrows(), dst.ncols());
    if parts <= 1 || (m < 64 && n < 64) {
        faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0f32, faer::Par::Seq);
        return;
    }
    let (first, rest) = (parts / 2, parts - parts / 2);
    if n >= m {
        let cut = n * first / parts;
        let (d1, d2) = dst.split_at_col_mut(cut);
        let (r1, r2) = rhs.split_at_col(cut);
        rayon::join(
            || par_matmul(d1, lhs, r1, first),
            || par_matmul(d2, lhs, r2, rest),
        );
    } else {
        let cut = m * first / parts;
        let (d1, d2) = dst.split_at_row_mut(cut);
        let (l1, l2) = lhs.split_at_row(cut);
        rayon::join(
            || par_matmul(d1, l1, rhs, first),
            || par_matmul(d2, l2, rhs, rest),
        );
    }
}

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `a (M, K) @ b (N, K)^T -> (M, N)`: a linear layer with PyTorch's `(out, in)` weights.
pub fn matmul_nt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (m, k) = a.dims2()?;
    let (n, k2) = b.dims2()?;
    if k != k2 {
        candle_core::bail!(
            "matmul_nt: inner dims differ {:?} {:?}",
            a.shape(),
            b.shape()
        );
    }
    let out = with_cpu_f32(a, |av| {
        with_cpu_f32(b, |bv| {
            let am = faer::MatRef::from_row_major_slice(av, m, k);
            let bm = faer::MatRef::from_row_major_slice(bv, n, k);
            let mut out = vec![0f32; m * n];
            let om = faer::MatMut::from_row_major_slice_mut(&mut out, m, n);
            par_matmul(om, am, bm.transpose(), threads());
            out
        })
    })
    .flatten();
    match out {
        Some(v) => Tensor::from_vec(v, (m, n), a.device()),
        None => a.matmul(&b.t()?),
    }
}

/// `a (M, K) @ b (K, N) -> (M, N)`.
pub fn matmul_nn(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (m, k) = a.dims2()?;
    let (k2, n) = b.dims2()?;
    if k != k2 {
        candle_core::bail!(
            "matmul_nn: inner dims differ {:?} {:?}",
            a.shape(),
            b.shape()
        );
    }
    let out = with_cpu_f32(a, |av| {
        with_cpu_f32(b, |bv| {
            let am = faer::MatRef::from_row_major_slice(av, m, k);
            let bm = faer::MatRef::from_row_major_slice(bv, k, n);
            let mut out = vec![0f32; m * n];
            let om = faer::MatMut::from_row_major_slice_mut(&mut out, m, n);
            par_matmul(om, am, bm, threads());
            out
        })
    })
    .flatten();
    match out {
        Some(v) => Tensor::from_vec(v, (m, n), a.device()),
        None => a.matmul(b),
    }
}

/// A linear layer on the last dimension with a pre-transposed weight: `x (..., K) @ w_t (K, N)`.
///
/// The decoder stores PyTorch's `(out, in)` weights transposed once at load time: faer's
/// kernel then streams the weight in its natural order, 15 % more FLOPs per CPU-second than
/// reading it transposed (1024x3072x8192, measured single-threaded).
pub fn linear(x: &Tensor, w_t: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let x2 = x.reshape((m, k))?.contiguous()?;
    let y = matmul_nn(&x2, w_t)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = w_t.dim(1)?;
    }
    y.reshape(out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faer_path_matches_candle() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1., (37, 19), &dev)?;
        let b = Tensor::randn(0f32, 1., (23, 19), &dev)?;
        let c = Tensor::randn(0f32, 1., (19, 11), &dev)?;
        let d1 = (matmul_nt(&a, &b)? - a.matmul(&b.t()?)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        let d2 = (matmul_nn(&a, &c)? - a.matmul(&c)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d1 < 1e-4 && d2 < 1e-4, "{d1} {d2}");
        // A narrowed (offset) operand takes the fast path too.
        let a2 = a.narrow(0, 5, 10)?;
        let d3 = (matmul_nt(&a2, &b)? - a2.matmul(&b.t()?)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d3 < 1e-4, "{d3}");
        Ok(())
    }
}
