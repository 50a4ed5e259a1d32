//! TRIBE audio features on the 2 Hz grid: neuralset's `Wav2VecBert` extractor (SPEC §5.0, §5.1, §5.4).
//!
//! Per Audio event: cut into chunks at 60 s with a 30 s minimum (each chunk is read from its own
//! offset and processed independently: its own resampling edges, normalisation, CMVN and attention
//! context); per chunk, resample every channel to 16 kHz (julius), average the channels, z-score,
//! SeamlessM4T filterbank, Wav2Vec2-BERT with every hidden state, nearest-neighbour pick of
//! `round(2·duration)` frames (float32 index arithmetic as torch), and the group means over the
//! hidden states at fractions [0.5, 0.75, 1.0] (no layer subselection for audio). Chunk k is a
//! 2 Hz time series starting at `event start + offset_k`; a window `[S, S+D)` is filled with
//! neuralset's `TimedArray` overlap rules (Python rounding, clamped slices, sums).
//!
//! Library entry points for the pipeline:
//! - [`AudioExtractor::load`] once per model;
//! - [`AudioExtractor::event_features`] for one decoded (or already mixed and placed) waveform
//!   that starts at a given time on the run's timeline: returns its chunks as [`TimedFeatures`];
//! - [`window`] to cut any set of [`TimedFeatures`] to a segment `[S, S+D)` as `(L, D, n_bins)`;
//! - [`AudioExtractor::features_for_file`] = decode + `event_features` + `window`, what
//!   `tribe features audio` writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};
use crate::features::fbank::{Fbank, FbankConfig, InputFeatures};
use crate::features::layers::{DEFAULT_FRACTIONS, hidden_state_groups};
use crate::features::resample::ResampleFrac;
use crate::features::torch_ops::{REFERENCE_THREADS, mean_f32, std_f32, sum_f32};
use crate::features::w2vbert::W2vBert;
use crate::stimulus::audio::{AudioBuffer, decode_auto};
use crate::stimulus::chunks::{MAX_CHUNK_S, MIN_CHUNK_S, chunk};
use crate::util::round_half_even;

/// The feature grid (SPEC §5.1).
pub const FREQUENCY: f64 = 2.0;
/// The model's input rate.
const MODEL_RATE: u32 = 16000;

/// `Frequency.to_ind`: `int(round(2·x))`, half to even.
fn to_ind(seconds: f64) -> i64 {
    round_half_even(seconds * FREQUENCY)
}

/// `Frequency.to_sec`.
fn to_sec(ind: i64) -> f64 {
    ind as f64 / FREQUENCY
}

/// A 2 Hz time series of feature vectors (neuralset `TimedArray` with frequency 2): `rows`
/// vectors (layers × hidden, flattened) over `n_bins` bins starting at `start` seconds, stored
/// row-major as `(rows, n_bins)` — i.e. `(L, D, n_bins)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFeatures {
    pub start: f64,
    pub n_layers: usize,
    pub dim: usize,
    pub n_bins: usize,
    pub data: Vec<f32>,
}

impl TimedFeatures {
    fn zeros(start: f64, n_layers: usize, dim: usize, n_bins: usize) -> Self {
        TimedFeatures {
            start,
            n_layers,
            dim,
            n_bins,
            data: vec![0.0; n_layers * dim * n_bins],
        }
    }

    fn rows(&self) -> usize {
        self.n_layers * self.dim
    }

    /// `TimedArray.duration` = `to_sec(n_bins)`.
    pub fn duration(&self) -> f64 {
        to_sec(self.n_bins as i64)
    }

    /// `TimedArray._overlap_slice(start, duration)`: the bins of `self` overlapping
    /// `[start, start + duration)`, as (new start, new duration, first bin, bin count).
    fn overlap_slice(&self, start: f64, duration: f64) -> Option<(f64, f64, usize, usize)> {
        let ov_start = start.max(self.start);
        let ov_stop = (start + duration).min(self.start + self.duration());
        if ov_stop < ov_start {
            return None;
        }
        if ov_stop == ov_start && self.duration() != 0.0 && duration != 0.0 {
            return None;
        }
        if self.duration() == 0.0 {
            return None;
        }
        let mut start_ind = to_ind(ov_start - self.start);
        let dur_ind = to_ind(ov_stop - ov_start).max(1);
        let tps = self.n_bins as i64;
        if start_ind > tps - dur_ind {
            start_ind = tps - dur_ind;
        }
        if start_ind < 0 {
            return None;
        }
        Some((
            to_sec(start_ind) + self.start,
            to_sec(dur_ind),
            start_ind as usize,
            dur_ind as usize,
        ))
    }

    /// `TimedArray.overlap(start, duration)`.
    pub fn overlap(&self, start: f64, duration: f64) -> TimedFeatures {
        match self.overlap_slice(start, duration) {
            Some((s, _, i0, n)) => {
                let mut out = TimedFeatures::zeros(s, self.n_layers, self.dim, n);
                for r in 0..self.rows() {
                    out.data[r * n..(r + 1) * n].copy_from_slice(
                        &self.data[r * self.n_bins + i0..r * self.n_bins + i0 + n],
                    );
                }
                out
            }
            None => TimedFeatures::zeros(start.min(self.start), self.n_layers, self.dim, 0),
        }
    }

    /// `self += other` (`TimedArray.__iadd__`, aggregation "sum").
    fn add(&mut self, other: &TimedFeatures) {
        let (Some(a), Some(b)) = (
            self.overlap_slice(other.start, other.duration()),
            other.overlap_slice(self.start, self.duration()),
        ) else {
            return;
        };
        let n = a.3.min(b.3);
        for r in 0..self.rows() {
            for k in 0..n {
                self.data[r * self.n_bins + a.2 + k] += other.data[r * other.n_bins + b.2 + k];
            }
        }
    }
}

/// The features of `[start, start + duration)` on the 2 Hz grid, `(n_layers, dim, n_bins)` with
/// `n_bins = max(1, round(2·duration))`: each chunk is overlapped with the window then summed in,
/// as neuralset's extractor call does; bins no chunk reaches stay 0.
pub fn window(
    chunks: &[TimedFeatures],
    n_layers: usize,
    dim: usize,
    start: f64,
    duration: f64,
) -> TimedFeatures {
    let n = to_ind(duration).max(1) as usize;
    let mut seg = TimedFeatures::zeros(start, n_layers, dim, n);
    for c in chunks {
        let sub = c.overlap(start, duration);
        seg.add(&sub);
    }
    seg
}

/// torch `F.interpolate(mode="nearest")` source index for each of `n_out` outputs from `n_in`
/// frames, with the scale and product in float32 as ATen computes them (SPEC §5.4 step 6).
pub fn nearest_indices(n_in: usize, n_out: usize) -> Vec<usize> {
    if n_in == n_out {
        return (0..n_out).collect();
    }
    if n_out == 2 * n_in {
        return (0..n_out).map(|i| i >> 1).collect();
    }
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|i| ((i as f32 * scale).floor() as usize).min(n_in - 1))
        .collect()
}

/// The resampling, mono mix and z-scoring of SPEC §5.4 steps 2–3, in the reference's float32
/// arithmetic (see `torch_ops` for why the rounding matters): the 16 kHz waveform the filterbank
/// receives.
pub fn preprocess_waveform(channels: &[Vec<f32>], resampler: &ResampleFrac) -> Result<Vec<f32>> {
    if channels.is_empty() || channels[0].len() < 2 {
        return Err(Error::FeatureShape {
            modality: "audio".into(),
            message: "fewer than 2 samples to extract features from".into(),
        });
    }
    let resampled: Vec<Vec<f32>> = channels.par_iter().map(|c| resampler.apply(c)).collect();
    Ok(z_score(&mono_mean(&resampled)))
}

/// `torch.mean(wav, dim=1)` over channels: a float32 sum in torch's order, divided by the count.
pub fn mono_mean(channels: &[Vec<f32>]) -> Vec<f32> {
    let c = channels.len();
    let n = channels.first().map_or(0, |ch| ch.len());
    match c {
        1 => channels[0].clone(),
        // Below 4 values torch's row sum is a plain running sum from 0.
        2 | 3 => (0..n)
            .map(|i| channels.iter().fold(0f32, |s, ch| s + ch[i]) / c as f32)
            .collect(),
        _ => {
            let mut frame = vec![0f32; c];
            (0..n)
                .map(|i| {
                    for (f, ch) in frame.iter_mut().zip(channels) {
                        *f = ch[i];
                    }
                    sum_f32(&frame, 1) / c as f32
                })
                .collect()
        }
    }
}

/// `(wav - wav.mean()) / (1e-8 + wav.std())` (torch, unbiased std), float32 as torch computes it.
pub fn z_score(x: &[f32]) -> Vec<f32> {
    let m = mean_f32(x, REFERENCE_THREADS);
    let s = std_f32(x, m);
    let denom = 1e-8f32 + s;
    x.iter().map(|v| (v - m) / denom).collect()
}

/// Builds `(L, D, n_bins)` 2 Hz features from hidden states as they are produced: picks the
/// nearest frame for each bin (SPEC §5.4 step 6) and averages each layer group in float32, in
/// layer order, as numpy's `latents[a:b].mean(0)` does (step 7).
pub struct GroupAccumulator<'a> {
    groups: &'a [Vec<usize>],
    picks: Tensor,
    n_bins: usize,
    dim: usize,
    /// Per group, the running sum of picked frames, `(n_bins, dim)`.
    sums: Vec<Option<Vec<f32>>>,
}

impl<'a> GroupAccumulator<'a> {
    pub fn new(
        groups: &'a [Vec<usize>],
        picks: Vec<usize>,
        dim: usize,
        device: &Device,
    ) -> Result<Self> {
        let n_bins = picks.len();
        let picks = Tensor::from_vec(
            picks.into_iter().map(|p| p as u32).collect::<Vec<_>>(),
            n_bins,
            device,
        )?;
        Ok(GroupAccumulator {
            groups,
            picks,
            n_bins,
            dim,
            sums: vec![None; groups.len()],
        })
    }

    /// Hidden state `i`, `(frames, dim)`.
    pub fn add(&mut self, i: usize, h: &Tensor) -> Result<()> {
        let Some(g) = self.groups.iter().position(|g| g.contains(&i)) else {
            return Ok(());
        };
        let picked = h
            .index_select(&self.picks, 0)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        match &mut self.sums[g] {
            Some(s) => s.iter_mut().zip(&picked).for_each(|(a, b)| *a += b),
            slot @ None => *slot = Some(picked),
        }
        Ok(())
    }

    pub fn finish(self) -> Result<TimedFeatures> {
        let (n_bins, dim) = (self.n_bins, self.dim);
        let mut out = TimedFeatures::zeros(0.0, self.groups.len(), dim, n_bins);
        for (g, sum) in self.sums.into_iter().enumerate() {
            let sum = sum
                .ok_or_else(|| Error::Other(format!("layer group {g} received no hidden state")))?;
            let count = self.groups[g].len() as f32;
            for k in 0..n_bins {
                for d in 0..dim {
                    out.data[(g * dim + d) * n_bins + k] = sum[k * dim + d] / count;
                }
            }
        }
        Ok(out)
    }
}

/// Everything needed to turn audio into TRIBE audio features.
pub struct AudioExtractor {
    model: W2vBert,
    fbank: Fbank,
    groups: Vec<Vec<usize>>,
    resamplers: Mutex<HashMap<u32, Arc<ResampleFrac>>>,
}

impl AudioExtractor {
    /// Load a Wav2Vec2-BERT HF folder (`config.json`, `model.safetensors`, `preprocessor_config.json`).
    pub fn load(model_dir: &Path, device: &Device) -> Result<Self> {
        if !model_dir.is_dir() {
            return Err(Error::InputMissing {
                path: model_dir.to_path_buf(),
                what: "Wav2Vec2-BERT model folder".into(),
                fix: "download facebook/w2v-bert-2.0 into your models directory (see README)"
                    .into(),
            });
        }
        let pre = model_dir.join("preprocessor_config.json");
        let fbank_cfg = if pre.exists() {
            FbankConfig::from_file(&pre)?
        } else {
            return Err(Error::Model {
                path: pre,
                message: "preprocessor_config.json is missing: it holds the filterbank settings"
                    .into(),
                fix: "copy it from facebook/w2v-bert-2.0 next to config.json".into(),
            });
        };
        let model = W2vBert::load(model_dir, device)?;
        let n_states = model.config().n_hidden_states();
        let groups = hidden_state_groups(n_states, None, &DEFAULT_FRACTIONS);
        if groups.is_empty() {
            return Err(Error::Model {
                path: model_dir.to_path_buf(),
                message: format!(
                    "{n_states} hidden states give no layer group at fractions {DEFAULT_FRACTIONS:?}"
                ),
                fix: "use a model with at least 3 hidden states".into(),
            });
        }
        if fbank_cfg.num_mel_bins * fbank_cfg.stride != model.config().feature_projection_input_dim
        {
            return Err(Error::Model {
                path: model_dir.to_path_buf(),
                message: format!(
                    "the filterbank gives {}×{} features but the model expects {}",
                    fbank_cfg.num_mel_bins,
                    fbank_cfg.stride,
                    model.config().feature_projection_input_dim
                ),
                fix: "config.json and preprocessor_config.json must come from the same model"
                    .into(),
            });
        }
        Ok(AudioExtractor {
            model,
            fbank: Fbank::new(fbank_cfg),
            groups,
            resamplers: Mutex::new(HashMap::new()),
        })
    }

    pub fn model(&self) -> &W2vBert {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut W2vBert {
        &mut self.model
    }

    pub fn fbank(&self) -> &Fbank {
        &self.fbank
    }

    /// The hidden-state indices averaged into each output layer (`{12..17}`, `{18..24}` for w2v-bert-2.0).
    pub fn layer_groups(&self) -> &[Vec<usize>] {
        &self.groups
    }

    /// L of the `(L, D, n_bins)` output.
    pub fn n_layers(&self) -> usize {
        self.groups.len()
    }

    /// D of the `(L, D, n_bins)` output.
    pub fn dim(&self) -> usize {
        self.model.config().hidden_size
    }

    fn resampler(&self, rate: u32) -> Arc<ResampleFrac> {
        let mut map = self.resamplers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(rate)
            .or_insert_with(|| Arc::new(ResampleFrac::new(rate, MODEL_RATE)))
            .clone()
    }

    /// SPEC §5.4 steps 2–3 for one chunk: the normalised 16 kHz mono waveform.
    pub fn preprocess(&self, channels: &[Vec<f32>], sample_rate: u32) -> Result<Vec<f32>> {
        preprocess_waveform(channels, &self.resampler(sample_rate))
    }

    /// SPEC §5.4 step 4: `(T', 160)` input features.
    pub fn input_features(&self, wav16k: &[f32]) -> Result<InputFeatures> {
        self.fbank.features(wav16k)
    }

    /// The features of one chunk as the reference computes them for one Audio event of
    /// `duration_s` seconds read at `sample_rate`: `(L, D, round(2·duration))`, starting at 0.
    pub fn chunk_features(
        &self,
        channels: &[Vec<f32>],
        sample_rate: u32,
        duration_s: f64,
    ) -> Result<TimedFeatures> {
        let n_bins = to_ind(duration_s);
        if n_bins <= 0 {
            return Err(Error::FeatureShape {
                modality: "audio".into(),
                message: format!(
                    "an audio chunk of {duration_s:.3} s has no 0.5 s bin (the reference cannot extract it either)"
                ),
            });
        }
        let n_bins = n_bins as usize;
        let wav = self.preprocess(channels, sample_rate)?;
        let feats = self.input_features(&wav)?;
        let x = Tensor::from_vec(feats.data, (feats.n_frames, feats.dim), &Device::Cpu)?;
        let mut acc = GroupAccumulator::new(
            &self.groups,
            nearest_indices(feats.n_frames, n_bins),
            self.dim(),
            self.model.device(),
        )?;
        self.model.forward_each(&x, |i, h| acc.add(i, h))?;
        acc.finish()
    }

    /// One Audio event that starts at `start_s` on the timeline: chunk it at 60 s (30 s minimum),
    /// read each chunk's frames `[round(sr·offset), +round(sr·duration))` and extract it
    /// independently. The waveform may be a single decoded file or several events already mixed
    /// and placed on a run's timeline (see `stimulus::audio::mix_onto_timeline`).
    pub fn event_features(
        &self,
        audio: &AudioBuffer<f32>,
        start_s: f64,
    ) -> Result<Vec<TimedFeatures>> {
        let duration = audio.duration_s();
        chunk(duration, MAX_CHUNK_S, MIN_CHUNK_S)
            .into_iter()
            .map(|c| {
                tracing::debug!(offset = c.offset, duration = c.duration, "audio chunk");
                let piece = audio.slice_seconds(c.offset, Some(c.duration));
                let mut f = self.chunk_features(&piece.channels, audio.sample_rate, c.duration)?;
                f.start = start_s + c.offset;
                Ok(f)
            })
            .collect()
    }

    /// `(L, D, n_bins)` features of `[start_s, start_s + duration_s)` of a waveform that starts at
    /// time 0 (the audio track of one stimulus, or a whole run's mixed track).
    pub fn features_for_samples(
        &self,
        audio: &AudioBuffer<f32>,
        start_s: f64,
        duration_s: f64,
    ) -> Result<TimedFeatures> {
        let chunks = self.event_features(audio, 0.0)?;
        Ok(window(
            &chunks,
            self.n_layers(),
            self.dim(),
            start_s,
            duration_s,
        ))
    }

    /// `(L, D, n_bins)` features of `[start_s, start_s + duration_s)` of a media file whose sound
    /// starts at time 0 (to its end when `duration_s` is `None`), read as the reference would
    /// (moviepy's wav for a video, soundfile otherwise).
    pub fn features_for_file(
        &self,
        path: &Path,
        start_s: f64,
        duration_s: Option<f64>,
    ) -> Result<TimedFeatures> {
        let audio = decode_auto::<f32>(path, 0.0, None)?;
        let duration = duration_s.unwrap_or(audio.duration_s() - start_s);
        if duration.is_nan() || duration <= 0.0 {
            return Err(Error::Usage(format!(
                "{}: the window starts at {start_s} s but the audio lasts {:.3} s: give --start inside the stimulus or a positive --duration",
                path.display(),
                audio.duration_s()
            )));
        }
        self.features_for_samples(&audio, start_s, duration)
    }
}

/// `cpu`, `cuda`, `cuda:N` or `auto`.
fn parse_device(s: &str) -> Result<Device> {
    let bad = |e: candle_core::Error| {
        Error::Usage(format!(
            "--device {s}: {e} (this build may lack CUDA; use --device cpu)"
        ))
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Device::cuda_if_available(0).map_err(bad),
        "cuda" => Device::new_cuda(0).map_err(bad),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Device::new_cuda(n).map_err(bad),
            None => Err(Error::Usage(format!(
                "--device '{other}': use cpu, cuda, cuda:N or auto"
            ))),
        },
    }
}

/// Write `features` as float32 `(L, D, n_bins)` under `key`, with the window in the metadata.
pub fn write_features(
    path: &Path,
    key: &str,
    f: &TimedFeatures,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<u8> = f.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![f.n_layers, f.dim, f.n_bins],
        &bytes,
    )
    .map_err(|e| Error::Other(format!("cannot build the output tensor: {e}")))?;
    let buf = safetensors::serialize([(key, view)], Some(metadata))
        .map_err(|e| Error::Other(format!("cannot serialise {}: {e}", path.display())))?;
    crate::util::write_atomic(path, &buf)
}

/// `tribe features audio`: OUT holds `audio`, float32 `(L, D, n_bins)` on the 2 Hz grid of
/// `[S, S+D)` (DESIGN.md §2); the stimulus starts at time 0.
pub fn features_cli(args: &FeaturesArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let extractor = AudioExtractor::load(&args.model, &device)?;
    let feats = extractor.features_for_file(&args.input, args.start, args.duration)?;
    let mut meta = HashMap::new();
    meta.insert("modality".to_string(), "audio".to_string());
    meta.insert("start".to_string(), args.start.to_string());
    meta.insert(
        "duration".to_string(),
        (feats.n_bins as f64 / FREQUENCY).to_string(),
    );
    meta.insert("frequency".to_string(), FREQUENCY.to_string());
    meta.insert("model".to_string(), args.model.display().to_string());
    meta.insert(
        "layer_groups".to_string(),
        format!("{:?}", extractor.layer_groups()),
    );
    write_features(&args.out, "audio", &feats, meta)?;
    tracing::info!(out = %args.out.display(), shape = ?(feats.n_layers, feats.dim, feats.n_bins), "wrote audio features");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §5.4 step 6 examples (60 s: 0, 24, 49, 74, ...).
    #[test]
    fn nearest_pick_matches_torch_examples() {
        let idx = nearest_indices(2999, 120);
        assert_eq!(&idx[..4], &[0, 24, 49, 74]);
        assert_eq!(nearest_indices(549, 22)[..5], [0, 24, 49, 74, 99]);
        assert_eq!(nearest_indices(149, 6), vec![0, 24, 49, 74, 99, 124]);
        assert_eq!(nearest_indices(5, 5), vec![0, 1, 2, 3, 4]);
    }

    fn series(start: f64, n: usize) -> TimedFeatures {
        TimedFeatures {
            start,
            n_layers: 1,
            dim: 1,
            n_bins: n,
            data: (0..n).map(|i| i as f32 + 1.0).collect(),
        }
    }

    /// The libri0880 golden placement: features starting at 0 in a window starting at -0.75 land
    /// at bins round(1.5) = 2 onwards.
    #[test]
    fn window_uses_python_rounding() {
        let w = window(&[series(0.0, 6)], 1, 1, -0.75, 4.0);
        assert_eq!(w.data, vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let w = window(&[series(0.0, 22)], 1, 1, 0.0, 12.0);
        assert_eq!(w.n_bins, 24);
        assert_eq!(&w.data[20..], &[21.0, 22.0, 0.0, 0.0]);
    }

    /// Two chunks placed back to back fill the window without gaps or overlap.
    #[test]
    fn chunks_tile_the_window() {
        let w = window(&[series(0.0, 120), series(60.0, 80)], 1, 1, 50.0, 20.0);
        assert_eq!(w.n_bins, 40);
        assert_eq!(
            w.data[..20].to_vec(),
            (101..=120).map(|v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!(
            w.data[20..].to_vec(),
            (1..=20).map(|v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn window_outside_the_audio_is_zero() {
        let w = window(&[series(0.0, 10)], 1, 1, 100.0, 3.0);
        assert_eq!(w.data, vec![0.0; 6]);
    }
}
