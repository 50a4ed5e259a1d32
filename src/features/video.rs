//! Video features on the 2 Hz grid: V-JEPA2 on 4 s clips (SPEC §5.5), `tribe features video`.
//!
//! For every visual event the reference cuts 60 s chunks (30 s minimum), and for every 0.5 s
//! bin of a chunk runs V-JEPA2 on a clip of `frames_per_clip` frames ending at the bin's end
//! (16 fps for the released 64-frame model, clamped at the chunk start), averages every hidden
//! state over its tokens, keeps 20 evenly spaced states, and averages them in groups cut at
//! [0.5, 0.75, 1.0] of the depth. The features are placed on the 2 Hz grid of the requested
//! window with neuralset's rounding.
//!
//! Unlike the reference, which decodes 64 frames per bin through a fresh FFmpeg process, we
//! decode every source frame once, preprocess each frame a clip uses once, and keep the last
//! few seconds in a ring buffer from which every clip is assembled. A decoder thread fills the
//! buffer while the model runs. Which frame each clip uses is decided beforehand by replaying
//! the reference's reader (see `stimulus::video::reader`), so the frames are the same.
//!
//! Still images give a clip of identical frames; blank screen gives a clip of zeros after
//! preprocessing (DESIGN.md §4). Both are encoded once per item.

pub mod clips;
pub mod fastmath;
pub mod frame_feed;
pub mod frames;
pub mod processor;
pub mod segments;
pub mod vjepa2;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;

use candle_core::{DType, Device, Tensor};

use self::clips::{ClipTimes, Series, placement, window_bins};
use self::frame_feed::Decoding;
use self::frames::{
    AssemblerStats, ClipAssembler, ClipFrames, ClipJob, VideoChunk, plan_video_clips,
};
use self::processor::{ProcessorConfig, Resizer};
use self::vjepa2::{LastHiddenState, Vjepa2Encoder};
use crate::cli::toolbox::FeaturesArgs;
use crate::error::{Error, Result};
use crate::features::layers;
use crate::stimulus::chunks::{self, MAX_CHUNK_S, MIN_CHUNK_S};
use crate::stimulus::video::{FrameSource, Screen, ScreenContent, ScreenItem, VideoInfo};

/// Settings of the video extractor. `Default` is the reference configuration.
#[derive(Debug, Clone)]
pub struct VideoOptions {
    /// Frames per clip; `None` reads `frames_per_clip` from the model config (64 released).
    pub frames_per_clip: Option<usize>,
    /// Seconds a clip spans (neuralset `clip_duration`, 4).
    pub clip_duration: f64,
    /// Layer-group cut points (`layers`), and how many hidden states to keep first.
    pub layer_fractions: Vec<f64>,
    pub max_layers: Option<usize>,
    /// transformers 5 (raw, default, as the goldens) or 4 (layer-normed) last hidden state.
    pub last_hidden_state: LastHiddenState,
    /// Model compute type. F32 reproduces the reference; BF16/F16 are faster on GPUs.
    pub dtype: DType,
    /// Chunking of long videos (60 s, minimum 30 s).
    pub chunk_max_s: f64,
    pub chunk_min_s: f64,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            frames_per_clip: None,
            clip_duration: 4.0,
            layer_fractions: layers::DEFAULT_FRACTIONS.to_vec(),
            max_layers: Some(layers::DEFAULT_MAX_LAYERS),
            last_hidden_state: LastHiddenState::Raw,
            dtype: DType::F32,
            chunk_max_s: MAX_CHUNK_S,
            chunk_min_s: MIN_CHUNK_S,
        }
    }
}

/// Counters that show the decode-once design at work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames out of the decoders.
    pub frames_decoded: usize,
    /// Frames converted to RGB, resized and cropped.
    pub frames_preprocessed: usize,
    /// Clips encoded by the model (blank and still-image clips once per item).
    pub clips_encoded: usize,
    /// Most preprocessed frames held at once in the ring buffer.
    pub max_buffered_frames: usize,
    /// Per source file: how many times each physical frame came out of the decoder.
    pub decode_counts: Vec<Vec<u32>>,
    /// Stretches between IDR pictures decoded by separate single-threaded decoders, over all
    /// files (0: every file on one decoder with frame threads); see [`segments`].
    pub decode_segments: usize,
}

/// Video features of one window.
#[derive(Debug)]
pub struct VideoFeatures {
    /// float32 `(groups, hidden, n_bins)` on the CPU.
    pub features: Tensor,
    /// Per window bin, the physical frame indices of the video clip that filled it (the last
    /// one if several chunks add into one bin); None for bins without video frames.
    pub frame_indices: Vec<Option<Vec<usize>>>,
    pub stats: DecodeStats,
}

/// V-JEPA2 with its processor and TRIBE's layer groups.
pub struct VideoExtractor {
    encoder: Vjepa2Encoder,
    processor: ProcessorConfig,
    opts: VideoOptions,
    frames: usize,
    /// Hidden-state indices averaged per group, and their union in order.
    groups: Vec<Vec<usize>>,
    keep: Vec<usize>,
}

impl VideoExtractor {
    /// Load a V-JEPA2 folder (config.json, model.safetensors, video_preprocessor_config.json).
    pub fn load(model_dir: &Path, device: &Device, opts: VideoOptions) -> Result<Self> {
        let encoder = Vjepa2Encoder::load(model_dir, device, opts.dtype, opts.last_hidden_state)?;
        let processor = ProcessorConfig::from_model_dir(model_dir)?;
        Self::new(encoder, processor, opts)
    }

    /// Assemble from parts (benchmarks use a random encoder).
    pub fn new(
        encoder: Vjepa2Encoder,
        processor: ProcessorConfig,
        opts: VideoOptions,
    ) -> Result<Self> {
        let cfg = encoder.config();
        if processor.crop_height != cfg.crop_size || processor.crop_width != cfg.crop_size {
            return Err(Error::Other(format!(
                "the processor crops {}x{} but the model expects {}x{}",
                processor.crop_height, processor.crop_width, cfg.crop_size, cfg.crop_size
            )));
        }
        let frames = opts.frames_per_clip.unwrap_or(cfg.frames_per_clip);
        if frames == 0 || !frames.is_multiple_of(cfg.tubelet_size) {
            return Err(Error::Usage(format!(
                "frames per clip {frames} must be a positive multiple of the tubelet size {}",
                cfg.tubelet_size
            )));
        }
        let groups = layers::hidden_state_groups(
            cfg.n_hidden_states(),
            opts.max_layers,
            &opts.layer_fractions,
        );
        if groups.is_empty() {
            return Err(Error::Usage(
                "the layer fractions give no layer group".into(),
            ));
        }
        let mut keep: Vec<usize> = groups.iter().flatten().copied().collect();
        keep.sort_unstable();
        keep.dedup();
        Ok(Self {
            encoder,
            processor,
            opts,
            frames,
            groups,
            keep,
        })
    }

    /// Number of layer groups L.
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    pub fn hidden_size(&self) -> usize {
        self.encoder.config().hidden_size
    }

    pub fn frames_per_clip(&self) -> usize {
        self.frames
    }

    pub fn encoder(&self) -> &Vjepa2Encoder {
        &self.encoder
    }

    pub fn processor(&self) -> &ProcessorConfig {
        &self.processor
    }

    /// Features `(groups, hidden)` of one normalized clip `(frames, 3, crop, crop)`.
    pub fn clip_features(&self, clip: &Tensor) -> Result<Tensor> {
        self.group_means(&self.encoder.token_means(clip, &self.keep)?)
    }

    /// [`Self::clip_features`] of a clip given as its frames (each `3 x crop x crop`), as the
    /// clip assembler hands them over: they go to the patch embedding without being copied
    /// into one clip first.
    pub fn frames_features(&self, frames: &[&[f32]]) -> Result<Tensor> {
        let patches = self.encoder.patchify_frames(frames)?;
        self.group_means(&self.encoder.patch_token_means(&patches, &self.keep)?)
    }

    /// The group means `(groups, hidden)` of the kept layers' token means `(keep, hidden)`.
    fn group_means(&self, means: &Tensor) -> Result<Tensor> {
        let pos: HashMap<usize, usize> =
            self.keep.iter().enumerate().map(|(i, &k)| (k, i)).collect();
        let mut out = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let rows: Vec<Tensor> = g
                .iter()
                .map(|k| means.get(pos[k]))
                .collect::<candle_core::Result<_>>()?;
            out.push(Tensor::stack(&rows, 0)?.mean(0)?);
        }
        Ok(Tensor::stack(&out, 0)?)
    }

    /// Token means of every hidden state `(n_hidden_states, hidden)` of one clip, before any
    /// layer selection (neuralset's `event_all_layers`).
    pub fn clip_all_layers(&self, clip: &Tensor) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.encoder.config().n_hidden_states()).collect();
        self.encoder.token_means(clip, &all)
    }

    /// Video features of `source` on the 2 Hz grid of `[start, start + duration)`:
    /// float32 `(groups, hidden, max(1, round(2 * duration)))`.
    pub fn extract(
        &self,
        source: &FrameSource,
        start: f64,
        duration: f64,
    ) -> Result<VideoFeatures> {
        let screen = source.resolve()?;
        self.extract_screen(&screen, start, duration)
    }

    /// As [`Self::extract`], on an already resolved screen.
    pub fn extract_screen(
        &self,
        screen: &Screen,
        start: f64,
        duration: f64,
    ) -> Result<VideoFeatures> {
        if !start.is_finite() || !duration.is_finite() || duration < 0.0 {
            return Err(Error::Usage(format!(
                "window start {start} / duration {duration} must be finite, duration >= 0"
            )));
        }
        let n_win = window_bins(duration);
        let (l, d) = (self.n_groups(), self.hidden_size());
        let mut out = Accumulator {
            data: vec![0f32; l * d * n_win],
            n_win,
            frames: vec![None; n_win],
        };
        let mut stats = DecodeStats::default();
        for item in screen.items() {
            match &item.content {
                ScreenContent::Blank | ScreenContent::Image(_) => {
                    let bins = self.constant_bins(item, start, duration);
                    if bins.is_empty() {
                        continue;
                    }
                    let f = match &item.content {
                        ScreenContent::Image(img) => {
                            let geom = self.processor.geometry(img.height, img.width);
                            let mut crop = vec![0u8; 3 * geom.crop_height * geom.crop_width];
                            Resizer::new(geom).resize_crop(&img.rgb, img.width * 3, &mut crop);
                            stats.frames_preprocessed += 1;
                            self.constant_clip_features(Some(&crop))?
                        }
                        _ => self.constant_clip_features(None)?,
                    };
                    stats.clips_encoded += 1;
                    for b in bins {
                        out.add(&f, b);
                    }
                }
                ScreenContent::Video { info, .. } => {
                    let chunks = self.chunks_of(item);
                    let jobs = plan_video_clips(
                        info,
                        &chunks,
                        self.frames,
                        self.opts.clip_duration,
                        start,
                        duration,
                    )?;
                    if !jobs.is_empty() {
                        self.run_video(info, &jobs, &mut out, &mut stats)?;
                    }
                }
            }
        }
        let frame_indices = out.frames;
        let acc = out.data;
        let features = Tensor::from_vec(acc, (l, d, n_win), &Device::Cpu)?;
        Ok(VideoFeatures {
            features,
            frame_indices,
            stats,
        })
    }

    /// The chunks of one screen item (60 s pieces, 30 s minimum), on the run's clock.
    fn chunks_of(&self, item: &ScreenItem) -> Vec<VideoChunk> {
        let base = match &item.content {
            ScreenContent::Video { offset, .. } => *offset,
            _ => 0.0,
        };
        chunks::chunk(item.duration, self.opts.chunk_max_s, self.opts.chunk_min_s)
            .into_iter()
            .map(|c| VideoChunk {
                start: item.start + c.offset,
                offset: base + c.offset,
                duration: c.duration,
            })
            .collect()
    }

    /// Window bins that a constant clip (still image, blank screen) of `item` fills.
    fn constant_bins(&self, item: &ScreenItem, start: f64, duration: f64) -> Vec<usize> {
        self.chunks_of(item)
            .iter()
            .flat_map(|c| {
                let n = ClipTimes::new(c.offset, c.duration, self.frames, self.opts.clip_duration)
                    .n_bins();
                placement(
                    Series {
                        start: c.start,
                        len: n,
                    },
                    start,
                    duration,
                )
                .into_iter()
                .map(|(_, w)| w)
            })
            .collect()
    }

    /// Features of a clip whose frames are all `crop` (a still image), or all zeros (blank).
    fn constant_clip_features(&self, crop: Option<&[u8]>) -> Result<Vec<f32>> {
        let c = self.processor.crop_height;
        let mut px = vec![0f32; 3 * c * c];
        if let Some(crop) = crop {
            self.processor.normalize_into(crop, &mut px);
        }
        let frames = vec![px.as_slice(); self.frames];
        Ok(self
            .frames_features(&frames)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// Decode one video once and encode its clips, a decoder thread feeding the model.
    fn run_video(
        &self,
        info: &VideoInfo,
        jobs: &[ClipJob],
        out: &mut Accumulator,
        stats: &mut DecodeStats,
    ) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Result<(usize, ClipFrames)>>(2);
        let processor = &self.processor;
        let decoding = Decoding::from_env()?;
        let assembled = std::thread::scope(|s| -> Result<AssemblerStats> {
            let producer = s.spawn(move || {
                let mut asm = ClipAssembler::new(info, jobs, processor).with_decoding(decoding);
                loop {
                    match asm.next_clip() {
                        Ok(Some(clip)) => {
                            if tx.send(Ok(clip)).is_err() {
                                break; // the model side stopped and reports its own error
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            break;
                        }
                    }
                }
                asm.into_stats()
            });
            let mut result = Ok(());
            for msg in rx.iter() {
                let step = msg.and_then(|(ji, clip)| {
                    let frames: Vec<&[f32]> = clip.iter().map(|f| f.as_slice()).collect();
                    let f = self
                        .frames_features(&frames)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    out.add(&f, jobs[ji].window_bin);
                    out.frames[jobs[ji].window_bin] = Some(jobs[ji].frames.clone());
                    stats.clips_encoded += 1;
                    Ok(())
                });
                if let Err(e) = step {
                    result = Err(e);
                    break;
                }
            }
            drop(rx);
            let st = producer
                .join()
                .map_err(|_| Error::Other("the video decoder thread panicked".into()))?;
            result.and(st)
        })?;
        stats.frames_decoded += assembled.frames_decoded;
        stats.frames_preprocessed += assembled.frames_preprocessed;
        stats.max_buffered_frames = stats.max_buffered_frames.max(assembled.max_buffered_frames);
        stats.decode_counts.push(assembled.decode_counts);
        stats.decode_segments += assembled.decode_segments;
        Ok(())
    }
}

/// The window's features being summed, `(groups, hidden, n_win)`.
struct Accumulator {
    data: Vec<f32>,
    n_win: usize,
    frames: Vec<Option<Vec<usize>>>,
}

impl Accumulator {
    /// `data[:, :, bin] += f` for `f` laid out `(groups, hidden)`.
    fn add(&mut self, f: &[f32], bin: usize) {
        for (i, v) in f.iter().enumerate() {
            self.data[i * self.n_win + bin] += v;
        }
    }
}

/// `--device cpu | cuda | cuda:N | auto`.
fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => Ok(Device::new_cuda(n)?),
            None => Err(Error::Usage(format!(
                "--device '{other}': use cpu, cuda, cuda:N or auto"
            ))),
        },
    }
}

/// `tribe features video`: OUT holds `video`, float32 `(L, D, n_bins)` on the 2 Hz grid of
/// `[start, start + duration)`, the video starting at time 0 (DESIGN.md §2).
pub fn features_cli(args: &FeaturesArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let extractor = VideoExtractor::load(&args.model, &device, VideoOptions::default())?;
    let screen = FrameSource::video(&args.input).resolve()?;
    let duration = match args.duration {
        Some(d) => d,
        None => (screen.end() - args.start).max(0.0),
    };
    if duration.is_nan() || duration <= 0.0 {
        return Err(Error::Usage(format!(
            "the window [{}, {}) is empty: the video lasts {:.2} s; give --start inside it or a positive --duration",
            args.start,
            args.start + duration,
            screen.end()
        )));
    }
    let out = extractor.extract_screen(&screen, args.start, duration)?;
    tracing::info!(
        "video features {:?}: {} frames decoded ({} stretches on separate decoders), {} preprocessed, {} clips",
        out.features.dims(),
        out.stats.frames_decoded,
        out.stats.decode_segments,
        out.stats.frames_preprocessed,
        out.stats.clips_encoded
    );
    write_features(&args.out, "video", &out.features)
}

fn write_features(path: &Path, key: &str, t: &Tensor) -> Result<()> {
    let data: Vec<f32> = t.flatten_all()?.to_vec1::<f32>()?;
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.dims().to_vec(), &raw)
            .map_err(|e| Error::Other(format!("serializing features: {e}")))?;
    let bytes = safetensors::serialize([(key, view)], None)
        .map_err(|e| Error::Other(format!("serializing features: {e}")))?;
    crate::util::write_atomic(path, &bytes)
}
