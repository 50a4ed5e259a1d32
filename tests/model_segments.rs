//! Segmentation of a run into 100-TR windows (SPEC §4) with the release-shaped tiny checkpoint
//! (models-tiny/tribev2: 100 output steps, 200 bins per window, 20,484 outputs).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use tribe_bids::model::{ModelOptions, TribeModel};
use tribe_bids::predict::segments::{
    RunFeatures, StimulusSpan, for_each_window, predict_run, window_starts,
};

fn model() -> TribeModel {
    TribeModel::load(
        &common::fixture("models-tiny/tribev2"),
        &Device::Cpu,
        ModelOptions::default(),
    )
    .unwrap()
}

/// Deterministic features for every modality of the model, `n_bins` long.
fn features(m: &TribeModel, n_bins: usize, skip: Option<&str>) -> RunFeatures {
    let mut modalities = HashMap::new();
    for (i, f) in m.feature_dims().iter().enumerate() {
        if Some(f.name.as_str()) == skip {
            continue;
        }
        let n = f.layers * f.dim * n_bins;
        let v: Vec<f32> = (0..n)
            .map(|j| ((j * 7919 + i * 104729) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        modalities.insert(
            f.name.clone(),
            Tensor::from_vec(v, (f.layers, f.dim, n_bins), &Device::Cpu).unwrap(),
        );
    }
    RunFeatures {
        start: 0.0,
        modalities,
        on_disk: HashMap::new(),
    }
}

/// What one window of the run must be: the model on bins [first, first+200), zero-padded.
fn direct_window(m: &TribeModel, run: &RunFeatures, first: usize) -> Tensor {
    let inputs: HashMap<String, Tensor> = run
        .modalities
        .iter()
        .map(|(k, x)| {
            let n = x.dim(2).unwrap();
            let take = n.saturating_sub(first).min(200);
            let w = if take == 0 {
                Tensor::zeros(
                    (x.dim(0).unwrap(), x.dim(1).unwrap(), 200),
                    DType::F32,
                    &Device::Cpu,
                )
                .unwrap()
            } else {
                x.narrow(2, first, take)
                    .unwrap()
                    .pad_with_zeros(2, 0, 200 - take)
                    .unwrap()
            };
            (k.clone(), w.unsqueeze(0).unwrap())
        })
        .collect();
    m.forward(&inputs)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .t()
        .unwrap()
        .contiguous()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn n_bins(seconds: f64) -> usize {
    (seconds * 2.0).ceil() as usize
}

#[test]
fn row_counts_and_times_for_short_runs() {
    let m = model();
    for (secs, windows, rows) in [
        (0.4, 1, 1),
        (99.9, 1, 100),
        (100.0, 1, 100),
        (100.1, 2, 101),
    ] {
        let run = features(&m, n_bins(secs), None);
        let span = StimulusSpan {
            start: 0.0,
            stop: secs,
        };
        assert_eq!(
            window_starts(span, m.timing().window_seconds()).len(),
            windows,
            "{secs} s"
        );
        let p = predict_run(&m, &run, span).unwrap();
        assert_eq!(p.rows.dims(), &[rows, 20484], "{secs} s");
        let want: Vec<f64> = (0..rows).map(|j| j as f64).collect();
        assert_eq!(p.stimulus_times, want, "{secs} s: row j covers [j, j+1)");
        let bold: Vec<f64> = want.iter().map(|t| t + 5.0).collect();
        assert_eq!(
            p.bold_times, bold,
            "{secs} s: row j estimates BOLD at j + 5 s"
        );
        // Every kept row equals the model on that window, padded tail included.
        let w0 = direct_window(&m, &run, 0);
        assert_eq!(
            max_abs_diff(
                &p.rows.narrow(0, 0, rows.min(100)).unwrap(),
                &w0.narrow(0, 0, rows.min(100)).unwrap()
            ),
            0.0
        );
        if windows == 2 {
            let w1 = direct_window(&m, &run, 200);
            assert_eq!(
                max_abs_diff(
                    &p.rows.narrow(0, 100, 1).unwrap(),
                    &w1.narrow(0, 0, 1).unwrap()
                ),
                0.0
            );
        }
    }
}

/// The padded tail of the last window feeds attention: the 0.4 s run's only row is not what a
/// 1-bin forward (no padding) would give.
#[test]
fn padded_tail_is_fed_to_attention() {
    let m = model();
    let run = features(&m, 1, None);
    let p = predict_run(
        &m,
        &run,
        StimulusSpan {
            start: 0.0,
            stop: 0.4,
        },
    )
    .unwrap();
    let unpadded: HashMap<String, Tensor> = run
        .modalities
        .iter()
        .map(|(k, x)| (k.clone(), x.unsqueeze(0).unwrap()))
        .collect();
    // T = 1 pools to 100 copies of the single step; compare its first step with the kept row.
    let y = m
        .forward(&unpadded)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .t()
        .unwrap();
    let d = max_abs_diff(&p.rows, &y.narrow(0, 0, 1).unwrap());
    assert!(d > 1e-3, "padding must change the row (max diff {d})");
}

#[test]
fn absent_modality_stays_absent() {
    let m = model();
    let run = features(&m, 150, Some("video"));
    let p = predict_run(
        &m,
        &run,
        StimulusSpan {
            start: 0.0,
            stop: 75.0,
        },
    )
    .unwrap();
    let w = direct_window(&m, &run, 0);
    assert_eq!(p.rows.dim(0).unwrap(), 75);
    assert_eq!(max_abs_diff(&p.rows, &w.narrow(0, 0, 75).unwrap()), 0.0);
}

#[test]
fn span_not_at_zero_shifts_windows_and_times() {
    let m = model();
    // Features on a grid from 0; the stimulus starts at 10 s (bin 20) and lasts 120 s.
    let run = features(&m, 300, None);
    let span = StimulusSpan {
        start: 10.0,
        stop: 130.0,
    };
    let p = predict_run(&m, &run, span).unwrap();
    assert_eq!(p.rows.dim(0).unwrap(), 120);
    assert_eq!(p.stimulus_times[0], 10.0);
    assert_eq!(p.stimulus_times[119], 129.0);
    assert_eq!(p.bold_times[100], 115.0);
    let w1 = direct_window(&m, &run, 220);
    assert_eq!(
        max_abs_diff(
            &p.rows.narrow(0, 100, 20).unwrap(),
            &w1.narrow(0, 0, 20).unwrap()
        ),
        0.0
    );
}

/// An hour streams window by window: 36 windows, 3600 rows, times continuous; a middle window
/// equals the model on its slice.
#[test]
fn one_hour_streams_in_windows() {
    let m = model();
    let run = features(&m, n_bins(3600.0), None);
    let mut windows = 0;
    let mut rows = 0;
    let mut last_t = -1.0;
    let mut window17 = None;
    for_each_window(
        &m,
        &run,
        StimulusSpan {
            start: 0.0,
            stop: 3600.0,
        },
        |w| {
            assert_eq!(w.index, windows);
            assert_eq!(w.start, 100.0 * windows as f64);
            assert_eq!(w.rows.dims(), &[100, 20484]);
            for (t, b) in w.stimulus_times.iter().zip(&w.bold_times) {
                assert_eq!(*t, last_t + 1.0);
                assert_eq!(*b, t + 5.0);
                last_t = *t;
            }
            if w.index == 17 {
                window17 = Some(w.rows.clone());
            }
            windows += 1;
            rows += w.rows.dim(0)?;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((windows, rows), (36, 3600));
    assert_eq!(
        max_abs_diff(&window17.unwrap(), &direct_window(&m, &run, 3400)),
        0.0
    );
}

#[test]
fn bad_run_features_are_refused() {
    let m = model();
    let mut run = features(&m, 10, None);
    run.modalities.insert(
        "text".into(),
        Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = predict_run(
        &m,
        &run,
        StimulusSpan {
            start: 0.0,
            stop: 5.0,
        },
    )
    .unwrap_err();
    assert!(matches!(e, tribe_bids::Error::FeatureShape { .. }), "{e}");
    let mut run = features(&m, 10, None);
    run.modalities.insert(
        "audio".into(),
        Tensor::zeros((2, 31, 10), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = predict_run(
        &m,
        &run,
        StimulusSpan {
            start: 0.0,
            stop: 5.0,
        },
    )
    .unwrap_err();
    assert!(matches!(e, tribe_bids::Error::FeatureShape { .. }), "{e}");
    // An empty span predicts nothing.
    let p = predict_run(
        &m,
        &features(&m, 10, None),
        StimulusSpan {
            start: 3.0,
            stop: 3.0,
        },
    )
    .unwrap();
    assert_eq!(p.rows.dims(), &[0, 20484]);
}

/// The BIDS-App reads each run's features from the feature cache one window at a time
/// (`FeatureFile`); the predictions equal those from the same features in memory, bit for bit,
/// including the zero-padded last window and a span that starts before bin 0.
#[test]
fn features_read_from_the_cache_window_by_window_give_the_same_rows() {
    use tribe_bids::features::cache::{CacheKey, FeatureArray, FeatureCache};
    let m = model();
    let n = n_bins(250.3);
    let in_memory = features(&m, n, None);
    let d = tempfile::tempdir().unwrap();
    let cache = FeatureCache::new(d.path()).unwrap();
    let mut on_disk = HashMap::new();
    for (name, t) in &in_memory.modalities {
        let mut key = CacheKey::new(name);
        key.add_str("test", "segments");
        let a = FeatureArray::new(
            t.dims().to_vec(),
            t.flatten_all().unwrap().to_vec1().unwrap(),
        );
        cache.get_or_compute(&key, name, || Ok(a.clone())).unwrap();
        let f = cache.open(&key, name).unwrap().expect("just written");
        assert_eq!(f.read_all().unwrap(), a);
        on_disk.insert(name.clone(), f);
    }
    let streamed = RunFeatures {
        start: 0.0,
        modalities: HashMap::new(),
        on_disk,
    };
    for span in [
        StimulusSpan {
            start: 0.0,
            stop: 250.3,
        },
        StimulusSpan {
            start: -3.5,
            stop: 120.0,
        },
    ] {
        let a = predict_run(&m, &in_memory, span).unwrap();
        let b = predict_run(&m, &streamed, span).unwrap();
        assert_eq!(max_abs_diff(&a.rows, &b.rows), 0.0, "{span:?}");
        assert_eq!(a.bold_times, b.bold_times);
    }
}
