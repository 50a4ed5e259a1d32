//! Sequential decoding, each frame once, converted to RGB only when asked.
//!
//! A caller that knows which frames it will use says so ([`FrameDecoder::set_needed_frames`]);
//! H.264 and HEVC frames outside that set then go to the decoder with "discard if
//! non-reference". A non-reference frame is, by the standard's definition, never used to
//! predict another frame,
//! so skipping it changes no other frame's pixels; it is simply never decoded (the B frames
//! of a typical x264 encode are 40 % of the frames and of the decoding time).
//!
//! The current frame converts to RGB through the decoder's own [`RgbConverter`]
//! ([`FrameDecoder::rgb`]), or leaves the decoder ([`FrameDecoder::take_frame`]) to be converted
//! on another thread.

use ffmpeg_next as ffmpeg;

use super::convert::{DecodedFrame, Region, RgbConverter, RgbFrame, RgbView};
use super::probe::{VideoInfo, media_err, open_input};
use crate::error::{Error, MediaErrorKind, Result};

struct Opened {
    threads: usize,
    ictx: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    eof_sent: bool,
    packets_done: bool,
}

/// Decodes one video stream front to back.
pub struct FrameDecoder<'a> {
    info: &'a VideoInfo,
    io: Opened,
    frame: ffmpeg::frame::Video,
    converter: RgbConverter<'a>,
    /// Physical index of the frame in `frame`.
    current: Option<usize>,
    /// After a seek: the frame we must not overshoot (else we restart from the beginning).
    seek_target: Option<usize>,
    last_index: Option<usize>,
    /// Frames that came out of the decoder (each source frame counts once, unless a seek
    /// overshot and decoding restarted).
    pub frames_decoded: usize,
    /// Frames never decoded because no caller needs them (see [`Self::set_needed_frames`]).
    pub frames_skipped: usize,
    /// Per frame: whether the caller uses it (`None`: every frame is needed).
    needed: Option<Vec<bool>>,
    /// Per frame: its packet went in with "discard if non-reference", so it may not come out.
    sent_skippable: Vec<bool>,
    /// Decoding stops before this frame, a cut point (see [`Self::open_segment`]); `None`: at
    /// the end of the stream.
    end: Option<usize>,
}

impl<'a> FrameDecoder<'a> {
    /// Open for decoding from frame `start` on: with `start > 0` the container seeks to the
    /// keyframe before it. Frames before `start` still come out (callers skip them).
    /// The decoder runs as many frame threads as the calling rayon pool has (`--nprocs`).
    pub fn open(info: &'a VideoInfo, start: usize) -> Result<Self> {
        Self::open_with_threads(info, start, rayon::current_num_threads())
    }

    /// [`Self::open`] with an explicit number of frame threads, for a decoder opened on a
    /// thread outside the job's rayon pool.
    pub fn open_with_threads(info: &'a VideoInfo, start: usize, threads: usize) -> Result<Self> {
        Self::open_segment(info, start, None, threads)
    }

    /// Decode frames `start..end` only, where `end` is one of the video's cut points
    /// ([`VideoInfo::cut_points`]): packets from `end` on are never read, and the stream is
    /// complete once frame `end - 1` came out. With `start` a cut point too, no frame outside
    /// the range is decoded, so separate decoders can share one file's stretches.
    pub fn open_segment(
        info: &'a VideoInfo,
        start: usize,
        end: Option<usize>,
        threads: usize,
    ) -> Result<Self> {
        if let Some(e) = end
            && (e <= start || info.cut_points.binary_search(&e).is_err())
        {
            return Err(Error::Other(format!(
                "{}: cannot stop decoding before frame {e}: it is not a cut point after frame {start}",
                info.path.display()
            )));
        }
        let start = start.min(info.n_frames().saturating_sub(1));
        let io = open_decoder(info, start, threads.max(1))?;
        Ok(Self {
            info,
            io,
            frame: ffmpeg::frame::Video::empty(),
            converter: RgbConverter::new(info),
            current: None,
            seek_target: (start > 0).then_some(start),
            last_index: None,
            frames_decoded: 0,
            frames_skipped: 0,
            needed: None,
            sent_skippable: Vec::new(),
            end,
        })
    }

    /// Declare which frames the caller will use (`needed[i]` for frame `i`). Frames outside
    /// the set may then be skipped instead of decoded: H.264 and HEVC non-reference frames,
    /// which no other frame depends on. They do not come out of [`Self::next_frame`]; every needed
    /// frame still does, bit for bit as without this call.
    pub fn set_needed_frames(&mut self, needed: Vec<bool>) {
        if matches!(self.info.codec.as_str(), "h264" | "hevc")
            && needed.len() == self.info.n_frames()
        {
            self.sent_skippable = vec![false; needed.len()];
            self.needed = Some(needed);
        }
    }

    /// Convert only `region` of each frame from now on ([`RgbConverter::set_region`]).
    pub fn set_region(&mut self, region: Region) {
        self.converter.set_region(region);
    }

    /// True when frames `range` all went to the decoder as skippable: their absence from the
    /// output is the skip, not damage.
    fn skipped(&self, range: std::ops::Range<usize>) -> bool {
        range
            .clone()
            .all(|j| self.sent_skippable.get(j) == Some(&true))
    }

    /// Decode the next frame; returns its physical index (presentation order), or None at the
    /// end of the stream. A stream that ends before every announced frame came out is an error.
    pub fn next_frame(&mut self) -> Result<Option<usize>> {
        loop {
            match self.io.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    self.frames_decoded += 1;
                    let pts = self.frame.timestamp().or(self.frame.pts());
                    let idx = pts.and_then(|p| self.info.index_of_pts(p)).ok_or_else(|| {
                        media_err(
                            &self.info.path,
                            MediaErrorKind::Unsupported,
                            format!("a decoded frame has timestamp {pts:?}, which the container index does not list; remux the file (ffmpeg -i IN -c copy OUT.mp4)"),
                        )
                    })?;
                    if let Some(target) = self.seek_target.take()
                        && idx > target
                    {
                        // The seek overshot: decode from the start instead.
                        self.io = open_decoder(self.info, 0, self.io.threads)?;
                        self.last_index = None;
                        continue;
                    }
                    if let Some(last) = self.last_index
                        && idx > last + 1
                        && self.skipped(last + 1..idx)
                    {
                        self.frames_skipped += idx - last - 1;
                    } else if let Some(last) = self.last_index
                        && idx != last + 1
                    {
                        return Err(media_err(
                            &self.info.path,
                            if idx > last + 1 {
                                MediaErrorKind::Truncated
                            } else {
                                MediaErrorKind::Unsupported
                            },
                            format!(
                                "frame {} follows frame {last} (frames missing or out of order); the file is damaged",
                                idx
                            ),
                        ));
                    }
                    self.last_index = Some(idx);
                    self.current = Some(idx);
                    return Ok(Some(idx));
                }
                Err(ffmpeg::Error::Eof) => {
                    let got = self.last_index.map_or(0, |i| i + 1);
                    let n = self.end.unwrap_or(self.info.n_frames());
                    if got < n && self.last_index.is_some() && self.skipped(got..n) {
                        self.frames_skipped += n - got;
                        self.last_index = Some(n - 1);
                    } else if got < n {
                        return Err(media_err(
                            &self.info.path,
                            MediaErrorKind::Truncated,
                            format!(
                                "decoding stopped after {got} of {} frames ({:.2} s of {:.2} s); the file is cut off or damaged",
                                self.info.n_frames(),
                                self.info.frame_time(
                                    got.saturating_sub(1).min(self.info.n_frames() - 1)
                                ),
                                self.info.duration
                            ),
                        ));
                    }
                    self.current = None;
                    return Ok(None);
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::error::EAGAIN => {}
                Err(e) => {
                    return Err(media_err(
                        &self.info.path,
                        MediaErrorKind::Truncated,
                        format!("decoding failed: {e}"),
                    ));
                }
            }
            self.feed()?;
        }
    }

    /// Send the next packet of our stream to the decoder (or EOF once packets run out).
    fn feed(&mut self) -> Result<()> {
        let Self {
            io,
            info,
            needed,
            sent_skippable,
            end,
            ..
        } = self;
        if io.eof_sent {
            return Err(media_err(
                &info.path,
                MediaErrorKind::Truncated,
                "the decoder stopped without signalling the end",
            ));
        }
        let mut packet = ffmpeg::Packet::empty();
        while !io.packets_done {
            match packet.read(&mut io.ictx) {
                Ok(()) => {
                    if packet.stream() != info.stream_index {
                        continue;
                    }
                    if let Some(e) = *end
                        && packet
                            .pts()
                            .and_then(|t| info.index_of_pts(t))
                            .is_some_and(|i| i >= e)
                    {
                        // A cut point: every frame before it was in the packets already read.
                        io.packets_done = true;
                        break;
                    }
                    let unneeded = needed.as_ref().and_then(|n| {
                        let i = info.index_of_pts(packet.pts()?)?;
                        (!n[i]).then_some(i)
                    });
                    // Read when the packet is submitted (frame threads copy it then).
                    io.decoder.skip_frame(match unneeded {
                        Some(i) => {
                            sent_skippable[i] = true;
                            ffmpeg::Discard::NonReference
                        }
                        None => ffmpeg::Discard::Default,
                    });
                    match io.decoder.send_packet(&packet) {
                        // Damaged packets are skipped, as the CLI does; the frame count check
                        // at the end turns lost frames into an error.
                        Ok(()) | Err(ffmpeg::Error::InvalidData) => return Ok(()),
                        Err(e) => {
                            return Err(media_err(
                                &info.path,
                                MediaErrorKind::Truncated,
                                format!("decoding failed: {e}"),
                            ));
                        }
                    }
                }
                Err(ffmpeg::Error::Eof) => io.packets_done = true,
                Err(e) => {
                    return Err(media_err(
                        &info.path,
                        MediaErrorKind::Truncated,
                        format!(
                            "reading failed after frame {:?} ({e}); the file is cut off or damaged",
                            self.last_index
                        ),
                    ));
                }
            }
        }
        io.decoder.send_eof().map_err(|e| {
            media_err(
                &info.path,
                MediaErrorKind::Truncated,
                format!("decoder flush failed: {e}"),
            )
        })?;
        io.eof_sent = true;
        Ok(())
    }

    /// The current frame as RGB24, exactly as the reference's CLI pipe delivers it (the
    /// region asked for with [`Self::set_region`], or the whole picture). Converts once:
    /// the decoded picture goes to the conversion.
    pub fn rgb(&mut self) -> Result<RgbView<'_>> {
        self.current_frame()?;
        self.converter.view(&self.frame)
    }

    /// [`Self::rgb`], taken out of the decoder.
    pub fn take_rgb(&mut self) -> Result<RgbFrame> {
        self.current_frame()?;
        self.converter.convert_frame(&self.frame)
    }

    /// The current decoded picture, taken out of the decoder to be converted elsewhere (with
    /// an [`RgbConverter`] of the same video).
    pub fn take_frame(&mut self) -> Result<DecodedFrame> {
        self.current_frame()?;
        self.current = None;
        Ok(DecodedFrame(std::mem::replace(
            &mut self.frame,
            ffmpeg::frame::Video::empty(),
        )))
    }

    fn current_frame(&self) -> Result<()> {
        if self.current.is_none() {
            return Err(Error::Other(
                "FrameDecoder: no current frame to convert".into(),
            ));
        }
        Ok(())
    }
}

fn open_decoder(info: &VideoInfo, start: usize, threads: usize) -> Result<Opened> {
    let (mut ictx, idx) = open_input(&info.path)?;
    if idx != info.stream_index {
        return Err(Error::Other(format!(
            "{}: the video stream changed between probe and decode",
            info.path.display()
        )));
    }
    let st = ictx.stream(idx).expect("stream exists");
    let tb = st.time_base();
    let mut ctx =
        ffmpeg::codec::context::Context::from_parameters(st.parameters()).map_err(|e| {
            media_err(
                &info.path,
                MediaErrorKind::Unreadable,
                format!("cannot set up the decoder: {e}"),
            )
        })?;
    // Frame threads, as many as the job's thread budget (`--nprocs`, which sizes rayon's
    // pool). libavcodec's automatic count is every CPU of the machine plus one, which on an HPC
    // node shared by array tasks oversubscribes the task's cores. On 2 free cores, 2, 3 and
    // the automatic count decode equally fast.
    ctx.set_threading(ffmpeg::codec::threading::Config {
        kind: ffmpeg::codec::threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    // The decoder knows the packet time base.
    // SAFETY: a plain field written before the codec is opened.
    unsafe {
        (*ctx.as_mut_ptr()).pkt_timebase = tb.into();
    }
    let decoder = ctx.decoder().video().map_err(|e| {
        media_err(
            &info.path,
            MediaErrorKind::UnsupportedCodec,
            format!("cannot open the {} decoder: {e}", info.codec),
        )
    })?;
    if start > 0 {
        // In the stream's own time base: a round trip through microseconds can land a tick
        // before a keyframe's timestamp, and the seek then goes to the keyframe before it.
        let ts = info.frame_pts[start];
        // SAFETY: a live input context and one of its stream indices.
        let ret = unsafe {
            ffmpeg::ffi::avformat_seek_file(ictx.as_mut_ptr(), idx as i32, i64::MIN, ts, ts, 0)
        };
        if ret < 0 {
            return Err(media_err(
                &info.path,
                MediaErrorKind::Unreadable,
                format!("seek failed: {}", ffmpeg::Error::from(ret)),
            ));
        }
    }
    Ok(Opened {
        threads,
        ictx,
        decoder,
        eof_sent: false,
        packets_done: false,
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::stimulus::video::test_media::lavfi_video;

    /// Decode every frame, or only the needed ones: (SHA-256 of each frame that came out,
    /// frames skipped).
    fn digests(info: &VideoInfo, needed: Option<Vec<bool>>) -> (Vec<Option<String>>, usize) {
        let mut dec = FrameDecoder::open(info, 0).unwrap();
        if let Some(m) = needed {
            dec.set_needed_frames(m);
        }
        let mut out = vec![None; info.n_frames()];
        while let Some(i) = dec.next_frame().unwrap() {
            let rgb = dec.rgb().unwrap().to_packed();
            out[i] = Some(hex::encode(Sha256::digest(&rgb)));
        }
        (out, dec.frames_skipped)
    }

    /// An H.264 test file with B frames, made with the ffmpeg CLI in `dir`.
    fn bframes_video(dir: &std::path::Path) -> std::path::PathBuf {
        lavfi_video(
            dir,
            "bframes.mp4",
            "testsrc2=d=3:s=128x96:r=24",
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-pix_fmt", "yuv420p",
            ],
        )
    }

    #[test]
    fn covering_regions_hold_the_rows_and_columns_on_aligned_corners() {
        let r = Region::covering(13..70, 37..101, 96, 160);
        assert_eq!((r.top, r.left), (12, 36));
        assert!(r.top + r.height >= 70 && r.left + r.width >= 101);
        assert_eq!(r.width % 16, 0);
        assert_eq!(r.height % 4, 0);
        // Clipped at the picture's edges, which may be odd.
        let r = Region::covering(0..97, 3..131, 97, 131);
        assert_eq!((r.top, r.left, r.height, r.width), (0, 0, 97, 131));
        assert!(r.is_whole(97, 131));
    }

    /// Converting only a region gives exactly the whole conversion's bytes there, for the
    /// common formats (where libswscale's unscaled converters are pixel-local and the region
    /// is used) and for the others (where the noise check falls back to whole frames): 8- and
    /// 10-bit 4:2:0, full-range 4:2:2, 4:4:4, an odd picture size, and a rotated stream.
    #[test]
    fn a_converted_region_equals_the_same_pixels_of_the_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &str, &[&str], bool); 5] = [
            (
                "h264.mp4",
                "160x96",
                &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                true,
            ),
            (
                "p10.mkv",
                "150x90",
                &["-c:v", "ffv1", "-pix_fmt", "yuv420p10le"],
                false,
            ),
            (
                "j422.mkv",
                "150x90",
                &["-c:v", "mjpeg", "-pix_fmt", "yuvj422p"],
                false,
            ),
            (
                "odd444.mkv",
                "131x97",
                &["-c:v", "ffv1", "-pix_fmt", "yuv444p"],
                false,
            ),
            (
                "rotated.mp4",
                "160x96",
                &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                true,
            ),
        ];
        for (name, size, args, region_expected) in cases {
            let source = format!("testsrc2=d=2:s={size}:r=12");
            let mut path = lavfi_video(dir.path(), name, &source, args);
            if name == "rotated.mp4" {
                // A display matrix of 90 degrees (the ffmpeg 5.1 CLI writes it on a remux).
                let turned = dir.path().join("turned.mp4");
                let ok = std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-y", "-i"])
                    .arg(&path)
                    .args(["-c", "copy", "-metadata:s:v:0", "rotate=90"])
                    .arg(&turned)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "ffmpeg could not remux with a rotation");
                path = turned;
            }
            let info = VideoInfo::open(&path).unwrap();
            if name == "rotated.mp4" {
                assert_ne!(info.rotation, crate::stimulus::video::Rotation::None);
                assert_eq!((info.width, info.height), (96, 160));
            }
            let (h, w) = (info.height, info.width);
            let region = Region::covering(h / 5..h * 4 / 5, w / 4..w * 3 / 4, h, w);
            let mut full = FrameDecoder::open(&info, 0).unwrap();
            let mut part = FrameDecoder::open(&info, 0).unwrap();
            part.set_region(region);
            let mut frames = 0;
            while let Some(i) = full.next_frame().unwrap() {
                assert_eq!(part.next_frame().unwrap(), Some(i));
                let whole = full.rgb().unwrap();
                let (stride, data) = (whole.stride, whole.data.to_vec());
                let v = part.rgb().unwrap();
                if region_expected {
                    assert_eq!((v.width, v.height), (region.width, region.height), "{name}");
                }
                for y in 0..v.height {
                    let at = (v.top + y) * stride + 3 * v.left;
                    assert_eq!(
                        &v.data[y * v.stride..y * v.stride + 3 * v.width],
                        &data[at..at + 3 * v.width],
                        "{name}: frame {i} row {y} differs"
                    );
                }
                frames += 1;
            }
            assert_eq!(frames, info.n_frames(), "{name}");
        }
    }

    /// The decoder runs as many frame threads as the rayon pool it is opened in has (what
    /// `--nprocs` sets), and every frame comes out the same whatever that number is.
    #[test]
    fn decoder_threads_follow_the_pool_and_change_no_frame() {
        let dir = tempfile::tempdir().unwrap();
        let info = VideoInfo::open(&bframes_video(dir.path())).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let dec = FrameDecoder::open(&info, 0).unwrap();
                // SAFETY: reads a plain field of the open codec context.
                let count = unsafe { (*dec.io.decoder.as_ptr()).thread_count };
                (count, digests(&info, None).0)
            })
        };
        let (one, frames_one) = run(1);
        let (three, frames_three) = run(3);
        assert_eq!((one, three), (1, 3));
        assert!(frames_one.iter().all(Option::is_some));
        assert_eq!(frames_one, frames_three);
    }

    /// Skipping the unneeded non-reference frames of an H.264 file with B frames leaves every
    /// needed frame bit-identical, and each frame either comes out or is counted as skipped.
    #[test]
    fn skipping_unneeded_frames_changes_no_needed_frame() {
        let dir = tempfile::tempdir().unwrap();
        check_skipping(&VideoInfo::open(&bframes_video(dir.path())).unwrap());
    }

    /// The same for HEVC (x265's B frames, non-reference ones among them).
    #[test]
    fn skipping_unneeded_hevc_frames_changes_no_needed_frame() {
        let dir = tempfile::tempdir().unwrap();
        let p = lavfi_video(
            dir.path(),
            "bframes_hevc.mp4",
            "testsrc2=d=3:s=128x96:r=24",
            &[
                "-c:v",
                "libx265",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-x265-params",
                "bframes=3:log-level=error",
            ],
        );
        let info = VideoInfo::open(&p).unwrap();
        assert_eq!(info.codec, "hevc");
        check_skipping(&info);
    }

    fn check_skipping(info: &VideoInfo) {
        let n = info.n_frames();
        let (all, skipped) = digests(info, None);
        assert_eq!(skipped, 0);
        assert!(all.iter().all(Option::is_some));
        // Two frames of every three, as 16 fps clips take from 24 fps video; none at the end.
        let needed: Vec<bool> = (0..n).map(|i| i % 3 != 1 && i + 4 < n).collect();
        let (some, skipped) = digests(info, Some(needed.clone()));
        assert!(skipped > 0, "the test video has no skippable frame");
        for i in 0..n {
            if needed[i] {
                assert_eq!(some[i], all[i], "needed frame {i} differs");
            } else if some[i].is_some() {
                assert_eq!(some[i], all[i], "frame {i} differs");
            }
        }
        assert_eq!(skipped + some.iter().flatten().count(), n);
    }
}
