//! Matrix helpers for the feature extractors' CPU kernels.
//!
//! The linear layers use candle's matmul (the `gemm` crate, with its AVX-512 kernels). An
//! earlier version routed them through faer, measured as twice as fast; that measurement came
//! from a dev-profile build, whose debug assertions slow `gemm` about 3.8x. In release builds
//! `gemm` gives the LLaMA layers 15-20 % more FLOPs per CPU-second than faer (benches/llama.rs).

use candle_core::{DType, Device, Result, Storage, Tensor};

use super::blas;
pub use super::blas::WeightLayout;

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

/// A linear layer on the last dimension with a pre-transposed weight: `x (..., K) @ w_t (K, N)`,
/// as one 2-D product (candle's batched matmul would broadcast the weight per batch row).
pub fn linear(x: &Tensor, w_t: &Tensor) -> Result<Tensor> {
    linear_bias(x, w_t, WeightLayout::InOut, None)
}

/// A linear layer on the last dimension, `x (..., K) @ w (+ bias)`, with `w` stored as
/// `layout` says. On the CPU in f32 it runs on MKL when that is the backend ([`blas`]), with
/// the bias folded into the product; otherwise on candle (`gemm` or the GPU).
pub fn linear_bias(
    x: &Tensor,
    w: &Tensor,
    layout: WeightLayout,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let n = match layout {
        WeightLayout::InOut => w.dim(1)?,
        WeightLayout::OutIn => w.dim(0)?,
    };
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = n;
    }
    let x2 = x.reshape((m, k))?.contiguous()?;
    if let Some(y) = mkl_product(&x2, w, layout, bias, (m, k, n)) {
        return Tensor::from_vec(y, (m, n), x.device())?.reshape(out_dims);
    }
    let y = match layout {
        WeightLayout::InOut => x2.matmul(w)?,
        WeightLayout::OutIn => x2.matmul(&w.t()?)?,
    };
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    y.reshape(out_dims)
}

/// `x (M, K) @ w (+ bias)` on MKL, when MKL is the backend and every operand is a contiguous
/// f32 CPU tensor; `None` otherwise (the caller runs its own kernel).
pub(crate) fn mkl_product(
    x: &Tensor,
    w: &Tensor,
    layout: WeightLayout,
    bias: Option<&Tensor>,
    (m, k, n): (usize, usize, usize),
) -> Option<Vec<f32>> {
    if !blas::is_mkl() {
        return None;
    }
    with_cpu_f32_data(x, |xd| {
        with_cpu_f32_data(w, |wd| match bias {
            Some(b) => {
                with_cpu_f32_data(b, |bd| blas::sgemm(xd, wd, layout, Some(bd), m, k, n)).flatten()
            }
            None => blas::sgemm(xd, wd, layout, None, m, k, n),
        })
        .flatten()
    })
    .flatten()
}

/// `f` applied to equal blocks of at most `max_rows` rows of `x` (split along dim 0), the
/// results concatenated back along dim 0. For row-wise work such as a transformer's MLP: a
/// block's intermediates stay small enough (under glibc's 32 MB mmap threshold) to be reused
/// from the heap instead of freshly mapped and zeroed by the kernel in every layer. The blocks
/// are equal because a short last block would run its GEMMs at a fraction of full speed.
pub fn map_row_blocks<E: From<candle_core::Error>>(
    x: &Tensor,
    max_rows: usize,
    mut f: impl FnMut(&Tensor) -> std::result::Result<Tensor, E>,
) -> std::result::Result<Tensor, E> {
    let n = x.dim(0)?;
    let n_blocks = n.div_ceil(max_rows.max(1)).max(1);
    let rows = n.div_ceil(n_blocks).max(1);
    let mut outs = Vec::with_capacity(n_blocks);
    let mut r = 0;
    while r < n {
        let len = rows.min(n - r);
        outs.push(f(&x.narrow(0, r, len)?)?);
        r += len;
    }
    Ok(match outs.len() {
        0 => f(x)?,
        1 => outs.pop().unwrap_or_else(|| unreachable!()),
        _ => Tensor::cat(&outs, 0)?,
    })
}
