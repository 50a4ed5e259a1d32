//! Matrix products for the language model, with a faster CPU kernel than candle's.
//!
//! On this project's CPUs candle's f32 matmul (the `gemm` crate) reaches about a third of
//! PyTorch/MKL, and the LLaMA forward is >90 % matrix products. faer's kernels (already a
//! dependency for the GLM) reach about two thirds, measured side by side (benches/llama.rs).
//! So contiguous f32 CPU tensors go through faer and everything else (CUDA, bf16) through
//! candle; both compute the same product, only summation order differs.

use candle_core::{DType, Device, Result, Storage, Tensor};

/// Borrow the f32 row-major data of a 2-D CPU tensor and run `f` on it.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if !matches!(t.device(), Device::Cpu) || t.dtype() != DType::F32 || t.rank() != 2 {
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

fn faer_par() -> faer::Par {
    let n = rayon::current_num_threads();
    if n <= 1 {
        faer::Par::Seq
    } else {
        faer::Par::rayon(n)
    }
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
            faer::linalg::matmul::matmul(
                om,
                faer::Accum::Replace,
                am,
                bm.transpose(),
                1.0f32,
                faer_par(),
            );
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
            faer::linalg::matmul::matmul(om, faer::Accum::Replace, am, bm, 1.0f32, faer_par());
            out
        })
    })
    .flatten();
    match out {
        Some(v) => Tensor::from_vec(v, (m, n), a.device()),
        None => a.matmul(b),
    }
}

/// A linear layer on the last dimension: `x (..., K) @ w (N, K)^T`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let x2 = x.reshape((m, k))?.contiguous()?;
    let y = matmul_nt(&x2, w)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = w.dim(0)?;
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
