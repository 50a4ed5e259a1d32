//! Cutting a run into the brain model's windows and stitching the 1 Hz predictions back into a
//! run timeline (SPEC §4).
//!
//! The reference cuts the stimulus span [S0, S_end) into non-overlapping windows of
//! `duration_trs` TRs (100 s) starting at S0, the last one running past the end. Each window is
//! an independent forward pass: no context is shared across windows, and the last window's
//! padded tail (bins after the stimulus, zero features, i.e. projector biases) is still fed to
//! the bidirectional attention and so changes the kept rows. Output row j of window k covers
//! stimulus time [S0 + kW + j*TR, +TR) and estimates the BOLD signal `data.neuro.offset` (5 s)
//! later. Rows starting at or after the stimulus end are dropped.
//!
//! Windows run one at a time and [`for_each_window`] hands each one's rows to the caller, so
//! memory is one window plus whatever the caller keeps, whatever the run length.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::features::cache::{FeatureFile, WindowSpan};
use crate::model::TribeModel;

/// Features for a whole run on the model's feature grid (2 Hz in the release).
#[derive(Debug, Clone)]
pub struct RunFeatures {
    /// Time (s) at which bin 0 starts. For results identical to the reference, windows must
    /// start on a bin edge: extract features on a grid that starts at the span start (or a
    /// multiple of the bin width before it).
    pub start: f64,
    /// Per modality name, (L, D, n_bins). A modality missing from the map is absent (zeros after
    /// projection); a present one with fewer bins than the windows need is zero-padded
    /// (silence/blank screen: projector biases), as the reference's padded tail is.
    pub modalities: HashMap<String, Tensor>,
    /// Per modality name, the same (L, D, n_bins) array still in the feature cache, read one
    /// window at a time so that memory does not grow with the run length.
    pub on_disk: HashMap<String, FeatureFile>,
}

/// The stimulus time span of a run: from the first event's start to the last event's end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StimulusSpan {
    pub start: f64,
    pub stop: f64,
}

impl StimulusSpan {
    pub fn duration(&self) -> f64 {
        self.stop - self.start
    }
}

/// The kept rows of one window.
#[derive(Debug, Clone)]
pub struct WindowRows {
    /// Window index k (0-based).
    pub index: usize,
    /// Window start time S0 + kW (s).
    pub start: f64,
    /// (n_kept, n_outputs), f32 on the CPU.
    pub rows: Tensor,
    /// Start of each row's stimulus interval (s).
    pub stimulus_times: Vec<f64>,
    /// When the BOLD signal each row predicts is acquired: stimulus time + `data.neuro.offset`.
    pub bold_times: Vec<f64>,
}

/// A whole run's predictions.
#[derive(Debug, Clone)]
pub struct RunPrediction {
    /// (n_rows, n_outputs), f32 on the CPU; rows in time order.
    pub rows: Tensor,
    pub stimulus_times: Vec<f64>,
    pub bold_times: Vec<f64>,
}

/// Window start times for a span: `n = ceil(span / W - 1e-9)` windows at S0 + kW, the
/// reference's `_prepare_strided_windows` rule (an empty span gives none).
pub fn window_starts(span: StimulusSpan, window_seconds: f64) -> Vec<f64> {
    let dur = span.duration();
    if dur.is_nan() || dur <= 0.0 || window_seconds.is_nan() || window_seconds <= 0.0 {
        return Vec::new();
    }
    let n = (dur / window_seconds - 1e-9).ceil().max(1.0) as usize;
    (0..n)
        .map(|k| span.start + k as f64 * window_seconds)
        .collect()
}

/// Bins [first, first + len) of `x` (L, D, n_bins) as (1, L, D, len), zero where `x` has no data.
fn window_slice(x: &Tensor, first: i64, len: usize) -> Result<Tensor> {
    let (l, d, n) = x.dims3()?;
    let WindowSpan {
        lo,
        taken,
        pad_front,
    } = WindowSpan::new(first, len, n);
    let w = if taken == 0 {
        Tensor::zeros((l, d, len), DType::F32, x.device())?
    } else {
        x.narrow(2, lo, taken)?
            .to_dtype(DType::F32)?
            .pad_with_zeros(2, pad_front, len - pad_front - taken)?
    };
    Ok(w.unsqueeze(0)?)
}

/// Run the model window by window over `span` and hand each window's kept rows to `sink`, in
/// time order. Memory does not grow with the run length.
pub fn for_each_window(
    model: &TribeModel,
    features: &RunFeatures,
    span: StimulusSpan,
    mut sink: impl FnMut(WindowRows) -> Result<()>,
) -> Result<()> {
    let timing = model.timing().clone();
    let n_rows = model.n_output_timesteps();
    if n_rows != timing.duration_trs {
        return Err(Error::Model {
            path: model.weights_path().to_path_buf(),
            message: format!(
                "the checkpoint predicts {n_rows} steps per window but data.duration_trs is {}; rows cannot be placed on the TR grid",
                timing.duration_trs
            ),
            fix: "use the config.yaml released with this checkpoint".into(),
        });
    }
    for (name, x) in &features.modalities {
        if x.rank() != 3 {
            return Err(Error::FeatureShape {
                modality: name.clone(),
                message: format!("run features must be (L, D, n_bins), found {:?}", x.dims()),
            });
        }
    }
    let bins = timing.window_bins();
    let freq = timing.feature_frequency;
    for (k, &start) in window_starts(span, timing.window_seconds())
        .iter()
        .enumerate()
    {
        let first = crate::util::round_half_even((start - features.start) * freq);
        let mut inputs: HashMap<String, Tensor> = features
            .modalities
            .iter()
            .map(|(m, x)| Ok((m.clone(), window_slice(x, first, bins)?)))
            .collect::<Result<_>>()?;
        for (m, f) in &features.on_disk {
            let [l, d, _] = f.shape;
            let w = Tensor::from_vec(f.window(first, bins)?, (1, l, d, bins), model.device())?;
            inputs.insert(m.clone(), w);
        }
        let out = model.forward(&inputs)?; // (1, n_outputs, n_rows)
        let stimulus_times: Vec<f64> = (0..n_rows)
            .map(|j| start + j as f64 * timing.tr_seconds)
            .take_while(|&t| t < span.stop)
            .collect();
        let rows = out
            .squeeze(0)?
            .t()?
            .narrow(0, 0, stimulus_times.len())?
            .contiguous()?
            .to_device(&Device::Cpu)?;
        let bold_times = stimulus_times
            .iter()
            .map(|t| t + timing.bold_offset)
            .collect();
        sink(WindowRows {
            index: k,
            start,
            rows,
            stimulus_times,
            bold_times,
        })?;
    }
    Ok(())
}

/// Predict a whole run: (n_rows, n_outputs) with each row's stimulus and BOLD time. The rows
/// are collected in memory (n_rows x n_outputs x 4 bytes: 295 MB for an hour at fsaverage5);
/// use [`for_each_window`] to stream instead.
pub fn predict_run(
    model: &TribeModel,
    features: &RunFeatures,
    span: StimulusSpan,
) -> Result<RunPrediction> {
    let mut rows = Vec::new();
    let mut stimulus_times = Vec::new();
    let mut bold_times = Vec::new();
    for_each_window(model, features, span, |w| {
        rows.push(w.rows);
        stimulus_times.extend(w.stimulus_times);
        bold_times.extend(w.bold_times);
        Ok(())
    })?;
    let rows = if rows.is_empty() {
        Tensor::zeros((0, model.n_outputs()), DType::F32, &Device::Cpu)?
    } else {
        Tensor::cat(&rows, 0)?
    };
    Ok(RunPrediction {
        rows,
        stimulus_times,
        bold_times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(d: f64) -> StimulusSpan {
        StimulusSpan {
            start: 0.0,
            stop: d,
        }
    }

    #[test]
    fn window_count_rule() {
        assert_eq!(window_starts(span(0.4), 100.0), vec![0.0]);
        assert_eq!(window_starts(span(99.9), 100.0).len(), 1);
        assert_eq!(window_starts(span(100.0), 100.0).len(), 1);
        assert_eq!(window_starts(span(100.1), 100.0), vec![0.0, 100.0]);
        assert_eq!(window_starts(span(3600.0), 100.0).len(), 36);
        assert!(window_starts(span(0.0), 100.0).is_empty());
        let s = StimulusSpan {
            start: 2.5,
            stop: 250.0,
        };
        assert_eq!(window_starts(s, 100.0), vec![2.5, 102.5, 202.5]);
    }

    #[test]
    fn slices_pad_with_zeros() {
        let x = Tensor::arange(0f32, 6.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 6))
            .unwrap();
        let v = |first, len| {
            window_slice(&x, first, len)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(v(0, 4), vec![0., 1., 2., 3.]);
        assert_eq!(v(4, 4), vec![4., 5., 0., 0.]);
        assert_eq!(v(-2, 4), vec![0., 0., 0., 1.]);
        assert_eq!(v(10, 3), vec![0., 0., 0.]);
    }
}
