//! Frame sources beyond a single file: long videos in 60 s chunks decoded once, still images,
//! blank screen between events.

mod common;

use std::process::Command;

use candle_core::{Device, Tensor};
use common::fixture;
use tribe_bids::features::video::clips::chunk_clip_frames;
use tribe_bids::features::video::{VideoExtractor, VideoOptions};
use tribe_bids::stimulus::video::{FrameSource, ScreenFrame, VideoInfo, Visual, VisualEvent};

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg {args:?}");
}

fn tiny(frames: Option<usize>) -> VideoExtractor {
    let opts = VideoOptions {
        frames_per_clip: frames,
        ..Default::default()
    };
    VideoExtractor::load(
        &fixture("models-tiny/vjepa2-vitg-fpc64-256"),
        &Device::Cpu,
        opts,
    )
    .unwrap()
}

fn bin(t: &Tensor, b: usize) -> Vec<f32> {
    t.narrow(2, b, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// 100 s of video: chunks [0, 60) and [60, 100), 64-frame clips at 16 fps. Every source frame
/// is decoded exactly once for the whole run, and the ring buffer holds about 4 s of frames.
#[test]
fn long_video_is_decoded_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=d=100:s=96x64:r=24",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        p.to_str().unwrap(),
    ]);
    let ex = tiny(Some(64));
    let f = ex.extract(&FrameSource::video(&p), 0.0, 100.0).unwrap();
    assert_eq!(f.features.dims(), &[1, 32, 200]);
    let info = VideoInfo::open(&p).unwrap();
    let first = chunk_clip_frames(&info, 0.0, 60.0, 64, 4.0).unwrap();
    let second = chunk_clip_frames(&info, 60.0, 40.0, 64, 4.0).unwrap();
    for b in 0..200 {
        let want = if b < 120 { &first[b] } else { &second[b - 120] };
        assert_eq!(f.frame_indices[b].as_ref().unwrap(), want, "bin {b}");
    }
    // Chunk 2 starts afresh: its first clip repeats the frame at 60 s (index 1440).
    assert_eq!(second[0][..56], [1440; 56]);
    // Every frame a clip uses is decoded exactly once, no frame twice, none after the last
    // used. (x264's IDR pictures here let stretches between them go to separate decoders,
    // and a stretch stops at its last used frame, so some unused frames are never decoded.)
    let counts = &f.stats.decode_counts[0];
    let last = *second.iter().flatten().max().unwrap();
    assert!(
        first
            .iter()
            .chain(&second)
            .flatten()
            .all(|&i| counts[i] == 1),
        "each used frame decoded once"
    );
    assert!(counts.iter().all(|&c| c <= 1), "no frame decoded twice");
    assert!(counts[last + 1..].iter().all(|&c| c == 0));
    assert_eq!(f.stats.frames_decoded, counts.iter().sum::<u32>() as usize);
    // With two or more threads, the 10 s GOPs go to separate decoders.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads >= 2 {
        assert!(f.stats.decode_segments >= 2, "{}", f.stats.decode_segments);
    }
    assert_eq!(f.stats.clips_encoded, 200);
    // 16 of every 24 frames are used; the buffer holds one clip's worth and a little more.
    assert!(
        f.stats.frames_preprocessed <= 100 * 16 + 2,
        "{}",
        f.stats.frames_preprocessed
    );
    assert!(
        f.stats.max_buffered_frames <= 70,
        "{}",
        f.stats.max_buffered_frames
    );
    eprintln!(
        "stats: {:?}",
        (
            f.stats.frames_decoded,
            f.stats.frames_preprocessed,
            f.stats.max_buffered_frames
        )
    );
}

/// A video, a gap, a still image and a blank tail: blank bins carry the features of a zero
/// clip, image bins those of a clip of identical frames, and the video keeps its own features.
#[test]
fn composition_with_image_and_blank() {
    let dir = tempfile::tempdir().unwrap();
    let video = fixture("hf/media/testsrc2_320x256_24fps_2s.mp4");
    let png = dir.path().join("still.png");
    ffmpeg(&[
        "-i",
        video.to_str().unwrap(),
        "-frames:v",
        "1",
        png.to_str().unwrap(),
    ]);
    let events = vec![
        VisualEvent {
            start: 0.0,
            duration: None,
            visual: Visual::Video {
                path: video.clone(),
                offset: 0.0,
            },
        },
        VisualEvent {
            start: 3.0,
            duration: Some(1.5),
            visual: Visual::Image { path: png.clone() },
        },
    ];
    let source = FrameSource::timeline(events, Some(6.0));
    let screen = source.resolve().unwrap();
    assert_eq!(
        screen.frame_at(0.5),
        ScreenFrame::Video { item: 0, frame: 12 }
    );
    assert_eq!(screen.frame_at(2.5), ScreenFrame::Blank);
    assert!(matches!(screen.frame_at(3.2), ScreenFrame::Image { .. }));
    assert_eq!(screen.frame_at(5.0), ScreenFrame::Blank);

    let ex = tiny(None);
    let f = ex.extract_screen(&screen, 0.0, 6.0).unwrap();
    assert_eq!(f.features.dims(), &[1, 32, 12]);
    // Video bins equal the single-video extraction.
    let alone = ex.extract(&FrameSource::video(&video), 0.0, 2.0).unwrap();
    for b in 0..4 {
        assert!(
            max_diff(&bin(&f.features, b), &bin(&alone.features, b)) == 0.0,
            "video bin {b}"
        );
    }
    // Blank: zeros after preprocessing.
    let c = 64;
    let zeros = Tensor::zeros((8, 3, c, c), candle_core::DType::F32, &Device::Cpu).unwrap();
    let blank = ex
        .clip_features(&zeros)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for b in [4, 5, 9, 10, 11] {
        assert!(
            max_diff(&bin(&f.features, b), &blank) == 0.0,
            "blank bin {b}"
        );
    }
    // Image: the png (the video's frame 0) preprocessed like a video frame, 8 times.
    let p = ex.processor();
    let img = image::open(&png).unwrap().to_rgb8();
    let geom = p.geometry(img.height() as usize, img.width() as usize);
    let mut crop = vec![0u8; 3 * c * c];
    tribe_bids::features::video::processor::Resizer::new(geom).resize_crop(
        img.as_raw(),
        img.width() as usize * 3,
        &mut crop,
    );
    let mut px = vec![0f32; 3 * c * c];
    p.normalize_into(&crop, &mut px);
    let clip = Tensor::from_vec(px.repeat(8), (8, 3, c, c), &Device::Cpu).unwrap();
    let still = ex
        .clip_features(&clip)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for b in 6..9 {
        assert!(
            max_diff(&bin(&f.features, b), &still) == 0.0,
            "image bin {b}"
        );
    }
    assert_ne!(blank, still);
}

/// Without blank screen (the CLI's case) bins outside the video are zeros, as in the reference.
#[test]
fn outside_the_video_is_zero() {
    let ex = tiny(None);
    let video = fixture("hf/media/testsrc2_320x256_24fps_2s.mp4");
    let f = ex.extract(&FrameSource::video(&video), -1.0, 4.0).unwrap();
    assert_eq!(f.features.dims(), &[1, 32, 8]);
    for b in [0, 1, 6, 7] {
        assert!(bin(&f.features, b).iter().all(|&v| v == 0.0), "bin {b}");
    }
    let inside = ex.extract(&FrameSource::video(&video), 0.0, 2.0).unwrap();
    for b in 0..4 {
        assert_eq!(bin(&f.features, b + 2), bin(&inside.features, b));
    }
}
