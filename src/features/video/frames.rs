//! From a video file to model-ready clips: which frames, decoded once, kept in a ring buffer.
//!
//! [`plan_video_clips`] replays the reference's reader to name the physical frames of every
//! clip. [`ClipAssembler`] then decodes the file front to back exactly once, converts and
//! crops only the frames some clip uses (16 of every 24 at 24 fps with the released 16 fps
//! clips), keeps each until the last clip that needs it is built, and yields the clips
//! normalized, in an order where decoding never goes back. Memory stays at about one clip
//! span (4 s of preprocessed frames), whatever the video's length.
//!
//! Each frame is normalized once, when it enters the buffer, and a clip is 64 shared references
//! to buffered frames: with 0.5 s bins and 4 s clips a frame sits in 8 clips, and normalizing it
//! per clip did the same float work 8 times. Nor is a clip copied into one 50 MB block: the
//! model's patch embedding reads the frames directly ([`super::vjepa2::Vjepa2Encoder::patchify_frames`]).
//! The copy, and the kernel zeroing the fresh pages it needed, were a sixth of the preparation's
//! CPU time. Frame buffers are recycled as frames leave.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::clips::{ClipTimes, Series, placement};
use super::frame_feed::{Decoding, FedFrame, FrameCropper, FrameFeed};
use super::processor::ProcessorConfig;
use crate::error::{Error, Result};
use crate::stimulus::video::{FramePicker, VideoInfo};

/// One chunk of a video, located in the file and on the run's clock.
#[derive(Debug, Clone, Copy)]
pub struct VideoChunk {
    /// Chunk onset on the run's clock.
    pub start: f64,
    /// Where the chunk starts in the file (event offset + chunk offset).
    pub offset: f64,
    pub duration: f64,
}

/// A clip to encode: its frames and the window bin its features go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipJob {
    pub window_bin: usize,
    /// Physical frame indices, oldest first.
    pub frames: Vec<usize>,
}

/// The clips of `chunks` whose features land in the window `[start, start + duration)`,
/// sorted so that the newest frame they need never decreases.
pub fn plan_video_clips(
    info: &VideoInfo,
    chunks: &[VideoChunk],
    frames_per_clip: usize,
    clip_duration: f64,
    start: f64,
    duration: f64,
) -> Result<Vec<ClipJob>> {
    let mut jobs = Vec::new();
    for c in chunks {
        let times = ClipTimes::new(c.offset, c.duration, frames_per_clip, clip_duration);
        let bins = placement(
            Series {
                start: c.start,
                len: times.n_bins(),
            },
            start,
            duration,
        );
        let Some(last) = bins.iter().map(|b| b.0).max() else {
            continue;
        };
        let mut wanted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (unit_bin, window_bin) in bins {
            wanted.entry(unit_bin).or_default().push(window_bin);
        }
        // A fresh reader per chunk (the reference opens a clip per chunk event), replayed over
        // every bin up to the last one needed: its state depends on all earlier requests.
        let mut picker = FramePicker::open(info)?;
        for k in 0..=last {
            let frames: Vec<usize> = times
                .request_times(k)
                .iter()
                .map(|t| picker.get_frame(t + c.offset))
                .collect();
            if let Some(ws) = wanted.get(&k) {
                for &w in ws {
                    jobs.push(ClipJob {
                        window_bin: w,
                        frames: frames.clone(),
                    });
                }
            }
        }
    }
    jobs.sort_by_key(|j| (j.frames.iter().copied().max().unwrap_or(0), j.window_bin));
    Ok(jobs)
}

/// A clip's frames, oldest first, each normalized CHW f32, shared with the ring buffer.
pub type ClipFrames = Vec<Arc<Vec<f32>>>;

/// Counters of one assembler run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub frames_decoded: usize,
    /// Frames no clip uses that were never decoded (H.264 and HEVC non-reference frames).
    pub frames_skipped: usize,
    pub frames_preprocessed: usize,
    pub max_buffered_frames: usize,
    /// How many times each physical frame came out of the decoder.
    pub decode_counts: Vec<u32>,
    /// Stretches decoded by separate single-threaded decoders (0: one decoder with frame
    /// threads); see [`super::segments`].
    pub decode_segments: usize,
}

/// Builds the clips of a plan from one front-to-back decode (see the module docs).
pub struct ClipAssembler<'a> {
    jobs: &'a [ClipJob],
    processor: &'a ProcessorConfig,
    cropper: FrameCropper<'a>,
    decoding: Decoding,
    feed: Option<FrameFeed>,
    info: &'a VideoInfo,
    /// For each frame, the last job that uses it.
    last_use: HashMap<usize, usize>,
    /// Normalized frames (CHW f32) that a clip still needs.
    store: HashMap<usize, Arc<Vec<f32>>>,
    /// Buffers of frames that left the store, for the next frames.
    spare: Vec<Vec<f32>>,
    /// The resized and cropped uint8 frame, before normalization.
    crop: Vec<u8>,
    head: Option<usize>,
    next_job: usize,
    stats: AssemblerStats,
}

impl<'a> ClipAssembler<'a> {
    pub fn new(info: &'a VideoInfo, jobs: &'a [ClipJob], processor: &'a ProcessorConfig) -> Self {
        let mut last_use = HashMap::new();
        for (ji, j) in jobs.iter().enumerate() {
            for &f in &j.frames {
                last_use.insert(f, ji);
            }
        }
        Self {
            jobs,
            processor,
            cropper: FrameCropper::new(info, processor.geometry(info.height, info.width)),
            decoding: Decoding::Auto,
            feed: None,
            info,
            last_use,
            store: HashMap::new(),
            spare: Vec::new(),
            crop: vec![0u8; 3 * processor.crop_height * processor.crop_width],
            head: None,
            next_job: 0,
            stats: AssemblerStats {
                decode_counts: vec![0; info.n_frames()],
                ..Default::default()
            },
        }
    }

    /// Decode this way instead of choosing per video (call before the first clip).
    pub fn with_decoding(mut self, decoding: Decoding) -> Self {
        self.decoding = decoding;
        self
    }

    /// The next clip: its job index and its frames.
    pub fn next_clip(&mut self) -> Result<Option<(usize, ClipFrames)>> {
        let Some(job) = self.jobs.get(self.next_job) else {
            return Ok(None);
        };
        let ji = self.next_job;
        if self.feed.is_none() {
            let mut needed = vec![false; self.info.n_frames()];
            for &i in self.last_use.keys() {
                if let Some(n) = needed.get_mut(i) {
                    *n = true;
                }
            }
            self.feed = Some(FrameFeed::start(
                self.info,
                needed,
                self.cropper.geometry(),
                self.decoding,
            )?);
        }
        let feed = self.feed.as_mut().expect("started above");
        let plane = 3 * self.processor.crop_height * self.processor.crop_width;
        let need = job.frames.iter().copied().max().unwrap_or(0);
        while self.head.is_none_or(|h| h < need) {
            let Some((i, decoded)) = feed.next_frame()? else {
                return Err(Error::Other(format!(
                    "{}: frame {need} was never decoded",
                    self.info.path.display()
                )));
            };
            self.head = Some(i);
            if self.last_use.get(&i).is_some_and(|&lu| lu >= ji) && !self.store.contains_key(&i) {
                let crop = match decoded {
                    FedFrame::Decoded(frame) => {
                        self.cropper.crop(frame, &mut self.crop)?;
                        &self.crop
                    }
                    FedFrame::Cropped(ref crop) => crop,
                };
                let mut px = self.spare.pop().unwrap_or_else(|| vec![0f32; plane]);
                self.processor.normalize_into(crop, &mut px);
                self.store.insert(i, Arc::new(px));
                self.stats.frames_preprocessed += 1;
                self.stats.max_buffered_frames =
                    self.stats.max_buffered_frames.max(self.store.len());
            }
        }
        let clip = job
            .frames
            .iter()
            .map(|idx| {
                self.store.get(idx).cloned().ok_or_else(|| {
                    Error::Other(format!("frame {idx} is missing from the ring buffer"))
                })
            })
            .collect::<Result<ClipFrames>>()?;
        // Frames no later clip uses leave the buffer; their memory serves the next frames.
        let last_use = &self.last_use;
        let gone: Vec<usize> = self
            .store
            .keys()
            .copied()
            .filter(|i| last_use.get(i).is_none_or(|&lu| lu <= ji))
            .collect();
        for i in gone {
            if let Some(Ok(buf)) = self.store.remove(&i).map(Arc::try_unwrap) {
                self.spare.push(buf);
            }
        }
        self.next_job += 1;
        Ok(Some((ji, clip)))
    }

    /// The run's counters; stops the decoder thread if clips are left.
    pub fn into_stats(mut self) -> Result<AssemblerStats> {
        if let Some(feed) = self.feed.take() {
            let fed = feed.finish()?;
            self.stats.frames_decoded = fed.frames_decoded;
            self.stats.frames_skipped = fed.frames_skipped;
            self.stats.decode_counts = fed.decode_counts;
            self.stats.decode_segments = fed.segments;
        }
        Ok(self.stats)
    }
}
