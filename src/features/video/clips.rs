//! When each clip is taken and where its features land on the 2 Hz grid (SPEC §5.1, §5.5).
//!
//! Per Video chunk event the reference computes `n = round(2 * duration)` features, feature k
//! from a clip whose frames end at `t_k = linspace(0, video_duration, n + 1)[k + 1]` and are
//! spaced `clip_duration / frames` apart, clamped at the chunk start. Those features form a
//! time series starting at the chunk's onset, which neuralset's `TimedArray` cuts to the
//! requested window and adds into it with Python-rounded sample offsets. Both steps are written
//! here with the reference's floating-point expressions, so that the same bins come out.

use crate::error::Result;
use crate::stimulus::video::{FramePicker, VideoInfo};
use crate::util::round_half_even;

/// The feature rate of TRIBE (2 Hz).
pub const FREQUENCY: f64 = 2.0;

/// `Frequency(2).to_ind(x)`: `int(round(2 * x))`, Python rounding.
pub fn to_ind(seconds: f64) -> i64 {
    round_half_even(seconds * FREQUENCY)
}

fn to_sec(index: i64) -> f64 {
    index as f64 / FREQUENCY
}

/// Number of features of a chunk lasting `duration` seconds.
pub fn n_bins(duration: f64) -> usize {
    to_ind(duration).max(0) as usize
}

/// The reference's clip times for one chunk: for feature `k` (0-based), the `frames` request
/// times in seconds from the chunk start, ascending. `video_duration` is moviepy's subclip
/// duration, `(offset + duration) - offset`.
#[derive(Debug, Clone)]
pub struct ClipTimes {
    video_duration: f64,
    n: usize,
    /// `k / frames * clip_duration` for k = frames-1 .. 0 (largest first, as the reference).
    subtimes: Vec<f64>,
}

impl ClipTimes {
    pub fn new(offset: f64, duration: f64, frames: usize, clip_duration: f64) -> Self {
        let video_duration = (offset + duration) - offset;
        let subtimes = (0..frames)
            .rev()
            .map(|k| k as f64 / frames as f64 * clip_duration)
            .collect();
        Self {
            video_duration,
            n: n_bins(duration),
            subtimes,
        }
    }

    pub fn n_bins(&self) -> usize {
        self.n
    }

    /// `np.linspace(0, video_duration, n + 1)[1:][k]`.
    pub fn bin_end(&self, k: usize) -> f64 {
        if k + 1 == self.n {
            self.video_duration
        } else {
            (k + 1) as f64 * (self.video_duration / self.n as f64)
        }
    }

    /// Request times of feature `k`: `max(0, t_k - s)` for each sub-time.
    pub fn request_times(&self, k: usize) -> Vec<f64> {
        let t = self.bin_end(k);
        self.subtimes
            .iter()
            .map(|s| if t - s > 0.0 { t - s } else { 0.0 })
            .collect()
    }
}

/// The physical frames of every clip of one chunk (a fresh reference reader per chunk, as the
/// reference opens a new clip per Video chunk event): `offset` and `duration` locate the chunk
/// in the file. Bins `0..n_bins` in order, each `frames` indices ascending in time.
pub fn chunk_clip_frames(
    info: &VideoInfo,
    offset: f64,
    duration: f64,
    frames: usize,
    clip_duration: f64,
) -> Result<Vec<Vec<usize>>> {
    let times = ClipTimes::new(offset, duration, frames, clip_duration);
    let mut picker = FramePicker::open(info)?;
    Ok((0..times.n_bins())
        .map(|k| {
            times
                .request_times(k)
                .iter()
                .map(|t| picker.get_frame(t + offset))
                .collect()
        })
        .collect())
}

/// A time series on the 2 Hz grid, as neuralset's `TimedArray` addresses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Series {
    pub start: f64,
    /// Number of samples.
    pub len: usize,
}

impl Series {
    fn duration(&self) -> f64 {
        to_sec(self.len as i64)
    }

    /// `TimedArray._overlap_slice(start, duration)`: the samples of `self` that overlap
    /// `[start, start + duration)`, as (start time, sample range), or None.
    pub fn overlap_slice(
        &self,
        start: f64,
        duration: f64,
    ) -> Option<(f64, std::ops::Range<usize>)> {
        let ostart = start.max(self.start);
        let ostop = (start + duration).min(self.start + self.duration());
        if ostop < ostart {
            return None;
        }
        if ostop == ostart && self.len > 0 && duration != 0.0 {
            return None;
        }
        if self.len == 0 {
            return None;
        }
        let mut start_ind = to_ind(ostart - self.start);
        let mut dur_ind = to_ind(ostop - ostart);
        if dur_ind <= 0 {
            dur_ind = 1;
        }
        let tps = self.len as i64;
        if start_ind > tps - dur_ind {
            start_ind = tps - dur_ind;
        }
        if start_ind < 0 {
            return None;
        }
        Some((
            to_sec(start_ind) + self.start,
            start_ind as usize..(start_ind + dur_ind) as usize,
        ))
    }
}

/// Where a chunk's features go in the window `[start, start + duration)`: pairs of (chunk
/// feature index, window bin), following `ta.with_start(chunk_start).overlap(start, duration)`
/// then `segment += sub` (extractors/base.py `_get_timed_arrays`, `TimedArray.__iadd__`).
pub fn placement(chunk: Series, start: f64, duration: f64) -> Vec<(usize, usize)> {
    let segment = Series {
        start,
        len: window_bins(duration),
    };
    // ta.overlap(start, duration): a sub-series of the chunk.
    let Some((sub_start, sub_range)) = chunk.overlap_slice(start, duration) else {
        return vec![];
    };
    let sub = Series {
        start: sub_start,
        len: sub_range.len(),
    };
    // segment += sub: both overlap slices.
    let (Some((_, seg_slice)), Some((_, sub_slice))) = (
        segment.overlap_slice(sub.start, sub.duration()),
        sub.overlap_slice(segment.start, segment.duration()),
    ) else {
        return vec![];
    };
    let n = seg_slice.len().min(sub_slice.len());
    (0..n)
        .map(|i| (sub_range.start + sub_slice.start + i, seg_slice.start + i))
        .collect()
}

/// Bins of a window of `duration` seconds: `max(1, round(2 * duration))` (0 for 0 s).
pub fn window_bins(duration: f64) -> usize {
    if duration == 0.0 {
        0
    } else {
        to_ind(duration).max(1) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hf/vjepa2-tiny-timeline.json: 2 s, 8 frames over 4 s.
    #[test]
    fn timeline_golden_times() {
        let c = ClipTimes::new(0.0, 2.0, 8, 4.0);
        assert_eq!(c.n_bins(), 4);
        assert_eq!(
            c.request_times(0),
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5]
        );
        assert_eq!(
            c.request_times(3),
            vec![0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0]
        );
    }

    /// The released setting: 64 frames at 16 fps ending at the bin end.
    #[test]
    fn released_clip_spacing() {
        let c = ClipTimes::new(60.0, 60.0, 64, 4.0);
        let t = c.request_times(9); // bin ends at 5.0 s
        assert_eq!(t[63], 5.0);
        assert_eq!(t[0], 5.0 - 3.9375);
        assert!(t.windows(2).all(|w| (w[1] - w[0] - 0.0625).abs() < 1e-12));
    }

    /// SPEC §5.1: a chunk starting at 60 s fills bins 120..; partial windows round like Python.
    #[test]
    fn placement_rounds_like_timed_array() {
        let p = placement(
            Series {
                start: 60.0,
                len: 80,
            },
            0.0,
            100.0,
        );
        assert_eq!(p.first(), Some(&(0, 120)));
        assert_eq!(p.last(), Some(&(79, 199)));
        // w2v-BERT golden: features at 0 placed in a window starting at -0.75 s: bins 2..
        let p = placement(Series { start: 0.0, len: 6 }, -0.75, 4.0);
        assert_eq!(p, (0..6).map(|i| (i, i + 2)).collect::<Vec<_>>());
        // Entirely outside.
        assert!(placement(Series { start: 0.0, len: 4 }, 10.0, 5.0).is_empty());
    }
}
