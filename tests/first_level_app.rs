//! Predicted contrasts through the real binary, on the bundled example's image localizer
//! (sub-01, faces/places/objects): maps written and valid, the CLI and BIDS Stats Model routes
//! give byte-identical maps, a rerun skips, and the effect maps and design matrix agree with
//! nilearn's `FirstLevelModel` fitted on the same predicted GIFTIs. Bad inputs get their own
//! exit codes: unknown condition 2, singular design 65, stats model of the wrong schema 78.

mod common;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A feature cache shared by the tests of this file (content-addressed and locked, so safe).
fn work() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("first_level_app_work")
}

fn app(bids: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("tribe-bids")
        .unwrap()
        .arg(bids)
        .arg(out)
        .arg("participant")
        .args(["--participant-label", "01", "--task-label", "localizer"])
        .arg("--models-dir")
        .arg(root().join("examples/models"))
        .arg("-w")
        .arg(work())
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PREFIX: &str = "sub-01/func/sub-01_task-localizer";

fn statmaps(out: &Path, contrast: &str) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for h in ["L", "R"] {
        for s in ["effect", "variance", "z"] {
            let rel = format!(
                "{PREFIX}_hemi-{h}_space-fsaverage5_contrast-{contrast}_stat-{s}_statmap.func.gii"
            );
            let p = out.join(&rel);
            assert!(p.is_file(), "missing {rel}");
            let side = out.join(rel.replace(".func.gii", ".json"));
            assert!(side.is_file(), "missing sidecar of {rel}");
            v.push((rel, std::fs::read(&p).unwrap()));
        }
    }
    v
}

const MODEL: &str = r#"{
  "Name": "localizer", "BIDSModelVersion": "1.0.0",
  "Input": {"task": ["localizer"]},
  "Nodes": [
    {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
     "Model": {"Type": "glm", "X": ["trial_type.face", "trial_type.object", "trial_type.place", 1]},
     "Contrasts": [
       {"Name": "facesVsPlaces", "ConditionList": ["trial_type.face", "trial_type.place"], "Weights": [1, -1], "Test": "t"}
     ]}
  ]
}"#;

/// nilearn FirstLevelModel on the same predicted GIFTIs (both hemispheres as one
/// SurfaceImage on fsaverage5), AR(1), no signal scaling.
const ORACLE: &str = r#"
import sys, json, warnings
import numpy as np, pandas as pd
warnings.simplefilter("ignore")
import nilearn
from nilearn.surface import SurfaceImage
from nilearn.datasets import load_fsaverage
from nilearn.glm.first_level import FirstLevelModel
left, right, events, tr, out = sys.argv[1:6]
mesh = load_fsaverage("fsaverage5")["pial"]
img = SurfaceImage(mesh=mesh, data={"left": left, "right": right})
ev = pd.read_csv(events, sep="\t")[["onset", "duration", "trial_type"]]
m = FirstLevelModel(t_r=float(tr), noise_model="ar1", signal_scaling=False, hrf_model="glover",
                    drift_model="cosine", high_pass=0.01, minimize_memory=False)
m.fit(img, events=ev)
dm = m.design_matrices_[0]
r = m.compute_contrast("face - place", output_type="all")
res = {"nilearn": nilearn.__version__, "columns": list(dm.columns), "design": dm.values.ravel().tolist()}
for k in ["effect_size", "effect_variance", "z_score"]:
    d = r[k].data
    res[k] = np.concatenate([np.asarray(d.parts["left"]).ravel(), np.asarray(d.parts["right"]).ravel()]).tolist()
json.dump(res, open(out, "w"))
"#;

fn read_map(p: &Path) -> Vec<f64> {
    let img = tribe_bids::formats::read_gifti(p).unwrap();
    assert_eq!(img.arrays.len(), 1, "{}: one DataArray", p.display());
    img.arrays[0].data.to_f64_vec()
}

#[test]
fn localizer_contrasts_cli_model_resume_and_nilearn() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let bids = root().join("examples/bids");

    // CLI route.
    let o = app(&bids, &out, &["--contrast", "facesVsPlaces=face-place"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cli = statmaps(&out, "facesVsPlaces");
    let design = std::fs::read_to_string(out.join(format!("{PREFIX}_design.tsv"))).unwrap();
    assert!(
        design.starts_with("face\tobject\tplace\tdrift_1\tconstant\n"),
        "{design}"
    );
    assert_eq!(design.lines().count(), 1 + 31, "one row per volume");
    assert!(out.join(format!("{PREFIX}_design.json")).is_file());
    // GIFTI metadata and sidecar content.
    let effect_l = out.join(&cli[0].0);
    let img = tribe_bids::formats::read_gifti(&effect_l).unwrap();
    assert_eq!(
        img.meta.get("AnatomicalStructurePrimary"),
        Some("CortexLeft")
    );
    assert_eq!(img.arrays[0].intent, tribe_bids::formats::Intent::ESTIMATE);
    assert_eq!(img.arrays[0].data.len(), 10242);
    let z_r = out.join(&cli[5].0);
    assert_eq!(
        tribe_bids::formats::read_gifti(&z_r).unwrap().arrays[0].intent,
        tribe_bids::formats::Intent::ZSCORE
    );
    let side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            effect_l.with_file_name(
                cli[0]
                    .0
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .replace(".func.gii", ".json"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        side["Contrast"]["ConditionList"],
        serde_json::json!(["face", "place"])
    );
    assert_eq!(side["Contrast"]["Weights"], serde_json::json!([1.0, -1.0]));
    assert_eq!(side["NoiseModel"]["Name"], "ar1");
    assert_eq!(side["Design"]["HRF"], "glover");
    assert_eq!(side["DegreesOfFreedom"], 26.0);
    assert!(side["Sources"].as_array().unwrap().iter().any(|s| {
        s.as_str()
            .unwrap()
            .ends_with("desc-predicted_bold.func.gii")
    }));

    // Standard tools accept the output with the maps in it.
    let venv = common::python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let v = std::process::Command::new(root().join("tests/tools/validate-derivatives"))
        .arg(&out)
        .arg(&bids)
        .env("TRIBE_VALIDATE_VENV", &venv)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "validate-derivatives:\n{}\n{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // nilearn on the same GIFTIs.
    let func = out.join("sub-01/func");
    let res = d.path().join("nilearn.json");
    common::run_python(
        ORACLE,
        &[
            func.join("sub-01_task-localizer_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii")
                .to_str()
                .unwrap(),
            func.join("sub-01_task-localizer_hemi-R_space-fsaverage5_desc-predicted_bold.func.gii")
                .to_str()
                .unwrap(),
            bids.join("sub-01/func/sub-01_task-localizer_events.tsv")
                .to_str()
                .unwrap(),
            "2.0",
            res.to_str().unwrap(),
        ],
    );
    let nl: serde_json::Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    let cols: Vec<String> = nl["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        design
            .lines()
            .next()
            .unwrap()
            .split('\t')
            .collect::<Vec<_>>(),
        cols
    );
    let ours_design: Vec<f64> = design
        .lines()
        .skip(1)
        .flat_map(|l| {
            l.split('\t')
                .map(|x| x.parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let theirs: Vec<f64> = nl["design"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let dmax = ours_design
        .iter()
        .zip(&theirs)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "design.tsv vs nilearn ({}): max |diff| = {dmax:.3e}",
        nl["nilearn"]
    );
    assert!(dmax <= 1e-9, "design differs from nilearn by {dmax:.3e}");
    let ours = |stat: &str| -> Vec<f64> {
        let mut v = read_map(&func.join(format!("sub-01_task-localizer_hemi-L_space-fsaverage5_contrast-facesVsPlaces_stat-{stat}_statmap.func.gii")));
        v.extend(read_map(&func.join(format!("sub-01_task-localizer_hemi-R_space-fsaverage5_contrast-facesVsPlaces_stat-{stat}_statmap.func.gii"))));
        v
    };
    // Tolerances: the maps are stored as float32 (relative rounding 6e-8) from a GLM that agrees
    // with nilearn to about 1e-9 relative: 1e-6 of the map's range for effect and variance,
    // 1e-5 absolute for z (measured: 3e-8 relative, 2.4e-7 absolute).
    for (stat, key, tol_rel, tol_abs) in [
        ("effect", "effect_size", 1e-6, 0.0),
        ("variance", "effect_variance", 1e-6, 0.0),
        ("z", "z_score", 0.0, 1e-5),
    ] {
        let a = ours(stat);
        let b: Vec<f64> = nl[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(a.len(), 20484);
        assert_eq!(b.len(), 20484);
        let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
        let max = a
            .iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("{stat} vs nilearn: max |diff| = {max:.3e} (max |nilearn| = {scale:.3e})");
        assert!(max <= tol_rel * scale + tol_abs, "{stat}: {max:.3e}");
    }

    // BIDS Stats Model route: the same maps, byte for byte.
    let model = d.path().join("model-localizer_smdl.json");
    std::fs::write(&model, MODEL).unwrap();
    let o = app(&bids, &out, &["-m", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let via_model = statmaps(&out, "facesVsPlaces");
    for ((name, a), (_, b)) in cli.iter().zip(&via_model) {
        assert!(a == b, "{name} differs between --contrast and -m");
    }
    let side: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!(
            "{PREFIX}_hemi-L_space-fsaverage5_contrast-facesVsPlaces_stat-z_statmap.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(side["Contrast"]["Origin"]["Source"], "BIDS Stats Model");

    // Resume: the same command again rewrites nothing.
    let probe = out.join(&via_model[0].0);
    let before = std::fs::metadata(&probe).unwrap().modified().unwrap();
    let o = app(&bids, &out, &["-m", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(&probe).unwrap().modified().unwrap(),
        before,
        "rerun rewrote a map"
    );
    // --force recomputes (same bytes).
    let o = app(&bids, &out, &["-m", model.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(
        std::fs::metadata(&probe).unwrap().modified().unwrap(),
        before,
        "--force did not recompute"
    );
    assert!(std::fs::read(&probe).unwrap() == via_model[0].1);

    // Default: each condition against baseline.
    let out2 = d.path().join("out-default");
    let o = app(&bids, &out2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for c in ["face", "object", "place"] {
        statmaps(&out2, c);
    }
}

#[test]
fn unknown_condition_exits_2_before_any_model_runs() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let o = app(
        &root().join("examples/bids"),
        &d.path().join("out"),
        &["--contrast", "bad=face-house"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("unknown condition 'house'") && e.contains("face, object, place"),
        "{e}"
    );
    assert!(!d.path().join("out/sub-01").exists(), "nothing predicted");
}

#[test]
fn stats_model_of_the_wrong_schema_exits_78() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("model-old_smdl.json");
    std::fs::write(&m, r#"{"Name": "old", "Steps": [{"Level": "run"}]}"#).unwrap();
    let o = app(
        &root().join("examples/bids"),
        &d.path().join("out"),
        &["-m", m.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("model-old_smdl.json") && e.contains("missing 'Nodes'"),
        "{e}"
    );
    // A contrast on a condition the model's design lacks is refused the same way.
    std::fs::write(
        &m,
        r#"{"Nodes": [{"Level": "Run", "Name": "run", "Model": {"X": ["trial_type.face", 1]},
            "Contrasts": [{"Name": "c", "ConditionList": ["trial_type.face", "trial_type.place"], "Weights": [1, -1]}]}]}"#,
    )
    .unwrap();
    let o = app(
        &root().join("examples/bids"),
        &d.path().join("out"),
        &["-m", m.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("uses 'place', which is not in Model.X"),
        "{}",
        stderr(&o)
    );
}

/// Two conditions with identical timing (face2 repeats face's onsets, with no stimulus of its
/// own): the prediction runs, the GLM refuses the design naming both columns, exit 65.
#[test]
fn singular_design_exits_65_naming_the_columns() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let src = root().join("examples/bids");
    let bids = d.path().join("bids");
    for rel in [
        "dataset_description.json",
        "task-localizer_bold.json",
        "sub-01/func/sub-01_task-localizer_bold.nii.gz",
    ] {
        std::fs::create_dir_all(bids.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(src.join(rel), bids.join(rel)).unwrap();
    }
    std::fs::create_dir_all(bids.join("stimuli/localizer")).unwrap();
    for e in std::fs::read_dir(src.join("stimuli/localizer")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bids.join("stimuli/localizer").join(e.file_name())).unwrap();
    }
    let events =
        std::fs::read_to_string(src.join("sub-01/func/sub-01_task-localizer_events.tsv")).unwrap();
    let mut lines: Vec<String> = events.lines().map(str::to_string).collect();
    let extra: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("\tface\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            format!("{}\t{}\tface2\tn/a", f[0], f[1])
        })
        .collect();
    lines.extend(extra);
    let mut rows: Vec<String> = lines.split_off(1);
    rows.sort_by(|a, b| {
        let o = |l: &str| l.split('\t').next().unwrap().parse::<f64>().unwrap();
        o(a).partial_cmp(&o(b)).unwrap()
    });
    lines.extend(rows);
    std::fs::write(
        bids.join("sub-01/func/sub-01_task-localizer_events.tsv"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let out = d.path().join("out");
    let o = app(&bids, &out, &[]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("rank-deficient") && e.contains("'face'") && e.contains("'face2'"),
        "{e}"
    );
    assert!(e.contains("sub-01_task-localizer (contrasts)"), "{e}");
    // The prediction itself was written; no partial maps.
    assert!(
        out.join(
            "sub-01/func/sub-01_task-localizer_hemi-L_space-fsaverage5_desc-predicted_bold.json"
        )
        .is_file()
    );
    assert!(
        !out.join("sub-01/func/sub-01_task-localizer_design.tsv")
            .exists()
    );
}
