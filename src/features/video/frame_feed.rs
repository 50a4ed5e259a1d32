//! The decoders, on threads of their own, handing frames to the clip assembler.
//!
//! Two ways, chosen per video ([`Decoding`]):
//! - **One decoder with frame threads** ([`Decoding::FrameThreads`]). Decoding, the RGB
//!   conversion and the resize used to run one after the other on the assembler's thread.
//!   libavcodec's frame threads only decode a frame or two ahead of the thread that feeds them
//!   packets, so while that thread converted and resized a frame (3 ms at 1080p) they ran out of
//!   work: on 2 cores the whole preparation used 1.4 of them. So a thread does nothing but feed
//!   the decoder and pass on the frames, a few ahead, while the assembler converts and resizes
//!   the ones already decoded. The frames travel as reference-counted FFmpeg buffers; nothing
//!   is copied.
//! - **Single-threaded decoders on separate stretches** ([`Decoding::Segments`], H.264 or HEVC
//!   with IDR pictures to cut at; see [`super::segments`]): each converts and crops its own
//!   frames.
//!
//! Only the frames some clip uses are sent, in presentation order, and decoding stops at the
//! last of them. Dropping the feed stops the threads at their next frame.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::processor::{Geometry, Resizer};
use super::segments::{MIN_SEGMENT_FRAMES, SegmentFeed, plan_segments, segments_are_faster};
use crate::error::{Error, Result};
use crate::stimulus::video::{DecodedFrame, FrameDecoder, Region, RgbConverter, VideoInfo};

/// Decoded frames waiting for the assembler: enough to ride out a slow resize, few enough that
/// memory stays small (4 decoded 1080p frames are 12 MB).
const DEPTH: usize = 4;

/// The environment variable that forces one way of decoding (`frame-threads` or `segments`),
/// for benchmarks and for bisecting a problem; `auto` (the default) chooses per video.
pub const ENV_VAR: &str = "TRIBE_VIDEO_DECODE";

/// How a video's frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// Stretches where the video has cut points and they are predicted faster, else frame
    /// threads ([`plan_segments`]).
    Auto,
    /// One decoder with frame threads.
    FrameThreads,
    /// Single-threaded decoders on stretches of at least `min_frames` frames, wherever the
    /// video has cut points (else frame threads).
    Segments { min_frames: usize },
}

impl Decoding {
    /// From [`ENV_VAR`]; unknown values are an error, not silently `auto`.
    pub fn from_env() -> Result<Self> {
        Self::parse(&std::env::var(ENV_VAR).unwrap_or_default())
    }

    /// `auto`, `frame-threads` or `segments` (empty: `auto`).
    pub fn parse(value: &str) -> Result<Self> {
        match value.trim() {
            "" | "auto" => Ok(Self::Auto),
            "frame-threads" => Ok(Self::FrameThreads),
            "segments" => Ok(Self::Segments {
                min_frames: MIN_SEGMENT_FRAMES,
            }),
            other => Err(Error::Usage(format!(
                "{ENV_VAR}='{other}' is not a way of decoding video\n  fix: use auto, frame-threads or segments"
            ))),
        }
    }
}

/// What the decoder threads counted.
#[derive(Debug, Clone, Default)]
pub struct FeedStats {
    pub frames_decoded: usize,
    /// Frames no clip uses that were never decoded (H.264 and HEVC non-reference frames).
    pub frames_skipped: usize,
    /// How many times each physical frame came out of a decoder.
    pub decode_counts: Vec<u32>,
    /// Stretches decoded by separate single-threaded decoders (0: one frame-threaded decoder).
    pub segments: usize,
}

/// A frame from the feed: decoded (to be converted and cropped by the caller), or already
/// cropped by the worker that decoded it (CHW uint8).
pub enum FedFrame {
    Decoded(DecodedFrame),
    Cropped(Vec<u8>),
}

/// From a decoded picture to the processor's resized and cropped uint8 frame: the RGB
/// conversion of only the pixels the resize reads, then the resize.
pub struct FrameCropper<'a> {
    converter: RgbConverter<'a>,
    resizer: Resizer,
}

impl<'a> FrameCropper<'a> {
    pub fn new(info: &'a VideoInfo, geometry: Geometry) -> Self {
        let resizer = Resizer::new(geometry);
        let mut converter = RgbConverter::new(info);
        converter.set_region(Region::covering(
            resizer.source_rows(),
            resizer.source_cols(),
            info.height,
            info.width,
        ));
        Self { converter, resizer }
    }

    /// Where frames go through resize and crop.
    pub fn geometry(&self) -> Geometry {
        self.resizer.geometry()
    }

    /// Bytes of one cropped frame.
    pub fn crop_len(&self) -> usize {
        let g = self.resizer.geometry();
        3 * g.crop_height * g.crop_width
    }

    /// Convert and crop `frame` into `out` ([`Self::crop_len`] bytes).
    pub fn crop(&mut self, frame: DecodedFrame, out: &mut [u8]) -> Result<()> {
        let rgb = self.converter.convert(frame)?;
        let v = rgb.view();
        self.resizer
            .resize_crop_part(v.data, v.stride, (v.top, v.left), out);
        Ok(())
    }
}

/// The running decoder threads. Dropping it stops them.
pub struct FrameFeed {
    inner: Inner,
}

enum Inner {
    FrameThreads(ThreadFeed),
    Segments(SegmentFeed),
}

impl FrameFeed {
    /// Start decoding `info`, passing on the frames `needed` marks; frames the workers crop
    /// use `geometry`.
    ///
    /// With frame threads, the decoder gets two more than the calling rayon pool has threads
    /// (`--nprocs`): frame threads wait on each other's reference rows and on this thread's
    /// hand-overs, and two more frames in flight keep the cores busy through those waits.
    /// In 4 alternating rounds on 2 cores (1080p H.264, the released clip plan), 4 frame
    /// threads gave 9.8–11.0x real time, 3 gave 9.2–10.5x and 2 gave 8.4–10.3x. Separate
    /// stretches get one single-threaded decoder per pool thread (at least two).
    pub fn start(
        info: &VideoInfo,
        needed: Vec<bool>,
        geometry: Geometry,
        decoding: Decoding,
    ) -> Result<Self> {
        let pool = rayon::current_num_threads();
        let workers = pool.max(2);
        let segments = match decoding {
            Decoding::FrameThreads => None,
            Decoding::Auto => plan_segments(&needed, &info.cut_points, pool, MIN_SEGMENT_FRAMES)
                .filter(|s| segments_are_faster(s, pool)),
            // Forced: stretches wherever there are two, predicted faster or not.
            Decoding::Segments { min_frames } => {
                plan_segments(&needed, &info.cut_points, workers, min_frames)
            }
        };
        let inner = match segments {
            Some(segments) => {
                tracing::debug!(
                    "{}: decoding {} stretches on {workers} single-threaded decoders",
                    info.path.display(),
                    segments.len()
                );
                Inner::Segments(SegmentFeed::start(
                    info, needed, segments, workers, geometry,
                )?)
            }
            None => Inner::FrameThreads(ThreadFeed::start(info, needed, pool + 2)?),
        };
        Ok(Self { inner })
    }

    /// The next needed frame and its physical index; `None` once every needed frame came.
    pub fn next_frame(&mut self) -> Result<Option<(usize, FedFrame)>> {
        match &mut self.inner {
            Inner::FrameThreads(feed) => Ok(feed
                .next_frame()?
                .map(|(i, frame)| (i, FedFrame::Decoded(frame)))),
            Inner::Segments(feed) => Ok(feed
                .next_frame()?
                .map(|(i, crop)| (i, FedFrame::Cropped(crop)))),
        }
    }

    /// Stop the threads (if they are still decoding) and return their counts.
    pub fn finish(self) -> Result<FeedStats> {
        match self.inner {
            Inner::FrameThreads(mut feed) => feed.stop(),
            Inner::Segments(feed) => feed.finish(),
        }
    }
}

/// One decoder with frame threads, on a thread that passes the needed frames on.
struct ThreadFeed {
    rx: Option<Receiver<Result<(usize, DecodedFrame)>>>,
    thread: Option<JoinHandle<FeedStats>>,
}

impl ThreadFeed {
    fn start(info: &VideoInfo, needed: Vec<bool>, threads: usize) -> Result<Self> {
        let info = info.clone();
        let (tx, rx) = sync_channel(DEPTH);
        let thread = std::thread::Builder::new()
            .name("video-decode".into())
            .spawn(move || {
                let mut stats = FeedStats {
                    decode_counts: vec![0; info.n_frames()],
                    ..Default::default()
                };
                if let Err(e) = decode(&info, &needed, threads, &tx, &mut stats) {
                    // The assembler may have stopped already; then nobody needs the error.
                    let _ = tx.send(Err(e));
                }
                stats
            })
            .map_err(|e| Error::Other(format!("cannot start the video decoder thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    fn next_frame(&mut self) -> Result<Option<(usize, DecodedFrame)>> {
        match self.rx.as_ref().map(Receiver::recv) {
            Some(Ok(Ok(frame))) => Ok(Some(frame)),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) | None => Ok(None),
        }
    }

    fn stop(&mut self) -> Result<FeedStats> {
        // Closing the channel makes the thread's next send fail, and it returns.
        drop(self.rx.take());
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Other("the video decoder thread panicked".into())),
            None => Ok(FeedStats::default()),
        }
    }
}

impl Drop for ThreadFeed {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The thread's work: decode from the first needed frame to the last, sending the needed ones.
fn decode(
    info: &VideoInfo,
    needed: &[bool],
    threads: usize,
    tx: &SyncSender<Result<(usize, DecodedFrame)>>,
    stats: &mut FeedStats,
) -> Result<()> {
    let (Some(first), Some(last)) = (
        needed.iter().position(|&n| n),
        needed.iter().rposition(|&n| n),
    ) else {
        return Ok(());
    };
    let mut dec = FrameDecoder::open_with_threads(info, first, threads)?;
    dec.set_needed_frames(needed.to_vec());
    while let Some(i) = dec.next_frame()? {
        stats.decode_counts[i] += 1;
        if needed.get(i) == Some(&true) {
            let frame = dec.take_frame()?;
            if tx.send(Ok((i, frame))).is_err() {
                break; // the assembler stopped
            }
        }
        if i >= last {
            break;
        }
    }
    stats.frames_decoded = dec.frames_decoded;
    stats.frames_skipped = dec.frames_skipped;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::features::video::processor::ProcessorConfig;
    use crate::stimulus::video::test_media::lavfi_video;

    /// 4 s at 24 fps, x264 with 3 B frames and a keyframe every 24 frames (IDR pictures, so
    /// cut points at 24, 48 and 72, unless `extra` asks for open GOPs).
    fn x264_gop_video(dir: &std::path::Path, name: &str, extra: &[&str]) -> VideoInfo {
        let mut args = vec![
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "24",
            "-keyint_min",
            "24",
            "-sc_threshold",
            "0",
            "-bf",
            "3",
        ];
        args.extend_from_slice(extra);
        let p = lavfi_video(dir, name, "testsrc2=d=4:s=128x96:r=24", &args);
        VideoInfo::open(&p).unwrap()
    }

    fn gop_video(dir: &std::path::Path) -> VideoInfo {
        x264_gop_video(dir, "feed.mp4", &[])
    }

    fn geometry(info: &VideoInfo) -> Geometry {
        ProcessorConfig::for_crop(64).geometry(info.height, info.width)
    }

    /// (index, SHA-256 of the crop) of every frame a feed sends, and its counts.
    fn crops(
        info: &VideoInfo,
        needed: &[bool],
        decoding: Decoding,
    ) -> (Vec<(usize, String)>, FeedStats) {
        let g = geometry(info);
        let mut cropper = FrameCropper::new(info, g);
        let mut feed = FrameFeed::start(info, needed.to_vec(), g, decoding).unwrap();
        let mut got = Vec::new();
        while let Some((i, frame)) = feed.next_frame().unwrap() {
            let crop = match frame {
                FedFrame::Decoded(d) => {
                    let mut out = vec![0u8; cropper.crop_len()];
                    cropper.crop(d, &mut out).unwrap();
                    out
                }
                FedFrame::Cropped(c) => c,
            };
            got.push((i, format!("{:x}", Sha256::digest(&crop))));
        }
        (got, feed.finish().unwrap())
    }

    /// The needed frames come out once each, in order; decoding stops at the last needed
    /// frame; and a feed dropped half-way stops its thread instead of hanging.
    #[test]
    fn needed_frames_come_in_order_and_a_dropped_feed_stops() {
        let dir = tempfile::tempdir().unwrap();
        let info = gop_video(dir.path());
        let n = info.n_frames();
        let needed: Vec<bool> = (0..n).map(|i| i % 3 == 0 && i < n / 2).collect();
        let (got, stats) = crops(&info, &needed, Decoding::FrameThreads);
        let want: Vec<usize> = (0..n).filter(|&i| needed[i]).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want);
        let last = *want.last().unwrap();
        assert!(stats.decode_counts[last + 1..].iter().all(|&c| c == 0));
        assert!(stats.decode_counts.iter().all(|&c| c <= 1));
        assert_eq!(stats.segments, 0);

        for decoding in [Decoding::FrameThreads, Decoding::Segments { min_frames: 1 }] {
            let g = geometry(&info);
            let mut feed = FrameFeed::start(&info, vec![true; n], g, decoding).unwrap();
            assert_eq!(feed.next_frame().unwrap().map(|f| f.0), Some(0));
            let t = std::time::Instant::now();
            drop(feed);
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
        }
    }

    /// The probe finds the IDR pictures as cut points.
    #[test]
    fn idr_pictures_are_the_cut_points() {
        let dir = tempfile::tempdir().unwrap();
        let info = gop_video(dir.path());
        assert_eq!(info.n_frames(), 96);
        assert_eq!(info.cut_points, vec![24, 48, 72]);
    }

    /// Separate decoders on stretches give the frames, pixels and order of one decoder with
    /// frame threads, decode every frame exactly once, and still skip unneeded non-reference
    /// frames: for every frame, and for the 16-of-24 frames the released clip plan uses,
    /// starting after the first cut point.
    #[test]
    fn stretches_give_the_frames_of_one_decoder_each_decoded_once() {
        let dir = tempfile::tempdir().unwrap();
        let info = gop_video(dir.path());
        let n = info.n_frames();
        let plans: [Vec<bool>; 2] = [
            vec![true; n],
            (0..n).map(|i| i >= 30 && i % 3 != 2).collect(),
        ];
        for needed in plans {
            let (want, one) = crops(&info, &needed, Decoding::FrameThreads);
            let (got, split) = crops(&info, &needed, Decoding::Segments { min_frames: 1 });
            assert!(split.segments >= 2, "{} stretches", split.segments);
            assert_eq!(got, want);
            assert!(split.decode_counts.iter().all(|&c| c <= 1));
            for (i, &n) in needed.iter().enumerate() {
                if n {
                    assert_eq!((split.decode_counts[i], one.decode_counts[i]), (1, 1));
                }
            }
            // A stretch stops at its last needed frame, so an unneeded reference frame after
            // it (the P frame before the next IDR) may not come out at all.
            let sum = |c: &[u32]| c.iter().sum::<u32>();
            assert!(sum(&split.decode_counts) <= sum(&one.decode_counts));
            if needed.iter().all(|&x| x) {
                assert!(split.decode_counts.iter().all(|&c| c == 1));
            } else {
                assert!(split.frames_skipped > 0);
            }
        }
    }

    /// A video without IDR pictures after the first (x264's open GOPs start with recovery
    /// points) has no cut points, and is decoded by one decoder even when stretches are asked.
    #[test]
    fn open_gops_are_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let info = x264_gop_video(dir.path(), "open.mp4", &["-x264-params", "open-gop=1"]);
        assert_eq!(info.cut_points, Vec::<usize>::new());
        let (_, stats) = crops(
            &info,
            &vec![true; info.n_frames()],
            Decoding::Segments { min_frames: 1 },
        );
        assert_eq!(stats.segments, 0);
    }

    /// HEVC too: x265 with closed GOPs starts each at an IDR picture, which is a cut point, and
    /// stretches give one decoder's frames; with x265's default open GOPs (CRA pictures,
    /// whose leading pictures refer back) there are no cuts.
    #[test]
    fn hevc_idr_pictures_are_cut_points_and_cra_pictures_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let hevc = |name: &str, open_gop: u8| {
            let params = format!(
                "keyint=24:min-keyint=24:scenecut=0:bframes=3:open-gop={open_gop}:log-level=error"
            );
            let p = lavfi_video(
                dir.path(),
                name,
                "testsrc2=d=4:s=128x96:r=24",
                &[
                    "-c:v",
                    "libx265",
                    "-pix_fmt",
                    "yuv420p",
                    "-x265-params",
                    &params,
                ],
            );
            VideoInfo::open(&p).unwrap()
        };
        let closed = hevc("closed.mp4", 0);
        assert_eq!(closed.codec, "hevc");
        assert_eq!(closed.cut_points, vec![24, 48, 72]);
        let needed = vec![true; closed.n_frames()];
        let (want, _) = crops(&closed, &needed, Decoding::FrameThreads);
        let (got, split) = crops(&closed, &needed, Decoding::Segments { min_frames: 1 });
        assert!(split.segments >= 2, "{} stretches", split.segments);
        assert_eq!(got, want);
        assert!(split.decode_counts.iter().all(|&c| c == 1));
        let open = hevc("open.mp4", 1);
        assert_eq!(open.cut_points, Vec::<usize>::new());
    }

    /// A file that became unreadable after the probe gives an error naming it, in both ways
    /// of decoding, instead of a hang or a panic (the stretches' workers report through their
    /// queues, and stretches nobody took are closed).
    #[test]
    fn a_file_gone_bad_after_the_probe_is_an_error_in_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let info = gop_video(dir.path());
        std::fs::write(&info.path, b"no longer a video").unwrap();
        for decoding in [Decoding::FrameThreads, Decoding::Segments { min_frames: 1 }] {
            let g = geometry(&info);
            let t = std::time::Instant::now();
            let mut feed =
                FrameFeed::start(&info, vec![true; info.n_frames()], g, decoding).unwrap();
            let err = loop {
                match feed.next_frame() {
                    Err(e) => break e.to_string(),
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{decoding:?}: the feed ended without an error"),
                }
            };
            assert!(err.contains("feed.mp4"), "{decoding:?}: {err}");
            drop(feed);
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
        }
    }

    #[test]
    fn the_decoding_setting_is_checked() {
        assert_eq!(Decoding::parse("").unwrap(), Decoding::Auto);
        assert_eq!(
            Decoding::parse("frame-threads").unwrap(),
            Decoding::FrameThreads
        );
        assert!(matches!(
            Decoding::parse(" segments").unwrap(),
            Decoding::Segments { .. }
        ));
        let e = Decoding::parse("gop").unwrap_err().to_string();
        assert!(
            e.contains("TRIBE_VIDEO_DECODE='gop'") && e.contains("fix:"),
            "{e}"
        );
    }
}
