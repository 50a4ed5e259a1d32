//! Intel MKL, when the machine has it, for the feature extractors' large f32 matrix products.
//!
//! About 80–90 % of a LLaMA or V-JEPA2 layer on the CPU is spent in its linear layers. candle's
//! pure-Rust `gemm` runs them at about 90 % of this machine's AVX-512 peak on one core, but
//! PyTorch's MKL is 10–15 % faster again on the same shapes (README, "Performance"), and no
//! other library or kernel of our own closed that gap. So MKL is used where it is installed
//! (Debian/Ubuntu `libmkl-rt`, or the `mkl` wheel from PyPI), and `gemm` everywhere else.
//!
//! MKL is opened at run time (`dlopen`), never linked: the same binary runs on machines without
//! it, and no build needs it. `TRIBE_BLAS` chooses:
//! - `auto` (default): MKL if it can be opened, else the built-in `gemm`;
//! - `mkl`: MKL or an error (for a cluster where it must be used);
//! - `builtin`: always `gemm` (bit-for-bit the same results on every machine).
//!
//! MKL runs in its sequential mode, and we split each product into tiles of about 512 x 512
//! outputs over rayon's pool ([`tile_plan`]): that keeps `--nprocs` the one thread limit, and
//! avoids an OpenMP pool spinning beside rayon's on the same cores. Both libraries agree to
//! about 1e-6 relative, well inside the parity bounds (1e-4 of the range); the golden tests run
//! on each backend.

use std::ffi::{CStr, c_char, c_float, c_int};
use std::sync::OnceLock;

use thiserror::Error;

/// Names tried in order: the unversioned link that Debian's `libmkl-rt` installs, then the
/// sonames of oneAPI releases (PyPI's `mkl` 2024 wheels install `libmkl_rt.so.2`, its 2026.2
/// wheel `libmkl_rt.so.3`).
const LIBRARY_NAMES: &[&str] = &[
    "libmkl_rt.so",
    "libmkl_rt.so.3",
    "libmkl_rt.so.2",
    "libmkl_rt.so.1",
];

/// The environment variable that chooses the backend.
pub const ENV_VAR: &str = "TRIBE_BLAS";

/// Products smaller than this many multiply-adds run on one thread: splitting costs more than
/// it saves.
const SPLIT_MIN_MACS: usize = 1 << 21;

/// Column stripes are multiples of this many columns, so that each stripe starts on a cache
/// line of B and C and MKL's kernels see whole register tiles.
const STRIPE_ALIGN: usize = 64;

/// The side of the output tiles a large product is cut into (rows and columns, before the
/// tiles are evened out). Measured on a 2-core AMD EPYC (AVX2), MKL 2020.4 sequential, against
/// one column stripe per thread (the earlier split): 512 x 512 tiles ran the LLaMA-3.2-3B and
/// V-JEPA2 ViT-g layer products 5-20 % faster, at 512, 1,400 and 8,192 rows, and as fast as
/// PyTorch's own OpenMP-threaded MKL 2024 on the same shapes. Wide stripes make MKL stream a
/// (K x N/2) panel of B per thread while re-reading all of A; with tiles, each task's A rows
/// and B columns stay in the shared L3 cache and both threads work on neighbouring tiles.
/// 256 and 768 were measured too, and were slower on some shapes.
const TILE: usize = 512;

#[derive(Debug, Error)]
pub enum BlasError {
    #[error(
        "{var}='{value}' is not a matrix backend\n  fix: use {var}=auto (MKL when installed), {var}=mkl or {var}=builtin",
        var = ENV_VAR
    )]
    UnknownBackend { value: String },
    #[error(
        "{var}=mkl, but Intel MKL could not be opened ({reason})\n  fix: install it (Debian/Ubuntu: apt-get install libmkl-rt; or pip install mkl and add its lib folder to LD_LIBRARY_PATH), or use {var}=auto",
        var = ENV_VAR
    )]
    MklMissing { reason: String },
}

/// Which library runs the large f32 products on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// candle's `gemm` crate.
    Builtin,
    /// Intel MKL, opened at run time.
    Mkl,
}

type SgemmFn = unsafe extern "C" fn(
    layout: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: c_float,
    a: *const c_float,
    lda: c_int,
    b: *const c_float,
    ldb: c_int,
    beta: c_float,
    c: *mut c_float,
    ldc: c_int,
);

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;
/// `MKL_THREADING_SEQUENTIAL` of `mkl_service.h`.
const MKL_THREADING_SEQUENTIAL: c_int = 1;

struct Mkl {
    sgemm: SgemmFn,
    /// e.g. "Intel(R) Math Kernel Library Version 2020.0.4 ...", for logs and provenance.
    version: String,
    /// Kept open for the life of the process: `sgemm` points into it.
    _library: libloading::Library,
}

/// The backend, settled once per process from `TRIBE_BLAS`.
static SELECTED: OnceLock<Result<Option<Mkl>, BlasError>> = OnceLock::new();

/// Settle the backend now and say which it is; the CLI calls this at start-up, so that a bad
/// `TRIBE_BLAS` is an error before any work, not a silent fallback in the middle of a run.
pub fn init() -> Result<Backend, &'static BlasError> {
    match selected() {
        Ok(Some(_)) => Ok(Backend::Mkl),
        Ok(None) => Ok(Backend::Builtin),
        Err(e) => Err(e),
    }
}

/// A one-line description of the backend in use, for logs and the derivatives' provenance.
pub fn describe() -> String {
    match selected() {
        Ok(Some(mkl)) => format!("Intel MKL ({}), sequential, split over rayon", mkl.version),
        Ok(None) => format!("built-in gemm crate ({ENV_VAR}=auto found no MKL, or builtin)"),
        Err(e) => format!("unusable: {e}"),
    }
}

fn selected() -> &'static Result<Option<Mkl>, BlasError> {
    SELECTED.get_or_init(|| {
        let choice = std::env::var(ENV_VAR).unwrap_or_default();
        match choice.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(open_mkl().ok()),
            "mkl" => open_mkl()
                .map(Some)
                .map_err(|reason| BlasError::MklMissing { reason }),
            "builtin" | "gemm" => Ok(None),
            _ => Err(BlasError::UnknownBackend { value: choice }),
        }
    })
}

fn open_mkl() -> Result<Mkl, String> {
    let mut reasons = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading MKL runs its initializers, which only set up its own state.
        match unsafe { libloading::Library::new(name) } {
            Ok(library) => return bind(library).map_err(|e| format!("{name}: {e}")),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(reasons.join("; "))
}

fn bind(library: libloading::Library) -> Result<Mkl, libloading::Error> {
    // SAFETY: the symbols are MKL's documented C entry points with these signatures.
    unsafe {
        let set_layer: libloading::Symbol<unsafe extern "C" fn(c_int) -> c_int> =
            library.get(b"MKL_Set_Threading_Layer\0")?;
        // Must come before any other MKL call to take effect.
        set_layer(MKL_THREADING_SEQUENTIAL);
        let sgemm: SgemmFn = *library.get::<SgemmFn>(b"cblas_sgemm\0")?;
        let version = match library
            .get::<unsafe extern "C" fn(*mut c_char, c_int)>(b"MKL_Get_Version_String\0")
        {
            Ok(get) => {
                let mut buf = [0 as c_char; 256];
                get(buf.as_mut_ptr(), buf.len() as c_int - 1);
                CStr::from_ptr(buf.as_ptr())
                    .to_string_lossy()
                    .trim()
                    .to_string()
            }
            Err(_) => "version unknown".to_string(),
        };
        Ok(Mkl {
            sgemm,
            version,
            _library: library,
        })
    }
}

/// How the right-hand matrix `w` of [`sgemm`] is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// (K, N) row-major: the product is `x @ w`.
    InOut,
    /// (N, K) row-major, as PyTorch's `nn.Linear` stores it: the product is `x @ w.T`.
    OutIn,
}

/// `out (M, N) = x (M, K) @ w (+ bias)` on MKL, or `None` when MKL is not the backend (the
/// caller then uses candle). `bias`, when given, is added as MKL's `C` with `beta = 1`,
/// which is also how PyTorch's `addmm` adds a linear layer's bias.
pub fn sgemm(
    x: &[f32],
    w: &[f32],
    layout: WeightLayout,
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Option<Vec<f32>> {
    let Ok(Some(mkl)) = selected() else {
        return None;
    };
    assert_eq!(x.len(), m * k, "sgemm: x is not (M, K)");
    assert_eq!(w.len(), k * n, "sgemm: w is not K x N");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "sgemm: bias is not (N)");
    }
    // Left uninitialized here: with beta = 0 MKL writes every element of C without reading
    // it, and with a bias each tile copies the bias into its own part of C just before its
    // product, on its own thread and while that part is in cache. (Filling all of C with the
    // bias first was one more single-threaded pass over up to 140 MB per product, with the
    // page faults of fresh memory.)
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    if m == 0 || n == 0 || k == 0 {
        match bias {
            Some(b) => (0..m).for_each(|_| out.extend_from_slice(b)),
            None => out.resize(m * n, 0.0),
        }
        return Some(out);
    }
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let threads = rayon::current_num_threads().max(1);
    let plan = if m * n * k < SPLIT_MIN_MACS {
        TilePlan { rows: m, cols: n }
    } else {
        tile_plan(m, n, threads)
    };
    let out_ptr = SendPtr(out.as_mut_ptr());
    let run = |(i0, j0): (usize, usize)| {
        let rows = plan.rows.min(m - i0);
        let cols = plan.cols.min(n - j0);
        let (w_start, trans, ldb) = match layout {
            WeightLayout::InOut => (j0, CBLAS_NO_TRANS, n),
            WeightLayout::OutIn => (j0 * k, CBLAS_TRANS, k),
        };
        // SAFETY: every tile writes only its own rows [i0, i0 + rows) and columns
        // [j0, j0 + cols) of `out`, through ldc = n (the bias copy included); reads stay
        // inside `x` (rows i0.. of k values), `w` and `bias` (checked sizes).
        unsafe {
            if let Some(b) = bias {
                for r in i0..i0 + rows {
                    std::ptr::copy_nonoverlapping(
                        b.as_ptr().add(j0),
                        out_ptr.get().add(r * n + j0),
                        cols,
                    );
                }
            }
            (mkl.sgemm)(
                CBLAS_ROW_MAJOR,
                CBLAS_NO_TRANS,
                trans,
                rows as c_int,
                cols as c_int,
                k as c_int,
                1.0,
                x.as_ptr().add(i0 * k),
                k as c_int,
                w.as_ptr().add(w_start),
                ldb as c_int,
                beta,
                out_ptr.get().add(i0 * n + j0),
                n as c_int,
            )
        };
    };
    // Row-major order: the threads take neighbouring tiles of the same rows at the same time,
    // so they share those rows of A in cache.
    let tiles: Vec<(usize, usize)> = (0..m)
        .step_by(plan.rows)
        .flat_map(|i0| (0..n).step_by(plan.cols).map(move |j0| (i0, j0)))
        .collect();
    if tiles.len() == 1 {
        run(tiles[0]);
    } else {
        use rayon::prelude::*;
        tiles.into_par_iter().for_each(run);
    }
    // SAFETY: the tiles cover rows 0..m and columns 0..n, so all m * n elements are written
    // (with beta = 1, each tile's from the bias before its product).
    unsafe { out.set_len(m * n) };
    Some(out)
}

/// How [`sgemm`] cuts an (M, N) output: tiles of `rows` x `cols` (the last row and column of
/// tiles may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub rows: usize,
    pub cols: usize,
}

/// Tiles of about [`TILE`] x [`TILE`], evened out so that no row or column of tiles is a thin
/// remainder (a short GEMM runs at a fraction of full speed), with columns in multiples of
/// [`STRIPE_ALIGN`]. When that gives fewer tiles than `threads`, the columns are cut finer (down
/// to one alignment unit) so that every thread has work.
pub fn tile_plan(m: usize, n: usize, threads: usize) -> TilePlan {
    let m = m.max(1);
    let n = n.max(1);
    let row_blocks = m.div_ceil(TILE);
    let rows = m.div_ceil(row_blocks);
    let max_stripes = n.div_ceil(STRIPE_ALIGN);
    let stripes = n
        .div_ceil(TILE)
        .max(threads.max(1).div_ceil(row_blocks))
        .min(max_stripes);
    let cols = n.div_ceil(stripes).div_ceil(STRIPE_ALIGN) * STRIPE_ALIGN;
    TilePlan { rows, cols }
}

/// A raw pointer that may cross to rayon's threads; see the SAFETY note in [`sgemm`].
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tiles written through it are disjoint.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Whether this process runs its products on MKL: callers that tune for the library (block
/// sizes) or have their own fallback (the attention kernels) ask first.
pub fn is_mkl() -> bool {
    matches!(selected(), Ok(Some(_)))
}

/// How cblas reads a faer view: `(transposed, leading dimension)`, or None for a layout it
/// cannot take (negative or non-unit inner strides).
fn cblas_view(
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
) -> Option<(c_int, c_int)> {
    if col_stride == 1 && row_stride >= cols.max(1) as isize {
        Some((CBLAS_NO_TRANS, row_stride as c_int))
    } else if row_stride == 1 && col_stride >= rows.max(1) as isize {
        Some((CBLAS_TRANS, col_stride as c_int))
    } else {
        None
    }
}

/// `dst = lhs @ rhs` (`Accum::Replace`) or `dst += lhs @ rhs` (`Accum::Add`) on the calling
/// thread, on MKL. For kernels that already run one task per rayon thread (attention heads),
/// as a drop-in for faer's sequential product. Returns false, touching nothing, when MKL is
/// not the backend or a view has a layout cblas cannot read; the caller then uses faer.
pub fn matmul_seq(
    dst: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    lhs: faer::MatRef<'_, f32>,
    rhs: faer::MatRef<'_, f32>,
) -> bool {
    let Ok(Some(mkl)) = selected() else {
        return false;
    };
    let (m, n, k) = (dst.nrows(), dst.ncols(), lhs.ncols());
    assert!(
        lhs.nrows() == m && rhs.nrows() == k && rhs.ncols() == n,
        "matmul_seq: ({m} x {n}) = ({} x {k}) @ ({} x {})",
        lhs.nrows(),
        rhs.nrows(),
        rhs.ncols()
    );
    let (Some((ta, lda)), Some((tb, ldb)), Some((CBLAS_NO_TRANS, ldc))) = (
        cblas_view(m, k, lhs.row_stride(), lhs.col_stride()),
        cblas_view(k, n, rhs.row_stride(), rhs.col_stride()),
        cblas_view(m, n, dst.row_stride(), dst.col_stride()),
    ) else {
        return false;
    };
    if m == 0 || n == 0 {
        return true;
    }
    let beta = match accum {
        faer::Accum::Replace => 0.0,
        faer::Accum::Add => 1.0,
    };
    // SAFETY: the views' shapes and strides were checked to be what cblas reads with these
    // transposes and leading dimensions; `dst` is borrowed mutably, so nothing else writes
    // its elements meanwhile. With k = 0, MKL scales C by beta (zero for Replace).
    unsafe {
        let c = dst.as_ptr_mut();
        (mkl.sgemm)(
            CBLAS_ROW_MAJOR,
            ta,
            tb,
            m as c_int,
            n as c_int,
            k as c_int,
            1.0,
            lhs.as_ptr(),
            lda.max(1),
            rhs.as_ptr(),
            ldb.max(1),
            beta,
            c,
            ldc.max(1),
        )
    };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (row, column) of the output lies in exactly one tile.
    fn covers(m: usize, n: usize, p: TilePlan) -> bool {
        let row_tiles = m.div_ceil(p.rows);
        let col_tiles = n.div_ceil(p.cols);
        p.rows * row_tiles >= m
            && p.rows * (row_tiles - 1) < m
            && p.cols * col_tiles >= n
            && p.cols * (col_tiles - 1) < n
    }

    #[test]
    fn tiles_are_about_512_square_and_even() {
        // LLaMA-3.2-3B gate/up at 512 tokens: one row of 32 tiles of 512 columns.
        assert_eq!(
            tile_plan(512, 16384, 2),
            TilePlan {
                rows: 512,
                cols: 512
            }
        );
        // 1,400 tokens: three even row blocks (467, 467, 466), not 512 + 512 + 376.
        assert_eq!(
            tile_plan(1400, 3072, 2),
            TilePlan {
                rows: 467,
                cols: 512
            }
        );
        // V-JEPA2 ViT-g attention output (8,192 tokens, 1,408 wide): 16 row blocks, and 3
        // stripes of 470 columns, rounded up to whole 64s: 512, 512, 384.
        let p = tile_plan(8192, 1408, 2);
        assert_eq!(p.rows, 512);
        assert_eq!(p.cols % STRIPE_ALIGN, 0);
        assert_eq!(1408usize.div_ceil(p.cols), 3);
        for (m, n, t) in [
            (1, 1, 1),
            (7, 1000, 2),
            (1100, 1100, 2),
            (8192, 4224, 16),
            (3, 65, 64),
        ] {
            let p = tile_plan(m, n, t);
            assert!(covers(m, n, p), "{m} x {n} on {t} threads: {p:?}");
            assert_eq!(p.cols % STRIPE_ALIGN, 0, "{p:?}");
        }
    }

    #[test]
    fn a_few_wide_rows_are_cut_finer_so_every_thread_has_work() {
        // 16 threads, one row block, 3,072 columns: 6 tiles of 512 would idle 10 threads.
        let p = tile_plan(300, 3072, 16);
        assert_eq!(
            p,
            TilePlan {
                rows: 300,
                cols: 192
            }
        );
        assert_eq!(3072usize.div_ceil(p.cols), 16);
        // Never narrower than one alignment unit.
        assert_eq!(tile_plan(100, 128, 16).cols, STRIPE_ALIGN);
    }
}
