//! What a video file holds, read the way the reference reads it.
//!
//! The reference (neuralset -> moviepy 2.2.1 -> the ffmpeg 5.1 CLI) never asks FFmpeg for
//! numbers directly: moviepy parses the text `ffmpeg -i` prints. Its frame rate is the stream's
//! average rate printed with two decimals (`29.97 fps`), snapped to `x * 1000/1001` for common
//! NTSC rates; its duration is the container duration printed to 1/100 s. Frame choice depends
//! on both, so [`VideoInfo`] reproduces that printing and parsing exactly.
//!
//! Opening also scans the packet timestamps once (demuxing only, no decoding). The timestamps
//! let the frame picker reproduce what the CLI outputs after a seek and how its constant-rate
//! output duplicates or drops frames (see `reader.rs`), and they let the decoder check that it
//! produced every frame the container announced (a truncated file is an error, not a silently
//! frozen picture).

use std::path::{Path, PathBuf};

use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

use crate::error::{Error, MediaErrorKind, Result};

/// How FFmpeg's CLI turns the picture upright (its default `-autorotate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    None,
    /// 90° clockwise (`transpose=clock`).
    Clockwise,
    /// 180° (`hflip,vflip`).
    UpsideDown,
    /// 90° counter-clockwise (`transpose=cclock`).
    CounterClockwise,
}

impl Rotation {
    /// The filters the CLI inserts before the user's filters.
    pub(crate) fn filters(self) -> &'static str {
        match self {
            Rotation::None => "",
            Rotation::Clockwise => "transpose=clock,",
            Rotation::UpsideDown => "hflip,vflip,",
            Rotation::CounterClockwise => "transpose=cclock,",
        }
    }
}

/// A rational number as FFmpeg stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub num: i64,
    pub den: i64,
}

impl Ratio {
    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    fn from_ff(r: ffmpeg::Rational) -> Self {
        Self {
            num: r.numerator() as i64,
            den: r.denominator() as i64,
        }
    }

    fn is_valid(self) -> bool {
        self.num > 0 && self.den > 0
    }
}

/// A video file as the reference sees it.
#[derive(Debug, Clone)]
pub struct VideoInfo {
    pub path: PathBuf,
    /// Picture size after the CLI's autorotation (what the reference's frames have).
    pub width: usize,
    pub height: usize,
    pub rotation: Rotation,
    /// moviepy's `fps`: used in `int(fps * t + 1e-5)`.
    pub fps: f64,
    /// moviepy's `duration` (container duration, to 1/100 s).
    pub duration: f64,
    /// Presentation timestamps of the decodable frames, ascending, in `time_base` units.
    pub frame_pts: Vec<i64>,
    pub time_base: Ratio,
    /// Container start time in microseconds (the CLI shifts timestamps by it).
    pub start_time_us: i64,
    /// Frame rate of the CLI's constant-rate output (`av_guess_frame_rate`).
    pub output_rate: Ratio,
    /// Number of streams in the file (the CLI uses a gentler sync mode for single-stream files).
    pub n_streams: usize,
    pub stream_index: usize,
    pub codec: String,
    /// Sample aspect ratio. The reference ignores it (it reads stored pixels), and so do we.
    pub sample_aspect: Ratio,
    /// Frames where decoding may start afresh and the frames before them end, ascending
    /// (physical indices): see [`clean_cuts`]. Empty where unknown (codecs other than H.264 and
    /// HEVC, streams with discarded packets); decoding then runs front to back on one decoder.
    pub cut_points: Vec<usize>,
}

static INIT: std::sync::Once = std::sync::Once::new();

/// Initialise FFmpeg once and silence its logging: errors reach users through [`Error`].
pub(crate) fn init_ffmpeg() {
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    });
}

pub(crate) fn media_err(path: &Path, kind: MediaErrorKind, message: impl Into<String>) -> Error {
    Error::Media {
        path: path.to_path_buf(),
        kind,
        message: message.into(),
    }
}

/// Open a file and find the video stream the CLI would pick (attached cover pictures excluded).
pub(crate) fn open_input(path: &Path) -> Result<(ffmpeg::format::context::Input, usize)> {
    init_ffmpeg();
    if !path.is_file() {
        return Err(Error::InputMissing {
            path: path.to_path_buf(),
            what: "the video file".into(),
            fix: "check the path (stim_file is relative to BIDS_DIR/stimuli)".into(),
        });
    }
    let ictx = ffmpeg::format::input(path).map_err(|e| {
        media_err(
            path,
            MediaErrorKind::Unreadable,
            format!("FFmpeg cannot open it ({e}); it is not a media file, or its header is damaged or cut off"),
        )
    })?;
    let best = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .filter(|s| !is_cover_art(s))
        .map(|s| s.index());
    let idx = match best {
        Some(i) => i,
        None => match ictx
            .streams()
            .find(|s| s.parameters().medium() == ffmpeg::media::Type::Video && !is_cover_art(s))
        {
            Some(s) => s.index(),
            None => {
                return Err(media_err(
                    path,
                    MediaErrorKind::NoStream,
                    "no video stream (an audio-only file, or only a cover picture); give it as audio, or use a video file",
                ));
            }
        },
    };
    Ok((ictx, idx))
}

fn is_cover_art(s: &ffmpeg::format::stream::Stream) -> bool {
    s.disposition()
        .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
}

impl VideoInfo {
    /// Probe a video file: geometry, moviepy's fps and duration, and every frame timestamp.
    pub fn open(path: &Path) -> Result<Self> {
        let (mut ictx, idx) = open_input(path)?;
        let (codec_id, par_w, par_h, tb, avg, r, sar, rot_deg) = {
            let st = ictx.stream(idx).expect("stream index from open_input");
            let par = st.parameters();
            // SAFETY: the parameters pointer is valid while the stream lives.
            let (w, h, sar) = unsafe {
                let p = &*par.as_ptr();
                (
                    p.width,
                    p.height,
                    Ratio {
                        num: p.sample_aspect_ratio.num as i64,
                        den: p.sample_aspect_ratio.den as i64,
                    },
                )
            };
            let mut rot = 0.0;
            for sd in st.side_data() {
                if sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix
                    && sd.data().len() >= 36
                {
                    // SAFETY: a display matrix is nine int32 values.
                    let a =
                        unsafe { ffi::av_display_rotation_get(sd.data().as_ptr() as *const i32) };
                    rot = cli_rotation(a);
                }
            }
            (
                par.id(),
                w,
                h,
                Ratio::from_ff(st.time_base()),
                Ratio::from_ff(st.avg_frame_rate()),
                Ratio::from_ff(st.rate()),
                sar,
                rot,
            )
        };
        if ffmpeg::codec::decoder::find(codec_id).is_none() {
            return Err(media_err(
                path,
                MediaErrorKind::UnsupportedCodec,
                format!(
                    "this FFmpeg build has no decoder for the video codec ({codec_id:?}); re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"
                ),
            ));
        }
        if par_w <= 0 || par_h <= 0 {
            return Err(media_err(
                path,
                MediaErrorKind::Unreadable,
                "the video stream has no picture size",
            ));
        }
        let rotation = match rot_deg {
            t if (t - 90.0).abs() < 1.0 => Rotation::Clockwise,
            t if (t - 180.0).abs() < 1.0 => Rotation::UpsideDown,
            t if (t - 270.0).abs() < 1.0 => Rotation::CounterClockwise,
            t if t.abs() > 1.0 => {
                return Err(media_err(
                    path,
                    MediaErrorKind::Unsupported,
                    format!(
                        "the picture is rotated by {t:.1} degrees, not a multiple of 90; re-encode it upright (ffmpeg -i IN OUT.mp4 applies the rotation)"
                    ),
                ));
            }
            _ => Rotation::None,
        };
        let (width, height) = match rotation {
            Rotation::Clockwise | Rotation::CounterClockwise => (par_h as usize, par_w as usize),
            _ => (par_w as usize, par_h as usize),
        };
        // SAFETY: plain field reads of a live AVFormatContext.
        let (container_duration, start_time, n_streams) = unsafe {
            let c = &*ictx.as_ptr();
            (c.duration, c.start_time, c.nb_streams as usize)
        };
        let nal_syntax = if matches!(codec_id, ffmpeg::codec::Id::H264 | ffmpeg::codec::Id::HEVC) {
            // SAFETY: the extradata pointer and size describe one buffer owned by the stream.
            let extradata = unsafe {
                let st = *(*ictx.as_ptr()).streams.add(idx);
                let p = &*(*st).codecpar;
                if p.extradata.is_null() || p.extradata_size <= 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p.extradata, p.extradata_size as usize)
                }
            };
            Some(if codec_id == ffmpeg::codec::Id::H264 {
                NalSyntax::H264 {
                    length_size: avcc_length_size(extradata),
                }
            } else {
                NalSyntax::Hevc {
                    length_size: hvcc_length_size(extradata),
                }
            })
        } else {
            None
        };
        let Scan {
            frame_pts,
            cut_points,
        } = scan_frame_pts(&mut ictx, idx, path, nal_syntax)?;
        if frame_pts.is_empty() {
            return Err(media_err(
                path,
                MediaErrorKind::Empty,
                "the video stream has no frames",
            ));
        }
        let fps = moviepy_fps(avg, r).ok_or_else(|| {
            media_err(path, MediaErrorKind::Unsupported, "the video stream declares no frame rate; re-encode it with one (ffmpeg -i IN -r 25 OUT.mp4)")
        })?;
        let duration = moviepy_duration(container_duration).ok_or_else(|| {
            media_err(
                path,
                MediaErrorKind::Unsupported,
                "the container declares no duration (the reference needs it); remux it: ffmpeg -i IN -c copy OUT.mp4",
            )
        })?;
        // SAFETY: the stream's codec parameters and context are valid here.
        let output_rate = unsafe {
            let st = *(*ictx.as_ptr()).streams.add(idx);
            Ratio::from_ff(ffmpeg::Rational::from(ffi::av_guess_frame_rate(
                ictx.as_mut_ptr(),
                st,
                std::ptr::null_mut(),
            )))
        };
        let output_rate = if output_rate.is_valid() {
            output_rate
        } else {
            Ratio { num: 25, den: 1 }
        };
        Ok(Self {
            path: path.to_path_buf(),
            width,
            height,
            rotation,
            fps,
            duration,
            frame_pts,
            time_base: tb,
            start_time_us: if start_time == ffi::AV_NOPTS_VALUE {
                0
            } else {
                start_time
            },
            output_rate,
            n_streams,
            stream_index: idx,
            codec: format!("{codec_id:?}").to_lowercase(),
            sample_aspect: sar,
            cut_points,
        })
    }

    pub fn n_frames(&self) -> usize {
        self.frame_pts.len()
    }

    /// Seconds from the container start of frame `i`.
    pub fn frame_time(&self, i: usize) -> f64 {
        (self.frame_pts[i] as f64 * self.time_base.as_f64()) - self.start_time_us as f64 * 1e-6
    }

    /// The physical frame at `pts`, if the scan saw one there.
    pub fn index_of_pts(&self, pts: i64) -> Option<usize> {
        self.frame_pts.binary_search(&pts).ok()
    }

    /// True when the CLI's constant-rate output is not simply every frame once (variable
    /// frame rate, or a first frame far from time 0): frame choice then follows the CLI's
    /// duplication and dropping, which [`crate::stimulus::video::reader`] reproduces.
    pub fn is_variable_rate(&self) -> bool {
        let r = self.output_rate.as_f64();
        (0..self.n_frames()).any(|i| (self.frame_time(i) * r - i as f64).abs() >= 0.5)
    }
}

/// FFmpeg's `get_rotation`: the display matrix angle as the CLI rounds and wraps it.
fn cli_rotation(matrix_angle: f64) -> f64 {
    let mut theta = -matrix_angle.round();
    theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
    theta
}

/// What `ffmpeg -i` prints for a rate (`print_fps`), e.g. "29.97", "24", "1k".
fn print_fps(d: f64) -> String {
    let v = ((d * 100.0) as f32).round_ties_even() as i64; // lrintf(d * 100)
    if v == 0 {
        format!("{d:.4}")
    } else if v % 100 != 0 {
        format!("{d:.2}")
    } else if v % (100 * 1000) != 0 {
        format!("{d:.0}")
    } else {
        format!("{:.0}k", d / 1000.0)
    }
}

/// moviepy 2.2.1's frame rate: the printed average rate ("fps"), else the printed r_frame_rate
/// ("tbr", with its "k" suffix), then snapped to `x * 1000/1001` for x in 23, 24, 25, 30, 50
/// when within 0.01.
pub(crate) fn moviepy_fps(avg: Ratio, tbr: Ratio) -> Option<f64> {
    // moviepy's regex `(\d+.?\d*) fps` then float(): a "k" suffix makes float() fail and
    // moviepy falls back to tbr.
    let parse_fps = |r: Ratio| -> Option<f64> {
        if r.num == 0 || r.den == 0 {
            return None;
        }
        print_fps(r.as_f64()).parse::<f64>().ok()
    };
    let parse_tbr = |r: Ratio| -> Option<f64> {
        if r.num == 0 || r.den == 0 {
            return None;
        }
        let s = print_fps(r.as_f64());
        match s.strip_suffix('k') {
            Some(k) => k.parse::<f64>().ok().map(|x| x * 1000.0),
            None => s.parse::<f64>().ok(),
        }
    };
    let mut fps = parse_fps(avg).or_else(|| parse_tbr(tbr))?;
    let coef = 1000.0 / 1001.0;
    for x in [23.0, 24.0, 25.0, 30.0, 50.0] {
        if fps != x && (fps - x * coef).abs() < 0.01 {
            fps = x * coef;
        }
    }
    (fps > 0.0).then_some(fps)
}

/// moviepy's duration: the container duration as `ffmpeg -i` prints it (`HH:MM:SS.cc`, with
/// FFmpeg's +5 ms rounding), parsed back the way moviepy's `convert_to_seconds` sums it.
pub(crate) fn moviepy_duration(duration_us: i64) -> Option<f64> {
    if duration_us == ffi::AV_NOPTS_VALUE || duration_us < 0 {
        return None;
    }
    let d = duration_us
        + if duration_us <= i64::MAX - 5000 {
            5000
        } else {
            0
        };
    let (secs, us) = (d / 1_000_000, d % 1_000_000);
    let (mins, secs) = (secs / 60, secs % 60);
    let (hours, mins) = (mins / 60, mins % 60);
    let cs = 100 * us / 1_000_000;
    let s: f64 = format!("{secs:02}.{cs:02}").parse().ok()?;
    Some(((0.0 + s) + 60.0 * mins as f64) + 3600.0 * hours as f64)
}

/// What the packet scan found.
struct Scan {
    frame_pts: Vec<i64>,
    cut_points: Vec<usize>,
}

/// Presentation timestamps of every frame the decoder will output, from the packets alone,
/// and, for H.264 and HEVC (`nal_syntax` given), the frames decoding can start at
/// ([`clean_cuts`]).
fn scan_frame_pts(
    ictx: &mut ffmpeg::format::context::Input,
    idx: usize,
    path: &Path,
    nal_syntax: Option<NalSyntax>,
) -> Result<Scan> {
    let mut pts = Vec::new();
    // Per packet in decoding order: whether it starts an IDR access unit.
    let mut idr = Vec::new();
    let mut any_discarded = false;
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => {
                return Err(media_err(
                    path,
                    MediaErrorKind::Truncated,
                    format!(
                        "reading packets failed after {} video frames ({e}); the file is damaged or cut off",
                        pts.len()
                    ),
                ));
            }
        }
        if packet.stream() != idx {
            continue;
        }
        // SAFETY: reading the flags of a packet we own.
        let discard = unsafe {
            (*ffmpeg::codec::packet::Ref::as_ptr(&packet)).flags & ffi::AV_PKT_FLAG_DISCARD != 0
        };
        if discard || packet.size() == 0 {
            any_discarded |= discard;
            continue;
        }
        if let Some(syntax) = nal_syntax {
            idr.push(syntax.has_idr(packet.data().unwrap_or(&[])));
        }
        match packet.pts().or(packet.dts()) {
            Some(t) => pts.push(t),
            None => {
                return Err(media_err(
                    path,
                    MediaErrorKind::Unsupported,
                    "video packets carry no timestamps (a raw elementary stream?); remux it into mp4/mkv: ffmpeg -i IN -c copy OUT.mp4",
                ));
            }
        }
    }
    // SAFETY: plain field read of a live stream.
    let declared = unsafe { (**(*ictx.as_ptr()).streams.add(idx)).nb_frames };
    if declared > 0 && (pts.len() as i64) < declared {
        return Err(media_err(
            path,
            MediaErrorKind::Truncated,
            format!(
                "the container announces {declared} video frames but only {} can be read; the file is cut off",
                pts.len()
            ),
        ));
    }
    let decode_order = pts.clone();
    pts.sort_unstable();
    let n = pts.len();
    pts.dedup();
    if pts.len() != n {
        return Err(media_err(
            path,
            MediaErrorKind::Unsupported,
            "several video frames share one timestamp; remux or re-encode the file",
        ));
    }
    let cut_points = if nal_syntax.is_some() && !any_discarded {
        clean_cuts(&decode_order, &idr)
            .into_iter()
            .filter_map(|t| pts.binary_search(&t).ok())
            .collect()
    } else {
        Vec::new()
    };
    Ok(Scan {
        frame_pts: pts,
        cut_points,
    })
}

/// The presentation timestamps of the packets where decoding can start afresh, ascending:
/// IDR access units (`idr`, per packet in decoding order) that every earlier packet precedes
/// and every later packet follows in presentation order.
///
/// An IDR picture empties the decoder's reference list, so nothing decoded after it refers to
/// anything before it; and with no packet on the wrong side of it in presentation order, the
/// frames before it are exactly the frames decoded before it. So a decoder started at such a
/// packet produces the same frames from there on, bit for bit, as one that decoded everything
/// before, and a decoder that stops reading at it has produced every earlier frame. That is what
/// lets separate single-threaded decoders work on separate stretches of one file
/// ([`crate::features::video::segments`]). A non-IDR keyframe (an open GOP's recovery point)
/// is never a cut: later frames may still refer to frames before it.
pub(crate) fn clean_cuts(decode_order_pts: &[i64], idr: &[bool]) -> Vec<i64> {
    let n = decode_order_pts.len();
    if idr.len() != n {
        return Vec::new();
    }
    let mut later_min = vec![i64::MAX; n + 1];
    for d in (0..n).rev() {
        later_min[d] = later_min[d + 1].min(decode_order_pts[d]);
    }
    let mut cuts = Vec::new();
    let mut earlier_max = i64::MIN;
    for d in 0..n {
        let t = decode_order_pts[d];
        if d > 0 && idr[d] && earlier_max < t && later_min[d + 1] > t {
            cuts.push(t);
        }
        earlier_max = earlier_max.max(t);
    }
    cuts.sort_unstable();
    cuts
}

/// The NAL unit length size of an `avcC` (ISO 14496-15) decoder configuration record, the
/// H.264 extradata of mp4, mov and mkv; `None` when the stream uses Annex B start codes
/// (MPEG-TS, raw streams) instead.
pub(crate) fn avcc_length_size(extradata: &[u8]) -> Option<usize> {
    (extradata.len() >= 7 && extradata[0] == 1).then(|| (extradata[4] & 3) as usize + 1)
}

/// The NAL unit length size of an `hvcC` record, the HEVC extradata of mp4, mov and mkv; `None`
/// for Annex B.
pub(crate) fn hvcc_length_size(extradata: &[u8]) -> Option<usize> {
    (extradata.len() >= 23 && extradata[0] == 1).then(|| (extradata[21] & 3) as usize + 1)
}

/// How a stream's packets carry NAL units (`length_size`: length-prefixed, else Annex B start
/// codes), and which codec's unit types they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NalSyntax {
    H264 { length_size: Option<usize> },
    Hevc { length_size: Option<usize> },
}

impl NalSyntax {
    /// Whether the access unit holds a slice of an IDR picture: H.264 `nal_unit_type` 5, HEVC
    /// `IDR_W_RADL` (19) or `IDR_N_LP` (20). HEVC's clean random access pictures (CRA, open
    /// GOPs) are not IDR: their leading pictures refer to frames before them. A damaged unit
    /// reads as not IDR, which only means decoding will not start there.
    pub(crate) fn has_idr(self, data: &[u8]) -> bool {
        match self {
            NalSyntax::H264 { length_size } => any_nal_header(data, length_size, |b| b & 0x1f == 5),
            NalSyntax::Hevc { length_size } => {
                any_nal_header(data, length_size, |b| matches!((b >> 1) & 0x3f, 19 | 20))
            }
        }
    }
}

/// Whether `is_idr` holds for the first header byte of any NAL unit of `data`; false for a
/// unit cut off by the end of the packet.
fn any_nal_header(data: &[u8], length_size: Option<usize>, is_idr: impl Fn(u8) -> bool) -> bool {
    match length_size {
        Some(size) => {
            let mut p = 0;
            while p + size < data.len() {
                let len = data[p..p + size]
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | b as usize);
                p += size;
                if len == 0 {
                    continue;
                }
                if len > data.len() - p {
                    return false; // cut off: damaged
                }
                if is_idr(data[p]) {
                    return true;
                }
                p = p.saturating_add(len);
            }
            false
        }
        None => data
            .windows(4)
            .any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && is_idr(w[3])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IDR slices are found behind 1-, 2- and 4-byte length prefixes and behind 3- and 4-byte
    /// Annex B start codes, after parameter sets and SEI; non-IDR slices, and NAL headers
    /// whose type only looks like 5 in other bits, are not IDR.
    #[test]
    fn idr_access_units_are_recognized() {
        let h264_has_idr = |data: &[u8], length_size| NalSyntax::H264 { length_size }.has_idr(data);
        // SPS (0x67), PPS (0x68), IDR slice (0x65); and a non-IDR slice (0x41).
        let units: [&[u8]; 3] = [
            &[0x67, 0x64, 0x00, 0x1f],
            &[0x68, 0xee],
            &[0x65, 0x88, 0x84],
        ];
        for size in [1usize, 2, 4] {
            let mut au = Vec::new();
            for u in units {
                au.extend_from_slice(&(u.len() as u32).to_be_bytes()[4 - size..]);
                au.extend_from_slice(u);
            }
            assert!(h264_has_idr(&au, Some(size)), "length size {size}");
            let p_slice = [&(2u32).to_be_bytes()[4 - size..], &[0x41, 0x9a]].concat();
            assert!(!h264_has_idr(&p_slice, Some(size)));
        }
        assert!(h264_has_idr(
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88],
            None
        ));
        assert!(!h264_has_idr(&[0, 0, 0, 1, 0x41, 0x9a, 0x25], None));
        // nal_ref_idc bits set, type 1: not IDR; type 5 with ref_idc 1: IDR.
        assert!(!h264_has_idr(&[0, 0, 1, 0x61], None));
        assert!(h264_has_idr(&[0, 0, 1, 0x25], None));
        // A truncated or damaged unit is simply not IDR.
        assert!(!h264_has_idr(&[0, 0, 0, 9, 0x65], Some(4)));
        assert!(!h264_has_idr(&[], Some(4)));
        assert_eq!(
            avcc_length_size(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0]),
            Some(4)
        );
        assert_eq!(
            avcc_length_size(&[1, 0x64, 0, 0x1f, 0xfd, 0xe1, 0]),
            Some(2)
        );
        assert_eq!(avcc_length_size(&[0, 0, 0, 1, 0x67]), None);
        // HEVC: two-byte NAL headers, type in bits 1..7 of the first. VPS (32), then
        // IDR_W_RADL (19) / IDR_N_LP (20) are IDR; TRAIL_R (1) and CRA (21) are not.
        let hevc = |t: u8| [0, 0, 0, 3, 32 << 1, 1, 0x0c, 0, 0, 0, 3, t << 1, 1, 0xaf];
        let syntax = NalSyntax::Hevc {
            length_size: Some(4),
        };
        assert!(syntax.has_idr(&hevc(19)) && syntax.has_idr(&hevc(20)));
        assert!(!syntax.has_idr(&hevc(1)) && !syntax.has_idr(&hevc(21)));
        let annex_b = NalSyntax::Hevc { length_size: None };
        assert!(annex_b.has_idr(&[0, 0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1]));
        assert!(!annex_b.has_idr(&[0, 0, 0, 1, 0x2a, 1]));
        let mut hvcc = vec![0u8; 23];
        hvcc[0] = 1;
        hvcc[21] = 0x0f;
        assert_eq!(hvcc_length_size(&hvcc), Some(4));
        assert_eq!(hvcc_length_size(&hvcc[..10]), None);
    }

    /// A cut needs an IDR packet with every earlier packet before it and every later packet
    /// after it in presentation order; the first packet is never a cut.
    #[test]
    fn cuts_are_idr_packets_that_split_presentation_order() {
        // Decoding order of I0 P3 B1 B2 | IDR6 P8 B7 | IDR9: both IDRs split cleanly.
        let pts = [0, 3, 1, 2, 6, 8, 7, 9];
        let idr = [true, false, false, false, true, false, false, true];
        assert_eq!(clean_cuts(&pts, &idr), vec![6, 9]);
        // A leading B frame after the IDR in decoding order (open GOP): 5 comes after 6.
        let pts = [0, 3, 1, 2, 6, 5, 8, 7];
        let idr = [true, false, false, false, true, false, false, false];
        assert_eq!(clean_cuts(&pts, &idr), Vec::<i64>::new());
        // A frame before the IDR in decoding order shown after it.
        let pts = [0, 7, 1, 6, 8];
        let idr = [true, false, false, true, false];
        assert_eq!(clean_cuts(&pts, &idr), Vec::<i64>::new());
        // Mismatched lengths: no cuts rather than wrong ones.
        assert_eq!(clean_cuts(&[0, 1], &[true]), Vec::<i64>::new());
    }

    #[test]
    fn ffmpeg_prints_rates_like_this() {
        assert_eq!(print_fps(24.0), "24");
        assert_eq!(print_fps(30000.0 / 1001.0), "29.97");
        assert_eq!(print_fps(24000.0 / 1001.0), "23.98");
        assert_eq!(print_fps(1728.0 / 119.0), "14.52");
        assert_eq!(print_fps(12288.0), "12288");
        assert_eq!(print_fps(90000.0), "90k");
    }

    #[test]
    fn moviepy_snaps_ntsc_rates() {
        let r = |num, den| Ratio { num, den };
        assert_eq!(moviepy_fps(r(24, 1), r(24, 1)), Some(24.0));
        assert_eq!(
            moviepy_fps(r(30000, 1001), r(30000, 1001)),
            Some(30.0 * 1000.0 / 1001.0)
        );
        assert_eq!(
            moviepy_fps(r(24000, 1001), r(24000, 1001)),
            Some(24.0 * 1000.0 / 1001.0)
        );
        // 59.94 is not snapped (60 is not in moviepy's list).
        assert_eq!(moviepy_fps(r(60000, 1001), r(60000, 1001)), Some(59.94));
        // No average rate: tbr.
        assert_eq!(moviepy_fps(r(0, 0), r(25, 1)), Some(25.0));
        assert_eq!(moviepy_fps(r(0, 0), r(0, 0)), None);
    }

    #[test]
    fn moviepy_duration_rounds_like_ffmpeg_prints() {
        assert_eq!(moviepy_duration(2_000_000), Some(2.0));
        assert_eq!(moviepy_duration(1_994_999), Some(1.99));
        assert_eq!(moviepy_duration(1_995_000), Some(2.0));
        assert_eq!(moviepy_duration(3_725_500_000), Some(3725.5));
        assert_eq!(moviepy_duration(ffi::AV_NOPTS_VALUE), None);
    }

    #[test]
    fn rotation_angles_wrap_like_the_cli() {
        assert_eq!(cli_rotation(-90.0), 90.0);
        assert_eq!(cli_rotation(90.0), 270.0);
        assert_eq!(cli_rotation(180.0), 180.0);
        assert_eq!(cli_rotation(0.0), 0.0);
    }
}
