//! Decoding the audio a participant heard, from any file FFmpeg reads (DESIGN.md §4, SPEC §5.0, §5.4).
//!
//! The reference reads audio two ways, and which one applies changes the samples the model sees:
//! - a plain audio file (wav, flac, ogg, mp3, ...) is read with soundfile at its native rate, every
//!   channel, as float ([`ReadMode::Native`]);
//! - the audio track of a video is first written by moviepy to `<video>.wav`: the ffmpeg CLI
//!   resamples it to 44100 Hz stereo 16-bit, moviepy clips it to ±0.99 and truncates it to
//!   `int(44100 · container duration)` samples, and soundfile then reads that wav
//!   ([`ReadMode::MoviepyWav`]).
//!
//! We decode with libav* in-process (no temp files). [`ReadMode::for_file`] picks the reference's
//! path from whether the file has a real video stream (cover art does not count). Both paths
//! return every channel as f32 (or f64) at the rate the reference would see.
//!
//! Offsets and durations are converted to samples with Python's `round` (half to even), as
//! neuralset's `Audio._read` does (`frames [round(sr·offset), +round(sr·duration))`). Seeking is
//! sample-accurate: we seek a second early, anchor sample indices on the timestamp of the first
//! decoded frame of the file (which absorbs encoder delay, edit lists and Opus pre-skip), and
//! discard what comes before the offset.

use std::path::Path;
use std::sync::Once;

use ffmpeg::format::Sample as SampleFormat;
use ffmpeg::media::Type as MediaType;
use ffmpeg_next as ffmpeg;

use crate::error::{Error, MediaErrorKind, Result};
use crate::util::round_half_even;

/// The rate moviepy resamples a video's audio track to (`AudioFileClip(fps=44100)`).
pub const MOVIEPY_RATE: u32 = 44100;
/// moviepy's `to_soundarray(quantize=True)` clips to ±0.99 before writing 16-bit PCM.
const MOVIEPY_CLIP: f64 = 0.99;
/// How far before a requested offset we start decoding after a seek, so that lossy decoders
/// (MDCT overlap, mp3 bit reservoir, Opus pre-roll) have converged when the kept samples begin.
const SEEK_PREROLL_S: f64 = 1.0;

/// A sample type the decoder can produce. The reference uses float32 after soundfile's float64,
/// so f32 is the faithful choice; f64 keeps 24/32-bit PCM exact.
pub trait AudioSample: Copy + Default + Send + Sync + 'static {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl AudioSample for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl AudioSample for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// Decoded audio: one vector per channel, all the same length, at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioBuffer<T = f32> {
    pub sample_rate: u32,
    pub channels: Vec<Vec<T>>,
}

impl<T: AudioSample> AudioBuffer<T> {
    pub fn n_channels(&self) -> usize {
        self.channels.len()
    }

    /// Samples per channel.
    pub fn n_samples(&self) -> usize {
        self.channels.first().map_or(0, |c| c.len())
    }

    /// `n_samples / sample_rate`, which is what soundfile reports as the duration (`info.duration`)
    /// and therefore the Audio event's duration in the reference.
    pub fn duration_s(&self) -> f64 {
        self.n_samples() as f64 / self.sample_rate as f64
    }

    /// Frames `[round(sr·offset), +round(sr·duration))`, clipped to what exists, as the
    /// reference's `soundfile.read(start=, frames=)` returns them.
    pub fn slice_seconds(&self, offset_s: f64, duration_s: Option<f64>) -> AudioBuffer<T> {
        let sr = self.sample_rate as f64;
        let n = self.n_samples();
        let start = (round_half_even(sr * offset_s).max(0) as usize).min(n);
        let end = match duration_s {
            Some(d) => (start + round_half_even(sr * d).max(0) as usize).min(n),
            None => n,
        };
        AudioBuffer {
            sample_rate: self.sample_rate,
            channels: self
                .channels
                .iter()
                .map(|c| c[start..end].to_vec())
                .collect(),
        }
    }
}

/// Which of the reference's two reading paths to reproduce (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// soundfile: native rate, every channel, samples as decoded.
    Native,
    /// moviepy's `<video>.wav`: 44100 Hz, stereo, 16-bit, clipped to ±0.99, length from the
    /// container duration printed to 1/100 s.
    MoviepyWav,
}

impl ReadMode {
    /// The reference's choice for this file: a video (a stream that is not cover art) goes
    /// through moviepy, anything else through soundfile.
    pub fn for_file(path: &Path) -> Result<ReadMode> {
        Ok(if probe(path)?.has_video {
            ReadMode::MoviepyWav
        } else {
            ReadMode::Native
        })
    }
}

/// What a media file holds, without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// Native sample rate of the audio stream.
    pub sample_rate: u32,
    pub channels: u16,
    /// Codec name as FFmpeg knows it (e.g. "flac", "aac").
    pub codec: String,
    /// Container (demuxer) name, e.g. "mov,mp4,m4a,3gp,3g2,mj2".
    pub container: String,
    /// The file has a video stream that is not an attached picture.
    pub has_video: bool,
    /// Container duration in seconds, when the container states one.
    pub container_duration_s: Option<f64>,
    /// The container duration as the ffmpeg CLI prints it (`Duration: HH:MM:SS.cc`), parsed back
    /// as moviepy does; it fixes the length of moviepy's wav.
    pub moviepy_duration_s: Option<f64>,
}

/// Describe the audio stream of `path` (fails the same way decoding would).
pub fn probe(path: &Path) -> Result<AudioInfo> {
    let ictx = open_input(path)?;
    let stream = best_audio_stream(&ictx, path)?;
    let params = stream.parameters();
    let (rate, channels) = stream_rate_channels(&params);
    let codec = format!("{:?}", params.id()).to_lowercase();
    let fmt_duration = ictx.duration();
    let container_duration_s = (fmt_duration != ffmpeg::ffi::AV_NOPTS_VALUE && fmt_duration > 0)
        .then(|| fmt_duration as f64 / 1e6);
    Ok(AudioInfo {
        sample_rate: rate,
        channels,
        codec,
        container: ictx.format().name().to_string(),
        has_video: has_real_video(&ictx),
        container_duration_s,
        moviepy_duration_s: container_duration_s.map(|_| moviepy_duration(fmt_duration)),
    })
}

/// Decode `[offset, offset + duration)` seconds (to the end when `duration` is `None`) of the
/// audio stream of `path`, every channel, as the reference would read it in `mode`.
pub fn decode<T: AudioSample>(
    path: &Path,
    mode: ReadMode,
    offset_s: f64,
    duration_s: Option<f64>,
) -> Result<AudioBuffer<T>> {
    if offset_s.is_nan() || offset_s < 0.0 || duration_s.is_some_and(|d| d.is_nan() || d < 0.0) {
        return Err(media(
            path,
            MediaErrorKind::Unsupported,
            format!(
                "cannot read from offset {offset_s} s for {duration_s:?} s: offsets and durations must be >= 0"
            ),
        ));
    }
    let full = match mode {
        ReadMode::Native => return decode_native(path, offset_s, duration_s),
        ReadMode::MoviepyWav => decode_moviepy_wav::<T>(path)?,
    };
    let out = full.slice_seconds(offset_s, duration_s);
    if out.n_samples() == 0 {
        return Err(media(
            path,
            MediaErrorKind::Empty,
            format!(
                "nothing to read at offset {offset_s} s: the audio lasts {:.3} s",
                full.duration_s()
            ),
        ));
    }
    Ok(out)
}

/// [`decode`] with the reference's choice of [`ReadMode`] for this file.
pub fn decode_auto<T: AudioSample>(
    path: &Path,
    offset_s: f64,
    duration_s: Option<f64>,
) -> Result<AudioBuffer<T>> {
    decode(path, ReadMode::for_file(path)?, offset_s, duration_s)
}

/// One decoded audio event and where it starts on a run's timeline.
#[derive(Debug, Clone, Copy)]
pub struct PlacedAudio<'a> {
    pub onset_s: f64,
    pub audio: &'a AudioBuffer<f32>,
}

/// Mix audio events onto one mono track of `duration_s` seconds at `sample_rate`, silent where no
/// event plays, overlapping events summed. Events are averaged over their channels first: the
/// reference averages channels after resampling, and both steps are linear, so mixing to mono
/// first gives the same waveform (up to float rounding) at a fraction of the cost. All events must
/// already be at `sample_rate` (resample with `features::resample` otherwise).
pub fn mix_onto_timeline(
    events: &[PlacedAudio<'_>],
    sample_rate: u32,
    duration_s: f64,
) -> Result<AudioBuffer<f32>> {
    let n = round_half_even(duration_s * sample_rate as f64).max(0) as usize;
    let mut track = vec![0f32; n];
    for (i, e) in events.iter().enumerate() {
        if e.audio.sample_rate != sample_rate {
            return Err(Error::Usage(format!(
                "audio event {i} is at {} Hz but the timeline is at {sample_rate} Hz: resample it first",
                e.audio.sample_rate
            )));
        }
        let mono = to_mono(e.audio);
        let start = round_half_even(e.onset_s * sample_rate as f64);
        for (j, v) in mono.iter().enumerate() {
            let t = start + j as i64;
            if t >= 0 && (t as usize) < n {
                track[t as usize] += v;
            }
        }
    }
    Ok(AudioBuffer {
        sample_rate,
        channels: vec![track],
    })
}

/// Mean over channels, summed in channel order in f32 as `torch.mean(wav, dim=1)` does.
pub fn to_mono(audio: &AudioBuffer<f32>) -> Vec<f32> {
    let c = audio.n_channels().max(1) as f32;
    (0..audio.n_samples())
        .map(|i| {
            let mut s = 0f32;
            for ch in &audio.channels {
                s += ch[i];
            }
            s / c
        })
        .collect()
}

// ---- internals ------------------------------------------------------------------------------

fn media(path: &Path, kind: MediaErrorKind, message: impl Into<String>) -> Error {
    Error::Media {
        path: path.to_path_buf(),
        kind,
        message: message.into(),
    }
}

fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // init() only registers devices; it cannot fail in a way we could act on.
        let _ = ffmpeg::init();
        // We report every problem ourselves with the file name; libav's own warnings would
        // only interleave with progress output.
        ffmpeg::log::set_level(ffmpeg::log::Level::Fatal);
    });
}

fn open_input(path: &Path) -> Result<ffmpeg::format::context::Input> {
    init_ffmpeg();
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::InputMissing {
                path: path.to_path_buf(),
                what: "media file".into(),
                fix: "check the path (stim_file is relative to BIDS_DIR/stimuli)".into(),
            }
        } else {
            Error::io(path, e)
        }
    })?;
    if meta.is_dir() {
        return Err(media(
            path,
            MediaErrorKind::Unreadable,
            "is a directory, not a media file",
        ));
    }
    if meta.len() == 0 {
        return Err(media(
            path,
            MediaErrorKind::Empty,
            "the file is empty (0 bytes): re-export or re-copy the stimulus",
        ));
    }
    ffmpeg::format::input(path).map_err(|e| {
        let kind = MediaErrorKind::Unreadable;
        let what = match e {
            ffmpeg::Error::InvalidData | ffmpeg::Error::DemuxerNotFound => "FFmpeg does not recognise it as audio or video (wrong extension, or not a media file)".to_string(),
            ffmpeg::Error::Eof => return media(path, MediaErrorKind::Truncated, "the file ends before its header does: it is truncated"),
            other => format!(
                "FFmpeg cannot open it ({other}): the file is corrupt or truncated; re-export or re-copy the stimulus"
            ),
        };
        media(path, kind, what)
    })
}

fn best_audio_stream<'a>(
    ictx: &'a ffmpeg::format::context::Input,
    path: &Path,
) -> Result<ffmpeg::format::stream::Stream<'a>> {
    ictx.streams().best(MediaType::Audio).ok_or_else(|| {
        let found: Vec<String> = ictx
            .streams()
            .map(|s| {
                format!("{:?} {:?}", s.parameters().medium(), s.parameters().id()).to_lowercase()
            })
            .collect();
        // FFmpeg declines an audio stream whose parameters it could not read (no sample rate or
        // channel layout): that is a damaged file, not a silent one, and needs another fix.
        if ictx
            .streams()
            .any(|s| s.parameters().medium() == MediaType::Audio)
        {
            return media(
                path,
                MediaErrorKind::Unreadable,
                format!(
                    "its audio stream ({}) has no usable parameters (sample rate, channels): the file is \
                     corrupt or truncated; re-export or re-copy the stimulus",
                    found.join(", ")
                ),
            );
        }
        let found = if found.is_empty() {
            "no streams at all".to_string()
        } else {
            format!("streams: {}", found.join(", "))
        };
        media(
            path,
            MediaErrorKind::NoStream,
            format!("has no audio stream ({found}); give an audio file or a video with sound"),
        )
    })
}

fn has_real_video(ictx: &ffmpeg::format::context::Input) -> bool {
    ictx.streams().any(|s| {
        s.parameters().medium() == MediaType::Video
            && !s
                .disposition()
                .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
    })
}

fn stream_rate_channels(params: &ffmpeg::codec::Parameters) -> (u32, u16) {
    // SAFETY: `params` wraps a valid AVCodecParameters owned by the open input for this call.
    unsafe {
        let p = params.as_ptr();
        ((*p).sample_rate.max(0) as u32, (*p).channels.max(0) as u16)
    }
}

/// What the ffmpeg CLI prints as `Duration: HH:MM:SS.cc` (rounded to the nearest 1/100 s, as
/// `av_dump_format` does), parsed back the way moviepy's `convert_to_seconds` sums the fields.
fn moviepy_duration(duration_us: i64) -> f64 {
    let d = duration_us
        + if duration_us <= i64::MAX - 5000 {
            5000
        } else {
            0
        };
    let secs = d / 1_000_000;
    let us = d % 1_000_000;
    let (hours, mins, secs) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let centis = (100 * us) / 1_000_000;
    let s: f64 = format!("{secs:02}.{centis:02}").parse().unwrap_or(0.0);
    0.0 + s + 60.0 * mins as f64 + 3600.0 * hours as f64
}

/// An opened audio decoder for the best audio stream.
struct AudioStream {
    ictx: ffmpeg::format::context::Input,
    index: usize,
    decoder: ffmpeg::decoder::Audio,
    time_base: f64,
}

fn open_audio_stream(path: &Path) -> Result<AudioStream> {
    let ictx = open_input(path)?;
    let (index, time_base, params) = {
        let s = best_audio_stream(&ictx, path)?;
        (s.index(), f64::from(s.time_base()), s.parameters())
    };
    let id = params.id();
    if ffmpeg::decoder::find(id).is_none() {
        // SAFETY: valid AVCodecParameters of the open input.
        let tag = unsafe { (*params.as_ptr()).codec_tag };
        return Err(media(
            path,
            MediaErrorKind::UnsupportedCodec,
            format!(
                "this FFmpeg build has no decoder for the audio codec ({id:?}, tag 0x{tag:04x}); convert the file to wav or flac"
            ),
        ));
    }
    let ctx = ffmpeg::codec::Context::from_parameters(params).map_err(|e| {
        media(
            path,
            MediaErrorKind::Unreadable,
            format!("cannot set up the audio decoder: {e}"),
        )
    })?;
    let decoder = ctx.decoder().audio().map_err(|e| match e {
        ffmpeg::Error::DecoderNotFound => media(
            path,
            MediaErrorKind::UnsupportedCodec,
            format!("this FFmpeg build has no decoder for {id:?}"),
        ),
        other => media(
            path,
            MediaErrorKind::Unreadable,
            format!("cannot open the {id:?} decoder: {other}"),
        ),
    })?;
    Ok(AudioStream {
        ictx,
        index,
        decoder,
        time_base,
    })
}

/// Feeds every packet of the stream to the decoder and hands each decoded frame to `on_frame`,
/// which returns `false` to stop early. Corrupt packets and decode errors are errors: a silently
/// shortened or glitched stimulus would give wrong features without anyone noticing.
fn for_each_frame(
    st: &mut AudioStream,
    path: &Path,
    mut on_frame: impl FnMut(&ffmpeg::frame::Audio) -> Result<bool>,
) -> Result<()> {
    let mut frame = ffmpeg::frame::Audio::empty();
    let mut packet = ffmpeg::Packet::empty();
    let truncated = |at: String, what: String| {
        media(
            path,
            MediaErrorKind::Truncated,
            format!("corrupt or truncated audio {at}: {what}"),
        )
    };
    loop {
        match packet.read(&mut st.ictx) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => return Err(truncated("while reading the file".into(), e.to_string())),
        }
        if packet.stream() != st.index {
            continue;
        }
        let (pts, tb) = (packet.pts(), st.time_base);
        let at = move || format!("at {:.3} s", pts.unwrap_or(0) as f64 * tb);
        if packet.is_corrupt() {
            return Err(truncated(
                at(),
                "the container marks this packet as damaged".into(),
            ));
        }
        if let Err(e) = st.decoder.send_packet(&packet) {
            return Err(truncated(
                at(),
                format!("the decoder rejects a packet ({e})"),
            ));
        }
        while next_frame(st, &mut frame)
            .map_err(|e| truncated(at(), format!("a packet fails to decode ({e})")))?
        {
            if !on_frame(&frame)? {
                return Ok(());
            }
        }
    }
    // Drain what the decoder still holds.
    if st.decoder.send_eof().is_ok() {
        while next_frame(st, &mut frame).map_err(|e| {
            truncated(
                "at the end".into(),
                format!("the last packets fail to decode ({e})"),
            )
        })? {
            if !on_frame(&frame)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The next decoded frame: `Ok(false)` when the decoder needs more input or is done, an error
/// when the data fails to decode.
fn next_frame(
    st: &mut AudioStream,
    frame: &mut ffmpeg::frame::Audio,
) -> std::result::Result<bool, ffmpeg::Error> {
    match st.decoder.receive_frame(frame) {
        Ok(()) => Ok(true),
        Err(ffmpeg::Error::Eof) => Ok(false),
        Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => Ok(false),
        Err(e) => Err(e),
    }
}

/// The frame's first-sample time in samples at `rate` (best-effort timestamp, else pts).
fn frame_start_samples(frame: &ffmpeg::frame::Audio, time_base: f64, rate: u32) -> Option<i64> {
    frame
        .timestamp()
        .or(frame.pts())
        .map(|ts| (ts as f64 * time_base * rate as f64).round() as i64)
}

/// Append `frame`'s samples `[skip, skip + take)` to `out`, converting any sample format to T.
fn append_frame<T: AudioSample>(
    frame: &ffmpeg::frame::Audio,
    out: &mut [Vec<T>],
    skip: usize,
    take: usize,
) -> std::result::Result<(), String> {
    let n = frame.samples();
    let channels = out.len();
    let take = take.min(n.saturating_sub(skip));
    if take == 0 {
        return Ok(());
    }
    let fmt = frame.format();
    let bytes = fmt.bytes();
    let planar = fmt.is_planar();
    // ffmpeg-next's `data(i)` is sized by linesize[0], valid for every plane of an audio frame.
    let read = |bytes_at: &[u8], k: usize| -> f64 {
        let b = &bytes_at[k * bytes..(k + 1) * bytes];
        match fmt {
            SampleFormat::U8(_) => (b[0] as f64 - 128.0) / 128.0,
            SampleFormat::I16(_) => i16::from_ne_bytes([b[0], b[1]]) as f64 / 32768.0,
            SampleFormat::I32(_) => {
                i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64 / 2147483648.0
            }
            SampleFormat::I64(_) => {
                i64::from_ne_bytes(b.try_into().unwrap_or([0; 8])) as f64 / 9223372036854775808.0
            }
            SampleFormat::F32(_) => f32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f64,
            SampleFormat::F64(_) => f64::from_ne_bytes(b.try_into().unwrap_or([0; 8])),
            SampleFormat::None => 0.0,
        }
    };
    if matches!(fmt, SampleFormat::None) {
        return Err("the decoder produced frames without a sample format".into());
    }
    if frame.channels() as usize != channels {
        return Err(format!(
            "the channel count changes mid-stream ({} -> {})",
            channels,
            frame.channels()
        ));
    }
    if planar {
        for (c, dst) in out.iter_mut().enumerate() {
            let plane = frame.data(c);
            dst.extend((skip..skip + take).map(|k| T::from_f64(read(plane, k))));
        }
    } else {
        let plane = frame.data(0);
        for (c, dst) in out.iter_mut().enumerate() {
            dst.extend((skip..skip + take).map(|k| T::from_f64(read(plane, k * channels + c))));
        }
    }
    Ok(())
}

fn decode_native<T: AudioSample>(
    path: &Path,
    offset_s: f64,
    duration_s: Option<f64>,
) -> Result<AudioBuffer<T>> {
    let mut st = open_audio_stream(path)?;
    let rate = st.decoder.rate();
    let channels = st.decoder.channels() as usize;
    if rate == 0 || channels == 0 {
        return Err(media(
            path,
            MediaErrorKind::Unsupported,
            format!("the audio stream reports {rate} Hz and {channels} channels"),
        ));
    }
    let start = round_half_even(offset_s * rate as f64).max(0) as u64;
    let want = duration_s.map(|d| round_half_even(d * rate as f64).max(0) as u64);

    let mut out: Vec<Vec<T>> = vec![Vec::new(); channels];
    if start as f64 > SEEK_PREROLL_S * rate as f64 * 2.0 && seeks_exactly(&st) {
        if let Some(buf) = decode_after_seek(&mut st, path, rate, start, want, &mut out)? {
            return Ok(buf);
        }
        // Seeking gave no usable timestamps: fall back to decoding from the start.
        st = open_audio_stream(path)?;
        out = vec![Vec::new(); channels];
    }
    let expected_total = expected_samples(&st, rate);
    let mut pos: u64 = 0;
    let mut err: Option<String> = None;
    for_each_frame(&mut st, path, |frame| {
        let n = frame.samples() as u64;
        let skip = start.saturating_sub(pos).min(n);
        let remaining = want.map_or(u64::MAX, |w| (start + w).saturating_sub(pos + skip));
        if let Err(e) = append_frame(frame, &mut out, skip as usize, remaining.min(n) as usize) {
            err = Some(e);
            return Ok(false);
        }
        pos += n;
        Ok(want.is_none_or(|w| pos < start + w))
    })?;
    if let Some(e) = err {
        return Err(media(path, MediaErrorKind::Unsupported, e));
    }
    finish(path, rate, out, pos, start, want, expected_total)
}

/// Containers whose seek lands on packets with exact timestamps (an index or per-packet
/// granules). Raw streams (mp3, ADTS aac, ac3, ...) estimate timestamps from byte positions after
/// a seek (mp3 was measured 8 samples off), so those are decoded from the start instead.
fn seeks_exactly(st: &AudioStream) -> bool {
    let name = st.ictx.format().name().to_string();
    [
        "wav",
        "flac",
        "mov,mp4,m4a,3gp,3g2,mj2",
        "matroska,webm",
        "ogg",
        "aiff",
        "w64",
        "caf",
    ]
    .contains(&name.as_str())
}

/// Seek a second before `start`, anchor sample indices on the first frame of the file, decode.
/// Returns `None` when timestamps are missing or the seek overshot, so the caller can decode
/// from the beginning instead.
fn decode_after_seek<T: AudioSample>(
    st: &mut AudioStream,
    path: &Path,
    rate: u32,
    start: u64,
    want: Option<u64>,
    out: &mut Vec<Vec<T>>,
) -> Result<Option<AudioBuffer<T>>> {
    let time_base = st.time_base;
    // Anchor: the timestamp of the first decoded sample when decoding from the beginning.
    let mut anchor: Option<i64> = None;
    for_each_frame(st, path, |f| {
        anchor = frame_start_samples(f, time_base, rate);
        Ok(false)
    })?;
    let Some(anchor) = anchor else {
        return Ok(None);
    };
    let mut fresh = open_audio_stream(path)?;
    let target_s =
        (start as f64 / rate as f64 - SEEK_PREROLL_S).max(0.0) + anchor as f64 / rate as f64;
    let target_us = (target_s * 1e6) as i64;
    if fresh.ictx.seek(target_us, ..target_us).is_err() {
        return Ok(None);
    }
    let expected_total = expected_samples(&fresh, rate);
    let mut pos: Option<u64> = None;
    let mut bad = false;
    let mut err: Option<String> = None;
    for_each_frame(&mut fresh, path, |frame| {
        let n = frame.samples() as u64;
        let p = match pos {
            Some(p) => p,
            None => match frame_start_samples(frame, time_base, rate) {
                Some(ts) if ts - anchor >= 0 && ((ts - anchor) as u64) <= start => {
                    (ts - anchor) as u64
                }
                _ => {
                    bad = true;
                    return Ok(false);
                }
            },
        };
        let skip = start.saturating_sub(p).min(n);
        let remaining = want.map_or(u64::MAX, |w| (start + w).saturating_sub(p + skip));
        if let Err(e) = append_frame(frame, out, skip as usize, remaining.min(n) as usize) {
            err = Some(e);
            return Ok(false);
        }
        pos = Some(p + n);
        Ok(want.is_none_or(|w| p + n < start + w))
    })?;
    if let Some(e) = err {
        return Err(media(path, MediaErrorKind::Unsupported, e));
    }
    if bad || pos.is_none() {
        return Ok(None);
    }
    let out = std::mem::take(out);
    finish(
        path,
        rate,
        out,
        pos.unwrap_or(0),
        start,
        want,
        expected_total,
    )
    .map(Some)
}

/// Samples the container promises for the stream, when it states them in the header (not an
/// estimate from the bit rate): lets us tell a truncated file from a short one.
fn expected_samples(st: &AudioStream, rate: u32) -> Option<u64> {
    // SAFETY: the format context pointer is valid while `st.ictx` is alive.
    let method = unsafe { (*st.ictx.as_ptr()).duration_estimation_method };
    if method == ffmpeg::ffi::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE {
        return None;
    }
    let stream = st.ictx.stream(st.index)?;
    let d = stream.duration();
    (d > 0 && d != ffmpeg::ffi::AV_NOPTS_VALUE)
        .then(|| (d as f64 * st.time_base * rate as f64).round() as u64)
}

fn finish<T: AudioSample>(
    path: &Path,
    rate: u32,
    out: Vec<Vec<T>>,
    decoded_to: u64,
    start: u64,
    want: Option<u64>,
    expected_total: Option<u64>,
) -> Result<AudioBuffer<T>> {
    let got = out.first().map_or(0, |c| c.len()) as u64;
    let reached_end = want.is_none_or(|w| got < w);
    if reached_end && let Some(exp) = expected_total {
        // Allow codec framing slack (a frame or two, encoder padding): 0.25 s and 1 %.
        let slack = (rate as f64 * 0.25).max(exp as f64 * 0.01) as u64;
        if decoded_to + slack < exp {
            return Err(media(
                path,
                MediaErrorKind::Truncated,
                format!(
                    "the header promises {:.3} s of audio but only {:.3} s decode: the file is truncated or damaged",
                    exp as f64 / rate as f64,
                    decoded_to as f64 / rate as f64
                ),
            ));
        }
    }
    if got == 0 {
        let msg = if decoded_to == 0 {
            "the audio stream holds no samples (zero-length stream)".to_string()
        } else {
            format!(
                "nothing to read at offset {:.3} s: the audio lasts {:.3} s",
                start as f64 / rate as f64,
                decoded_to as f64 / rate as f64
            )
        };
        return Err(media(path, MediaErrorKind::Empty, msg));
    }
    Ok(AudioBuffer {
        sample_rate: rate,
        channels: out,
    })
}

/// moviepy's `<video>.wav`: the ffmpeg CLI's `-ar 44100 -ac 2 -f s16le` conversion (one swresample
/// context with default options, as the CLI's auto-inserted resampler), clipped to ±0.99 and cut
/// or zero-padded to `int(44100 · duration)` samples.
fn decode_moviepy_wav<T: AudioSample>(path: &Path) -> Result<AudioBuffer<T>> {
    let info = probe(path)?;
    let mut st = open_audio_stream(path)?;
    let out_channels = 2usize;
    let mut swr: Option<Swr> = None;
    let mut pcm: Vec<i16> = Vec::new();
    let mut fail: Option<String> = None;
    for_each_frame(&mut st, path, |frame| {
        if swr.is_none() {
            match Swr::new(frame, MOVIEPY_RATE) {
                Ok(s) => swr = Some(s),
                Err(e) => {
                    fail = Some(e);
                    return Ok(false);
                }
            }
        }
        if let Some(s) = swr.as_mut()
            && let Err(e) = s.convert(Some(frame), &mut pcm)
        {
            fail = Some(e);
            return Ok(false);
        }
        Ok(true)
    })?;
    if let Some(s) = swr.as_mut()
        && fail.is_none()
        && let Err(e) = s.convert(None, &mut pcm)
    {
        fail = Some(e);
    }
    if let Some(e) = fail {
        return Err(media(
            path,
            MediaErrorKind::Unsupported,
            format!("cannot convert the audio like moviepy does: {e}"),
        ));
    }
    if pcm.is_empty() {
        return Err(media(
            path,
            MediaErrorKind::Empty,
            "the audio stream holds no samples (zero-length stream)",
        ));
    }
    let decoded = pcm.len() / out_channels;
    // moviepy's clip duration is the container's, printed to 1/100 s; without one it has the
    // decoded length.
    let n = match info.moviepy_duration_s {
        Some(d) => (MOVIEPY_RATE as f64 * d) as usize,
        None => decoded,
    };
    let clip = (MOVIEPY_CLIP * 32768.0) as i64; // |x| <= 0.99 after trunc: 32440
    let mut channels: Vec<Vec<T>> = (0..out_channels).map(|_| Vec::with_capacity(n)).collect();
    for k in 0..n {
        for (c, ch) in channels.iter_mut().enumerate() {
            let v = if k < decoded {
                pcm[k * out_channels + c] as i64
            } else {
                0
            };
            // to_soundarray: clip(x/32768, ±0.99) * 32768, astype(int16) truncates toward zero.
            let q = v.clamp(-clip, clip);
            ch.push(T::from_f64(q as f64 / 32768.0));
        }
    }
    Ok(AudioBuffer {
        sample_rate: MOVIEPY_RATE,
        channels,
    })
}

/// A swresample context converting decoded frames to interleaved s16 stereo at a given rate.
struct Swr {
    ptr: *mut ffmpeg::ffi::SwrContext,
}

impl Swr {
    fn new(frame: &ffmpeg::frame::Audio, out_rate: u32) -> std::result::Result<Swr, String> {
        use ffmpeg::ffi;
        // SAFETY: plain constructor calls on values we own; the context is freed in Drop.
        unsafe {
            let f = frame.as_ptr();
            let in_channels = (*f).channels;
            let mut in_layout = (*f).channel_layout as i64;
            if in_layout == 0
                || ffi::av_get_channel_layout_nb_channels(in_layout as u64) != in_channels
            {
                in_layout = ffi::av_get_default_channel_layout(in_channels);
            }
            let out_layout = ffi::av_get_default_channel_layout(2);
            let in_fmt: ffi::AVSampleFormat =
                std::mem::transmute::<i32, ffi::AVSampleFormat>((*f).format);
            let ptr = ffi::swr_alloc_set_opts(
                std::ptr::null_mut(),
                out_layout,
                ffi::AVSampleFormat::AV_SAMPLE_FMT_S16,
                out_rate as i32,
                in_layout,
                in_fmt,
                (*f).sample_rate,
                0,
                std::ptr::null_mut(),
            );
            if ptr.is_null() {
                return Err("swr_alloc_set_opts failed".into());
            }
            let s = Swr { ptr };
            if ffi::swr_init(s.ptr) < 0 {
                return Err("swr_init failed (unsupported channel layout or sample format)".into());
            }
            Ok(s)
        }
    }

    /// Convert one frame (or flush with `None`), appending interleaved stereo s16 to `out`.
    fn convert(
        &mut self,
        frame: Option<&ffmpeg::frame::Audio>,
        out: &mut Vec<i16>,
    ) -> std::result::Result<(), String> {
        use ffmpeg::ffi;
        // SAFETY: the input pointers come from a valid decoded frame (extended_data has one
        // pointer per plane, each with `nb_samples` samples); the output buffer is sized from
        // swr_get_out_samples, which bounds what swr_convert writes.
        unsafe {
            let (in_ptr, in_count) = match frame {
                Some(f) => (
                    (*f.as_ptr()).extended_data as *mut *const u8,
                    (*f.as_ptr()).nb_samples,
                ),
                None => (std::ptr::null_mut(), 0),
            };
            loop {
                let cap = ffi::swr_get_out_samples(self.ptr, in_count).max(0) as usize + 64;
                let mut buf = vec![0i16; cap * 2];
                let mut out_ptr = buf.as_mut_ptr() as *mut u8;
                let n = ffi::swr_convert(
                    self.ptr,
                    &mut out_ptr,
                    cap as i32,
                    if in_count > 0 {
                        in_ptr
                    } else {
                        std::ptr::null_mut()
                    },
                    in_count,
                );
                if n < 0 {
                    return Err(format!("swr_convert failed ({})", ffmpeg::Error::from(n)));
                }
                out.extend_from_slice(&buf[..n as usize * 2]);
                // When flushing, keep draining until nothing comes out.
                if frame.is_some() || n == 0 {
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for Swr {
    fn drop(&mut self) {
        // SAFETY: ptr came from swr_alloc_set_opts and is freed exactly once.
        unsafe { ffmpeg::ffi::swr_free(&mut self.ptr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixing_places_events_with_silence_between() {
        let a = AudioBuffer {
            sample_rate: 10,
            channels: vec![vec![1.0, 1.0], vec![3.0, 3.0]],
        };
        let b = AudioBuffer {
            sample_rate: 10,
            channels: vec![vec![5.0; 3]],
        };
        let track = mix_onto_timeline(
            &[
                PlacedAudio {
                    onset_s: 0.1,
                    audio: &a,
                },
                PlacedAudio {
                    onset_s: 0.25,
                    audio: &b,
                },
            ],
            10,
            0.6,
        )
        .unwrap();
        // onset 0.25 s at 10 Hz -> sample round(2.5) = 2 (half to even); stereo averaged to mono.
        assert_eq!(track.channels, vec![vec![0.0, 2.0, 7.0, 5.0, 5.0, 0.0]]);
        let wrong_rate = AudioBuffer {
            sample_rate: 16,
            channels: vec![vec![0.0]],
        };
        assert!(
            mix_onto_timeline(
                &[PlacedAudio {
                    onset_s: 0.0,
                    audio: &wrong_rate
                }],
                10,
                1.0
            )
            .is_err()
        );
    }

    #[test]
    fn moviepy_duration_follows_the_cli_print() {
        // av_dump_format rounds to the nearest 1/100 s: 11.494999 s prints 00:00:11.49, 11.495 s 00:00:11.50.
        assert_eq!(moviepy_duration(11_494_999), 11.49);
        assert_eq!(moviepy_duration(11_495_000), 11.5);
        assert!((moviepy_duration(3_723_456_789) - 3723.46).abs() < 1e-9);
    }

    #[test]
    fn slices_clip_to_what_exists() {
        let a = AudioBuffer {
            sample_rate: 4,
            channels: vec![(0..10).map(|v| v as f32).collect::<Vec<_>>()],
        };
        assert_eq!(a.slice_seconds(2.0, Some(5.0)).channels[0], vec![8.0, 9.0]);
        assert_eq!(
            a.slice_seconds(0.375, Some(0.5)).channels[0],
            vec![2.0, 3.0]
        ); // round(1.5) = 2
        assert_eq!(a.duration_s(), 2.5);
    }
}
