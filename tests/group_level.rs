//! The group level through the real binary on the bundled example's two participants (image
//! localizer): group-average predicted BOLD equal to the mean of the participants' maps, group
//! contrasts equal to the mean and one-sample t of the participants' effect maps, a rerun that
//! skips, and the clear error when the participant level has not run (exit 66).

mod common;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ensure_example() {
    let st = std::process::Command::new(root().join("scripts/make-example.sh"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

fn app(out: &Path, level: &str, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("tribe-bids")
        .unwrap()
        .arg(root().join("examples/bids"))
        .arg(out)
        .arg(level)
        .arg("--models-dir")
        .arg(root().join("examples/models"))
        .arg("-w")
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("group_level_work"))
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Time-major values of a GIFTI (one Vec per DataArray).
fn arrays(p: &Path) -> Vec<Vec<f64>> {
    tribe_bids::formats::read_gifti(p)
        .unwrap_or_else(|e| panic!("{e}"))
        .arrays
        .iter()
        .map(|a| a.data.to_f64_vec())
        .collect()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn group_before_participant_exits_66() {
    ensure_example();
    let d = tempfile::tempdir().unwrap();
    let o = app(&d.path().join("out"), "group", &[]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the participant level first"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn group_averages_and_contrasts_of_two_participants() {
    ensure_example();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let o = app(&out, "participant", &["--task-label", "localizer"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = app(&out, "group", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let group = out.join("group");

    // Averages: the two localizer runs share their stimulus (same images, same timing).
    let mut max_diff = 0f64;
    for h in ["L", "R"] {
        let avg = group.join(format!(
            "task-localizer_hemi-{h}_space-fsaverage5_desc-mean_bold.func.gii"
        ));
        let mean = arrays(&avg);
        let subs: Vec<Vec<Vec<f64>>> = ["01", "02"]
            .iter()
            .map(|s| {
                arrays(&out.join(format!(
                    "sub-{s}/func/sub-{s}_task-localizer_hemi-{h}_space-fsaverage5_desc-predicted_bold.func.gii"
                )))
            })
            .collect();
        assert_eq!(mean.len(), 31, "one DataArray per volume");
        for (t, vol) in mean.iter().enumerate() {
            assert_eq!(vol.len(), 10242);
            for (v, x) in vol.iter().enumerate() {
                let want = (subs[0][t][v] + subs[1][t][v]) / 2.0;
                max_diff = max_diff.max((x - want).abs());
            }
        }
        let side = json(&avg.with_file_name(format!(
            "task-localizer_hemi-{h}_space-fsaverage5_desc-mean_bold.json"
        )));
        assert_eq!(side["RunCount"], 2);
        assert_eq!(side["Participants"], serde_json::json!(["01", "02"]));
        assert_eq!(side["RepetitionTime"], 2.0);
        assert!(side["Stimulus"]["Identity"].is_string());
    }
    eprintln!("group average vs mean of participants: max |diff| = {max_diff:.3e}");
    assert!(max_diff <= 1e-6, "{max_diff:.3e}");

    // Group contrasts (default: each condition against baseline).
    let mut max_diff = 0f64;
    for c in ["face", "object", "place"] {
        for h in ["L", "R"] {
            let name = |s: &str| {
                group.join(format!("task-localizer_hemi-{h}_space-fsaverage5_contrast-{c}_stat-{s}_statmap.func.gii"))
            };
            for s in ["effect", "variance", "t", "z"] {
                assert!(name(s).is_file(), "missing {}", name(s).display());
            }
            let eff = &arrays(&name("effect"))[0];
            let var = &arrays(&name("variance"))[0];
            let t = &arrays(&name("t"))[0];
            let subs: Vec<Vec<f64>> = ["01", "02"]
                .iter()
                .map(|s| {
                    arrays(&out.join(format!(
                        "sub-{s}/func/sub-{s}_task-localizer_hemi-{h}_space-fsaverage5_contrast-{c}_stat-effect_statmap.func.gii"
                    )))[0]
                    .clone()
                })
                .collect();
            for v in 0..10242 {
                let (a, b) = (subs[0][v], subs[1][v]);
                let m = (a + b) / 2.0;
                // sample variance over 2 participants / n = (a - b)^2 / 4
                let want_var = (a - b) * (a - b) / 4.0;
                max_diff = max_diff.max((eff[v] - m).abs());
                assert!(
                    (var[v] - want_var).abs() <= 1e-6 * want_var.max(1e-30) + 1e-12,
                    "variance at {v}"
                );
                if want_var > 1e-20 {
                    let want_t = m / want_var.sqrt();
                    assert!(
                        (t[v] - want_t).abs() <= 1e-4 * want_t.abs().max(1.0),
                        "t at {v}: {} vs {want_t}",
                        t[v]
                    );
                }
            }
            let side = json(&name("z").with_extension("").with_extension("json"));
            assert_eq!(side["ParticipantCount"], 2);
            assert_eq!(side["DegreesOfFreedom"], 1.0);
            assert_eq!(side["Contrast"]["Label"], c);
        }
    }
    eprintln!("group effect vs mean of participant effects: max |diff| = {max_diff:.3e}");
    assert!(max_diff <= 1e-6, "{max_diff:.3e}");

    // Rerun: nothing rewritten.
    let probe =
        group.join("task-localizer_hemi-L_space-fsaverage5_contrast-face_stat-z_statmap.func.gii");
    let before = std::fs::metadata(&probe).unwrap().modified().unwrap();
    let o = app(&out, "group", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(&probe).unwrap().modified().unwrap(),
        before
    );

    // The whole output, group folder included, still passes the validators.
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
}
