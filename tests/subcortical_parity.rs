//! The tiny subcortical checkpoint (tests/fixtures/subcortical, 8,694 outputs = the bundled
//! mask) against its PyTorch golden: a float64 implementation of SPEC §1-3 that the generator
//! first checks against the reference FmriEncoder's own outputs (<= 1.0e-6 on fmri_encoder).
//! One full 100 s window (200 bins) with text, audio and video; both weight formats, both kernel
//! sets. The golden keeps every 4th voxel and the last one, plus the whole low-rank state.
//! Bound: max|d| <= 1e-5 * max|expected| + 1e-6 (as model_parity).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use tribe_bids::model::trace::Trace;
use tribe_bids::model::{Kernels, ModelFiles, ModelOptions, TribeModel};
use tribe_bids::predict::subcortical::SubcorticalMask;

fn dir() -> PathBuf {
    common::fixture("subcortical/tribev2-subcortical-tiny")
}

fn case() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixture("subcortical/cases/all_window.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn load(weights: &str, kernels: Kernels) -> TribeModel {
    let files = ModelFiles {
        config: dir().join("config.yaml"),
        weights: dir().join(weights),
    };
    TribeModel::load_files(
        &files,
        &Device::Cpu,
        ModelOptions {
            kernels,
            ..Default::default()
        },
    )
    .unwrap()
}

fn max_abs_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let m = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (d, 1e-5 * m + 1e-6)
}

#[test]
fn tiny_subcortical_model_matches_its_pytorch_golden() {
    let c = case();
    let cols: Vec<i64> = c["columns"].to_vec1().unwrap();
    let expected: Vec<f32> = c["expected"].flatten_all().unwrap().to_vec1().unwrap();
    let low_rank: Vec<f32> = c["low_rank"].flatten_all().unwrap().to_vec1().unwrap();
    let n_mask = SubcorticalMask::bundled().unwrap().n_voxels();
    for w in ["best.ckpt", "model.safetensors"] {
        for k in [Kernels::Auto, Kernels::Portable] {
            let m = load(w, k);
            assert_eq!(m.n_outputs(), n_mask, "one output per mask voxel");
            let mut trace = Trace::on();
            let out = m.forward_traced(&c, &mut trace).unwrap();
            assert_eq!(out.dims(), &[1, n_mask, 100]);
            let out: Vec<Vec<f32>> = out.squeeze(0).unwrap().to_vec2().unwrap();
            let got: Vec<f32> = cols
                .iter()
                .flat_map(|&v| out[v as usize].iter().copied())
                .collect();
            let (d, bound) = max_abs_diff(&got, &expected);
            eprintln!("{w} {k:?}: output max|d| = {d:.3e} (bound {bound:.3e})");
            assert!(d <= bound, "{w} {k:?}: output max|d| {d:e} > {bound:e}");
            let z: Vec<f32> = trace
                .get("low_rank")
                .expect("low_rank recorded")
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (d, bound) = max_abs_diff(&z, &low_rank);
            eprintln!("{w} {k:?}: low_rank max|d| = {d:.3e} (bound {bound:.3e})");
            assert!(d <= bound, "{w} {k:?}: low_rank max|d| {d:e} > {bound:e}");
        }
    }
}
