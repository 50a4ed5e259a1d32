//! Which source frame the reference returns for a requested time.
//!
//! The reference reads frames through moviepy 2.2.1's `FFMPEG_VideoReader`, which pipes the
//! ffmpeg 5.1 CLI's raw output: it computes `int(fps * t + 1e-5)`, then either returns the last
//! frame again, reads on sequentially (skipping frames), or restarts the CLI with a seek
//! (`-ss A -i file -ss B`) when asked to go back or more than 100 frames ahead. The CLI itself
//! writes a constant-rate stream (image2pipe is not a variable-rate muxer), duplicating or
//! dropping frames to match its output rate, and drops frames before the seek point exactly.
//!
//! Emulating that state machine over the frame timestamps (no pixels) gives, for every
//! request, the index of the decoded frame the reference would have used. This is how the
//! end-of-video quirk arises (a request at the very end returns the previously returned frame,
//! because moviepy's `skip_frames` does not update `last_read`), how clips are clamped, and
//! what variable-frame-rate video and 59.94 fps drift do. Frames are named by their index in
//! presentation order ("physical" index), so they can be decoded once and reused.

use std::collections::VecDeque;

use super::probe::{Ratio, VideoInfo};
use crate::error::{MediaErrorKind, Result};

/// `av_rescale_q` (round to nearest, halves away from zero) in exact integer arithmetic.
pub(crate) fn rescale(a: i64, from: Ratio, to: Ratio) -> i64 {
    let b = from.num as i128 * to.den as i128;
    let c = to.num as i128 * from.den as i128;
    if c == 0 {
        return 0;
    }
    let a = a as i128;
    let r = c.abs() / 2;
    let mag = (a.abs() * b.abs() + r) / c.abs();
    let neg = (a < 0) ^ (b < 0) ^ (c < 0);
    (if neg { -mag } else { mag }) as i64
}

const MICROS: Ratio = Ratio {
    num: 1,
    den: 1_000_000,
};

/// `av_log2`: floor(log2(x)), 0 for 0.
fn av_log2(x: i64) -> i64 {
    if x <= 0 {
        0
    } else {
        63 - x.leading_zeros() as i64
    }
}

/// C's `lrintf`: round a float (after conversion to f32) to nearest, ties to even.
fn lrintf(x: f64) -> i64 {
    (x as f32).round_ties_even() as i64
}

fn mid_pred(a: i64, b: i64, c: i64) -> i64 {
    a.max(b).min(a.min(b).max(c))
}

/// One run of the ffmpeg 5.1 CLI (`[-ss A] -i file [-ss B] -f image2pipe ... -`): the frames
/// it writes, in order, as physical indices. Follows `do_video_out` with `VSYNC_CFR`
/// (`VSYNC_VSCFR` for single-stream files) and the `trim` filters `-ss` inserts.
pub(crate) struct CliRun<'a> {
    info: &'a VideoInfo,
    next_in: usize,
    /// Added to packet timestamps (stream time base): `-(A + container start)`.
    shift: i64,
    /// Output `-ss` in microseconds (0 without it).
    out_start_us: i64,
    sync_opts: i64,
    frame_number: u64,
    last_nb0: [i64; 3],
    last_frame: Option<usize>,
    pending: VecDeque<usize>,
    flushed: bool,
    vscfr: bool,
    duration: f64,
    /// Encoder time base (1 / output rate) with FFmpeg's extra precision bits.
    enc_tb_ext: Ratio,
    extra_bits: u32,
}

impl<'a> CliRun<'a> {
    /// `seek = Some((A, B))` in microseconds for `-ss A -i file -ss B`.
    pub(crate) fn new(info: &'a VideoInfo, seek: Option<(i64, i64)>) -> Self {
        let tb = info.time_base;
        let a_us = seek.map_or(0, |s| s.0);
        let shift = rescale(-(a_us + info.start_time_us), MICROS, tb);
        let next_in = match seek {
            None => 0,
            Some((_, b_us)) => {
                let start = rescale(b_us, MICROS, tb).max(0);
                info.frame_pts.partition_point(|&p| p + shift < start)
            }
        };
        let fr = info.output_rate;
        let enc_tb = Ratio {
            num: fr.den,
            den: fr.num,
        };
        let extra_bits = (29 - av_log2(enc_tb.den)).clamp(0, 16) as u32;
        let duration = 1.0 / (fr.as_f64() * enc_tb.as_f64());
        Self {
            info,
            next_in,
            shift,
            out_start_us: seek.map_or(0, |s| s.1),
            sync_opts: 0,
            frame_number: 0,
            last_nb0: [0; 3],
            last_frame: None,
            pending: VecDeque::new(),
            flushed: false,
            vscfr: info.n_streams == 1,
            duration,
            enc_tb_ext: Ratio {
                num: enc_tb.num,
                den: enc_tb.den << extra_bits,
            },
            extra_bits,
        }
    }

    /// The next frame the CLI writes, or None at the end of its output.
    pub(crate) fn next_frame(&mut self) -> Option<usize> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            if self.next_in < self.info.n_frames() {
                let i = self.next_in;
                self.next_in += 1;
                self.video_out(Some(i));
            } else if !self.flushed {
                self.flushed = true;
                self.video_out(None);
            } else {
                return None;
            }
        }
    }

    /// `adjust_frame_pts_to_encoder_tb`: the frame time in output frames, as a double.
    fn float_pts(&self, i: usize) -> f64 {
        let p = self.info.frame_pts[i] + self.shift;
        let fp = rescale(p, self.info.time_base, self.enc_tb_ext)
            - rescale(self.out_start_us, MICROS, self.enc_tb_ext);
        let mut f = fp as f64 / (1u64 << self.extra_bits) as f64;
        f += if f > 0.0 { 1.0 } else { -1.0 } / (1u64 << 17) as f64;
        f
    }

    /// `do_video_out` for one input frame (`None` = flush at the end of the input).
    fn video_out(&mut self, frame: Option<usize>) {
        let (nb, nb0) = match frame {
            None => {
                let m = mid_pred(self.last_nb0[0], self.last_nb0[1], self.last_nb0[2]);
                (m, m)
            }
            Some(i) => {
                let mut sync_ipts = self.float_pts(i);
                let mut delta0 = sync_ipts - self.sync_opts as f64;
                let mut delta = delta0 + self.duration;
                let mut duration = self.duration;
                let (mut nb, mut nb0) = (1i64, 0i64);
                if delta0 < 0.0 && delta > 0.0 {
                    sync_ipts = self.sync_opts as f64;
                    duration += delta0;
                    delta0 = 0.0;
                }
                if self.vscfr && self.frame_number == 0 && delta0 >= 0.5 {
                    delta = duration;
                    delta0 = 0.0;
                    self.sync_opts = sync_ipts.round_ties_even() as i64;
                }
                if delta < -1.1 {
                    nb = 0;
                } else if delta > 1.1 {
                    nb = lrintf(delta);
                    if delta0 > 1.1 {
                        nb0 = lrintf(delta0 - 0.6);
                    }
                }
                (nb, nb0)
            }
        };
        let nb0 = nb0.min(nb);
        self.last_nb0 = [nb0, self.last_nb0[0], self.last_nb0[1]];
        for k in 0..nb {
            let pic = if k < nb0 && self.last_frame.is_some() {
                self.last_frame
            } else {
                frame
            };
            let Some(pic) = pic else { return };
            self.pending.push_back(pic);
            self.sync_opts += 1;
            self.frame_number += 1;
        }
        if frame.is_some() {
            self.last_frame = frame;
        }
    }
}

/// moviepy's `FFMPEG_VideoReader` over one [`VideoInfo`]: one per Video chunk event, as the
/// reference opens a new `VideoFileClip` per chunk.
pub struct FramePicker<'a> {
    info: &'a VideoInfo,
    pos: i64,
    last_read: Option<usize>,
    run: CliRun<'a>,
}

/// `"%.06f"` then FFmpeg's `av_parse_time`: seconds to whole microseconds as the CLI sees them.
fn cli_micros(seconds: f64) -> i64 {
    let s = format!("{seconds:.6}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, "0"));
    let neg = int.starts_with('-');
    let v = int.trim_start_matches('-').parse::<i64>().unwrap_or(0) * 1_000_000
        + frac.parse::<i64>().unwrap_or(0);
    if neg { -v } else { v }
}

impl<'a> FramePicker<'a> {
    /// Open the reader as `VideoFileClip` does (it reads frame 0 at once).
    pub fn open(info: &'a VideoInfo) -> Result<Self> {
        let mut p = Self {
            info,
            pos: 0,
            last_read: None,
            run: CliRun::new(info, None),
        };
        p.initialize(0.0);
        if p.last_read.is_none() {
            return Err(super::probe::media_err(
                &info.path,
                MediaErrorKind::Empty,
                "failed to read the first frame",
            ));
        }
        Ok(p)
    }

    fn frame_number(&self, t: f64) -> i64 {
        (self.info.fps * t + 0.00001) as i64
    }

    fn initialize(&mut self, t: f64) {
        self.pos = self.frame_number(t);
        let start = if self.pos != 0 {
            self.pos as f64 * (1.0 / self.info.fps) - 0.00001
        } else {
            0.0
        };
        self.run = if start != 0.0 {
            let offset = start.min(1.0);
            CliRun::new(
                self.info,
                Some((cli_micros(start - offset), cli_micros(offset))),
            )
        } else {
            CliRun::new(self.info, None)
        };
        self.read_frame();
    }

    fn read_frame(&mut self) {
        if let Some(f) = self.run.next_frame() {
            self.last_read = Some(f);
        }
        self.pos += 1;
    }

    fn skip_frames(&mut self, n: i64) {
        for _ in 0..n {
            self.run.next_frame();
        }
        self.pos += n;
    }

    /// The physical frame the reference returns for `get_frame(t)`, `t` in seconds from the
    /// start of the file (offset included).
    pub fn get_frame(&mut self, t: f64) -> usize {
        let pos = self.frame_number(t) + 1;
        if pos == self.pos {
        } else if pos < self.pos || pos > self.pos + 100 {
            self.initialize(t);
        } else {
            self.skip_frames(pos - self.pos - 1);
            self.read_frame();
        }
        self.last_read.expect("open() read a first frame")
    }
}

/// The frame shown at `t` (seconds from the file start) by the plain index rule
/// `int(fps * t + 1e-5)`, clamped to the last frame: what a stateless "frame at time t" means.
/// Clips use [`FramePicker`], which also reproduces the reference's end-of-video quirk.
pub fn frame_index_at(info: &VideoInfo, t: f64) -> usize {
    let i = (info.fps * t.max(0.0) + 0.00001) as i64;
    (i.max(0) as usize).min(info.n_frames() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stimulus::video::probe::Rotation;

    fn info(fps: f64, rate: Ratio, tb: Ratio, pts: Vec<i64>, n_streams: usize) -> VideoInfo {
        VideoInfo {
            path: "test.mp4".into(),
            width: 16,
            height: 16,
            rotation: Rotation::None,
            fps,
            duration: 0.0,
            frame_pts: pts,
            time_base: tb,
            start_time_us: 0,
            output_rate: rate,
            n_streams,
            stream_index: 0,
            codec: "h264".into(),
            sample_aspect: Ratio { num: 1, den: 1 },
            cut_points: Vec::new(),
        }
    }

    fn cfr(n: i64, fps: i64, n_streams: usize) -> VideoInfo {
        let tb = Ratio { num: 1, den: 12288 };
        info(
            fps as f64,
            Ratio { num: fps, den: 1 },
            tb,
            (0..n).map(|i| i * 12288 / fps).collect(),
            n_streams,
        )
    }

    #[test]
    fn rescale_rounds_half_away_from_zero() {
        let r = |n, d| Ratio { num: n, den: d };
        assert_eq!(rescale(3, r(1, 2), r(1, 1)), 2); // 1.5 -> 2
        assert_eq!(rescale(-3, r(1, 2), r(1, 1)), -2);
        assert_eq!(rescale(1_000_000, MICROS, r(1, 12288)), 12288);
    }

    #[test]
    fn cli_output_of_cfr_is_every_frame_once() {
        for streams in [1, 2] {
            let v = cfr(48, 24, streams);
            let mut run = CliRun::new(&v, None);
            let out: Vec<usize> = std::iter::from_fn(|| run.next_frame()).collect();
            assert_eq!(out, (0..48).collect::<Vec<_>>());
        }
    }

    /// The timeline golden (hf/vjepa2-tiny-timeline.json): 24 fps, 48 frames, bins end at
    /// 0.5 .. 2.0 s, 8 frames per clip 0.5 s apart; the last request (t = 2.0) returns frame 36.
    #[test]
    fn end_of_video_returns_previous_request() {
        let v = cfr(48, 24, 1);
        let mut p = FramePicker::open(&v).unwrap();
        let mut got = vec![];
        for k in 1..=4 {
            let t = k as f64 * 0.5;
            let clip: Vec<usize> = (0..8)
                .rev()
                .map(|j| p.get_frame((t - j as f64 * 0.5).max(0.0)))
                .collect();
            got.push(clip);
        }
        assert_eq!(got[3], vec![0, 0, 0, 0, 12, 24, 36, 36]);
        assert_eq!(got[0], vec![0, 0, 0, 0, 0, 0, 0, 12]);
    }

    /// A 2:1 variable-rate file: the CLI repeats each slow frame to fill its 24 fps output.
    #[test]
    fn variable_rate_is_resampled_like_the_cli() {
        let tb = Ratio { num: 1, den: 12288 };
        let pts: Vec<i64> = (0..24)
            .map(|i| i * 512)
            .chain((0..48).map(|i| 12288 + i * 1024))
            .collect();
        let v = info(14.52, Ratio { num: 24, den: 1 }, tb, pts, 1);
        let mut run = CliRun::new(&v, None);
        let out: Vec<usize> = std::iter::from_fn(|| run.next_frame()).collect();
        // Measured with the ffmpeg 5.1.9 CLI on the same timestamps: frames 0..=24 once, then
        // every later frame twice (119 frames).
        let want: Vec<usize> = (0..=24).chain((25..72).flat_map(|i| [i, i])).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn micros_parse_like_ffmpeg() {
        assert_eq!(cli_micros(0.0), 0);
        assert_eq!(cli_micros(0.95999), 959_990);
        assert_eq!(cli_micros(1.0), 1_000_000);
    }
}
