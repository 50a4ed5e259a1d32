//! `--subcortical-checkpoint` end to end: the real binary on one example run (sub-02 speech:
//! JFK audio + words, 10 volumes at TR 2 s) with the tiny subcortical checkpoint. nibabel reads
//! the NIfTI with the right shape, affine, codes, units and TR, values exactly on the mask voxels;
//! the output passes validate-derivatives; a rerun skips the run and a missing NIfTI redoes it;
//! a checkpoint whose output count does not fit the mask is refused with a model error.

mod common;

use assert_cmd::Command;
use common::fixture;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_app(out: &Path, work: &Path, checkpoint: &Path) -> std::process::Output {
    Command::cargo_bin("tribe-bids")
        .unwrap()
        .arg(root().join("examples/bids"))
        .arg(out)
        .arg("participant")
        .arg("--participant-label")
        .arg("02")
        .arg("--task-label")
        .arg("speech")
        .arg("--models-dir")
        .arg(root().join("examples/models"))
        .arg("-w")
        .arg(work)
        .arg("--subcortical-checkpoint")
        .arg(checkpoint)
        .output()
        .unwrap()
}

const STEM: &str = "sub-02/func/sub-02_task-speech";

#[test]
fn subcortical_nifti_from_the_real_binary() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let (out, work) = (d.path().join("out"), d.path().join("work"));
    let ckpt = fixture("subcortical/tribev2-subcortical-tiny");
    let o = run_app(&out, &work, &ckpt);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("1 done, 0 skipped, 0 failed"), "{log}");

    let nii = out.join(format!(
        "{STEM}_space-MNI152NLin2009cAsym_res-2_desc-predicted_bold.nii.gz"
    ));
    let mask = root().join("assets/subcortical/mask-HarvardOxford-sub-thr50-2mm.nii.gz");
    let bold = root().join(format!("examples/bids/{STEM}_bold.nii.gz"));
    // nibabel as the independent reader.
    let report = common::run_python(
        r#"
import sys, json
import numpy as np, nibabel as nb
img, mask, bold = nb.load(sys.argv[1]), nb.load(sys.argv[2]), nb.load(sys.argv[3])
d = np.asarray(img.dataobj)
m = np.asarray(mask.dataobj) > 0
nz = (d != 0).any(axis=3)
print(json.dumps({
    "shape": list(img.shape), "dtype": str(img.get_data_dtype()),
    "affine": img.affine.tolist(), "qform": img.get_qform().tolist(),
    "codes": [int(img.header["qform_code"]), int(img.header["sform_code"])],
    "units": list(img.header.get_xyzt_units()), "tr": float(img.header.get_zooms()[3]),
    "bold_volumes": int(bold.shape[3]),
    "mask_voxels": int(m.sum()), "nonzero_equals_mask": bool((nz == m).all()),
    "outside_mask_all_zero": bool((d[~m] == 0).all()),
    "finite": bool(np.isfinite(d).all()), "max_abs": float(np.abs(d).max()),
    "varies_in_time": bool((d[m].std(axis=1) > 0).all()),
}))
"#,
        &[
            nii.to_str().unwrap(),
            mask.to_str().unwrap(),
            bold.to_str().unwrap(),
        ],
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    eprintln!("nibabel: {r}");
    assert_eq!(r["shape"], serde_json::json!([91, 109, 91, 10]));
    assert_eq!(r["bold_volumes"], 10, "one volume per acquired volume");
    assert_eq!(r["dtype"], "float32");
    let want = [
        [-2.0, 0.0, 0.0, 90.0],
        [0.0, 2.0, 0.0, -126.0],
        [0.0, 0.0, 2.0, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for key in ["affine", "qform"] {
        for (i, row) in want.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                let got = r[key][i][j].as_f64().unwrap();
                assert!((got - w).abs() < 1e-4, "{key}[{i}][{j}] = {got}, want {w}");
            }
        }
    }
    assert_eq!(r["codes"], serde_json::json!([4, 4]), "qform/sform MNI_152");
    assert_eq!(r["units"], serde_json::json!(["mm", "sec"]));
    assert_eq!(r["tr"], 2.0);
    assert_eq!(r["mask_voxels"], 8694);
    assert_eq!(r["nonzero_equals_mask"], true, "values exactly on the mask");
    assert_eq!(r["outside_mask_all_zero"], true);
    assert_eq!(r["finite"], true);
    assert_eq!(r["varies_in_time"], true);

    // The sidecar: timing, BIDS-required fields, the model's checksum and the mask definition,
    // and the same fingerprint as the run's GIFTI sidecars.
    let side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!(
            "{STEM}_space-MNI152NLin2009cAsym_res-2_desc-predicted_bold.json"
        )))
        .unwrap(),
    )
    .unwrap();
    let gifti_side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!(
            "{STEM}_hemi-L_space-fsaverage5_desc-predicted_bold.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(side["RepetitionTime"], 2.0);
    assert_eq!(side["SkullStripped"], true);
    assert!(side["Resolution"].is_string());
    assert!(side["SpatialReference"].is_object());
    assert_eq!(side["SubcorticalMask"]["Voxels"], 8694);
    assert_eq!(
        side["SubcorticalMask"]["Labels"].as_array().unwrap().len(),
        16
    );
    let sha = tribe_bids::model::checkpoint::file_sha256(&ckpt.join("best.ckpt")).unwrap();
    assert_eq!(side["Model"]["Sha256"], sha.as_str());
    assert_ne!(side["Model"]["Sha256"], gifti_side["Model"]["Sha256"]);
    assert_eq!(
        side["TribeBidsFingerprint"],
        gifti_side["TribeBidsFingerprint"]
    );
    assert_eq!(
        side["VolumeAcquisitionTimes"],
        gifti_side["VolumeAcquisitionTimes"]
    );
    assert!(
        std::fs::read_dir(nii.parent().unwrap()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")),
        "no temp file left"
    );

    // Standard tools accept the output.
    let venv = common::python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let v = std::process::Command::new(root().join("tests/tools/validate-derivatives"))
        .arg(&out)
        .arg(root().join("examples/bids"))
        .env("TRIBE_VALIDATE_VENV", &venv)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "validate-derivatives:\n{}\n{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Resume: the NIfTI is part of the run's outputs and fingerprint.
    let before = std::fs::read(&nii).unwrap();
    let o = run_app(&out, &work, &ckpt);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && log.contains("0 done, 1 skipped"),
        "{log}"
    );
    std::fs::remove_file(&nii).unwrap();
    let o = run_app(&out, &work, &ckpt);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && log.contains("1 done, 0 skipped"),
        "{log}"
    );
    assert!(
        std::fs::read(&nii).unwrap() == before,
        "recomputed NIfTI is byte-identical"
    );
}

#[test]
fn checkpoint_that_does_not_fit_the_mask_is_refused() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The cortical tiny checkpoint: 20,484 outputs for an 8,694-voxel mask.
    let o = run_app(
        &out,
        &d.path().join("work"),
        &fixture("models-tiny/tribev2"),
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(78), "model error exit code: {err}");
    assert!(err.contains("predicts 20484 outputs"), "{err}");
    assert!(err.contains("8694 voxels"), "{err}");
    assert!(
        err.contains("subcortical_mask.nii.gz"),
        "names the fix: {err}"
    );
    assert!(
        !out.join("sub-02").exists(),
        "nothing is predicted with a mismatched checkpoint"
    );

    // A missing folder names the flag.
    let o = run_app(&out, &d.path().join("work"), &d.path().join("nope"));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(66), "{err}");
    assert!(err.contains("--subcortical-checkpoint"), "{err}");
}

/// Output k lands on the k-th mask voxel in numpy C order (`data[mask > 0]`), as SPEC §9 orders
/// the subcortical model's outputs: written by our streaming writer, read back by nibabel.
#[test]
fn output_k_is_the_kth_mask_voxel_in_numpy_c_order() {
    use tribe_bids::predict::subcortical::{MaskedNiftiWriter, SubcorticalMask};
    let mask = SubcorticalMask::bundled().unwrap();
    let n = mask.n_voxels();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("order.nii.gz");
    let mut w = MaskedNiftiWriter::create(&path, &mask, 2, 0.8).unwrap();
    w.push(&(1..=n).map(|k| k as f32).collect::<Vec<_>>())
        .unwrap();
    w.push(&(1..=n).map(|k| -(k as f32)).collect::<Vec<_>>())
        .unwrap();
    w.finish().unwrap();
    let mask_path = root().join("assets/subcortical/mask-HarvardOxford-sub-thr50-2mm.nii.gz");
    let r = common::run_python(
        r#"
import sys
import numpy as np, nibabel as nb
d = np.asarray(nb.load(sys.argv[1]).dataobj)
m = np.asarray(nb.load(sys.argv[2]).dataobj) > 0
v = d[m]
n = int(m.sum())
ok = (v[:, 0] == np.arange(1, n + 1)).all() and (v[:, 1] == -np.arange(1, n + 1)).all()
print(n, bool(ok), round(float(nb.load(sys.argv[1]).header.get_zooms()[3]), 6))
"#,
        &[path.to_str().unwrap(), mask_path.to_str().unwrap()],
    );
    assert_eq!(r.trim(), format!("{n} True 0.8"));
}
