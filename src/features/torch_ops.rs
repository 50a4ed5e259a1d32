//! float32 reductions in the order PyTorch's CPU kernels perform them.
//!
//! Why this exists: the reference z-scores each audio chunk with `wav.mean()` and `wav.std()` in
//! float32, then takes a log filterbank whose near-silent frames (LSB-level noise in quiet parts
//! of a recording) and top mel bins (the resampler's stopband leakage) depend on the exact float32
//! bits of the waveform. An exactly rounded mean differs from torch's by a few ulps, and that alone
//! moves the reference's filterbank by ~1e-3 and its 2 Hz features by ~5e-5 (measured on the jfk
//! golden by re-running torch with another thread count). So we reproduce torch's summation order.
//!
//! torch 2.x `sum` of a contiguous float32 vector (`cascade_sum`, ATen SumKernel.cpp, AVX2
//! kernels, which ATen also runs on AVX-512 machines): vectors of 8 lanes; 4 interleaved vector
//! accumulators (`ilp_factor`), each a 4-level cascade with `2^max(4, ceil(log2 n)/4)` adds per
//! level; leftover vectors into accumulator 0; accumulators 1..3 added to 0; then the scalar tail
//! in order, then the 8 lanes in order. Inputs of at least `GRAIN_SIZE` elements are split into
//! `ceil(n / threads)`-sized pieces, one per thread, summed as above and added in thread order.
//! The thread count is the reference machine's (`torch.get_num_threads()`); the goldens were made
//! with 2 ([`REFERENCE_THREADS`]). Verified against torch 2.15 for every n in 16..700 and several
//! sizes up to 10^6.

/// ATen `at::internal::GRAIN_SIZE`.
const GRAIN_SIZE: usize = 32768;
const LANES: usize = 8;
const ILP: usize = 4;
const LEVELS: usize = 4;

/// The torch thread count of the environment that produced the goldens (2 cores).
pub const REFERENCE_THREADS: usize = 2;

fn ceil_log2(x: usize) -> usize {
    if x <= 1 {
        0
    } else {
        (usize::BITS - (x - 1).leading_zeros()) as usize
    }
}

/// `multi_row_sum` over `size` rows of `nrows` accumulators, each `width` wide; `load(i, k)`
/// returns row i, accumulator k.
// Index loops on purpose: `k` walks the same accumulator through every level, as ATen's loops do.
#[allow(clippy::needless_range_loop)]
fn multi_row_sum<const W: usize>(
    size: usize,
    nrows: usize,
    load: impl Fn(usize, usize) -> [f32; W],
) -> Vec<[f32; W]> {
    let level_power = 4usize.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = vec![vec![[0f32; W]; nrows]; LEVELS];
    let add = |a: &mut [f32; W], b: &[f32; W]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for k in 0..nrows {
                let v = load(i, k);
                add(&mut acc[0][k], &v);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..nrows {
                let prev = acc[j - 1][k];
                add(&mut acc[j][k], &prev);
                acc[j - 1][k] = [0f32; W];
            }
            let mask = level_mask << (j * level_power);
            if i & mask != 0 {
                break;
            }
        }
    }
    while i < size {
        for k in 0..nrows {
            let v = load(i, k);
            add(&mut acc[0][k], &v);
        }
        i += 1;
    }
    for j in 1..LEVELS {
        for k in 0..nrows {
            let v = acc[j][k];
            add(&mut acc[0][k], &v);
        }
    }
    acc.swap_remove(0)
}

/// `row_sum` with `ilp_factor = 4` over `n` items of width W.
fn row_sum<const W: usize>(n: usize, load: impl Fn(usize) -> [f32; W]) -> [f32; W] {
    let size_ilp = n / ILP;
    let mut partial = multi_row_sum::<W>(size_ilp, ILP, |i, k| load(i * ILP + k));
    for i in size_ilp * ILP..n {
        let v = load(i);
        partial[0].iter_mut().zip(&v).for_each(|(a, b)| *a += b);
    }
    let mut out = partial[0];
    for p in &partial[1..] {
        out.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    out
}

/// One thread's share: the vectorised inner sum (or the scalar one below 8 elements).
fn inner_sum(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return 0.0 + row_sum::<1>(x.len(), |i| [x[i]])[0];
    }
    let nv = x.len() / LANES;
    let lanes = row_sum::<LANES>(nv, |i| {
        let mut v = [0f32; LANES];
        v.copy_from_slice(&x[i * LANES..(i + 1) * LANES]);
        v
    });
    let mut s = 0f32;
    for v in &x[nv * LANES..] {
        s += v;
    }
    for v in lanes {
        s += v;
    }
    0.0 + s
}

/// `torch.sum` of a contiguous float32 vector run with `threads` threads.
pub fn sum_f32(x: &[f32], threads: usize) -> f32 {
    let n = x.len();
    if n < GRAIN_SIZE || threads <= 1 {
        return inner_sum(x);
    }
    let tasks = threads.min(n.div_ceil(GRAIN_SIZE));
    let chunk = n.div_ceil(tasks);
    // The final reduction over the per-thread buffer (one slot per thread, unused ones 0) is a
    // scalar row sum: slots added in order.
    let mut s = 0f32;
    for t in 0..threads {
        let begin = t * chunk;
        s += if begin < n {
            inner_sum(&x[begin..n.min(begin + chunk)])
        } else {
            0.0
        };
    }
    0.0 + s
}

/// `torch.mean` of a float32 vector: the sum above divided by n in float32.
pub fn mean_f32(x: &[f32], threads: usize) -> f32 {
    sum_f32(x, threads) / x.len() as f32
}

/// `torch.std` (unbiased) of a float32 vector: ATen's `std_var_all_cpu` accumulates
/// `(x − mean)²` in float64 around the float32 mean and rounds the square root to float32.
pub fn std_f32(x: &[f32], mean: f32) -> f32 {
    let m = mean as f64;
    let s: f64 = x.iter().map(|v| (*v as f64 - m).powi(2)).sum();
    (s / (x.len() as f64 - 1.0).max(0.0)).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit patterns printed by torch 2.15 with 2 threads for
    /// `x = ((torch.arange(n) * 7919) % 1009).float() * 0.00123 - 0.5`:
    /// `x.sum()`, `x.mean()`, `x.std()`. A plain running sum differs for n >= 5000.
    #[test]
    fn matches_torch_bit_for_bit() {
        let cases: [(usize, u32, u32, u32); 4] = [
            (581, 0x428abfd2, 0x3df48aeb, 0x3eb7cb97),
            (5000, 0x441610ea, 0x3df5de46, 0x3eb77cb1),
            (40000, 0x4595ebfa, 0x3df5a1c1, 0x3eb77057),
            (176000, 0x46a4e4e0, 0x3df59a29, 0x3eb76eb9),
        ];
        for (n, sum, mean, std) in cases {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1009) as f32 * 0.00123 - 0.5)
                .collect();
            assert_eq!(sum_f32(&x, 2).to_bits(), sum, "sum n={n}");
            let m = mean_f32(&x, 2);
            assert_eq!(m.to_bits(), mean, "mean n={n}");
            assert_eq!(std_f32(&x, m).to_bits(), std, "std n={n}");
        }
    }

    #[test]
    fn ceil_log2_matches_aten() {
        assert_eq!(
            (ceil_log2(1), ceil_log2(9), ceil_log2(16), ceil_log2(17)),
            (0, 4, 4, 5)
        );
    }
}
