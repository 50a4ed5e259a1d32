//! From the model's 1 Hz rows to the run's volumes (DESIGN.md §5).
//!
//! Row j of the brain model covers stimulus time [j, j+1) s from the run's time zero and
//! estimates the BOLD signal acquired 5 s later (the training targets were shifted by
//! `FmriExtractor.offset = 5`, SPEC §4). Volume k is acquired at `t_k` (= k·TR, or
//! `VolumeTiming[k]`, plus the slice-time reference), so it takes the row position
//! `p = t_k − 5`, linearly interpolated between rows ⌊p⌋ and ⌊p⌋+1. A volume acquired less
//! than 5 s into the run has no row (the reference predicts nothing before the stimulus
//! timeline starts); it holds row 0, and past the last row it holds the last row. The sidecar
//! records this rule.
//!
//! The aligner is streaming: rows arrive one 100 s window at a time and volumes leave as soon as
//! both rows they need are known, so memory stays bounded by one window whatever the run length.

/// The hemodynamic offset the model was trained with (seconds).
pub const HEMODYNAMIC_OFFSET_S: f64 = 5.0;

/// How a volume is built from rows: `value = (1 − w)·row[lo] + w·row[hi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowBlend {
    pub lo: usize,
    pub hi: usize,
    pub w: f32,
}

/// The row blend for a volume acquired at `t` seconds, with `n_rows` rows available in total.
pub fn blend_for_time(t: f64, n_rows: usize) -> RowBlend {
    assert!(n_rows > 0, "at least one prediction row");
    let p = t - HEMODYNAMIC_OFFSET_S;
    let last = n_rows - 1;
    if p <= 0.0 {
        return RowBlend {
            lo: 0,
            hi: 0,
            w: 0.0,
        };
    }
    if p >= last as f64 {
        return RowBlend {
            lo: last,
            hi: last,
            w: 0.0,
        };
    }
    let lo = p.floor() as usize;
    let w = (p - lo as f64) as f32;
    // Exactly on a row: no interpolation partner needed (keeps exact values bit-identical).
    if w == 0.0 {
        RowBlend { lo, hi: lo, w: 0.0 }
    } else {
        RowBlend { lo, hi: lo + 1, w }
    }
}

/// The number of 1 Hz rows needed so that every volume has its own rows (no hold at the end):
/// the last volume's row position, rounded up, plus one.
pub fn rows_needed(volume_times: &[f64]) -> usize {
    volume_times
        .iter()
        .map(|t| (t - HEMODYNAMIC_OFFSET_S).max(0.0).ceil() as usize + 1)
        .max()
        .unwrap_or(0)
}

/// Streams rows in and volumes out.
pub struct VolumeAligner {
    blends: Vec<RowBlend>,
    n_outputs: usize,
    next_volume: usize,
    /// Rows kept: only those a pending volume still needs (at most one window plus one row).
    rows: std::collections::BTreeMap<usize, Vec<f32>>,
}

impl VolumeAligner {
    /// `volume_times`: acquisition time of each volume (s from the run's time zero, slice-time
    /// reference included). `n_rows`: how many rows the model will produce in total.
    pub fn new(volume_times: &[f64], n_rows: usize, n_outputs: usize) -> Self {
        let blends = volume_times
            .iter()
            .map(|&t| blend_for_time(t, n_rows))
            .collect();
        VolumeAligner {
            blends,
            n_outputs,
            next_volume: 0,
            rows: Default::default(),
        }
    }

    pub fn n_volumes(&self) -> usize {
        self.blends.len()
    }

    /// Give row `j` (length n_outputs); returns the volumes that became complete, in order, as
    /// `(volume index, values)`. Rows must arrive in increasing order.
    pub fn push_row(&mut self, j: usize, row: Vec<f32>) -> Vec<(usize, Vec<f32>)> {
        debug_assert_eq!(row.len(), self.n_outputs);
        self.rows.insert(j, row);
        let mut out = Vec::new();
        while self.next_volume < self.blends.len() {
            let b = self.blends[self.next_volume];
            let (Some(lo), Some(hi)) = (self.rows.get(&b.lo), self.rows.get(&b.hi)) else {
                break;
            };
            let v = if b.w == 0.0 {
                lo.clone()
            } else {
                lo.iter()
                    .zip(hi)
                    .map(|(a, c)| (1.0 - b.w) * a + b.w * c)
                    .collect()
            };
            out.push((self.next_volume, v));
            self.next_volume += 1;
        }
        // Drop rows no pending volume needs (volumes are in time order, so their rows only grow,
        // except with a non-monotonic VolumeTiming, where we keep everything still referenced).
        let min_needed = self.blends[self.next_volume..]
            .iter()
            .map(|b| b.lo)
            .min()
            .unwrap_or(usize::MAX);
        self.rows.retain(|&k, _| k >= min_needed);
        out
    }

    /// True once every volume has been emitted.
    pub fn is_done(&self) -> bool {
        self.next_volume == self.blends.len()
    }
}

/// The rule in words, for the sidecar.
pub const ALIGNMENT_RULE: &str = "Row j of the TRIBE v2 output covers stimulus time [j, j+1) s from the run's first volume and \
predicts BOLD acquired at j + 5 s. Volume k, acquired at t_k (k*RepetitionTime or VolumeTiming[k], plus the slice-time \
reference), is the linear interpolation of the rows at t_k - 5 s. Volumes acquired less than 5 s after the run start \
hold row 0.";

#[cfg(test)]
mod tests {
    use super::*;

    /// The e2e fixture's rule: TR 1, volume k ↔ row k − 5 exactly.
    #[test]
    fn tr1_maps_volume_k_to_row_k_minus_5() {
        for k in 5..30 {
            assert_eq!(
                blend_for_time(k as f64, 30),
                RowBlend {
                    lo: k - 5,
                    hi: k - 5,
                    w: 0.0
                }
            );
        }
        assert_eq!(
            blend_for_time(2.0, 30),
            RowBlend {
                lo: 0,
                hi: 0,
                w: 0.0
            }
        );
    }

    #[test]
    fn fractional_times_interpolate() {
        let b = blend_for_time(7.5, 30);
        assert_eq!((b.lo, b.hi), (2, 3));
        assert!((b.w - 0.5).abs() < 1e-7);
        assert_eq!(
            blend_for_time(100.0, 30),
            RowBlend {
                lo: 29,
                hi: 29,
                w: 0.0
            }
        );
    }

    #[test]
    fn streaming_matches_batch() {
        let times: Vec<f64> = (0..40).map(|k| k as f64 * 1.5 + 0.25).collect();
        let n_rows = rows_needed(&times);
        let rows: Vec<Vec<f32>> = (0..n_rows)
            .map(|j| vec![j as f32, (j * j) as f32])
            .collect();
        let mut a = VolumeAligner::new(&times, n_rows, 2);
        let mut got = Vec::new();
        for (j, r) in rows.iter().enumerate() {
            got.extend(a.push_row(j, r.clone()));
        }
        assert!(a.is_done());
        assert_eq!(got.len(), 40);
        for (k, v) in got {
            let b = blend_for_time(times[k], n_rows);
            let want = (1.0 - b.w) * rows[b.lo][1] + b.w * rows[b.hi][1];
            assert_eq!(v[1], want);
            assert!(a.rows.len() <= 2);
        }
    }
}
