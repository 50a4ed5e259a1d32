//! Bad input gives a typed error that says what is wrong (Error::Media with its kind).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tribe_bids::error::{Error, MediaErrorKind};
use tribe_bids::stimulus::video::{FrameSource, StillImage, VideoInfo};

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg {args:?}");
}

fn kind_of(path: &Path) -> (MediaErrorKind, String) {
    match VideoInfo::open(path) {
        Err(e @ Error::Media { kind, .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "the message names the file: {msg}"
            );
            (kind, msg)
        }
        other => panic!("{}: expected a media error, got {other:?}", path.display()),
    }
}

fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn truncated_mp4() {
    let dir = tempfile::tempdir().unwrap();
    let full = tmp(&dir, "full.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=2:s=320x240",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        full.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&full).unwrap();
    // Index at the front, pictures cut: Truncated.
    let cut = tmp(&dir, "cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let (kind, msg) = kind_of(&cut);
    assert_eq!(kind, MediaErrorKind::Truncated, "{msg}");
    // Index at the end (no faststart) and cut: the header cannot be read.
    let late = tmp(&dir, "late.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=2:s=320x240",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        late.to_str().unwrap(),
    ]);
    let b = std::fs::read(&late).unwrap();
    std::fs::write(&late, &b[..b.len() / 2]).unwrap();
    let (kind, msg) = kind_of(&late);
    assert_eq!(kind, MediaErrorKind::Unreadable, "{msg}");
    assert!(msg.contains("cut off"), "{msg}");
}

#[test]
fn audio_only_file_as_video() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tone.wav", "tone.m4a"] {
        let p = tmp(&dir, name);
        ffmpeg(&["-f", "lavfi", "-i", "sine=d=1", p.to_str().unwrap()]);
        let (kind, msg) = kind_of(&p);
        assert_eq!(kind, MediaErrorKind::NoStream, "{msg}");
        assert!(msg.contains("no video stream"), "{msg}");
    }
}

#[test]
fn zero_frame_video() {
    let dir = tempfile::tempdir().unwrap();
    let src = tmp(&dir, "one.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=1:s=64x48",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        src.to_str().unwrap(),
    ]);
    let p = tmp(&dir, "empty.avi");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-frames:v",
        "0",
        p.to_str().unwrap(),
    ]);
    let (kind, msg) = kind_of(&p);
    assert_eq!(kind, MediaErrorKind::Empty, "{msg}");
}

#[test]
fn unsupported_codec() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "odd.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=1:s=64x48",
        "-c:v",
        "mpeg4",
        "-vtag",
        "XVID",
        p.to_str().unwrap(),
    ]);
    // Rename the codec tag to one no decoder knows.
    let b = std::fs::read(&p).unwrap();
    let s = replace_all(&b, b"XVID", b"QQQQ");
    let s = replace_all(&s, b"FMP4", b"QQQQ");
    std::fs::write(&p, s).unwrap();
    let (kind, msg) = kind_of(&p);
    assert_eq!(kind, MediaErrorKind::UnsupportedCodec, "{msg}");
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn not_media_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = tmp(&dir, "notes.mp4");
    std::fs::write(&p, "these are not moving pictures\n".repeat(50)).unwrap();
    assert_eq!(kind_of(&p).0, MediaErrorKind::Unreadable);
    match VideoInfo::open(&tmp(&dir, "missing.mp4")) {
        Err(Error::InputMissing { .. }) => {}
        other => panic!("expected InputMissing, got {other:?}"),
    }
    // Images: a damaged png, and an image event without a duration.
    let png = tmp(&dir, "bad.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n broken").unwrap();
    match StillImage::open(&png) {
        Err(Error::Media {
            kind: MediaErrorKind::Unreadable,
            ..
        }) => {}
        other => panic!("expected an unreadable image, got {other:?}"),
    }
    let ev = tribe_bids::stimulus::video::VisualEvent {
        start: 0.0,
        duration: None,
        visual: tribe_bids::stimulus::video::Visual::Image { path: png },
    };
    assert!(matches!(
        FrameSource::timeline(vec![ev], None).resolve(),
        Err(Error::Usage(_))
    ));
}
