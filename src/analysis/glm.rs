//! First-level GLM on predicted BOLD, numerically equivalent to nilearn's `run_glm` +
//! `compute_contrast` (OLS, or AR(1) prewhitening with coefficients binned to 1/100).
//!
//! Layout and speed: Y is `n_volumes x n_vertices` row-major float32 (as the model writes it).
//! We never copy Y to float64: vertices are processed in blocks of [`BLOCK`] columns, in
//! parallel with rayon, and each block is streamed once per pass, accumulating the small
//! products the normal equations need (`Xᵀy`, `Σy²`). The AR(1) refit avoids nilearn's
//! per-bin gather: with the whitened design `Xw = X - rho * S X` (S = shift by one volume),
//! `Xwᵀ wy = Xᵀ wy - rho * X[..n-1]ᵀ wy[1..]`, so every vertex of a block, whatever its bin, is
//! served by the same pass and a `p x p` covariance per bin. This equals `pinv(Xw) @ wy` for a
//! full-rank design, which we require (a rank-deficient design is an error, not a silent
//! pseudo-inverse).

use super::contrast::ContrastSpec;
use super::design::DesignMatrix;
use super::stats::z_from_t;
use crate::{Error, Result};
use faer::{Mat, MatRef};
use rayon::prelude::*;

/// Vertices per block: big enough for efficient products, small enough to stay in cache-ish
/// memory (3,600 volumes x 256 x 8 bytes = 7 MB per buffer).
pub const BLOCK: usize = 256;

/// Temporal noise model, as nilearn's `noise_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoiseModel {
    Ols,
    /// AR(1) prewhitening (nilearn's default for FirstLevelModel).
    #[default]
    Ar1,
}

impl NoiseModel {
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "ols" => Ok(NoiseModel::Ols),
            "ar1" => Ok(NoiseModel::Ar1),
            other => Err(Error::Usage(format!(
                "unknown noise model '{other}': use 'ols' or 'ar1'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NoiseModel::Ols => "ols",
            NoiseModel::Ar1 => "ar1",
        }
    }
}

/// GLM options beyond the design.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlmOptions {
    pub noise_model: NoiseModel,
    /// AR(1) coefficients are truncated to multiples of 1/bins (nilearn: 100).
    pub bins: usize,
}

impl Default for GlmOptions {
    fn default() -> Self {
        GlmOptions {
            noise_model: NoiseModel::Ar1,
            bins: 100,
        }
    }
}

/// One AR bin: its coefficient and `pinv(Xw) pinv(Xw)ᵀ`.
#[derive(Debug, Clone)]
struct BinModel {
    rho: f64,
    /// p x p, row-major.
    cov: Vec<f64>,
}

/// A fitted GLM, enough to compute any t contrast (nilearn keeps the same: theta, cov,
/// dispersion and the AR label per voxel).
#[derive(Debug, Clone)]
pub struct GlmFit {
    pub columns: Vec<String>,
    pub n_volumes: usize,
    pub n_vertices: usize,
    /// `p x n_vertices` row-major parameter estimates.
    pub beta: Vec<f64>,
    /// Residual variance per vertex (whitened residual sum of squares / (n - p)).
    pub dispersion: Vec<f64>,
    /// Binned AR(1) coefficient per vertex (0 for OLS).
    pub rho: Vec<f64>,
    /// Residual degrees of freedom, n - rank(X).
    pub dof: f64,
    pub noise_model: NoiseModel,
    bin_of_vertex: Vec<u32>,
    bins: Vec<BinModel>,
}

/// Per-contrast maps (FitLins / BEP041 `stat-effect`, `stat-variance`, `stat-t`, `stat-z`).
#[derive(Debug, Clone)]
pub struct ContrastMaps {
    pub name: String,
    pub effect: Vec<f64>,
    pub variance: Vec<f64>,
    pub t: Vec<f64>,
    pub z: Vec<f64>,
    pub dof: f64,
}

fn p_rank_error(x: MatRef<'_, f64>, columns: &[String]) -> Result<(Vec<f64>, Mat<f64>, Mat<f64>)> {
    let (n, p) = (x.nrows(), x.ncols());
    if n <= p {
        return Err(Error::SingularDesign {
            message: format!("{p} columns but only {n} volumes"),
            fix: "use a longer run or fewer conditions/drift terms (raise the high-pass period)"
                .into(),
        });
    }
    let svd = x.thin_svd().map_err(|e| Error::SingularDesign {
        message: format!("the SVD of the design did not converge ({e:?})"),
        fix: "check the design for NaN or huge values".into(),
    })?;
    let s: Vec<f64> = (0..p).map(|k| svd.S().column_vector()[k]).collect();
    let smax = s.iter().cloned().fold(0.0, f64::max);
    let zero_cols: Vec<&str> = (0..p)
        .filter(|&j| (0..n).all(|i| x[(i, j)] == 0.0))
        .map(|j| columns[j].as_str())
        .collect();
    if !zero_cols.is_empty() {
        return Err(Error::SingularDesign {
            message: format!("column(s) {} are all zero", quote_list(&zero_cols)),
            fix: "a condition has no event inside the run (or its events are too late to reach the first volumes): drop it from the events or from the model".into(),
        });
    }
    let smin = s[p - 1];
    if smin.is_nan() || smin <= smax * 1e-10 {
        let v = svd.V();
        let involved: Vec<&str> = (0..p)
            .filter(|&j| v[(j, p - 1)].abs() > 0.1)
            .map(|j| columns[j].as_str())
            .collect();
        return Err(Error::SingularDesign {
            message: format!(
                "columns {} are linearly dependent (condition number {:.3e})",
                quote_list(&involved),
                smax / smin
            ),
            fix: "two conditions with identical timing, or a condition spanning the whole run (collinear with 'constant'): merge or drop one".into(),
        });
    }
    Ok((s, svd.U().to_owned(), svd.V().to_owned()))
}

fn quote_list(v: &[&str]) -> String {
    v.iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `V diag(1/s^2) Vᵀ` (= pinv(X) pinv(X)ᵀ) as row-major p x p.
fn cov_from_svd(s: &[f64], v: MatRef<'_, f64>) -> Vec<f64> {
    let p = s.len();
    let mut cov = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            cov[i * p + j] = (0..p).map(|k| v[(i, k)] * v[(j, k)] / (s[k] * s[k])).sum();
        }
    }
    cov
}

/// X - rho * S X (nilearn ARModel.whiten on the design).
fn whiten_design(x: MatRef<'_, f64>, rho: f64) -> Mat<f64> {
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| {
        if i == 0 {
            x[(0, j)]
        } else {
            x[(i, j)] - rho * x[(i - 1, j)]
        }
    })
}

/// Per-block accumulators of one streaming pass over Y.
struct BlockSums {
    /// Xᵀd (p x b row-major), d = y - shift.
    xtd: Vec<f64>,
    /// X[..n-1]ᵀ d[1..] (p x b), only for the AR refit.
    xtd_lag: Vec<f64>,
    /// Σ d² (or Σ wd² in the AR refit).
    dd: Vec<f64>,
}

/// The error for a non-finite value somewhere in columns v0..v0+b.
fn nonfinite_error<T: Copy + Into<f64>>(
    y: &[T],
    n: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
) -> Error {
    let mut at = (0, v0);
    'outer: for t in 0..n {
        for k in 0..b {
            let v: f64 = y[t * n_vertices + v0 + k].into();
            if !v.is_finite() {
                at = (t, v0 + k);
                break 'outer;
            }
        }
    }
    Error::AnalysisInput {
        what: "GLM data".into(),
        message: format!("non-finite value at volume {}, vertex {}", at.0, at.1),
        fix: "the predicted BOLD contains NaN/inf; re-run the prediction".into(),
    }
}

/// One streaming pass over a block of vertices, reading Y (f32 or f64) directly:
/// whitened, shifted data `wd_t = d_t - rho_k d_{t-1}` (rho = 0 for OLS) with d = y - shift,
/// accumulating Xᵀwd, optionally X[..n-1]ᵀwd[1..], and Σwd². p+1 (or 2p+1) multiply-adds per
/// value and no float64 copy of Y: the pass is bound by reading Y once.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn stream_block_impl<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    rho: Option<&[f64]>,
    want_lag: bool,
) -> BlockSums {
    let mut xtd = vec![0.0; p * b];
    let mut xtd_lag = if want_lag {
        vec![0.0; p * b]
    } else {
        Vec::new()
    };
    let mut dd = vec![0.0; b];
    let mut cur = vec![0.0f64; b];
    let mut prev = vec![0.0f64; b];
    let mut wd = vec![0.0f64; b];
    for t in 0..n {
        let row = &y[t * n_vertices + v0..t * n_vertices + v0 + b];
        // (iterator zips so the compiler drops bounds checks and vectorises)
        for ((c, &r), &s) in cur.iter_mut().zip(row).zip(shift) {
            *c = r.into() - s;
        }
        match rho {
            Some(r) if t > 0 => {
                for (((w, &c), &pv), &rk) in wd.iter_mut().zip(&cur).zip(&prev).zip(r) {
                    *w = c - rk * pv;
                }
            }
            _ => wd.copy_from_slice(&cur),
        }
        for (d, &w) in dd.iter_mut().zip(&wd) {
            *d += w * w;
        }
        let xr = &x[t * p..(t + 1) * p];
        for (acc, &xj) in xtd.chunks_exact_mut(b).zip(xr) {
            for (a, &w) in acc.iter_mut().zip(&wd) {
                *a += xj * w;
            }
        }
        if want_lag && t > 0 {
            let xp = &x[(t - 1) * p..t * p];
            for (acc, &xj) in xtd_lag.chunks_exact_mut(b).zip(xp) {
                for (a, &w) in acc.iter_mut().zip(&wd) {
                    *a += xj * w;
                }
            }
        }
        std::mem::swap(&mut cur, &mut prev);
    }
    BlockSums { xtd, xtd_lag, dd }
}

/// Residual autocorrelation sums of the OLS fit for one block (nilearn's `_yule_walker` input):
/// Σr², Σ r_t r_{t+1}, Σr, Σ_{t<n-1} r, Σ_{t>0} r.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn residual_sums_impl<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    beta_d: &[f64],
) -> [Vec<f64>; 5] {
    let mut rr0 = vec![0.0; b];
    let mut rr1 = vec![0.0; b];
    let mut sum_all = vec![0.0; b];
    let mut first = vec![0.0; b];
    let mut last = vec![0.0; b];
    let mut prev = vec![0.0f64; b];
    let mut r = vec![0.0f64; b];
    for t in 0..n {
        let row = &y[t * n_vertices + v0..t * n_vertices + v0 + b];
        for ((rk, &yv), &s) in r.iter_mut().zip(row).zip(shift) {
            *rk = yv.into() - s;
        }
        let xr = &x[t * p..(t + 1) * p];
        for (bj, &xj) in beta_d.chunks_exact(b).zip(xr) {
            for (rk, &bv) in r.iter_mut().zip(bj) {
                *rk -= xj * bv;
            }
        }
        for ((a, s), &rk) in rr0.iter_mut().zip(sum_all.iter_mut()).zip(&r) {
            *a += rk * rk;
            *s += rk;
        }
        if t > 0 {
            for ((a, &pv), &rk) in rr1.iter_mut().zip(&prev).zip(&r) {
                *a += pv * rk;
            }
        } else {
            first.copy_from_slice(&r);
        }
        if t == n - 1 {
            last.copy_from_slice(&r);
        }
        std::mem::swap(&mut r, &mut prev);
    }
    let sum_head: Vec<f64> = (0..b).map(|k| sum_all[k] - last[k]).collect();
    let sum_tail: Vec<f64> = (0..b).map(|k| sum_all[k] - first[k]).collect();
    [rr0, rr1, sum_all, sum_head, sum_tail]
}

/// The same kernels compiled for AVX2 (4 doubles per instruction instead of SSE2's 2), picked
/// at run time: the crate is built for baseline x86-64, and these loops are the GLM's hot path.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn stream_block_avx2<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    rho: Option<&[f64]>,
    want_lag: bool,
) -> BlockSums {
    stream_block_impl(y, x, n, p, n_vertices, v0, b, shift, rho, want_lag)
}

#[allow(clippy::too_many_arguments)]
fn stream_block<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    rho: Option<&[f64]>,
    want_lag: bool,
) -> BlockSums {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { stream_block_avx2(y, x, n, p, n_vertices, v0, b, shift, rho, want_lag) };
    }
    stream_block_impl(y, x, n, p, n_vertices, v0, b, shift, rho, want_lag)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn residual_sums_avx2<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    beta_d: &[f64],
) -> [Vec<f64>; 5] {
    residual_sums_impl(y, x, n, p, n_vertices, v0, b, shift, beta_d)
}

#[allow(clippy::too_many_arguments)]
fn residual_sums<T: Copy + Into<f64>>(
    y: &[T],
    x: &[f64],
    n: usize,
    p: usize,
    n_vertices: usize,
    v0: usize,
    b: usize,
    shift: &[f64],
    beta_d: &[f64],
) -> [Vec<f64>; 5] {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { residual_sums_avx2(y, x, n, p, n_vertices, v0, b, shift, beta_d) };
    }
    residual_sums_impl(y, x, n, p, n_vertices, v0, b, shift, beta_d)
}

/// `beta = cov (g)` per vertex of a block, g given p x b; returns p x b and the residual sum
/// of squares `dd - betaᵀ g` (normal equations; `dd` is Σ of the squared (whitened) data).
fn solve_block(cov: &[f64], g: &[f64], dd: &[f64], p: usize, b: usize) -> (Vec<f64>, Vec<f64>) {
    let mut beta = vec![0.0; p * b];
    for (i, bi) in beta.chunks_exact_mut(b).enumerate() {
        for (gj, &c) in g.chunks_exact(b).zip(&cov[i * p..(i + 1) * p]) {
            for (bv, &gv) in bi.iter_mut().zip(gj) {
                *bv += c * gv;
            }
        }
    }
    let mut sse = dd.to_vec();
    for j in 0..p {
        for k in 0..b {
            sse[k] -= beta[j * b + k] * g[j * b + k];
        }
    }
    for v in &mut sse {
        *v = v.max(0.0);
    }
    (beta, sse)
}

/// Fit the GLM `Y = X beta + e` for every vertex. `y` is `n_volumes x n_vertices` row-major.
///
/// Numerics: nilearn applies `pinv(X)`; we solve the normal equations with `(XᵀX)⁻¹` from the
/// SVD of X (the same matrix for a full-rank design) and get the residual sum of squares as
/// `Σd² - βᵀXᵀd`. To keep that subtraction accurate when the data sit on a large baseline,
/// each vertex is first shifted by its first value (absorbed exactly by the constant column,
/// so betas and residuals are unchanged). Agreement with nilearn is checked to 1e-9 relative
/// in tests/analysis_glm_nilearn.rs.
pub fn fit<T: Copy + Into<f64> + Sync>(
    y: &[T],
    n_vertices: usize,
    design: &DesignMatrix,
    opts: &GlmOptions,
) -> Result<GlmFit> {
    let n = design.n_rows();
    let p = design.n_cols();
    if y.len() != n * n_vertices {
        return Err(Error::ShapeMismatch {
            name: "GLM data (volumes x vertices)".into(),
            expected: vec![n, n_vertices],
            found: vec![y.len() / n_vertices.max(1), n_vertices],
            path: None,
        });
    }
    if opts.bins == 0 {
        return Err(Error::Usage("AR(1) bins must be positive".into()));
    }
    let xm = MatRef::from_row_major_slice(&design.values, n, p);
    let (s, u, v) = p_rank_error(xm, &design.columns)?;
    let x = &design.values;
    let cov0 = cov_from_svd(&s, v.as_ref());
    // c1 = pinv(X) 1: the coefficients that reproduce a constant; used to shift the data.
    let c1: Vec<f64> = (0..p)
        .map(|i| {
            (0..p)
                .map(|k| v[(i, k)] / s[k] * (0..n).map(|t| u[(t, k)]).sum::<f64>())
                .sum()
        })
        .collect();
    let reproduces_ones =
        (0..n).all(|t| ((0..p).map(|j| x[t * p + j] * c1[j]).sum::<f64>() - 1.0).abs() < 1e-8);
    let dof = (n - p) as f64;
    let n_blocks = n_vertices.div_ceil(BLOCK);
    let want_ar = opts.noise_model == NoiseModel::Ar1;
    let shift_of = |v0: usize, b: usize| -> Vec<f64> {
        if reproduces_ones {
            (0..b).map(|k| y[v0 + k].into()).collect()
        } else {
            vec![0.0; b]
        }
    };

    // ---- pass 1: OLS for every vertex (and the residual autocorrelation sums for AR(1))
    type Pass1 = (Vec<f64>, Vec<f64>, Option<[Vec<f64>; 5]>);
    let pass1: Vec<Pass1> = (0..n_blocks)
        .into_par_iter()
        .map(|bi| {
            let v0 = bi * BLOCK;
            let b = BLOCK.min(n_vertices - v0);
            let shift = shift_of(v0, b);
            let sums = stream_block(y, x, n, p, n_vertices, v0, b, &shift, None, false);
            if sums.dd.iter().any(|v| !v.is_finite()) || shift.iter().any(|v| !v.is_finite()) {
                return Err(nonfinite_error(y, n, n_vertices, v0, b));
            }
            let (beta_d, sse) = solve_block(&cov0, &sums.xtd, &sums.dd, p, b);
            let ar = want_ar.then(|| residual_sums(y, x, n, p, n_vertices, v0, b, &shift, &beta_d));
            let mut beta = beta_d;
            for j in 0..p {
                for k in 0..b {
                    beta[j * b + k] += shift[k] * c1[j];
                }
            }
            Ok((beta, sse, ar))
        })
        .collect::<Result<Vec<_>>>()?;

    let mut beta = vec![0.0; p * n_vertices];
    let mut dispersion = vec![0.0; n_vertices];
    for (bi, (bb, sse, _)) in pass1.iter().enumerate() {
        let v0 = bi * BLOCK;
        let b = sse.len();
        for j in 0..p {
            beta[j * n_vertices + v0..j * n_vertices + v0 + b]
                .copy_from_slice(&bb[j * b..(j + 1) * b]);
        }
        for k in 0..b {
            dispersion[v0 + k] = sse[k] / (n - p) as f64;
        }
    }
    if !want_ar {
        return Ok(GlmFit {
            columns: design.columns.clone(),
            n_volumes: n,
            n_vertices,
            beta,
            dispersion,
            rho: vec![0.0; n_vertices],
            dof,
            noise_model: NoiseModel::Ols,
            bin_of_vertex: vec![0; n_vertices],
            bins: vec![BinModel {
                rho: 0.0,
                cov: cov0,
            }],
        });
    }

    // ---- AR(1) coefficients: nilearn's _yule_walker subtracts the GLOBAL residual mean.
    let nf = n as f64;
    let total: f64 = pass1
        .iter()
        .flat_map(|b| b.2.as_ref().map(|a| a[2].iter().sum::<f64>()))
        .sum();
    let m = total / (nf * n_vertices as f64);
    let bins_f = opts.bins as f64;
    let mut rho = vec![0.0; n_vertices];
    for (bi, (_, sse, ar)) in pass1.iter().enumerate() {
        let v0 = bi * BLOCK;
        let [rr0, rr1, sum_all, sum_head, sum_tail] = ar.as_ref().expect("AR sums");
        for k in 0..sse.len() {
            let r0 = (rr0[k] - 2.0 * m * sum_all[k] + nf * m * m) / (nf * nf);
            let r1 =
                (rr1[k] - m * (sum_head[k] + sum_tail[k]) + (nf - 1.0) * m * m) / ((nf - 1.0) * nf);
            let raw = r1 / r0;
            // (ar * bins).astype(int) / bins: truncation toward zero.
            rho[v0 + k] = if raw.is_finite() {
                (raw * bins_f).trunc() / bins_f
            } else {
                0.0
            };
        }
    }
    drop(pass1);
    // One model per distinct binned value (nilearn: one ARModel per label).
    let mut keys: Vec<i64> = rho.iter().map(|r| (r * bins_f).round() as i64).collect();
    keys.sort_unstable();
    keys.dedup();
    let bins: Vec<BinModel> = keys
        .iter()
        .map(|&key| {
            let r = key as f64 / bins_f;
            let xw = whiten_design(xm, r);
            let svd = xw.thin_svd().map_err(|e| Error::SingularDesign {
                message: format!(
                    "the SVD of the whitened design (rho={r}) did not converge ({e:?})"
                ),
                fix: "check the design for NaN or huge values".into(),
            })?;
            let sw: Vec<f64> = (0..p).map(|k| svd.S().column_vector()[k]).collect();
            if sw.iter().any(|v| v.is_nan() || *v <= 0.0) {
                return Err(Error::SingularDesign {
                    message: format!("the whitened design (rho={r}) is singular"),
                    fix: "use --noise-model ols".into(),
                });
            }
            Ok(BinModel {
                rho: r,
                cov: cov_from_svd(&sw, svd.V()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let bin_of_vertex: Vec<u32> = rho
        .iter()
        .map(|r| {
            keys.binary_search(&((r * bins_f).round() as i64))
                .unwrap_or(0) as u32
        })
        .collect();

    // ---- pass 2: refit each vertex on its whitened data. With Xw = X - rho S X,
    // Xwᵀ wd = Xᵀ wd - rho X[..n-1]ᵀ wd[1..].
    let pass2: Vec<(Vec<f64>, Vec<f64>)> = (0..n_blocks)
        .into_par_iter()
        .map(|bi| {
            let v0 = bi * BLOCK;
            let b = BLOCK.min(n_vertices - v0);
            let shift = shift_of(v0, b);
            let rb = &rho[v0..v0 + b];
            let sums = stream_block(y, x, n, p, n_vertices, v0, b, &shift, Some(rb), true);
            let mut beta_b = vec![0.0; p * b];
            let mut sse = vec![0.0; b];
            let mut g = vec![0.0; p];
            for k in 0..b {
                let bin = &bins[bin_of_vertex[v0 + k] as usize];
                for (j, gj) in g.iter_mut().enumerate() {
                    *gj = sums.xtd[j * b + k] - bin.rho * sums.xtd_lag[j * b + k];
                }
                let mut bg = 0.0;
                for i in 0..p {
                    let bi_: f64 = (0..p).map(|j| bin.cov[i * p + j] * g[j]).sum();
                    bg += bi_ * g[i];
                    beta_b[i * b + k] = bi_ + shift[k] * c1[i];
                }
                sse[k] = (sums.dd[k] - bg).max(0.0);
            }
            Ok((beta_b, sse))
        })
        .collect::<Result<Vec<_>>>()?;
    for (bi, (bb, sse)) in pass2.iter().enumerate() {
        let v0 = bi * BLOCK;
        let b = sse.len();
        for j in 0..p {
            beta[j * n_vertices + v0..j * n_vertices + v0 + b]
                .copy_from_slice(&bb[j * b..(j + 1) * b]);
        }
        for k in 0..b {
            dispersion[v0 + k] = sse[k] / (n - p) as f64;
        }
    }
    Ok(GlmFit {
        columns: design.columns.clone(),
        n_volumes: n,
        n_vertices,
        beta,
        dispersion,
        rho,
        dof,
        noise_model: NoiseModel::Ar1,
        bin_of_vertex,
        bins,
    })
}

impl GlmFit {
    /// Effect, variance, t and z maps of a t contrast given as a vector over the columns
    /// (shorter vectors are zero-padded, as nilearn does).
    pub fn contrast(&self, name: &str, c: &[f64]) -> Result<ContrastMaps> {
        let p = self.columns.len();
        if c.len() > p {
            return Err(Error::ShapeMismatch {
                name: format!("contrast '{name}' weights"),
                expected: vec![p],
                found: vec![c.len()],
                path: None,
            });
        }
        if c.iter().all(|w| *w == 0.0) {
            return Err(Error::ContrastSyntax {
                expression: name.into(),
                position: 0,
                message: "all weights are zero (null contrast)".into(),
            });
        }
        let mut cv = c.to_vec();
        cv.resize(p, 0.0);
        // c cov cᵀ per bin
        let ccc: Vec<f64> = self
            .bins
            .iter()
            .map(|b| {
                (0..p)
                    .map(|i| {
                        (0..p)
                            .map(|j| cv[i] * b.cov[i * p + j] * cv[j])
                            .sum::<f64>()
                    })
                    .sum()
            })
            .collect();
        let nv = self.n_vertices;
        let dof = self.dof;
        let rows: Vec<(f64, f64, f64, f64)> = (0..nv)
            .into_par_iter()
            .map(|v| {
                let effect: f64 = (0..p).map(|j| cv[j] * self.beta[j * nv + v]).sum();
                let sd = (ccc[self.bin_of_vertex[v] as usize] * self.dispersion[v]).sqrt();
                let variance = sd * sd;
                let t = effect / variance.max(1e-50).sqrt();
                (effect, variance, t, z_from_t(t, dof))
            })
            .collect();
        Ok(ContrastMaps {
            name: name.into(),
            effect: rows.iter().map(|r| r.0).collect(),
            variance: rows.iter().map(|r| r.1).collect(),
            t: rows.iter().map(|r| r.2).collect(),
            z: rows.iter().map(|r| r.3).collect(),
            dof,
        })
    }

    /// The maps of a named contrast (CLI expression or BIDS Stats Models entry).
    pub fn contrast_spec(&self, spec: &ContrastSpec) -> Result<ContrastMaps> {
        let c = spec.vector(&self.columns)?;
        self.contrast(&spec.name, &c)
    }

    /// Number of distinct AR(1) bins used (1 for OLS).
    pub fn n_bins(&self) -> usize {
        self.bins.len()
    }
}

/// How runs are weighted in a fixed-effects combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FixedEffectsWeighting {
    /// Inverse-variance weights: nilearn `compute_fixed_effects(precision_weighted=True)`.
    #[default]
    Precision,
    /// Plain mean, variance mean/n_runs: nilearn's default and FirstLevelModel's multi-run rule.
    Equal,
}

/// nilearn `compute_fixed_effects(contrasts, variances, dofs=..)`: the combined effect, its
/// variance, t = effect/sqrt(variance) and z from t with dof = sum of the runs' dofs
/// (nilearn assumes 100 per run when `dofs` is not given; we always pass the real ones).
pub fn fixed_effects(
    runs: &[&ContrastMaps],
    weighting: FixedEffectsWeighting,
) -> Result<ContrastMaps> {
    let Some(first) = runs.first() else {
        return Err(Error::AnalysisInput {
            what: "fixed effects".into(),
            message: "no runs to combine".into(),
            fix: "give at least one run's contrast maps".into(),
        });
    };
    let nv = first.effect.len();
    for r in runs {
        if r.effect.len() != nv || r.variance.len() != nv {
            return Err(Error::ShapeMismatch {
                name: format!("fixed effects of '{}'", first.name),
                expected: vec![nv],
                found: vec![r.effect.len()],
                path: None,
            });
        }
    }
    const TINY: f64 = 1e-16;
    let n_runs = runs.len() as f64;
    let dof: f64 = runs.iter().map(|r| r.dof).sum();
    let rows: Vec<(f64, f64, f64, f64)> = (0..nv)
        .into_par_iter()
        .map(|v| {
            let (effect, variance) = match weighting {
                FixedEffectsWeighting::Precision => {
                    let wsum: f64 = runs.iter().map(|r| 1.0 / r.variance[v].max(TINY)).sum();
                    let var = 1.0 / wsum;
                    let eff: f64 = runs
                        .iter()
                        .map(|r| r.effect[v] / r.variance[v].max(TINY))
                        .sum::<f64>()
                        * var;
                    (eff, var)
                }
                FixedEffectsWeighting::Equal => {
                    let var =
                        runs.iter().map(|r| r.variance[v].max(TINY)).sum::<f64>() / n_runs / n_runs;
                    let eff = runs.iter().map(|r| r.effect[v]).sum::<f64>() / n_runs;
                    (eff, var)
                }
            };
            let t = effect / variance.max(1e-50).sqrt();
            (effect, variance, t, z_from_t(t, dof))
        })
        .collect();
    Ok(ContrastMaps {
        name: first.name.clone(),
        effect: rows.iter().map(|r| r.0).collect(),
        variance: rows.iter().map(|r| r.1).collect(),
        t: rows.iter().map(|r| r.2).collect(),
        z: rows.iter().map(|r| r.3).collect(),
        dof,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::design::{
        DesignOptions, Event, frame_times, make_first_level_design_matrix,
    };

    fn design() -> DesignMatrix {
        let ft = frame_times(40, 2.0, 0.0);
        let ev: Vec<Event> = (0..8)
            .map(|i| Event::new(i as f64 * 10.0, 4.0, if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        make_first_level_design_matrix(&ft, &ev, &DesignOptions::default()).unwrap()
    }

    #[test]
    fn recovers_planted_betas_exactly_without_noise() {
        let d = design();
        let (n, p) = (d.n_rows(), d.n_cols());
        let nv = 300;
        let mut y = vec![0.0f64; n * nv];
        for v in 0..nv {
            let b: Vec<f64> = (0..p).map(|j| (v * 7 + j * 3) as f64 % 5.0 - 2.0).collect();
            for t in 0..n {
                y[t * nv + v] = (0..p).map(|j| d.get(t, j) * b[j]).sum();
            }
        }
        let fit = fit(
            &y,
            nv,
            &d,
            &GlmOptions {
                noise_model: NoiseModel::Ols,
                bins: 100,
            },
        )
        .unwrap();
        for v in 0..nv {
            for j in 0..p {
                let want = (v * 7 + j * 3) as f64 % 5.0 - 2.0;
                assert!((fit.beta[j * nv + v] - want).abs() < 1e-9);
            }
            assert!(fit.dispersion[v] < 1e-18);
        }
    }

    #[test]
    fn singular_designs_are_explained() {
        let ft = frame_times(40, 2.0, 0.0);
        // 'late' starts after the run: an all-zero column
        let ev = vec![Event::new(0.0, 4.0, "a"), Event::new(500.0, 4.0, "late")];
        let d = make_first_level_design_matrix(&ft, &ev, &DesignOptions::default()).unwrap();
        let y = vec![0.0f32; 40 * 3];
        let e = fit(&y, 3, &d, &GlmOptions::default()).unwrap_err();
        assert!(
            matches!(e, Error::SingularDesign { .. }) && e.to_string().contains("'late'"),
            "{e}"
        );
        // two identical conditions
        let ev = vec![
            Event::new(0.0, 4.0, "a"),
            Event::new(0.0, 4.0, "b"),
            Event::new(30.0, 4.0, "a"),
            Event::new(30.0, 4.0, "b"),
        ];
        let d = make_first_level_design_matrix(&ft, &ev, &DesignOptions::default()).unwrap();
        let e = fit(&y, 3, &d, &GlmOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("'a'") && msg.contains("'b'") && msg.contains("linearly dependent"),
            "{msg}"
        );
    }

    #[test]
    fn fixed_effects_of_identical_runs_halve_the_variance() {
        let m = ContrastMaps {
            name: "c".into(),
            effect: vec![1.0, -2.0],
            variance: vec![0.5, 2.0],
            t: vec![0.0; 2],
            z: vec![0.0; 2],
            dof: 30.0,
        };
        let f = fixed_effects(&[&m, &m], FixedEffectsWeighting::Precision).unwrap();
        assert!((f.effect[0] - 1.0).abs() < 1e-15 && (f.variance[0] - 0.25).abs() < 1e-15);
        assert_eq!(f.dof, 60.0);
        assert!((f.t[1] + 2.0).abs() < 1e-12);
    }
}
