//! FastICA exactly as scikit-learn's `FastICA(n_components, algorithm="parallel",
//! fun="logcosh", whiten="unit-variance", whiten_solver="svd", max_iter=200, tol=1e-4,
//! random_state=seed)`, followed by a deterministic sign and order.
//!
//! Convention (SPEC §11): rows are samples, columns are features. For the model readout
//! (2,048 latent dims x 20,484 vertices) and for a run (volumes x vertices) the vertices are
//! features, so each component's cortical map is a column of scikit-learn's `mixing_`
//! (`X ≈ sources · mixingᵀ + mean`), and `sources` are the per-sample (latent dim or volume)
//! courses that BEP012/tedana put in `desc-ICA_mixing.tsv`.
//!
//! Speed: scikit-learn takes the thin SVD of the 20,484 x 2,048 centred matrix. Only the top
//! `k` left singular vectors are used, so we take them from the smaller Gram matrix instead
//! (one product and a symmetric eigendecomposition), which gives the same vectors to about
//! 1e-10 for the well-separated leading components ICA keeps. The random initial unmixing
//! matrix comes from a re-implementation of numpy's `RandomState(seed).normal` (MT19937 +
//! polar Box-Muller), so with the same seed we start where scikit-learn starts.

use crate::{Error, Result};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

/// FastICA settings (scikit-learn defaults except `n_components`, which SPEC §11 fixes at 5).
#[derive(Debug, Clone, PartialEq)]
pub struct IcaOptions {
    pub n_components: usize,
    pub max_iter: usize,
    pub tol: f64,
    /// numpy `RandomState` seed for the initial unmixing matrix.
    pub seed: u32,
    /// Explicit initial unmixing matrix (`n_components x n_components`, row-major); overrides `seed`.
    pub w_init: Option<Vec<f64>>,
}

impl Default for IcaOptions {
    fn default() -> Self {
        IcaOptions {
            n_components: 5,
            max_iter: 200,
            tol: 1e-4,
            seed: 0,
            w_init: None,
        }
    }
}

/// A decomposition, already sign-fixed and ordered by explained variance.
#[derive(Debug, Clone)]
pub struct IcaResult {
    pub n_samples: usize,
    pub n_features: usize,
    pub n_components: usize,
    /// `n_components x n_features` row-major: component maps (scikit-learn `mixing_` columns).
    pub maps: Vec<f64>,
    /// `n_samples x n_components` row-major, unit variance (scikit-learn `fit_transform`).
    pub sources: Vec<f64>,
    /// `n_components x n_features` row-major unmixing (scikit-learn `components_`).
    pub unmixing: Vec<f64>,
    /// Per-feature mean removed before whitening.
    pub mean: Vec<f64>,
    /// Fraction of the centred data's sum of squares carried by each component.
    pub explained_variance: Vec<f64>,
    pub n_iter: usize,
    pub converged: bool,
    /// For output component i: the index scikit-learn would give it.
    pub sklearn_index: Vec<usize>,
    /// For output component i: the sign applied to scikit-learn's component (+1 or -1).
    pub sign: Vec<f64>,
}

impl IcaResult {
    /// One component's map over the features.
    pub fn map(&self, k: usize) -> &[f64] {
        &self.maps[k * self.n_features..(k + 1) * self.n_features]
    }

    /// One component's course over the samples.
    pub fn source(&self, k: usize) -> Vec<f64> {
        (0..self.n_samples)
            .map(|s| self.sources[s * self.n_components + k])
            .collect()
    }
}

/// numpy's legacy `RandomState`: MT19937 with `init_genrand` seeding and the polar Gaussian.
pub struct NumpyRandomState {
    mt: [u32; 624],
    idx: usize,
    gauss: Option<f64>,
}

impl NumpyRandomState {
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState {
            mt,
            idx: 624,
            gauss: None,
        }
    }

    fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// `RandomState.standard_normal()` (legacy polar method, second value cached).
    pub fn normal(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.next_f64() - 1.0;
            let x2 = 2.0 * self.next_f64() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = Some(f * x1);
                return f * x2;
            }
        }
    }
}

/// `W <- (W Wᵀ)^(-1/2) W` (scikit-learn `_sym_decorrelation`).
fn sym_decorrelation(w: &Mat<f64>) -> Result<Mat<f64>> {
    let k = w.nrows();
    let wwt = w * w.transpose();
    let eig = wwt
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Other(format!("FastICA: eigendecomposition failed ({e:?})")))?;
    let u = eig.U();
    let s: Vec<f64> = (0..k)
        .map(|i| eig.S().column_vector()[i].max(f64::MIN_POSITIVE))
        .collect();
    let m = Mat::from_fn(k, k, |i, j| {
        (0..k)
            .map(|l| u[(i, l)] * u[(j, l)] / s[l].sqrt())
            .sum::<f64>()
    });
    Ok(&m * w)
}

/// Top-k left singular vectors (columns, n_features x k) and values of `xc_t` = centred Xᵀ,
/// given centred X as `n_samples x n_features`.
fn top_left_singular(xc: MatRef<'_, f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let (ns, nf) = (xc.nrows(), xc.ncols());
    let par = Par::rayon(0);
    let err = |e| {
        Error::Other(format!(
            "FastICA whitening: eigendecomposition failed ({e:?})"
        ))
    };
    if ns <= nf {
        // G = X Xᵀ (samples x samples) = V S² Vᵀ; u = Xᵀ v / s.
        let mut g = Mat::<f64>::zeros(ns, ns);
        matmul(g.as_mut(), Accum::Replace, xc, xc.transpose(), 1.0, par);
        let eig = g.self_adjoint_eigen(Side::Lower).map_err(err)?;
        let mut d = Vec::with_capacity(k);
        let mut v = Mat::<f64>::zeros(ns, k);
        for c in 0..k {
            let idx = ns - 1 - c; // eigenvalues ascending
            d.push(eig.S().column_vector()[idx].max(0.0).sqrt());
            for r in 0..ns {
                v[(r, c)] = eig.U()[(r, idx)];
            }
        }
        let mut u = Mat::<f64>::zeros(nf, k);
        matmul(
            u.as_mut(),
            Accum::Replace,
            xc.transpose(),
            v.as_ref(),
            1.0,
            par,
        );
        for c in 0..k {
            if d[c] > 0.0 {
                for r in 0..nf {
                    u[(r, c)] /= d[c];
                }
            }
        }
        Ok((u, d))
    } else {
        // C = Xᵀ X (features x features) = U S² Uᵀ.
        let mut c = Mat::<f64>::zeros(nf, nf);
        matmul(c.as_mut(), Accum::Replace, xc.transpose(), xc, 1.0, par);
        let eig = c.self_adjoint_eigen(Side::Lower).map_err(err)?;
        let mut d = Vec::with_capacity(k);
        let mut u = Mat::<f64>::zeros(nf, k);
        for col in 0..k {
            let idx = nf - 1 - col;
            d.push(eig.S().column_vector()[idx].max(0.0).sqrt());
            for r in 0..nf {
                u[(r, col)] = eig.U()[(r, idx)];
            }
        }
        Ok((u, d))
    }
}

/// FastICA on `x` (`n_samples x n_features`, row-major). See the module docs for the layout.
pub fn fast_ica<T: Copy + Into<f64> + Sync>(
    x: &[T],
    n_samples: usize,
    n_features: usize,
    opts: &IcaOptions,
) -> Result<IcaResult> {
    if x.len() != n_samples * n_features {
        return Err(Error::ShapeMismatch {
            name: "ICA input (samples x features)".into(),
            expected: vec![n_samples, n_features],
            found: vec![x.len() / n_features.max(1), n_features],
            path: None,
        });
    }
    let k = opts.n_components;
    if k == 0 || k > n_samples.min(n_features) || n_samples < 2 {
        return Err(Error::AnalysisInput {
            what: "ICA".into(),
            message: format!("{k} components requested from a {n_samples} x {n_features} matrix"),
            fix: "ask for at least 1 and at most min(rows, columns) components".into(),
        });
    }
    // ---- centre each feature over the samples
    let mut mean = vec![0.0f64; n_features];
    for s in 0..n_samples {
        for (m, &v) in mean
            .iter_mut()
            .zip(&x[s * n_features..(s + 1) * n_features])
        {
            *m += v.into();
        }
    }
    for m in &mut mean {
        *m /= n_samples as f64;
    }
    // row-major buffer so centring is a contiguous pass; faer takes the strides as they are
    let mut xc_buf = vec![0.0f64; n_samples * n_features];
    let mut nonfinite = false;
    for (row_out, row_in) in xc_buf
        .chunks_exact_mut(n_features)
        .zip(x.chunks_exact(n_features))
    {
        for ((o, &v), &m) in row_out.iter_mut().zip(row_in).zip(&mean) {
            let v: f64 = v.into();
            nonfinite |= !v.is_finite();
            *o = v - m;
        }
    }
    if nonfinite {
        return Err(Error::AnalysisInput {
            what: "ICA input".into(),
            message: "contains NaN or infinite values".into(),
            fix: "check the checkpoint weights or predicted BOLD".into(),
        });
    }
    let xc = MatRef::from_row_major_slice(&xc_buf, n_samples, n_features);
    // ---- whitening: K = (u / d)ᵀ[:k], X1 = K Xcᵀ * sqrt(n_samples)
    let (mut u, d) = top_left_singular(xc, k)?;
    if d.iter().any(|v| v.is_nan() || *v <= 0.0) {
        return Err(Error::AnalysisInput {
            what: "ICA".into(),
            message: format!("the data have fewer than {k} non-zero singular values"),
            fix: "ask for fewer components".into(),
        });
    }
    for c in 0..k {
        // u *= np.sign(u[0])
        if u[(0, c)] < 0.0 {
            for r in 0..n_features {
                u[(r, c)] = -u[(r, c)];
            }
        }
    }
    let kmat = Mat::<f64>::from_fn(k, n_features, |c, f| u[(f, c)] / d[c]);
    let mut x1 = Mat::<f64>::zeros(k, n_samples);
    matmul(
        x1.as_mut(),
        Accum::Replace,
        kmat.as_ref(),
        xc.transpose(),
        1.0,
        Par::rayon(0),
    );
    let sqrt_ns = (n_samples as f64).sqrt();
    for v in x1.col_iter_mut().flat_map(|c| c.iter_mut()) {
        *v *= sqrt_ns;
    }
    // ---- initial unmixing
    let w_init = match &opts.w_init {
        Some(w) => {
            if w.len() != k * k {
                return Err(Error::ShapeMismatch {
                    name: "ICA w_init".into(),
                    expected: vec![k, k],
                    found: vec![w.len()],
                    path: None,
                });
            }
            Mat::from_fn(k, k, |i, j| w[i * k + j])
        }
        None => {
            let mut rng = NumpyRandomState::new(opts.seed);
            let vals: Vec<f64> = (0..k * k).map(|_| rng.normal()).collect();
            Mat::from_fn(k, k, |i, j| vals[i * k + j])
        }
    };
    // ---- parallel FastICA with logcosh (alpha = 1)
    let mut w = sym_decorrelation(&w_init)?;
    let p = n_samples as f64;
    let mut converged = false;
    let mut n_iter = 0;
    for it in 0..opts.max_iter.max(1) {
        let mut gwtx = &w * &x1; // k x n_samples
        let mut g_wtx = vec![0.0; k];
        for i in 0..k {
            let mut acc = 0.0;
            for s in 0..n_samples {
                let t = gwtx[(i, s)].tanh();
                gwtx[(i, s)] = t;
                acc += 1.0 - t * t;
            }
            g_wtx[i] = acc / p;
        }
        let gx = &gwtx * x1.transpose();
        let w1_raw = Mat::from_fn(k, k, |i, j| gx[(i, j)] / p - g_wtx[i] * w[(i, j)]);
        let w1 = sym_decorrelation(&w1_raw)?;
        let lim = (0..k)
            .map(|i| ((0..k).map(|j| w1[(i, j)] * w[(i, j)]).sum::<f64>().abs() - 1.0).abs())
            .fold(0.0, f64::max);
        w = w1;
        n_iter = it + 1;
        if lim < opts.tol {
            converged = true;
            break;
        }
    }
    if !converged {
        tracing::warn!(
            "FastICA did not converge in {} iterations (tol {})",
            opts.max_iter,
            opts.tol
        );
    }
    // ---- sources, unit variance
    let mut s_t = &w * &x1; // W K Xcᵀ sqrt(n), k x n_samples
    for v in s_t.col_iter_mut().flat_map(|c| c.iter_mut()) {
        *v /= sqrt_ns;
    }
    let mut s_std = vec![0.0; k];
    for i in 0..k {
        let m: f64 = (0..n_samples).map(|s| s_t[(i, s)]).sum::<f64>() / p;
        s_std[i] = ((0..n_samples)
            .map(|s| (s_t[(i, s)] - m).powi(2))
            .sum::<f64>()
            / p)
            .sqrt();
    }
    let w_scaled = Mat::from_fn(k, k, |i, j| w[(i, j)] / s_std[i]);
    let components = &w_scaled * &kmat; // k x n_features
    // mixing = pinv(components) = componentsᵀ (components componentsᵀ)⁻¹
    let cct = &components * components.transpose();
    let cct_inv = cct
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Other(format!("FastICA: mixing inverse failed ({e:?})")))?
        .pseudoinverse();
    let mixing = components.transpose() * &cct_inv; // n_features x k

    // ---- sign (peak positive) and order (explained variance, descending)
    let total_ss: f64 = xc_buf.iter().map(|v| v * v).sum();
    let mut info: Vec<(usize, f64, f64)> = (0..k)
        .map(|c| {
            let (mut peak, mut peak_abs) = (0.0, -1.0);
            let mut ss = 0.0;
            for f in 0..n_features {
                let v = mixing[(f, c)];
                ss += v * v;
                if v.abs() > peak_abs {
                    peak_abs = v.abs();
                    peak = v;
                }
            }
            let sign = if peak < 0.0 { -1.0 } else { 1.0 };
            let src_ss: f64 = (0..n_samples)
                .map(|s| (s_t[(c, s)] / s_std[c]).powi(2))
                .sum();
            (c, sign, ss * src_ss / total_ss.max(f64::MIN_POSITIVE))
        })
        .collect();
    info.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });

    let mut maps = vec![0.0; k * n_features];
    let mut unmixing = vec![0.0; k * n_features];
    let mut sources = vec![0.0; n_samples * k];
    for (o, &(c, sign, _)) in info.iter().enumerate() {
        for f in 0..n_features {
            maps[o * n_features + f] = sign * mixing[(f, c)];
            unmixing[o * n_features + f] = sign * components[(c, f)];
        }
        for s in 0..n_samples {
            sources[s * k + o] = sign * s_t[(c, s)] / s_std[c];
        }
    }
    Ok(IcaResult {
        n_samples,
        n_features,
        n_components: k,
        maps,
        sources,
        unmixing,
        mean,
        explained_variance: info.iter().map(|i| i.2).collect(),
        n_iter,
        converged,
        sklearn_index: info.iter().map(|i| i.0).collect(),
        sign: info.iter().map(|i| i.1).collect(),
    })
}

/// FastICA of one run's predicted BOLD (`n_volumes x n_vertices`, row-major): the maps are
/// cortical networks, the sources their time courses. Same algorithm as [`fast_ica`].
pub fn fast_ica_run(
    y: &[f32],
    n_volumes: usize,
    n_vertices: usize,
    opts: &IcaOptions,
) -> Result<IcaResult> {
    fast_ica(y, n_volumes, n_vertices, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_random_state_normal() {
        // np.random.RandomState(0).normal(size=5) and RandomState(42).normal(size=3)
        let mut r = NumpyRandomState::new(0);
        let want = [
            1.764052345967664,
            0.4001572083672233,
            0.9787379841057392,
            2.240893199201458,
            1.8675579901499675,
        ];
        for w in want {
            assert_eq!(r.normal(), w);
        }
        let mut r = NumpyRandomState::new(42);
        for w in [0.4967141530112327, -0.13826430117118466, 0.6476885381006925] {
            assert_eq!(r.normal(), w);
        }
    }
}
