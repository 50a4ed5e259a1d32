//! `tribe features video` and the extractor against the reference's outputs:
//! hf/vjepa2-tiny-timeline.* (neuralset HuggingFaceVideo on a 2 s clip) and e2e/ (the real
//! tribev2 pipeline on a 30 s movie with audio).

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::fixture;
use sha2::{Digest, Sha256};
use tribe_bids::features::video::{VideoExtractor, VideoOptions};
use tribe_bids::stimulus::video::{FrameDecoder, FrameSource, VideoInfo};

fn load(rel: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).unwrap()
}

fn model_dir() -> std::path::PathBuf {
    fixture("models-tiny/vjepa2-vitg-fpc64-256")
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn indices(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_vec2::<i64>().unwrap()
}

fn as_i64(frames: &[Option<Vec<usize>>]) -> Vec<Vec<i64>> {
    frames
        .iter()
        .map(|f| {
            f.as_ref()
                .map_or(vec![-1], |v| v.iter().map(|&i| i as i64).collect())
        })
        .collect()
}

/// Decoded RGB frames are byte-identical to what moviepy read from the ffmpeg CLI.
#[test]
fn decoded_frames_equal_the_reference_pipe() {
    let path = fixture("hf/media/testsrc2_320x256_24fps_2s.mp4");
    let info = VideoInfo::open(&path).unwrap();
    assert_eq!((info.width, info.height, info.n_frames()), (320, 256, 48));
    assert_eq!((info.fps, info.duration), (24.0, 2.0));
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("hf/vjepa2-tiny-timeline.json")).unwrap(),
    )
    .unwrap();
    let hashes = meta["video"]["frame_sha256_rgb24"].as_object().unwrap();
    let golden = load("hf/vjepa2-tiny-golden.safetensors");
    let frames = golden["frames_uint8"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap(); // frames 0,3,..,21
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    let mut checked = 0;
    while let Some(i) = dec.next_frame().unwrap() {
        let rgb = dec.rgb().unwrap().to_packed();
        if let Some(h) = hashes.get(&i.to_string()) {
            assert_eq!(
                hex::encode(Sha256::digest(&rgb)),
                h.as_str().unwrap(),
                "frame {i} differs from the reference"
            );
            checked += 1;
        }
        if i % 3 == 0 && i <= 21 {
            let n = 256 * 320 * 3;
            assert!(
                rgb == frames[i / 3 * n..(i / 3 + 1) * n],
                "frame {i} differs from frames_uint8"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 4 + 8);
    assert_eq!(dec.frames_decoded, 48);
}

/// hf/vjepa2-tiny-timeline: binned features and the frame choice, end-of-video quirk included.
#[test]
fn timeline_golden_through_the_cli() {
    let g = load("hf/vjepa2-tiny-timeline.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("video.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tribe"))
        .args(["features", "video", "--model"])
        .arg(model_dir())
        .arg("--input")
        .arg(fixture("hf/media/testsrc2_320x256_24fps_2s.mp4"))
        .args(["--start", "0", "--duration", "2", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let got = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let (a, b) = (&got["video"], &g["binned"]);
    assert_eq!(a.dims(), b.dims());
    let (d, m) = (max_abs(&(a - b).unwrap()), max_abs(b));
    eprintln!("binned max |d| = {d:e} (max |x| = {m})");
    assert!(d <= 1e-4 * m, "binned differs by {d}");

    let ex = VideoExtractor::load(&model_dir(), &Device::Cpu, VideoOptions::default()).unwrap();
    let f = ex
        .extract(
            &FrameSource::video(fixture("hf/media/testsrc2_320x256_24fps_2s.mp4")),
            0.0,
            2.0,
        )
        .unwrap();
    assert_eq!(as_i64(&f.frame_indices), indices(&g["frame_indices"]));
    assert_eq!(
        f.frame_indices[3].as_ref().unwrap(),
        &[0, 0, 0, 0, 12, 24, 36, 36]
    );
}

/// The per-layer token means of each bin (before grouping) match `event_all_layers`.
#[test]
fn timeline_all_layers() {
    let g = load("hf/vjepa2-tiny-timeline.safetensors");
    let want = &g["event_all_layers"]; // (3, 32, 4)
    let ex = VideoExtractor::load(&model_dir(), &Device::Cpu, VideoOptions::default()).unwrap();
    let f = ex
        .extract(
            &FrameSource::video(fixture("hf/media/testsrc2_320x256_24fps_2s.mp4")),
            0.0,
            2.0,
        )
        .unwrap();
    // Rebuild each bin's clip from its frame indices and run the model on all states.
    let info = VideoInfo::open(&fixture("hf/media/testsrc2_320x256_24fps_2s.mp4")).unwrap();
    let mut rgb = vec![];
    let mut dec = FrameDecoder::open(&info, 0).unwrap();
    while dec.next_frame().unwrap().is_some() {
        rgb.push(dec.rgb().unwrap().to_packed());
    }
    let p = ex.processor();
    let geom = p.geometry(256, 320);
    let rs = tribe_bids::features::video::processor::Resizer::new(geom);
    let mut worst = 0f32;
    for (bin, frames) in f.frame_indices.iter().enumerate() {
        let mut clip = vec![];
        for &i in frames.as_ref().unwrap() {
            let mut crop = vec![0u8; 3 * 64 * 64];
            rs.resize_crop(&rgb[i], 320 * 3, &mut crop);
            let mut px = vec![0f32; 3 * 64 * 64];
            p.normalize_into(&crop, &mut px);
            clip.extend(px);
        }
        let t = Tensor::from_vec(clip, (8, 3, 64, 64), &Device::Cpu).unwrap();
        let all = ex.clip_all_layers(&t).unwrap(); // (3, 32)
        let w = want.narrow(2, bin, 1).unwrap().squeeze(2).unwrap();
        worst = worst.max(max_abs(&(all - w).unwrap()));
    }
    let m = max_abs(want);
    eprintln!("event_all_layers max |d| = {worst:e} (max |x| = {m})");
    assert!(worst <= 1e-4 * m);
}

/// e2e/: the real pipeline's video input to the brain model for a 30 s movie with audio, in
/// one 100 s window (bins 60..199 zero), and its frame choice (bin 59 ends with frame 708 twice).
#[test]
fn e2e_movie_window() {
    let g = load("e2e/features.safetensors");
    let want = g["video"].squeeze(0).unwrap(); // (1, 32, 200)
    let ex = VideoExtractor::load(&model_dir(), &Device::Cpu, VideoOptions::default()).unwrap();
    let f = ex
        .extract(
            &FrameSource::video(fixture("e2e/bids/stimuli/movie.mp4")),
            0.0,
            100.0,
        )
        .unwrap();
    assert_eq!(f.features.dims(), want.dims());
    let (d, m) = (max_abs(&(&f.features - &want).unwrap()), max_abs(&want));
    eprintln!("e2e video max |d| = {d:e} (max |x| = {m})");
    assert!(d <= 1e-4 * m, "video features differ by {d}");
    let got = as_i64(&f.frame_indices[..60]);
    assert_eq!(got, indices(&g["video_frame_indices"]));
    assert!(f.frame_indices[60..].iter().all(|x| x.is_none()));
    // Decode once: every frame a clip uses exactly once, no frame twice, none after the last
    // one used (708). Frames no clip uses may not be decoded at all: the movie (I and P frames
    // only, an IDR picture every 2 s) is decoded in stretches between IDR pictures, and a
    // stretch stops at its last used frame.
    let counts = &f.stats.decode_counts[0];
    let used: std::collections::BTreeSet<usize> = f
        .frame_indices
        .iter()
        .flatten()
        .flatten()
        .copied()
        .collect();
    assert_eq!(used.last(), Some(&708));
    assert!(used.iter().all(|&i| counts[i] == 1));
    assert!(counts.iter().all(|&c| c <= 1) && counts[709..].iter().all(|&c| c == 0));
    assert_eq!(f.stats.frames_decoded, counts.iter().sum::<u32>() as usize);
    assert!(f.stats.frames_decoded <= 709);
    assert_eq!(f.stats.clips_encoded, 60);
    eprintln!(
        "e2e stats: {:?}",
        (f.stats.frames_preprocessed, f.stats.max_buffered_frames)
    );
}
