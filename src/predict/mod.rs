//! From features to predicted BOLD: 100 s segments and alignment to the acquisition.

pub mod overlap;
pub mod segments;

use crate::cli::toolbox::PredictArgs;
use crate::error::{Error, Result};

/// `tribe predict`: one stimulus file to fsaverage5 GIFTI. Row j of the output covers stimulus
/// time [j, j+1) s and predicts the BOLD signal 5 s later, as the reference's `predict` returns
/// (no acquisition to align to); each file is written with TR 1 s.
pub fn predict_cli(args: &PredictArgs) -> Result<()> {
    use crate::cli::bids_app::{DeviceChoice, Modality, TextContext};
    use crate::stimulus::timeline::{StimEvent, Timeline};
    let (path, kind) = match (&args.video, &args.audio, &args.words) {
        (Some(v), None, None) => (v.clone(), "video"),
        (None, Some(a), None) => (a.clone(), "audio"),
        (None, None, Some(w)) => (w.clone(), "words"),
        _ => {
            return Err(Error::Usage(
                "tribe predict: give exactly one of --video, --audio, --words".into(),
            ));
        }
    };
    if !path.is_file() {
        return Err(Error::InputMissing {
            path: path.clone(),
            what: "the stimulus file".into(),
            fix: "check the path".into(),
        });
    }
    let models_dir = args.models_dir.clone().ok_or_else(|| {
        Error::Usage("tribe predict: give --models-dir (or set TRIBE_MODELS_DIR)".into())
    })?;
    let models = crate::model::models_dir::resolve(&models_dir, &[])?;
    let device = DeviceChoice::parse(&args.device)?.to_device()?;
    let model = crate::model::TribeModel::load(&models.brain, &device, Default::default())?;
    let event = StimEvent {
        onset: 0.0,
        duration: None,
        trial_type: None,
        stim_file: Some(path.clone()),
        word: None,
        source: path.clone(),
        line: 0,
    };
    let timeline = Timeline::from_events(&[event], &run::FfmpegProbe)?;
    let n_rows = (timeline.end() - 1e-9).ceil().max(1.0) as usize;
    let times: Vec<f64> = (0..n_rows)
        .map(|j| j as f64 + alignment::HEMODYNAMIC_OFFSET_S)
        .collect();
    let sched = run::RunSchedule::new(&timeline, times);
    let mut ex = run::Extractors::new(
        models.text,
        models.audio,
        models.video,
        TextContext::Exact,
        device,
    )?;
    let work = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let cache = crate::features::cache::FeatureCache::new(work.path())?;
    let window_s = model.timing().window_seconds();
    let mut feats = std::collections::HashMap::new();
    for m in Modality::ALL {
        if run::timeline_has(&timeline, m) {
            let a = ex.features(&cache, m, &timeline, &sched, window_s, kind)?;
            run::check_feature_dims(&model, m, &a)?;
            feats.insert(m.name().to_string(), a);
            ex.unload();
        }
    }
    let half = model.n_outputs() / 2;
    let mut data = Vec::with_capacity(n_rows * model.n_outputs());
    run::predict_volumes(&model, feats, &sched, |_, v| {
        data.extend_from_slice(&v);
        Ok(())
    })?;
    let opts = crate::formats::TimeSeriesOptions::new(1.0);
    for (hemi, h, range) in [
        ("L", crate::formats::Hemisphere::Left, 0..half),
        ("R", crate::formats::Hemisphere::Right, half..2 * half),
    ] {
        let rows: Vec<f32> = data
            .chunks_exact(2 * half)
            .flat_map(|r| r[range.clone()].to_vec())
            .collect();
        let out = std::path::PathBuf::from(format!("{}_hemi-{hemi}.func.gii", args.out.display()));
        crate::formats::write_gifti_time_series(&out, h, half, &rows, &opts)?;
        tracing::info!("wrote {} ({n_rows} rows)", out.display());
    }
    Ok(())
}

pub mod alignment;
pub mod run;
pub mod subcortical;
