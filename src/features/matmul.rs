//! Matrix helpers for the feature extractors' CPU kernels.
//!
//! The linear layers use candle's matmul (the `gemm` crate, with its AVX-512 kernels). An
//! earlier version routed them through faer, measured as twice as fast; that measurement came
//! from a dev-profile build, whose debug assertions slow `gemm` about 3.8x. In release builds
//! `gemm` gives the LLaMA layers 15-20 % more FLOPs per CPU-second than faer (benches/llama.rs).

use candle_core::{DType, Device, Result, Storage, Tensor};

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
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let m = x.elem_count() / k.max(1);
    let x2 = x.reshape((m, k))?.contiguous()?;
    let y = x2.matmul(w_t)?;
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = w_t.dim(1)?;
    }
    y.reshape(out_dims)
}
