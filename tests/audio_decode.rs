//! Decoding real speech from every container a BIDS stimulus folder is likely to hold, and the
//! errors for files that cannot be used.
//!
//! The files are built at test time with the ffmpeg CLI from the real recording in
//! tests/fixtures/data/stimuli/whisper-jfk/jfk.flac (44.1 kHz stereo, 24-bit, 11 s).
//! Tolerance: lossless containers decode exactly (24-bit flac) or to within one 16-bit step
//! (wav s16); lossy ones are compared after resampling both to 16 kHz mono (what the model sees)
//! and must correlate > 0.99 with the lossless decode at a lag of 0 samples, i.e. the codec's
//! delay (encoder priming, Opus pre-skip, AAC edit list) is removed by the decoder.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture;
use tribe_bids::error::{Error, MediaErrorKind};
use tribe_bids::features::resample::ResampleFrac;
use tribe_bids::stimulus::audio::{AudioBuffer, ReadMode, decode, probe, to_mono};

fn source() -> PathBuf {
    fixture("data/stimuli/whisper-jfk/jfk.flac")
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg CLI (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Encode the source into `name` with extra output arguments.
fn encode(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let src = source();
    let mut a: Vec<&str> = vec!["-i", src.to_str().unwrap()];
    a.extend_from_slice(args);
    a.push(out.to_str().unwrap());
    ffmpeg(&a);
    out
}

/// A video with the source as its audio track.
fn encode_video(dir: &Path, name: &str, vcodec: &[&str], acodec: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let src = source();
    let mut a: Vec<&str> = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=8",
        "-i",
        src.to_str().unwrap(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-shortest",
    ];
    a.extend_from_slice(vcodec);
    a.extend_from_slice(acodec);
    a.push(out.to_str().unwrap());
    ffmpeg(&a);
    out
}

fn mono16k(a: &AudioBuffer<f32>) -> Vec<f32> {
    ResampleFrac::new(a.sample_rate, 16000).apply(&to_mono(a))
}

/// Best lag in `-max..=max` (shift of `b` against `a`) and the correlation there.
fn align(a: &[f32], b: &[f32], max: i64) -> (i64, f64) {
    let n = a.len().min(b.len()) as i64;
    let corr = |lag: i64| -> f64 {
        let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
        for i in max..n - max {
            let (x, y) = (a[i as usize] as f64, b[(i + lag) as usize] as f64);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    };
    (-max..=max)
        .map(|l| (l, corr(l)))
        .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn kind(e: Error) -> MediaErrorKind {
    match e {
        Error::Media { kind, .. } => kind,
        other => panic!("expected a media error, got {other}"),
    }
}

#[test]
fn every_container_decodes_like_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = decode::<f32>(&source(), ReadMode::Native, 0.0, None).unwrap();
    assert_eq!(
        (src.sample_rate, src.n_channels(), src.n_samples()),
        (44100, 2, 485_100)
    );
    let reference = mono16k(&src);

    // Lossless: exact or within one 16-bit step, same length, every channel.
    let flac = encode(d, "x.flac", &["-c:a", "flac"]);
    let a = decode::<f32>(&flac, ReadMode::Native, 0.0, None).unwrap();
    assert_eq!(a, src, "flac re-encode must be bit-identical");
    let wav = encode(d, "x.wav", &["-c:a", "pcm_s16le"]);
    let a = decode::<f32>(&wav, ReadMode::Native, 0.0, None).unwrap();
    assert_eq!(
        (a.sample_rate, a.n_channels(), a.n_samples()),
        (44100, 2, 485_100)
    );
    for c in 0..2 {
        let d = max_diff(&a.channels[c], &src.channels[c]);
        assert!(
            d <= 1.0 / 32768.0 + 1e-9,
            "wav s16 channel {c}: max|d| = {d}"
        );
    }
    // f64 output keeps 24-bit PCM exact too.
    let a64 = decode::<f64>(&source(), ReadMode::Native, 0.0, None).unwrap();
    assert!(
        a64.channels[0]
            .iter()
            .zip(&src.channels[0])
            .all(|(x, y)| *x as f32 == *y)
    );

    // Lossy and video containers: after resampling to 16 kHz mono.
    let cases: Vec<(&str, PathBuf, u32)> = vec![
        (
            "mp3",
            encode(d, "x.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
            44100,
        ),
        (
            "ogg/opus",
            encode(d, "x.ogg", &["-c:a", "libopus", "-b:a", "128k"]),
            48000,
        ),
        (
            "m4a/aac",
            encode(d, "x.m4a", &["-c:a", "aac", "-b:a", "192k"]),
            44100,
        ),
        (
            "mp4 (h264+aac)",
            encode_video(
                d,
                "x.mp4",
                &[
                    "-c:v",
                    "libx264",
                    "-pix_fmt",
                    "yuv420p",
                    "-preset",
                    "ultrafast",
                ],
                &["-c:a", "aac", "-b:a", "192k"],
            ),
            44100,
        ),
        (
            "webm (vp8+opus)",
            encode_video(
                d,
                "x.webm",
                &["-c:v", "libvpx", "-deadline", "realtime"],
                &["-c:a", "libopus", "-b:a", "128k"],
            ),
            48000,
        ),
    ];
    for (name, path, rate) in cases {
        let a = decode::<f32>(&path, ReadMode::Native, 0.0, None).unwrap();
        assert_eq!((a.sample_rate, a.n_channels()), (rate, 2), "{name}");
        let m = mono16k(&a);
        let (lag, corr) = align(&reference, &m, 64);
        let len_diff = m.len() as i64 - reference.len() as i64;
        println!(
            "{name}: {} Hz, {} samples ({} at 16 kHz, {len_diff:+} vs source), lag {lag}, correlation {corr:.5}",
            a.sample_rate,
            a.n_samples(),
            m.len()
        );
        assert_eq!(lag, 0, "{name}: codec delay not removed");
        assert!(corr > 0.99, "{name}: correlation {corr}");
        // Length within one codec frame of the source (11 s).
        assert!(len_diff.abs() <= 1024, "{name}: {len_diff} samples off");
    }
}

/// Every PCM sample format (unsigned 8-bit, 16/24/32-bit integer, 32/64-bit float, planar or
/// interleaved) and more than two channels decode to the values they store.
#[test]
fn sample_formats_and_channel_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = decode::<f64>(&source(), ReadMode::Native, 0.0, Some(2.0)).unwrap();
    // (codec, container, max |d| from the 24-bit source: the format's quantisation step)
    let cases: [(&str, &str, f64); 6] = [
        ("pcm_u8", "wav", 1.0 / 128.0),
        ("pcm_s16le", "wav", 1.0 / 32768.0),
        ("pcm_s24le", "wav", 0.0),
        ("pcm_s32le", "wav", 0.0),
        ("pcm_f32le", "wav", 0.0),
        ("pcm_f64le", "wav", 0.0),
    ];
    for (codec, ext, tol) in cases {
        let path = encode(d, &format!("{codec}.{ext}"), &["-t", "2", "-c:a", codec]);
        let a = decode::<f64>(&path, ReadMode::Native, 0.0, None).unwrap();
        assert_eq!(
            (a.sample_rate, a.n_channels(), a.n_samples()),
            (44100, 2, 88200),
            "{codec}"
        );
        let worst = (0..2)
            .map(|c| {
                a.channels[c]
                    .iter()
                    .zip(&src.channels[c])
                    .fold(0f64, |m, (x, y)| m.max((x - y).abs()))
            })
            .fold(0f64, f64::max);
        println!("{codec}: max|d| = {worst:.3e}");
        assert!(worst <= tol + 1e-12, "{codec}: max|d| = {worst} > {tol}");
    }
    // Six channels (planar float from the flac decoder would be interleaved s32 here): the
    // left/right source channels are routed to channels 0 and 5 and must come back there.
    let six = d.join("six.flac");
    let src_path = source();
    ffmpeg(&[
        "-i",
        src_path.to_str().unwrap(),
        "-t",
        "2",
        "-filter_complex",
        "[0:a]pan=5.1|c0=c0|c1=0*c0|c2=0*c0|c3=0*c0|c4=0*c0|c5=c1[a]",
        "-map",
        "[a]",
        "-c:a",
        "flac",
        six.to_str().unwrap(),
    ]);
    let a = decode::<f64>(&six, ReadMode::Native, 0.0, None).unwrap();
    assert_eq!(a.n_channels(), 6);
    assert_eq!(a.channels[0], src.channels[0]);
    assert_eq!(a.channels[5], src.channels[1]);
    assert!(a.channels[2].iter().all(|v| *v == 0.0));
    // An mp3 with cover art is audio, not video: the reference reads it with soundfile.
    let art = d.join("art.mp3");
    ffmpeg(&[
        "-i",
        src_path.to_str().unwrap(),
        "-f",
        "lavfi",
        "-i",
        "color=red:s=32x32",
        "-frames:v",
        "1",
        "-map",
        "0:a",
        "-map",
        "1:v",
        "-t",
        "2",
        "-c:a",
        "libmp3lame",
        "-c:v",
        "mjpeg",
        "-disposition:v",
        "attached_pic",
        art.to_str().unwrap(),
    ]);
    let info = probe(&art).unwrap();
    assert!(!info.has_video, "cover art is not a video stream");
    assert_eq!(ReadMode::for_file(&art).unwrap(), ReadMode::Native);
}

/// Seeking to an offset returns exactly the samples a full decode has there.
#[test]
fn seek_is_sample_accurate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        ("flac", encode(d, "s.flac", &["-c:a", "flac"]), 0.0f32),
        ("wav", encode(d, "s.wav", &["-c:a", "pcm_s16le"]), 0.0),
        (
            "mp3",
            encode(d, "s.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"]),
            1e-4,
        ),
        (
            "ogg/opus",
            encode(d, "s.ogg", &["-c:a", "libopus", "-b:a", "128k"]),
            1e-3,
        ),
        (
            "m4a/aac",
            encode(d, "s.m4a", &["-c:a", "aac", "-b:a", "192k"]),
            1e-4,
        ),
    ];
    for (name, path, tol) in cases {
        let full = decode::<f32>(&path, ReadMode::Native, 0.0, None).unwrap();
        let (offset, dur) = (6.25, 3.0);
        let part = decode::<f32>(&path, ReadMode::Native, offset, Some(dur)).unwrap();
        let want = full.slice_seconds(offset, Some(dur));
        assert_eq!(part.n_samples(), want.n_samples(), "{name}: length");
        let diff = (0..2)
            .map(|c| max_diff(&part.channels[c], &want.channels[c]))
            .fold(0f32, f32::max);
        let (lag, _) = align(&want.channels[0], &part.channels[0], 64);
        println!("{name}: seek to {offset} s: max|d| = {diff:.2e}, lag {lag}");
        assert_eq!(lag, 0, "{name}: seek misaligned");
        assert!(diff <= tol, "{name}: seek max|d| = {diff} > {tol}");
    }
}

/// A video's audio as moviepy writes it for the reference: identical to the ffmpeg CLI's
/// `-ar 44100 -ac 2 -f s16le` output, clipped to ±0.99, cut to the container duration.
#[test]
fn video_audio_matches_the_moviepy_path() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = encode_video(
        dir.path(),
        "m.mp4",
        &[
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "ultrafast",
        ],
        &["-c:a", "aac", "-ar", "48000"],
    );
    assert_eq!(ReadMode::for_file(&mp4).unwrap(), ReadMode::MoviepyWav);
    assert_eq!(ReadMode::for_file(&source()).unwrap(), ReadMode::Native);
    let info = probe(&mp4).unwrap();
    assert!(info.has_video);
    let ours = decode::<f32>(&mp4, ReadMode::MoviepyWav, 0.0, None).unwrap();
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            mp4.to_str().unwrap(),
            "-vn",
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "-ar",
            "44100",
            "-ac",
            "2",
            "-",
        ])
        .output()
        .unwrap();
    let cli: Vec<f32> = out
        .stdout
        .chunks(2)
        .map(|b| (i16::from_le_bytes([b[0], b[1]]) as i32).clamp(-32440, 32440) as f32 / 32768.0)
        .collect();
    let n = (44100.0 * info.moviepy_duration_s.unwrap()) as usize;
    assert_eq!(
        (ours.sample_rate, ours.n_channels(), ours.n_samples()),
        (44100, 2, n)
    );
    let mut worst = 0f32;
    for k in 0..n {
        for c in 0..2 {
            let want = cli.get(k * 2 + c).copied().unwrap_or(0.0);
            worst = worst.max((ours.channels[c][k] - want).abs());
        }
    }
    println!(
        "moviepy path: {n} samples, CLI gave {}, max|d| = {worst}",
        cli.len() / 2
    );
    assert_eq!(
        worst, 0.0,
        "the in-process conversion must equal the ffmpeg CLI's"
    );
}

#[test]
fn bad_inputs_get_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Truncated: the first 40 % of a flac whose header promises 11 s.
    let flac = encode(d, "t.flac", &["-c:a", "flac"]);
    let bytes = std::fs::read(&flac).unwrap();
    let cut = d.join("truncated.flac");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 5]).unwrap();
    let e = decode::<f32>(&cut, ReadMode::Native, 0.0, None).unwrap_err();
    println!("truncated flac: {e}");
    assert_eq!(kind(e), MediaErrorKind::Truncated);

    // Truncated wav: the header's data size is larger than the file.
    let wav = encode(d, "t.wav", &["-c:a", "pcm_s16le"]);
    let bytes = std::fs::read(&wav).unwrap();
    let cut = d.join("truncated.wav");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = decode::<f32>(&cut, ReadMode::Native, 0.0, None).unwrap_err();
    println!("truncated wav: {e}");
    assert_eq!(kind(e), MediaErrorKind::Truncated);

    // A video without an audio track.
    let silent = d.join("silent.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=8",
        "-t",
        "1",
        "-an",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        silent.to_str().unwrap(),
    ]);
    let e = decode::<f32>(&silent, ReadMode::Native, 0.0, None).unwrap_err();
    println!("video without audio: {e}");
    assert!(
        e.to_string().contains("silent.mp4"),
        "the message names the file"
    );
    assert_eq!(kind(e), MediaErrorKind::NoStream);

    // A zero-length file.
    let empty = d.join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    let e = decode::<f32>(&empty, ReadMode::Native, 0.0, None).unwrap_err();
    println!("zero-length file: {e}");
    assert_eq!(kind(e), MediaErrorKind::Empty);

    // A valid container whose audio stream holds no samples.
    let no_samples = d.join("nosamples.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=mono",
        "-t",
        "0",
        "-c:a",
        "pcm_s16le",
        no_samples.to_str().unwrap(),
    ]);
    let e = decode::<f32>(&no_samples, ReadMode::Native, 0.0, None).unwrap_err();
    println!("zero-length stream: {e}");
    assert_eq!(kind(e), MediaErrorKind::Empty);

    // Text renamed .wav.
    let text = d.join("notes.wav");
    std::fs::write(&text, "onset\tduration\tword\n0.5\t0.2\thello\n".repeat(50)).unwrap();
    let e = decode::<f32>(&text, ReadMode::Native, 0.0, None).unwrap_err();
    println!("text renamed .wav: {e}");
    assert_eq!(kind(e), MediaErrorKind::Unreadable);

    // A codec this FFmpeg build lacks: a wav whose format tag names no known codec.
    let mut bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&bytes[20..22], &[1, 0], "PCM format tag at byte 20");
    bytes[20..22].copy_from_slice(&0x3412u16.to_le_bytes());
    let odd = d.join("unknown_codec.wav");
    std::fs::write(&odd, &bytes).unwrap();
    let e = decode::<f32>(&odd, ReadMode::Native, 0.0, None).unwrap_err();
    println!("unknown codec: {e}");
    assert_eq!(kind(e), MediaErrorKind::UnsupportedCodec);

    // A missing file is an input error, not a media error.
    let e = decode::<f32>(&d.join("nope.wav"), ReadMode::Native, 0.0, None).unwrap_err();
    assert!(matches!(e, Error::InputMissing { .. }), "{e}");
    assert_eq!(e.exit_code(), 66);
}

/// The reference reads a chunk as frames `[round(sr·offset), +round(sr·duration))`.
#[test]
fn offsets_round_like_python() {
    let a = decode::<f32>(&source(), ReadMode::Native, 0.0, None).unwrap();
    // 44100 · 0.5000113378684807 = 22050.5 → 22050 (half to even); duration 1 s → 44100 frames.
    let off = 22050.5 / 44100.0;
    let s = a.slice_seconds(off, Some(1.0));
    assert_eq!(s.n_samples(), 44100);
    assert_eq!(s.channels[0][0], a.channels[0][22050]);
    let part = decode::<f32>(&source(), ReadMode::Native, off, Some(1.0)).unwrap();
    assert_eq!(part, s);
}
