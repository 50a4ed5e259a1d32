//! Parity of the brain model with the reference `FmriEncoderModel` on the golden fixtures
//! (tests/fixtures/fmri_encoder): every case from best.ckpt and from model.safetensors, with the
//! fast CPU kernels and with the portable candle kernels (the CUDA path), and every stage of
//! `all_b2_intermediates` in its own test so a mismatch names its stage.
//! Bound: max|d| <= 1e-5 * max|expected| + 1e-6.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use tribe_bids::model::trace::Trace;
use tribe_bids::model::{HeadOptions, Kernels, ModelFiles, ModelOptions, TribeModel};

fn tiny_dir() -> PathBuf {
    common::fixture("fmri_encoder/tribe-tiny")
}

fn case(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixture(&format!("fmri_encoder/cases/{name}.safetensors")),
        &Device::Cpu,
    )
    .unwrap()
}

fn load(weights: &str, kernels: Kernels, head: HeadOptions) -> TribeModel {
    let files = ModelFiles {
        config: tiny_dir().join("config.yaml"),
        weights: tiny_dir().join(weights),
    };
    TribeModel::load_files(
        &files,
        &Device::Cpu,
        ModelOptions {
            kernels,
            head,
            ..Default::default()
        },
    )
    .unwrap()
}

/// (max |got - want|, bound) after checking shapes agree.
fn diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims(), "shape");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let maxd = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let maxw = w.iter().map(|x| x.abs()).fold(0f32, f32::max);
    (maxd, 1e-5 * maxw + 1e-6)
}

const WEIGHTS: [&str; 2] = ["best.ckpt", "model.safetensors"];
const KERNELS: [Kernels; 2] = [Kernels::Auto, Kernels::Portable];

fn check_case(name: &str) {
    let inputs = case(name);
    let expected = &inputs["expected"];
    for w in WEIGHTS {
        for k in KERNELS {
            let m = load(w, k, HeadOptions::default());
            let got = m.forward(&inputs).unwrap();
            let (d, bound) = diff(&got, expected);
            eprintln!("{name} {w} {k:?}: max|d| = {d:.3e} (bound {bound:.3e})");
            assert!(
                d <= bound,
                "{name} from {w} with {k:?}: max|d| {d:e} > {bound:e}"
            );
        }
    }
}

#[test]
fn case_all_b2() {
    check_case("all_b2");
}

#[test]
fn case_no_video_absent_modality_is_zero_after_projection() {
    check_case("no_video");
}

#[test]
fn case_sparse_text_zero_features_give_projector_bias() {
    check_case("sparse_text");
}

#[test]
fn case_t_odd_uneven_adaptive_pooling() {
    check_case("t_odd");
}

/// One traced forward per kernel set, shared by the per-stage tests.
fn traced(k: Kernels) -> Trace {
    let m = load("best.ckpt", k, HeadOptions::default());
    let mut t = Trace::on();
    m.forward_traced(&case("all_b2"), &mut t).unwrap();
    t
}

fn check_stage(stage: &str) {
    let want = candle_core::safetensors::load(
        common::fixture("fmri_encoder/cases/all_b2_intermediates.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for k in KERNELS {
        let t = traced(k);
        let got = t
            .get(stage)
            .unwrap_or_else(|| panic!("stage {stage} not recorded"));
        let (d, bound) = diff(got, &want[stage]);
        eprintln!("{stage} {k:?}: max|d| = {d:.3e} (bound {bound:.3e})");
        assert!(
            d <= bound,
            "stage {stage} with {k:?}: max|d| {d:e} > {bound:e}"
        );
    }
}

macro_rules! stage_tests {
    ($($fn_name:ident => $stage:expr),* $(,)?) => {
        $(#[test] fn $fn_name() { check_stage($stage); })*
    };
}

stage_tests! {
    stage_proj_text => "proj.text",
    stage_proj_audio => "proj.audio",
    stage_proj_video => "proj.video",
    stage_x_cat => "x_cat",
    stage_x_pos => "x_pos",
    stage_rotary_freqs => "rotary_freqs",
    stage_layer0_attn_normed => "enc.layers.0.attn.normed",
    stage_layer0_attn_probs => "enc.layers.0.attn.probs",
    stage_layer0_attn_branch => "enc.layers.0.attn.branch",
    stage_layer0_attn_out => "enc.layers.0.attn.out",
    stage_layer1_ff_normed => "enc.layers.1.ff.normed",
    stage_layer1_ff_branch => "enc.layers.1.ff.branch",
    stage_layer1_ff_out => "enc.layers.1.ff.out",
    stage_layer2_attn_normed => "enc.layers.2.attn.normed",
    stage_layer2_attn_probs => "enc.layers.2.attn.probs",
    stage_layer2_attn_branch => "enc.layers.2.attn.branch",
    stage_layer2_attn_out => "enc.layers.2.attn.out",
    stage_layer3_ff_normed => "enc.layers.3.ff.normed",
    stage_layer3_ff_branch => "enc.layers.3.ff.branch",
    stage_layer3_ff_out => "enc.layers.3.ff.out",
    stage_final_norm => "enc.final_norm",
    stage_low_rank => "low_rank",
    stage_pre_pool => "pre_pool",
    stage_expected => "expected",
}

/// The exact-math head rewrites (SPEC §1.2) stay within the parity bound on every case.
#[test]
fn head_shortcuts_within_parity_bound() {
    let variants = [
        HeadOptions {
            pool_before_head: true,
            fold_low_rank: false,
        },
        HeadOptions {
            pool_before_head: false,
            fold_low_rank: true,
        },
        HeadOptions {
            pool_before_head: true,
            fold_low_rank: true,
        },
    ];
    for name in ["all_b2", "no_video", "sparse_text", "t_odd"] {
        let inputs = case(name);
        for h in variants {
            for k in KERNELS {
                let got = load("best.ckpt", k, h).forward(&inputs).unwrap();
                let (d, bound) = diff(&got, &inputs["expected"]);
                eprintln!("{name} {h:?} {k:?}: max|d| = {d:.3e} (bound {bound:.3e})");
                assert!(d <= bound, "{name} {h:?} {k:?}: {d:e} > {bound:e}");
            }
        }
    }
}

/// Batch elements are independent: running each sample alone gives the batched rows.
#[test]
fn batch_rows_are_independent() {
    let inputs = case("all_b2");
    let m = load("best.ckpt", Kernels::Auto, HeadOptions::default());
    let both = m.forward(&inputs).unwrap();
    for b in 0..2 {
        let one: HashMap<String, Tensor> = inputs
            .iter()
            .filter(|(k, _)| *k != "expected")
            .map(|(k, v)| (k.clone(), v.narrow(0, b, 1).unwrap()))
            .collect();
        let got = m.forward(&one).unwrap();
        let (d, bound) = diff(&got, &both.narrow(0, b, 1).unwrap());
        assert!(d <= bound, "sample {b}: {d:e}");
    }
}
