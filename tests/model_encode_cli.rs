//! `tribe encode` and `tribe inspect` as a user runs them (the binary, via assert_cmd).

mod common;

use std::path::PathBuf;

use assert_cmd::Command;
use candle_core::{Device, Tensor};
use tribe_bids::model::{ModelOptions, TribeModel};

fn tiny() -> PathBuf {
    common::fixture("fmri_encoder/tribe-tiny")
}

fn case(name: &str) -> PathBuf {
    common::fixture(&format!("fmri_encoder/cases/{name}.safetensors"))
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

#[test]
fn encode_writes_the_library_prediction() {
    let model = TribeModel::load(&tiny(), &Device::Cpu, ModelOptions::default()).unwrap();
    for name in ["all_b2", "no_video", "t_odd"] {
        let out = tempfile::tempdir().unwrap();
        let out_file = out.path().join("pred.safetensors");
        Command::cargo_bin("tribe")
            .unwrap()
            .args(["encode", "--checkpoint"])
            .arg(tiny())
            .arg("--features")
            .arg(case(name))
            .arg("--out")
            .arg(&out_file)
            .assert()
            .success();
        let written = candle_core::safetensors::load(&out_file, &Device::Cpu).unwrap();
        assert_eq!(written.len(), 1, "only `prediction`");
        let pred = &written["prediction"];
        let inputs = candle_core::safetensors::load(case(name), &Device::Cpu).unwrap();
        assert_eq!(pred.dims(), inputs["expected"].dims());
        assert_eq!(pred.dtype(), candle_core::DType::F32);
        let lib = model.forward(&inputs).unwrap();
        assert_eq!(
            max_abs_diff(pred, &lib),
            0.0,
            "{name}: CLI and library agree exactly"
        );
        let d = max_abs_diff(pred, &inputs["expected"]);
        assert!(d <= 2.5e-5, "{name}: {d}");
    }
}

#[test]
fn encode_from_safetensors_checkpoint_and_subject_index() {
    // A folder holding only config.yaml + model.safetensors.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(tiny().join("config.yaml"), d.path().join("config.yaml")).unwrap();
    std::fs::copy(
        tiny().join("model.safetensors"),
        d.path().join("model.safetensors"),
    )
    .unwrap();
    let out_file = d.path().join("out.safetensors");
    Command::cargo_bin("tribe")
        .unwrap()
        .args([
            "encode",
            "--subject-index",
            "0",
            "--device",
            "cpu",
            "--checkpoint",
        ])
        .arg(d.path())
        .arg("--features")
        .arg(case("sparse_text"))
        .arg("--out")
        .arg(&out_file)
        .assert()
        .success();
    let pred = candle_core::safetensors::load(&out_file, &Device::Cpu)
        .unwrap()
        .remove("prediction")
        .unwrap();
    let expected = candle_core::safetensors::load(case("sparse_text"), &Device::Cpu)
        .unwrap()
        .remove("expected")
        .unwrap();
    assert!(max_abs_diff(&pred, &expected) <= 2.5e-5);
}

#[test]
fn encode_refuses_bad_features_with_data_error_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.safetensors");
    let x = Tensor::zeros((1, 2, 47, 20), candle_core::DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("text".to_string(), x)]),
        &bad,
    )
    .unwrap();
    Command::cargo_bin("tribe")
        .unwrap()
        .args(["encode", "--checkpoint"])
        .arg(tiny())
        .arg("--features")
        .arg(&bad)
        .arg("--out")
        .arg(d.path().join("o.safetensors"))
        .assert()
        .code(65)
        .stderr(predicates::str::contains("text"));
    assert!(
        !d.path().join("o.safetensors").exists(),
        "no output on failure"
    );
    // Not a safetensors file at all.
    std::fs::write(&bad, "hello").unwrap();
    Command::cargo_bin("tribe")
        .unwrap()
        .args(["encode", "--checkpoint"])
        .arg(tiny())
        .arg("--features")
        .arg(&bad)
        .arg("--out")
        .arg(d.path().join("o.safetensors"))
        .assert()
        .code(65);
    // An unknown device is a usage error.
    Command::cargo_bin("tribe")
        .unwrap()
        .args(["encode", "--device", "tpu", "--checkpoint"])
        .arg(tiny())
        .arg("--features")
        .arg(case("all_b2"))
        .arg("--out")
        .arg(d.path().join("o.safetensors"))
        .assert()
        .code(2);
}

#[test]
fn inspect_reports_config_tensors_and_checksum() {
    let out = Command::cargo_bin("tribe")
        .unwrap()
        .arg("inspect")
        .arg(tiny())
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    for needle in [
        "hidden 192, depth 2, heads 2",
        "tensors: 36 (1,144,033 elements",
        "time_pos_embed",
        "[1, 1024, 192]",
        "sha256 ",
        "n_outputs 1284",
        "check: OK",
        "meta-llama/Llama-3.2-3B",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in:\n{text}");
    }
    // A checkpoint file given directly.
    Command::cargo_bin("tribe")
        .unwrap()
        .arg("inspect")
        .arg(tiny().join("model.safetensors"))
        .assert()
        .success()
        .stdout(predicates::str::contains("predictor.weights"));
    // An inconsistent folder: the check fails, the report still prints, the exit code says so.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(tiny().join("best.ckpt"), d.path().join("best.ckpt")).unwrap();
    let cfg = std::fs::read_to_string(tiny().join("config.yaml"))
        .unwrap()
        .replace("    hidden: 192\n", "    hidden: 96\n");
    std::fs::write(d.path().join("config.yaml"), cfg).unwrap();
    Command::cargo_bin("tribe")
        .unwrap()
        .arg("inspect")
        .arg(d.path())
        .assert()
        .code(78)
        .stdout(predicates::str::contains("check: FAILED"));
}
