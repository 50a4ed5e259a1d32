//! What was on screen: video files, still images, and blank screen between them.
//!
//! A [`FrameSource`] describes a run's screen as visual events on the run's clock (a single
//! video file from time 0 is the simplest case). [`FrameSource::resolve`] opens every file once:
//! videos are probed the way the reference reads them ([`VideoInfo`]), images are decoded.
//! The resolved [`Screen`] answers "what is on screen at time t" ([`Screen::frame_at`]), which is
//! blank between events.
//!
//! How frames become model input (which frame each clip uses, decoded once into a ring buffer)
//! lives in `features::video`; the rule for picking a video frame is in [`reader`].

pub mod convert;
pub mod decode;
pub mod probe;
pub mod reader;
pub mod still;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use convert::{DecodedFrame, Region, RgbConverter, RgbFrame, RgbView};
pub use decode::FrameDecoder;
pub use probe::{Rotation, VideoInfo};
pub use reader::FramePicker;
pub use still::{StillImage, is_image_path};

use crate::error::{Error, Result};

/// What an event shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Visual {
    /// A video file, played from `offset` seconds into the file.
    Video { path: PathBuf, offset: f64 },
    /// A still image (png, jpg, bmp), shown unchanged.
    Image { path: PathBuf },
}

/// One visual event on the run's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct VisualEvent {
    /// Onset in seconds from the run's time zero.
    pub start: f64,
    /// How long it is shown. `None` plays a video to its end; images need a duration.
    pub duration: Option<f64>,
    pub visual: Visual,
}

/// The screen of a run, before any file is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSource {
    events: Vec<VisualEvent>,
    /// Blank screen fills the gaps in `[0, blank_until)`; `None` means no blank screen at all
    /// (time outside the events has no video, as for `tribe features`).
    blank_until: Option<f64>,
}

impl FrameSource {
    /// One video file shown from time 0 to its end (what `tribe features video` reads).
    pub fn video(path: impl Into<PathBuf>) -> Self {
        Self::video_from(path, 0.0, None)
    }

    /// A video file played from `offset` seconds into the file, at time 0, for `duration`.
    pub fn video_from(path: impl Into<PathBuf>, offset: f64, duration: Option<f64>) -> Self {
        Self {
            events: vec![VisualEvent {
                start: 0.0,
                duration,
                visual: Visual::Video {
                    path: path.into(),
                    offset,
                },
            }],
            blank_until: None,
        }
    }

    /// A still image shown from time 0 for `duration` seconds.
    pub fn image(path: impl Into<PathBuf>, duration: f64) -> Self {
        Self {
            events: vec![VisualEvent {
                start: 0.0,
                duration: Some(duration),
                visual: Visual::Image { path: path.into() },
            }],
            blank_until: None,
        }
    }

    /// Several events on one clock, blank screen in the gaps of `[0, blank_until)`.
    pub fn timeline(events: Vec<VisualEvent>, blank_until: Option<f64>) -> Self {
        Self {
            events,
            blank_until,
        }
    }

    pub fn events(&self) -> &[VisualEvent] {
        &self.events
    }

    /// Open every file once and fix every duration.
    pub fn resolve(&self) -> Result<Screen> {
        let mut items = Vec::new();
        for (i, ev) in self.events.iter().enumerate() {
            let bad = |msg: String| Error::Usage(format!("visual event {i}: {msg}"));
            if !ev.start.is_finite() {
                return Err(bad(format!("onset {} is not a number", ev.start)));
            }
            let (content, duration) = match &ev.visual {
                Visual::Video { path, offset } => {
                    let info = VideoInfo::open(path)?;
                    if offset.is_nan() || *offset < 0.0 || *offset >= info.duration {
                        return Err(bad(format!(
                            "offset {offset} s is outside the video ({:.2} s long): {}",
                            info.duration,
                            path.display()
                        )));
                    }
                    let available = info.duration - offset;
                    let d = match ev.duration {
                        None => available,
                        Some(d) if d > available => {
                            // The reference asserts here; a stimulus schedule a little longer
                            // than its file is common, so we show what the file has.
                            tracing::warn!(
                                "{}: event lasts {d:.3} s but the video has {available:.3} s from offset {offset}; using {available:.3} s",
                                path.display()
                            );
                            available
                        }
                        Some(d) => d,
                    };
                    (
                        ScreenContent::Video {
                            info: Arc::new(info),
                            offset: *offset,
                        },
                        d,
                    )
                }
                Visual::Image { path } => {
                    let d = ev
                        .duration
                        .ok_or_else(|| bad(format!("image {} needs a duration", path.display())))?;
                    (ScreenContent::Image(Arc::new(StillImage::open(path)?)), d)
                }
            };
            if duration.is_nan() || duration <= 0.0 {
                return Err(bad(format!("duration {duration} is not positive")));
            }
            items.push(ScreenItem {
                start: ev.start,
                duration,
                content,
            });
        }
        items.sort_by(|a, b| a.start.total_cmp(&b.start));
        if let Some(end) = self.blank_until {
            let mut blanks = Vec::new();
            let mut t = 0.0f64;
            for it in &items {
                if it.start > t {
                    blanks.push(ScreenItem {
                        start: t,
                        duration: it.start - t,
                        content: ScreenContent::Blank,
                    });
                }
                t = t.max(it.start + it.duration);
            }
            if end > t {
                blanks.push(ScreenItem {
                    start: t,
                    duration: end - t,
                    content: ScreenContent::Blank,
                });
            }
            items.extend(blanks);
            items.sort_by(|a, b| a.start.total_cmp(&b.start));
        }
        Ok(Screen { items })
    }
}

/// What one resolved event shows.
#[derive(Debug, Clone)]
pub enum ScreenContent {
    Video {
        info: Arc<VideoInfo>,
        offset: f64,
    },
    Image(Arc<StillImage>),
    /// Nothing: zeros after preprocessing (DESIGN.md §4).
    Blank,
}

/// A resolved event: files opened, duration known.
#[derive(Debug, Clone)]
pub struct ScreenItem {
    pub start: f64,
    pub duration: f64,
    pub content: ScreenContent,
}

/// A run's screen with every file opened.
#[derive(Debug, Clone)]
pub struct Screen {
    items: Vec<ScreenItem>,
}

/// What is on screen at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenFrame {
    /// Blank screen (between events, or outside them).
    Blank,
    /// Item `item` of [`Screen::items`] is a still image.
    Image { item: usize },
    /// Item `item` is a video; `frame` is the physical frame index in its file.
    Video { item: usize, frame: usize },
}

impl Screen {
    /// Resolved events (and blank gaps), by start time.
    pub fn items(&self) -> &[ScreenItem] {
        &self.items
    }

    /// What is on screen at `t` seconds of the run. Videos use the reference's index rule
    /// `int(fps * (offset + t - start) + 1e-5)`, clamped to the last frame. Time that no
    /// event covers is blank.
    pub fn frame_at(&self, t: f64) -> ScreenFrame {
        // The last item that started at or before t and still runs (later items win).
        let hit = self
            .items
            .iter()
            .enumerate()
            .rev()
            .find(|(_, it)| it.start <= t && t < it.start + it.duration);
        match hit {
            None => ScreenFrame::Blank,
            Some((i, it)) => match &it.content {
                ScreenContent::Blank => ScreenFrame::Blank,
                ScreenContent::Image(_) => ScreenFrame::Image { item: i },
                ScreenContent::Video { info, offset } => ScreenFrame::Video {
                    item: i,
                    frame: reader::frame_index_at(info, offset + (t - it.start)),
                },
            },
        }
    }

    /// End of the last item.
    pub fn end(&self) -> f64 {
        self.items
            .iter()
            .map(|i| i.start + i.duration)
            .fold(0.0, f64::max)
    }
}

/// Probe a file for its moviepy duration (what the reference uses as the Video event's length).
pub fn video_duration(path: &Path) -> Result<f64> {
    Ok(VideoInfo::open(path)?.duration)
}

/// Test media made at test time with the ffmpeg CLI.
#[cfg(test)]
pub(crate) mod test_media {
    use std::path::{Path, PathBuf};

    /// `dir/name` encoded by the ffmpeg CLI from the lavfi source `source` (e.g.
    /// `testsrc2=d=2:s=160x96:r=12`) with the output options `args`.
    pub(crate) fn lavfi_video(dir: &Path, name: &str, source: &str, args: &[&str]) -> PathBuf {
        let p = dir.join(name);
        let ok = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", source])
            .args(args)
            .arg(&p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg could not make {name}");
        p
    }
}
