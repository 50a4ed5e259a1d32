//! One run, from its stimulus timeline to predicted volumes (DESIGN.md §1, §5).
//!
//! Features are computed per modality for every run of a job first, each extractor loaded only
//! when the cache misses and dropped before the next one loads, so peak memory holds one
//! foundation model, not three, and a stimulus seen by several participants is encoded once.
//! The brain model then runs window by window and volumes stream straight into the GIFTI
//! writers, so memory does not grow with run length.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::cli::bids_app::{Modality, TextContext};
use crate::error::{Error, Result};
use crate::features::cache::{CacheKey, FeatureArray, FeatureCache, FeatureFile, model_identity};
use crate::model::TribeModel;
use crate::predict::alignment::{VolumeAligner, rows_needed};
use crate::predict::segments::{RunFeatures, StimulusSpan, for_each_window};
use crate::stimulus::timeline::{MediaProbe, Timeline};

/// Feature grid frequency of the released model (2 Hz).
pub const FEATURE_HZ: f64 = 2.0;

/// Answers the timeline's media questions with FFmpeg.
pub struct FfmpegProbe;

impl MediaProbe for FfmpegProbe {
    fn duration(&self, path: &Path) -> Result<f64> {
        if crate::stimulus::video::is_image_path(path) {
            return Err(Error::Other(format!(
                "{}: an image has no duration of its own",
                path.display()
            )));
        }
        match crate::stimulus::video::video_duration(path) {
            Ok(d) => Ok(d),
            Err(_) => {
                let a = crate::stimulus::audio::decode_auto::<f32>(path, 0.0, None)?;
                Ok(a.duration_s())
            }
        }
    }
    fn has_audio(&self, path: &Path) -> Result<bool> {
        match crate::stimulus::audio::probe(path) {
            Ok(_) => Ok(true),
            Err(Error::Media {
                kind: crate::error::MediaErrorKind::NoStream,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The time span a run's predictions must cover and the volume times they are sampled at.
#[derive(Debug, Clone)]
pub struct RunSchedule {
    /// Start of the feature grid and of the first window (s from the run's time zero): 0, or
    /// earlier on the 0.5 s grid when an event starts before the first volume.
    pub start: f64,
    /// End of the span: the later of the last event's end and what the last volume needs.
    pub stop: f64,
    /// Acquisition time of each volume (s from the run's time zero).
    pub volume_times: Vec<f64>,
}

impl RunSchedule {
    pub fn new(timeline: &Timeline, volume_times: Vec<f64>) -> Self {
        let first = timeline.start();
        let start = if first.is_finite() && first < 0.0 {
            (first * FEATURE_HZ).floor() / FEATURE_HZ
        } else {
            0.0
        };
        let shifted: Vec<f64> = volume_times.iter().map(|t| t - start).collect();
        let needed = start + rows_needed(&shifted) as f64;
        let stop = timeline.end().max(needed).max(start + 1.0);
        RunSchedule {
            start,
            stop,
            volume_times,
        }
    }

    pub fn duration(&self) -> f64 {
        self.stop - self.start
    }

    /// Bins of the feature grid: whole windows of 100 s (200 bins) covering the span.
    pub fn n_bins(&self, window_seconds: f64) -> usize {
        let n_windows = (self.duration() / window_seconds - 1e-9).ceil().max(1.0) as usize;
        (n_windows as f64 * window_seconds * FEATURE_HZ).round() as usize
    }

    /// The grid duration those bins span.
    pub fn grid_duration(&self, window_seconds: f64) -> f64 {
        self.n_bins(window_seconds) as f64 / FEATURE_HZ
    }
}

/// Where each extractor's model lives and with what settings; the identity of each goes into
/// the cache key so that changing a model or a setting never reuses stale features.
pub struct Extractors {
    pub text: Option<PathBuf>,
    pub audio: Option<PathBuf>,
    pub video: Option<PathBuf>,
    pub text_context: TextContext,
    pub device: Device,
    identities: HashMap<Modality, String>,
    loaded_text: Option<crate::features::text::TextExtractor>,
    loaded_audio: Option<crate::features::audio::AudioExtractor>,
    loaded_video: Option<crate::features::video::VideoExtractor>,
}

impl Extractors {
    pub fn new(
        text: Option<PathBuf>,
        audio: Option<PathBuf>,
        video: Option<PathBuf>,
        text_context: TextContext,
        device: Device,
    ) -> Result<Self> {
        let mut identities = HashMap::new();
        for (m, p) in [
            (Modality::Text, &text),
            (Modality::Audio, &audio),
            (Modality::Video, &video),
        ] {
            if let Some(p) = p {
                identities.insert(m, model_identity(p)?);
            }
        }
        Ok(Extractors {
            text,
            audio,
            video,
            text_context,
            device,
            identities,
            loaded_text: None,
            loaded_audio: None,
            loaded_video: None,
        })
    }

    pub fn identity(&self, m: Modality) -> Option<&str> {
        self.identities.get(&m).map(String::as_str)
    }

    /// Drop every loaded model (before the next modality's model loads).
    pub fn unload(&mut self) {
        self.loaded_text = None;
        self.loaded_audio = None;
        self.loaded_video = None;
    }

    fn model_dir(&self, m: Modality) -> Result<&Path> {
        let p = match m {
            Modality::Text => &self.text,
            Modality::Audio => &self.audio,
            Modality::Video => &self.video,
        };
        p.as_deref().ok_or_else(|| Error::Model {
            path: PathBuf::from("--models-dir"),
            message: format!("the run needs {} features but no {} model was found", m.name(), m.name()),
            fix: "add the model folder to the models directory, or drop the modality with --modalities".into(),
        })
    }

    /// The cache key of one modality's features for one run schedule.
    pub fn cache_key(
        &self,
        m: Modality,
        timeline: &Timeline,
        sched: &RunSchedule,
        window_seconds: f64,
    ) -> Result<CacheKey> {
        let mut k = CacheKey::new(m.name());
        k.add_str("tribe-bids-features", "1");
        k.add_str("model", self.identity(m).unwrap_or("none"));
        k.add_f64("grid-start", sched.start)
            .add_f64("grid-duration", sched.grid_duration(window_seconds));
        match m {
            Modality::Text => {
                k.add_str(
                    "context",
                    if self.text_context == TextContext::Exact {
                        "exact"
                    } else {
                        "fast"
                    },
                );
                for w in &timeline.words {
                    k.add_f64("onset", w.onset)
                        .add_f64("duration", w.duration)
                        .add_str("word", &w.text);
                }
            }
            Modality::Audio => {
                for s in &timeline.audio {
                    k.add_file("file", &s.path)?;
                    k.add_f64("onset", s.onset).add_f64("duration", s.duration);
                }
            }
            Modality::Video => {
                for s in &timeline.visual {
                    k.add_file("file", &s.path)?;
                    k.add_f64("onset", s.onset)
                        .add_f64("duration", s.duration)
                        .add_str("still", if s.still { "1" } else { "0" });
                }
            }
        }
        Ok(k)
    }

    /// Compute one modality's (L, D, n_bins) features on the run grid (no cache).
    pub fn compute(
        &mut self,
        m: Modality,
        timeline: &Timeline,
        sched: &RunSchedule,
        window_seconds: f64,
    ) -> Result<FeatureArray> {
        let (start, duration) = (sched.start, sched.grid_duration(window_seconds));
        let device = self.device.clone();
        match m {
            Modality::Text => {
                if self.loaded_text.is_none() {
                    let dir = self.model_dir(m)?.to_path_buf();
                    tracing::info!("loading the text model {}", dir.display());
                    let opts = crate::features::text::TextOptions {
                        context: match self.text_context {
                            TextContext::Exact => crate::features::text::ContextMode::Exact,
                            TextContext::Fast => crate::features::text::ContextMode::Fast,
                        },
                        ..Default::default()
                    };
                    self.loaded_text = Some(crate::features::text::TextExtractor::load(
                        &dir, &device, opts,
                    )?);
                }
                let ex = self.loaded_text.as_ref().expect("loaded above");
                let words: Vec<crate::stimulus::words::Word> = timeline
                    .words
                    .iter()
                    .map(|w| crate::stimulus::words::Word::new(w.onset, w.duration, w.text.clone()))
                    .collect();
                let a = ex.features(&words, start, duration)?;
                let shape = a.shape().to_vec();
                Ok(FeatureArray::new(shape, a.iter().copied().collect()))
            }
            Modality::Audio => {
                if self.loaded_audio.is_none() {
                    let dir = self.model_dir(m)?.to_path_buf();
                    tracing::info!("loading the audio model {}", dir.display());
                    self.loaded_audio =
                        Some(crate::features::audio::AudioExtractor::load(&dir, &device)?);
                }
                let ex = self.loaded_audio.as_ref().expect("loaded above");
                let mut chunks = Vec::new();
                for s in &timeline.audio {
                    crate::cli::interrupt::check()?;
                    // The reference reads the whole sound (its Audio event lasts as long as the
                    // decoded file); an events.tsv duration only cuts it when it is clearly shorter
                    // (more than half a feature bin), so container rounding never changes features.
                    let full = crate::stimulus::audio::decode_auto::<f32>(&s.path, 0.0, None)?;
                    let audio = if s.duration < full.duration_s() - 0.5 / FEATURE_HZ {
                        full.slice_seconds(0.0, Some(s.duration))
                    } else {
                        full
                    };
                    chunks.extend(ex.event_features(&audio, s.onset)?);
                }
                let w = crate::features::audio::window(
                    &chunks,
                    ex.n_layers(),
                    ex.dim(),
                    start,
                    duration,
                );
                Ok(FeatureArray::new(vec![w.n_layers, w.dim, w.n_bins], w.data))
            }
            Modality::Video => {
                if self.loaded_video.is_none() {
                    let dir = self.model_dir(m)?.to_path_buf();
                    tracing::info!("loading the video model {}", dir.display());
                    self.loaded_video = Some(crate::features::video::VideoExtractor::load(
                        &dir,
                        &device,
                        crate::features::video::VideoOptions::default(),
                    )?);
                }
                let ex = self.loaded_video.as_ref().expect("loaded above");
                use crate::stimulus::video::{FrameSource, Visual, VisualEvent};
                let events: Vec<VisualEvent> = timeline
                    .visual
                    .iter()
                    .map(|s| VisualEvent {
                        start: s.onset,
                        duration: Some(s.duration),
                        visual: if s.still {
                            Visual::Image {
                                path: s.path.clone(),
                            }
                        } else {
                            Visual::Video {
                                path: s.path.clone(),
                                offset: 0.0,
                            }
                        },
                    })
                    .collect();
                // Blank screen only between events: after the last one the reference has no
                // video event, so those bins stay zero.
                let source = FrameSource::timeline(events, None);
                let f = ex.extract(&source, start, duration)?;
                let shape = f.features.dims().to_vec();
                let data = f.features.flatten_all()?.to_vec1::<f32>()?;
                Ok(FeatureArray::new(shape, data))
            }
        }
    }

    /// Cached features of one modality for one run.
    /// Features that the extraction pass already put in the cache, opened to be read window by
    /// window. Needs no model and no `&mut`, so the brain-model stage can read them from several
    /// participants' threads at once.
    pub fn cached(
        &self,
        cache: &FeatureCache,
        m: Modality,
        timeline: &Timeline,
        sched: &RunSchedule,
        window_seconds: f64,
        label: &str,
    ) -> Result<FeatureFile> {
        let key = self.cache_key(m, timeline, sched, window_seconds)?;
        cache
            .open(&key, &format!("{} {label}", m.name()))?
            .ok_or_else(|| Error::Other(format!(
                "the {} features of {label} are not in the feature cache {} although they were just extracted; \
                 was the work directory cleaned while the job ran? Rerun the job.",
                m.name(),
                cache.entry_path(&key).display()
            )))
    }

    pub fn features(
        &mut self,
        cache: &FeatureCache,
        m: Modality,
        timeline: &Timeline,
        sched: &RunSchedule,
        window_seconds: f64,
        label: &str,
    ) -> Result<FeatureArray> {
        let key = self.cache_key(m, timeline, sched, window_seconds)?;
        cache.get_or_compute(&key, &format!("{} {label}", m.name()), || {
            self.compute(m, timeline, sched, window_seconds)
        })
    }
}

/// Whether a run's timeline has anything for a modality (absent modalities get zeros after
/// projection in the model, SPEC §1.2).
pub fn timeline_has(timeline: &Timeline, m: Modality) -> bool {
    match m {
        Modality::Text => !timeline.words.is_empty(),
        Modality::Audio => !timeline.audio.is_empty(),
        Modality::Video => !timeline.visual.is_empty(),
    }
}

/// Check extracted features against what the brain model was trained on.
pub fn check_feature_dims(model: &TribeModel, m: Modality, a: &FeatureArray) -> Result<()> {
    let shape = &a.shape;
    let Some(fd) = model.feature_dims().iter().find(|f| f.name == m.name()) else {
        return Err(Error::FeatureShape {
            modality: m.name().into(),
            message: "the brain model has no input for this modality".into(),
        });
    };
    if shape.len() != 3 || shape[0] != fd.layers || shape[1] != fd.dim {
        return Err(Error::FeatureShape {
            modality: m.name().into(),
            message: format!(
                "the extractor gives (L, D) = ({}, {}) but the brain model expects ({}, {}): the models folder mixes model sizes",
                shape.first().copied().unwrap_or(0),
                shape.get(1).copied().unwrap_or(0),
                fd.layers,
                fd.dim
            ),
        });
    }
    Ok(())
}

/// A run's features for [`predict_volumes`]: arrays in memory, or cache entries read one window
/// at a time (what the BIDS-App uses, so hour-long runs cost no more memory than short ones).
pub enum RunInputs {
    Memory(HashMap<String, FeatureArray>),
    Files(HashMap<String, FeatureFile>),
}

impl From<HashMap<String, FeatureArray>> for RunInputs {
    fn from(m: HashMap<String, FeatureArray>) -> Self {
        RunInputs::Memory(m)
    }
}

impl From<HashMap<String, FeatureFile>> for RunInputs {
    fn from(m: HashMap<String, FeatureFile>) -> Self {
        RunInputs::Files(m)
    }
}

/// Run the brain model over a run and stream its volumes to `sink(volume_index, values)`.
pub fn predict_volumes(
    model: &TribeModel,
    features: impl Into<RunInputs>,
    sched: &RunSchedule,
    mut sink: impl FnMut(usize, Vec<f32>) -> Result<()>,
) -> Result<()> {
    let mut modalities = HashMap::new();
    let mut on_disk = HashMap::new();
    match features.into() {
        RunInputs::Memory(arrays) => {
            for (name, a) in arrays {
                modalities.insert(
                    name,
                    Tensor::from_vec(a.data, a.shape.as_slice(), model.device())?,
                );
            }
        }
        RunInputs::Files(files) => on_disk = files,
    }
    let run_features = RunFeatures {
        start: sched.start,
        modalities,
        on_disk,
    };
    let span = StimulusSpan {
        start: sched.start,
        stop: sched.stop,
    };
    let shifted: Vec<f64> = sched.volume_times.iter().map(|t| t - sched.start).collect();
    let tr = model.timing().tr_seconds;
    let n_rows = ((sched.stop - sched.start) / tr - 1e-9).ceil().max(1.0) as usize;
    let mut aligner = VolumeAligner::new(&shifted, n_rows, model.n_outputs());
    let mut next_row = 0usize;
    for_each_window(model, &run_features, span, |w| {
        crate::cli::interrupt::check()?;
        let rows: Vec<Vec<f32>> = w.rows.to_vec2::<f32>()?;
        for r in rows {
            for (k, v) in aligner.push_row(next_row, r) {
                sink(k, v)?;
            }
            next_row += 1;
        }
        Ok(())
    })?;
    if !aligner.is_done() {
        return Err(Error::Other(format!(
            "internal: {} of {} volumes aligned after {next_row} rows",
            aligner.n_volumes().min(next_row),
            aligner.n_volumes()
        )));
    }
    Ok(())
}
