//! The resize's AVX2 + FMA kernels: the same values as [`Resizer`]'s plain passes, bit for
//! bit, computed so that the floating-point units, not dependency chains, set the pace.
//!
//! Why each piece is shaped the way it is (1080p -> 292 px, crop 256, AMD EPYC, one core):
//! - **Eight output columns at once in the width pass.** Each output is a chain of about
//!   eight fused multiply-adds, one per tap; done one column at a time, every FMA waited for
//!   the previous one (4 cycles each), and the width pass ran at a quarter of the machine's
//!   FMA rate. Eight independent chains, interleaved tap by tap, fill the pipeline.
//! - **Every column runs the same number of taps** (the most any column has). The extra taps
//!   have weight zero: `fma(v, 0, a) == a` exactly for finite `v`, so each value's
//!   accumulation order (first tap's product, then one FMA per further tap) is unchanged, and
//!   the inner loop needs no per-column trip count.
//! - **The height pass keeps 32 output pixels in registers** through all its taps, then rounds
//!   half to even, clamps and packs them to bytes in registers. The plain pass, vectorized by
//!   the compiler, kept its sums in memory and rounded one lane at a time.
//! - **Scratch buffers live per thread** and are reused: the 2.9 MB intermediate plane was
//!   allocated and zeroed per frame, page faults included.
//!
//! Callers check for AVX2 and FMA at run time before calling in (see
//! [`Resizer::resize_crop_part`]).

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::{ROWS, Resizer, Source, fill_block_rows};

/// Per-thread scratch: the width pass's block of input rows and the intermediate plane.
#[derive(Default)]
struct Scratch {
    block: Vec<f32>,
    tmp: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Resize and crop `src` into `out` (CHW uint8).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
pub(super) unsafe fn resize_crop(rs: &Resizer, src: &Source, out: &mut [u8]) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch { block, tmp } = &mut *s;
        let (n_rows, n_cols) = (rs.row_span.len(), rs.col_span.len());
        let taps = rs.cols.len.iter().copied().max().unwrap_or(0);
        // The block's channel planes are contiguous; `taps` columns of padding after the last
        // one keep the zero-weight taps of the last columns in bounds. What they read there
        // (or in the next channel's plane) is finite and multiplied by zero.
        let block_len = (3 * n_cols + taps) * ROWS;
        if block.len() < block_len {
            block.resize(block_len, 0.0);
        }
        let tmp_len = 3 * n_rows * rs.geometry.crop_width;
        if tmp.len() < tmp_len {
            tmp.resize(tmp_len, 0.0);
        }
        // SAFETY: the caller checked AVX2 and FMA.
        unsafe {
            width_pass(rs, src, taps, &mut block[..block_len], &mut tmp[..tmp_len]);
            height_pass(rs, &tmp[..tmp_len], out);
        }
    })
}

/// Width pass: `tmp[c][r][x]` for the rows of the row span and the crop columns, as
/// [`Resizer::width_pass`] computes it. Rows go in blocks of ROWS (the lanes); eight output
/// columns at a time run their `taps` FMAs interleaved, then are transposed into eight rows.
#[target_feature(enable = "avx2,fma")]
unsafe fn width_pass(rs: &Resizer, src: &Source, taps: usize, block: &mut [f32], tmp: &mut [f32]) {
    let cw = rs.geometry.crop_width;
    let n_rows = rs.row_span.len();
    let n_cols = rs.col_span.len();
    let col_lo = rs.col_span.start;
    let stride_w = rs.cols.taps;
    let (starts, weights) = (&rs.cols.start, &rs.cols.weights);
    assert!(taps <= stride_w && starts.len() == cw && weights.len() >= cw * stride_w);
    assert!(block.len() >= (3 * n_cols + taps) * ROWS);
    assert!(starts.iter().all(|&s| s >= col_lo && s - col_lo <= n_cols));
    for r0 in (0..n_rows).step_by(ROWS) {
        let rows = ROWS.min(n_rows - r0);
        let first = rs.block_start(src, r0);
        if rows == ROWS {
            // SAFETY: AVX2 is enabled for this function.
            unsafe { fill_block_avx2(src.data, first, src.stride, n_cols, block) };
        } else {
            fill_block_rows(src.data, first, src.stride, n_cols, rows, block);
        }
        assert!((2 * n_rows + r0 + rows) * cw <= tmp.len());
        for c in 0..3 {
            let plane = block[c * n_cols * ROWS..].as_ptr();
            let mut x = 0;
            while x + 8 <= cw {
                // SAFETY: every column's start is within the block's columns and the block has
                // `taps` columns of padding after its last plane, so each lane load of
                // `plane + (start + j) * ROWS` is in bounds; weights have `stride_w >= taps`
                // entries per column.
                let sums: [__m256; 8] = unsafe {
                    let col: [*const f32; 8] =
                        std::array::from_fn(|q| plane.add((starts[x + q] - col_lo) * ROWS));
                    let w: [*const f32; 8] =
                        std::array::from_fn(|q| weights.as_ptr().add((x + q) * stride_w));
                    let mut acc: [__m256; 8] = std::array::from_fn(|q| {
                        _mm256_mul_ps(_mm256_loadu_ps(col[q]), _mm256_broadcast_ss(&*w[q]))
                    });
                    for j in 1..taps {
                        for q in 0..8 {
                            acc[q] = _mm256_fmadd_ps(
                                _mm256_loadu_ps(col[q].add(j * ROWS)),
                                _mm256_broadcast_ss(&*w[q].add(j)),
                                acc[q],
                            );
                        }
                    }
                    transpose_8x8_f32(acc)
                };
                // SAFETY: rows r0..r0 + rows of channel c lie inside `tmp` (checked for the
                // block below), and columns x..x + 8 inside each row (x + 8 <= cw).
                unsafe {
                    let base = tmp.as_mut_ptr().add((c * n_rows + r0) * cw + x);
                    for (r, row) in sums.iter().enumerate().take(rows) {
                        _mm256_storeu_ps(base.add(r * cw), *row);
                    }
                }
                x += 8;
            }
            let plane = &block[c * n_cols * ROWS..(c + 1) * n_cols * ROWS];
            rs.store_columns(plane, x..cw, c, r0, rows, tmp);
        }
    }
}

/// Height pass, as [`Resizer::height_pass`] computes it: per output row, 32 columns at a time
/// in four registers through all the row's taps, then rounded half to even, clamped to
/// 0..=255 and packed to bytes.
#[target_feature(enable = "avx2,fma")]
unsafe fn height_pass(rs: &Resizer, tmp: &[f32], out: &mut [u8]) {
    let g = rs.geometry;
    let (cw, ch) = (g.crop_width, g.crop_height);
    let n_rows = rs.row_span.len();
    assert!(tmp.len() >= 3 * n_rows * cw && out.len() >= 3 * ch * cw);
    for c in 0..3 {
        let plane = &tmp[c * n_rows * cw..(c + 1) * n_rows * cw];
        for y in 0..ch {
            let (s, w) = rs.rows.taps_of(y);
            let s = s - rs.row_span.start;
            assert!(s + w.len() <= n_rows);
            let dst = &mut out[(c * ch + y) * cw..(c * ch + y + 1) * cw];
            // Tap j's row of the plane starts at `rows_at + j * cw`.
            let rows_at = &plane[s * cw..(s + w.len()) * cw];
            let mut x = 0;
            while x + 32 <= cw {
                // SAFETY: `rows_at` holds w.len() rows of cw >= x + 32 floats; `dst` holds cw
                // bytes.
                unsafe {
                    let mut acc: [__m256; 4] = std::array::from_fn(|k| {
                        _mm256_mul_ps(
                            _mm256_loadu_ps(rows_at.as_ptr().add(x + 8 * k)),
                            _mm256_set1_ps(w[0]),
                        )
                    });
                    for (j, &wj) in w.iter().enumerate().skip(1) {
                        let (row, wj) = (rows_at.as_ptr().add(j * cw + x), _mm256_set1_ps(wj));
                        for (k, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * k)), wj, *a);
                        }
                    }
                    let [a0, a1, a2, a3] = [
                        round_clamp_i32(acc[0]),
                        round_clamp_i32(acc[1]),
                        round_clamp_i32(acc[2]),
                        round_clamp_i32(acc[3]),
                    ];
                    // packs work within 128-bit lanes: the permute puts the 4-byte groups
                    // back in column order.
                    let bytes =
                        _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
                    let bytes = _mm256_permutevar8x32_epi32(
                        bytes,
                        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                    );
                    _mm256_storeu_si256(dst.as_mut_ptr().add(x).cast(), bytes);
                }
                x += 32;
            }
        }
    }
    // The last columns (crops not a multiple of 32), as the plain pass computes them.
    if cw % 32 != 0 {
        rs.height_pass_columns(tmp, out, cw - cw % 32..cw);
    }
}

/// Round half to even (the MXCSR default, as `round_ties_even`), clamp to 0..=255, convert.
#[inline]
#[target_feature(enable = "avx")]
fn round_clamp_i32(v: __m256) -> __m256i {
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let rounded = _mm256_round_ps::<NEAREST>(v);
    _mm256_cvtps_epi32(_mm256_min_ps(
        _mm256_max_ps(rounded, _mm256_setzero_ps()),
        _mm256_set1_ps(255.0),
    ))
}

/// Transpose eight 8-lane vectors: lane `i` of output `r` is lane `r` of input `i`.
#[target_feature(enable = "avx")]
pub(super) unsafe fn transpose_8x8_f32(v: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// [`super::fill_block`] with AVX2: each row's 8 pixels (24 bytes) are split into their R, G
/// and B bytes with byte shuffles and widened to floats, then each channel's 8 rows x 8
/// pixels are transposed in registers, so that every store is one pixel's 8 rows. The 64-bit
/// transposes of `fill_block`, spilled to the stack, were three quarters of the resize's time.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fill_block_avx2(
    rgb: &[u8],
    first: usize,
    stride: usize,
    n_cols: usize,
    block: &mut [f32],
) {
    let n_bytes = n_cols * 3;
    let rows: [&[u8]; ROWS] =
        std::array::from_fn(|r| &rgb[first + r * stride..first + r * stride + n_bytes]);
    let block = &mut block[..3 * n_cols * ROWS];
    // Byte k of the low 16 (bytes 0..16 of the group) and high 16 (bytes 8..24) loads that
    // hold channel c of pixels 0..8; -1 gives zero (the other load supplies the byte).
    const Z: i8 = -1;
    let lo_idx = [
        _mm_setr_epi8(0, 3, 6, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(1, 4, 7, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(2, 5, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z),
    ];
    let hi_idx = [
        _mm_setr_epi8(Z, Z, Z, Z, Z, Z, 10, 13, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(Z, Z, Z, Z, Z, 8, 11, 14, Z, Z, Z, Z, Z, Z, Z, Z),
        _mm_setr_epi8(Z, Z, Z, Z, Z, 9, 12, 15, Z, Z, Z, Z, Z, Z, Z, Z),
    ];
    let mut b = 0;
    while b + 24 <= n_bytes {
        let i = b / 3;
        // One channel at a time: its 8 rows are 8 registers (all three channels at once
        // would need 24 of the 16, and spill).
        for c in 0..3 {
            let mut rows_of_c = [_mm256_setzero_ps(); ROWS];
            for (r, row) in rows.iter().enumerate() {
                let group = &row[b..b + 24];
                // SAFETY: `group` holds 24 bytes: [0, 16) and [8, 24) are in bounds.
                let (lo, hi) = unsafe {
                    (
                        _mm_loadu_si128(group.as_ptr().cast()),
                        _mm_loadu_si128(group.as_ptr().add(8).cast()),
                    )
                };
                let bytes = _mm_or_si128(
                    _mm_shuffle_epi8(lo, lo_idx[c]),
                    _mm_shuffle_epi8(hi, hi_idx[c]),
                );
                rows_of_c[r] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            }
            // SAFETY: AVX is enabled (implied by AVX2).
            let per_pixel = unsafe { transpose_8x8_f32(rows_of_c) };
            let at = (c * n_cols + i) * ROWS;
            let dst = &mut block[at..at + ROWS * ROWS];
            for (q, v) in per_pixel.iter().enumerate() {
                // SAFETY: `dst` holds ROWS pixels of ROWS floats.
                unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(q * ROWS), *v) };
            }
        }
        b += 24;
    }
    for pos in b..n_bytes {
        let (i, c) = (pos / 3, pos % 3);
        for (r, row) in rows.iter().enumerate() {
            block[(c * n_cols + i) * ROWS + r] = row[pos] as f32;
        }
    }
}
