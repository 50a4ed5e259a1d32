//! V-JEPA2 preprocessing and encoder against the HF goldens (tests/fixtures/hf/README.md §3).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::fixture;
use tribe_bids::features::video::processor::{ProcessorConfig, Resizer, resize_full};
use tribe_bids::features::video::vjepa2::{LastHiddenState, Vjepa2Encoder};

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("hf/vjepa2-tiny-golden.safetensors"), &Device::Cpu)
        .unwrap()
}

fn model_dir() -> std::path::PathBuf {
    fixture("models-tiny/vjepa2-vitg-fpc64-256")
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The resize alone: torch 2.6's uint8 antialiased bilinear, bit for bit.
#[test]
fn resize_matches_torch_2_6_exactly() {
    let g = golden();
    let frames = u8s(&g["frames_uint8"]); // (8, 256, 320, 3)
    let want = u8s(&g["resized_uint8"]); // (8, 3, 73, 91)
    let (h, w, rh, rw) = (256, 320, 73, 91);
    let mut mismatches = 0;
    let mut max_d = 0i32;
    for f in 0..8 {
        let got = resize_full(&frames[f * h * w * 3..(f + 1) * h * w * 3], h, w, rh, rw);
        let exp = &want[f * 3 * rh * rw..(f + 1) * 3 * rh * rw];
        for (a, b) in got.iter().zip(exp) {
            let d = (*a as i32 - *b as i32).abs();
            max_d = max_d.max(d);
            mismatches += (d != 0) as usize;
        }
    }
    assert_eq!(
        mismatches, 0,
        "{mismatches} resized values differ from torch 2.6 (max |d| = {max_d})"
    );
}

/// Resize + crop + normalization with the model folder's processor config.
#[test]
fn processor_matches_golden() {
    let g = golden();
    let cfg = ProcessorConfig::from_model_dir(&model_dir()).unwrap();
    assert_eq!(cfg, ProcessorConfig::for_crop(64));
    let frames = u8s(&g["frames_uint8"]);
    let want_crop = u8s(&g["cropped_uint8"]);
    let want_px = g["pixel_values_videos"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let geom = cfg.geometry(256, 320);
    let resizer = Resizer::new(geom);
    let plane = 3 * 64 * 64;
    let mut max_d = 0f32;
    for f in 0..8 {
        let mut crop = vec![0u8; plane];
        resizer.resize_crop(
            &frames[f * 256 * 320 * 3..(f + 1) * 256 * 320 * 3],
            320 * 3,
            &mut crop,
        );
        assert_eq!(
            crop,
            want_crop[f * plane..(f + 1) * plane],
            "cropped frame {f}"
        );
        let mut px = vec![0f32; plane];
        cfg.normalize_into(&crop, &mut px);
        for (a, b) in px.iter().zip(&want_px[f * plane..(f + 1) * plane]) {
            max_d = max_d.max((a - b).abs());
        }
    }
    eprintln!("pixel_values max |d| = {max_d:e}");
    assert!(max_d <= 1e-4, "pixel values differ by {max_d}");
}

/// Every hidden state and the per-layer token means, both transformers semantics.
#[test]
fn encoder_matches_golden() {
    let g = golden();
    let px = g["pixel_values_videos"].squeeze(0).unwrap(); // (8, 3, 64, 64)
    let want = &g["hidden_states"]; // (3, 64, 32)
    let enc =
        Vjepa2Encoder::load(&model_dir(), &Device::Cpu, DType::F32, LastHiddenState::Raw).unwrap();
    let got = enc.hidden_states(&px).unwrap();
    assert_eq!(got.dims(), want.dims());
    for i in 0..3 {
        let (a, b) = (got.get(i).unwrap(), want.get(i).unwrap());
        let (d, m) = (max_abs_diff(&a, &b), max_abs(&b));
        eprintln!("hidden_states[{i}] max |d| = {d:e} (max |x| = {m})");
        assert!(d <= 1e-4 * m, "hidden state {i}: {d} > 1e-4 * {m}");
    }
    let means = enc.token_means(&px, &[0, 1, 2]).unwrap();
    let want_means = &g["pooled_mean_tokens"];
    let (d, m) = (max_abs_diff(&means, want_means), max_abs(want_means));
    eprintln!("token means (tf5) max |d| = {d:e} (max |x| = {m})");
    assert!(d <= 1e-4 * m);

    let enc4 = Vjepa2Encoder::load(
        &model_dir(),
        &Device::Cpu,
        DType::F32,
        LastHiddenState::LayerNormed,
    )
    .unwrap();
    let last = enc4.hidden_states(&px).unwrap().get(2).unwrap();
    let want_last = &g["last_hidden_state"];
    let (d, m) = (max_abs_diff(&last, want_last), max_abs(want_last));
    eprintln!("last_hidden_state (tf4) max |d| = {d:e} (max |x| = {m})");
    assert!(d <= 1e-4 * m);
    let means4 = enc4.token_means(&px, &[0, 1, 2]).unwrap();
    let want4 = &g["pooled_mean_tokens_tf4_semantics"];
    let (d, m) = (max_abs_diff(&means4, want4), max_abs(want4));
    eprintln!("token means (tf4) max |d| = {d:e}");
    assert!(d <= 1e-4 * m);
}
