//! First-level design matrices as nilearn's `make_first_level_design_matrix` builds them:
//! one HRF-convolved column per trial_type (sorted like `np.unique`), then the drift columns
//! (`drift_1..drift_K`) and `constant`.
//!
//! Why nilearn's layout and not our own: contrasts are written against column names, and users
//! port contrasts and BIDS Stats Models between FitLins/nilearn and this app. Same names, same
//! order and the same numbers keep their contrast vectors valid.

use super::hrf::{self, ConditionEvents, HrfModel};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// One row of an events table, after the app resolved it (BIDS events.tsv semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds from the first volume's acquisition start.
    pub onset: f64,
    /// Seconds; 0 means an impulse (one high-resolution sample).
    pub duration: f64,
    /// Condition name; nilearn uses "dummy" when the column is missing.
    pub trial_type: String,
    /// Amplitude (the `modulation` column); 1 when absent.
    pub modulation: f64,
}

impl Event {
    pub fn new(onset: f64, duration: f64, trial_type: impl Into<String>) -> Self {
        Event {
            onset,
            duration,
            trial_type: trial_type.into(),
            modulation: 1.0,
        }
    }
}

/// Slow-drift regressors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DriftModel {
    /// DCT-II basis up to `high_pass` Hz (nilearn default, 0.01 Hz).
    Cosine { high_pass: f64 },
    /// Orthogonalised polynomials of degree 1..=order.
    Polynomial { order: usize },
    /// Only the constant column.
    None,
}

impl Default for DriftModel {
    fn default() -> Self {
        DriftModel::Cosine { high_pass: 0.01 }
    }
}

/// Everything `make_first_level_design_matrix` takes besides frame times and events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DesignOptions {
    pub hrf: HrfModel,
    pub drift: DriftModel,
    /// High-resolution samples per TR for the convolution (nilearn: 50).
    pub oversampling: usize,
    /// Events starting earlier than this (relative to the first frame) are clamped (nilearn: -24 s).
    pub min_onset: f64,
}

impl Default for DesignOptions {
    fn default() -> Self {
        DesignOptions {
            hrf: HrfModel::Glover,
            drift: DriftModel::default(),
            oversampling: 50,
            min_onset: -24.0,
        }
    }
}

/// A design matrix with named columns; values are row-major (one row per volume).
#[derive(Debug, Clone, PartialEq)]
pub struct DesignMatrix {
    pub frame_times: Vec<f64>,
    pub columns: Vec<String>,
    /// `n_rows x n_cols`, row-major.
    pub values: Vec<f64>,
    /// The first `n_conditions` columns are the task regressors.
    pub n_conditions: usize,
}

impl DesignMatrix {
    pub fn n_rows(&self) -> usize {
        self.frame_times.len()
    }

    pub fn n_cols(&self) -> usize {
        self.columns.len()
    }

    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.values[row * self.n_cols() + col]
    }

    /// One column as a vector.
    pub fn column(&self, col: usize) -> Vec<f64> {
        (0..self.n_rows()).map(|r| self.get(r, col)).collect()
    }

    /// Index of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The task condition names (trial_type columns).
    pub fn conditions(&self) -> &[String] {
        &self.columns[..self.n_conditions]
    }

    /// `…_design.tsv` content (FitLins layout): a header with the column names, one row per
    /// volume, numbers in shortest round-trip form.
    pub fn to_tsv(&self) -> String {
        let mut out = self.columns.join("\t");
        out.push('\n');
        for r in 0..self.n_rows() {
            let row: Vec<String> = (0..self.n_cols())
                .map(|c| format!("{}", self.get(r, c)))
                .collect();
            out.push_str(&row.join("\t"));
            out.push('\n');
        }
        out
    }

    /// Build a design from explicit columns (for designs made elsewhere, e.g. read from TSV).
    pub fn from_columns(
        frame_times: Vec<f64>,
        columns: Vec<(String, Vec<f64>)>,
        n_conditions: usize,
    ) -> Result<Self> {
        let n = frame_times.len();
        let names: Vec<String> = columns.iter().map(|(c, _)| c.clone()).collect();
        check_unique(&names)?;
        for (name, col) in &columns {
            if col.len() != n {
                return Err(Error::ShapeMismatch {
                    name: format!("design column '{name}'"),
                    expected: vec![n],
                    found: vec![col.len()],
                    path: None,
                });
            }
        }
        let p = columns.len();
        let mut values = vec![0.0; n * p];
        for (j, (_, col)) in columns.iter().enumerate() {
            for (i, v) in col.iter().enumerate() {
                values[i * p + j] = *v;
            }
        }
        Ok(DesignMatrix {
            frame_times,
            columns: names,
            values,
            n_conditions: n_conditions.min(p),
        })
    }
}

fn check_unique(names: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(Error::AnalysisInput {
                what: "design matrix".into(),
                message: format!("column '{n}' appears twice"),
                fix: "rename the trial_type so it does not collide with 'constant' or 'drift_<k>'"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Acquisition times of the volumes as nilearn's FirstLevelModel computes them:
/// `linspace(slice_time_ref * t_r, (n - 1) * t_r + slice_time_ref * t_r, n)`.
pub fn frame_times(n_scans: usize, t_r: f64, slice_time_ref: f64) -> Vec<f64> {
    let start = slice_time_ref * t_r;
    hrf::linspace(start, (n_scans as f64 - 1.0) * t_r + start, n_scans)
}

/// nilearn `make_first_level_design_matrix(frame_times, events, hrf_model, drift_model,
/// high_pass, drift_order, min_onset, oversampling)`.
pub fn make_first_level_design_matrix(
    frame_times: &[f64],
    events: &[Event],
    opts: &DesignOptions,
) -> Result<DesignMatrix> {
    hrf::check_frame_times(frame_times)?;
    for (i, e) in events.iter().enumerate() {
        if !e.onset.is_finite() || !e.duration.is_finite() || !e.modulation.is_finite() {
            return Err(Error::AnalysisInput {
                what: format!("event {} ('{}')", i + 1, e.trial_type),
                message: "onset, duration and modulation must be finite numbers".into(),
                fix: "remove n/a rows from the events or give them numeric values".into(),
            });
        }
    }
    // np.unique sorts by code point, which is Rust's str ordering.
    let mut by_condition: BTreeMap<&str, ConditionEvents> = BTreeMap::new();
    for e in events {
        let c = by_condition.entry(e.trial_type.as_str()).or_default();
        c.onsets.push(e.onset);
        c.durations.push(e.duration);
        c.amplitudes.push(e.modulation);
    }
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for (name, cond) in &by_condition {
        let reg = hrf::compute_regressor(
            cond,
            opts.hrf,
            frame_times,
            opts.oversampling,
            opts.min_onset,
        )?;
        columns.push((name.to_string(), reg));
    }
    let n_conditions = columns.len();
    let (drift, drift_names) = make_drift(opts.drift, frame_times);
    for (name, col) in drift_names.into_iter().zip(drift) {
        columns.push((name, col));
    }
    DesignMatrix::from_columns(frame_times.to_vec(), columns, n_conditions)
}

/// nilearn `_make_drift`: columns `drift_1..drift_K` then `constant`.
fn make_drift(model: DriftModel, frame_times: &[f64]) -> (Vec<Vec<f64>>, Vec<String>) {
    let cols = match model {
        DriftModel::Cosine { high_pass } => cosine_drift(high_pass, frame_times),
        DriftModel::Polynomial { order } => poly_drift(order, frame_times),
        DriftModel::None => vec![vec![1.0; frame_times.len()]],
    };
    let mut names: Vec<String> = (1..cols.len()).map(|k| format!("drift_{k}")).collect();
    names.push("constant".into());
    (cols, names)
}

/// nilearn `signal.create_cosine_drift`: DCT-II regressors below `high_pass`, then a constant.
pub fn cosine_drift(high_pass: f64, frame_times: &[f64]) -> Vec<Vec<f64>> {
    let n = frame_times.len();
    let dt = (frame_times[n - 1] - frame_times[0]) / (n as f64 - 1.0);
    if high_pass * dt >= 0.5 {
        tracing::warn!(
            "high-pass filter {high_pass} Hz spans all accessible frequencies and saturates the design"
        );
    }
    let order = (n - 1).min((2.0 * n as f64 * high_pass * dt).floor().max(0.0) as usize);
    let normalizer = (2.0 / n as f64).sqrt();
    let mut cols = Vec::with_capacity(order + 1);
    for k in 1..=order {
        cols.push(
            (0..n)
                .map(|t| {
                    normalizer
                        * ((std::f64::consts::PI / n as f64) * (t as f64 + 0.5) * k as f64).cos()
                })
                .collect(),
        );
    }
    cols.push(vec![1.0; n]);
    cols
}

/// nilearn `_poly_drift`: (t / t_max)^k for k = 0..=order, each orthogonalised against the
/// previous ones, then the constant moved last.
pub fn poly_drift(order: usize, frame_times: &[f64]) -> Vec<Vec<f64>> {
    let tmax = frame_times
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    let mut cols: Vec<Vec<f64>> = (0..=order)
        .map(|k| {
            frame_times
                .iter()
                .map(|t| (t / tmax).powi(k as i32))
                .collect()
        })
        .collect();
    orthogonalize(&mut cols);
    let constant = cols.remove(0);
    cols.push(constant);
    cols
}

/// nilearn `orthogonalize`: each column minus its least-squares projection on the previous
/// columns (Gram-Schmidt with the projection solved exactly, as `pinv` does).
fn orthogonalize(cols: &mut [Vec<f64>]) {
    for i in 1..cols.len() {
        let n = cols[i].len();
        let prev = faer::Mat::<f64>::from_fn(n, i, |r, c| cols[c][r]);
        let x = faer::Mat::<f64>::from_fn(n, 1, |r, _| cols[i][r]);
        let Ok(svd) = prev.thin_svd() else { continue };
        let (u, s) = (svd.U(), svd.S().column_vector());
        let smax = (0..i).map(|k| s[k]).fold(0.0, f64::max);
        // Projection on the column space (components below pinv's cutoff are ignored).
        let mut proj = vec![0.0; n];
        for k in 0..i {
            if s[k] <= smax * n.max(i) as f64 * f64::EPSILON {
                continue;
            }
            let dot: f64 = (0..n).map(|r| u[(r, k)] * x[(r, 0)]).sum();
            for (r, p) in proj.iter_mut().enumerate() {
                *p += dot * u[(r, k)];
            }
        }
        for (v, p) in cols[i].iter_mut().zip(proj) {
            *v -= p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docstring_example() {
        // nilearn's make_first_level_design_matrix docstring (frame_times 0..8, 1 s events).
        let ft: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let events: Vec<Event> = (0..9)
            .map(|i| Event::new(i as f64, 1.0, format!("ET_{}", i / 3)))
            .collect();
        let dm = make_first_level_design_matrix(&ft, &events, &DesignOptions::default()).unwrap();
        assert_eq!(dm.columns, vec!["ET_0", "ET_1", "ET_2", "constant"]);
        let et0 = [0.0, 0.001, 0.022, 0.135, 0.378, 0.688, 0.910, 0.934, 0.771];
        for (r, want) in et0.iter().enumerate() {
            assert!(
                (dm.get(r, 0) - want).abs() < 5e-4,
                "row {r}: {} vs {want}",
                dm.get(r, 0)
            );
        }
        assert_eq!(dm.get(8, 1).mul_add(1000.0, 0.0).round(), 688.0);
    }

    #[test]
    fn cosine_drift_count_and_names() {
        let ft = frame_times(60, 2.0, 0.0);
        let dm = make_first_level_design_matrix(
            &ft,
            &[Event::new(0.0, 4.0, "a")],
            &DesignOptions::default(),
        )
        .unwrap();
        // order = floor(2 * 60 * 0.01 * 2) = 2
        assert_eq!(dm.columns, vec!["a", "drift_1", "drift_2", "constant"]);
        let tsv = dm.to_tsv();
        assert_eq!(tsv.lines().count(), 61);
        assert!(tsv.starts_with("a\tdrift_1\tdrift_2\tconstant\n"));
    }
}
