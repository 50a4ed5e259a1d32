//! The brain model in bf16 (`ModelOptions::dtype`, `tribe encode --dtype bf16`) against the f32
//! golden fixtures. bf16 is outside the f32 parity bound by design (8 mantissa bits); this pins
//! how far outside: max|d| <= 2e-2 * max|expected| on every case, from both weight formats. On
//! the CPU it runs on candle's generic ops (the fast kernels are f32-only); the same code runs on
//! CUDA, where scripts/gpu-check.sh measures it.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use assert_cmd::Command;
use candle_core::{DType, Device, Tensor};
use tribe_bids::model::{ComputeDtype, HeadOptions, ModelFiles, ModelOptions, TribeModel};

/// Relative bound on max|d| / max|expected| for bf16.
const BF16_REL_BOUND: f32 = 2e-2;

fn tiny_dir() -> PathBuf {
    common::fixture("fmri_encoder/tribe-tiny")
}

fn case_path(name: &str) -> PathBuf {
    common::fixture(&format!("fmri_encoder/cases/{name}.safetensors"))
}

fn case(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(case_path(name), &Device::Cpu).unwrap()
}

fn load(weights: &str, head: HeadOptions) -> TribeModel {
    let files = ModelFiles {
        config: tiny_dir().join("config.yaml"),
        weights: tiny_dir().join(weights),
    };
    TribeModel::load_files(
        &files,
        &Device::Cpu,
        ModelOptions {
            head,
            dtype: ComputeDtype::Bf16,
            ..Default::default()
        },
    )
    .unwrap()
}

/// (max|got - want|, max|want|).
fn diff(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims(), "shape");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let w: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    let d = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (d, w.iter().map(|x| x.abs()).fold(0f32, f32::max))
}

const CASES: [&str; 4] = ["all_b2", "no_video", "sparse_text", "t_odd"];

#[test]
fn bf16_stays_within_its_bound_on_every_case() {
    for weights in ["best.ckpt", "model.safetensors"] {
        let m = load(weights, HeadOptions::default());
        for name in CASES {
            let inputs = case(name);
            let got = m.forward(&inputs).unwrap();
            assert_eq!(
                got.dtype(),
                DType::F32,
                "the prediction is f32 in bf16 mode"
            );
            let (d, maxw) = diff(&got, &inputs["expected"]);
            eprintln!(
                "bf16 {name} {weights}: max|d| = {d:.3e} = {:.2e} of max|expected| {maxw:.3e} (bound {BF16_REL_BOUND:e})",
                d / maxw
            );
            assert!(
                d <= BF16_REL_BOUND * maxw,
                "{name} from {weights}: bf16 max|d| {d:e} > {BF16_REL_BOUND} * {maxw:e}"
            );
            // A real bf16 run differs from f32: this guards against a silent f32 fallback.
            assert!(
                d > 1e-5 * maxw,
                "{name}: bf16 output looks like f32 ({d:e})"
            );
        }
    }
}

#[test]
fn bf16_head_shortcuts_stay_within_the_bound() {
    let inputs = case("t_odd");
    for head in [
        HeadOptions {
            pool_before_head: true,
            fold_low_rank: false,
        },
        HeadOptions {
            pool_before_head: false,
            fold_low_rank: true,
        },
    ] {
        let got = load("best.ckpt", head).forward(&inputs).unwrap();
        let (d, maxw) = diff(&got, &inputs["expected"]);
        eprintln!(
            "bf16 t_odd {head:?}: max|d| = {d:.3e} ({:.2e} relative)",
            d / maxw
        );
        assert!(d <= BF16_REL_BOUND * maxw, "{head:?}: {d:e}");
    }
}

#[test]
fn encode_cli_takes_dtype() {
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("pred.safetensors");
    Command::cargo_bin("tribe")
        .unwrap()
        .args(["encode", "--dtype", "bf16", "--checkpoint"])
        .arg(tiny_dir())
        .arg("--features")
        .arg(case_path("all_b2"))
        .arg("--out")
        .arg(&out_file)
        .assert()
        .success();
    let written = candle_core::safetensors::load(&out_file, &Device::Cpu).unwrap();
    let pred = &written["prediction"];
    assert_eq!(pred.dtype(), DType::F32);
    let lib = load("best.ckpt", HeadOptions::default())
        .forward(&case("all_b2"))
        .unwrap();
    let (d, _) = diff(pred, &lib);
    assert_eq!(d, 0.0, "CLI and library agree exactly in bf16");

    Command::cargo_bin("tribe")
        .unwrap()
        .args(["encode", "--dtype", "f16", "--checkpoint"])
        .arg(tiny_dir())
        .arg("--features")
        .arg(case_path("all_b2"))
        .arg("--out")
        .arg(&out_file)
        .assert()
        .failure()
        .stderr(predicates::str::contains("f16"));
}
