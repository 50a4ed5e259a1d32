//! The group level through the real binary on the bundled example's image localizer (its two
//! participants plus a third who saw the images one second later): group-average predicted BOLD equal to the mean of the participants' maps, group
//! contrasts equal to the mean and one-sample t of the participants' effect maps, a rerun that
//! skips, and the clear error when the participant level has not run (exit 66).

mod common;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn app(out: &Path, level: &str, extra: &[&str]) -> std::process::Output {
    app_on(&root().join("examples/bids"), out, level, extra)
}

fn app_on(bids: &Path, out: &Path, level: &str, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("tribe-bids")
        .unwrap()
        .arg(bids)
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
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let o = app(&d.path().join("out"), "group", &[]);
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the participant level first"),
        "{}",
        stderr(&o)
    );
}

/// The example's localizer (sub-01, sub-02: the same images at the same times) plus sub-03,
/// who saw the same images one second later: a different stimulus timeline, so not averaged
/// with the others, and different effect maps, so the group test has a non-zero variance.
fn localizer_dataset(dir: &Path) -> PathBuf {
    let src = root().join("examples/bids");
    let bids = dir.join("bids");
    let copy = |from: &str, to: &str| {
        std::fs::create_dir_all(bids.join(to).parent().unwrap()).unwrap();
        std::fs::copy(src.join(from), bids.join(to)).unwrap();
    };
    copy("dataset_description.json", "dataset_description.json");
    copy("task-localizer_bold.json", "task-localizer_bold.json");
    for s in ["01", "02", "03"] {
        let from = if s == "03" { "02" } else { s };
        for f in ["bold.nii.gz", "events.tsv"] {
            copy(
                &format!("sub-{from}/func/sub-{from}_task-localizer_{f}"),
                &format!("sub-{s}/func/sub-{s}_task-localizer_{f}"),
            );
        }
    }
    for e in std::fs::read_dir(src.join("stimuli/localizer")).unwrap() {
        let e = e.unwrap();
        copy(
            &format!("stimuli/localizer/{}", e.file_name().to_string_lossy()),
            &format!("stimuli/localizer/{}", e.file_name().to_string_lossy()),
        );
    }
    let ev = bids.join("sub-03/func/sub-03_task-localizer_events.tsv");
    let text = std::fs::read_to_string(&ev).unwrap();
    let shifted: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                return l.to_string();
            }
            let (onset, rest) = l.split_once('\t').unwrap();
            format!("{}\t{rest}", onset.parse::<f64>().unwrap() + 1.0)
        })
        .collect();
    std::fs::write(&ev, shifted.join("\n") + "\n").unwrap();
    bids
}

#[test]
fn group_averages_and_contrasts_of_three_participants() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let bids = localizer_dataset(d.path());
    let out = d.path().join("out");
    let app = |out: &Path, level: &str, extra: &[&str]| app_on(&bids, out, level, extra);
    let o = app(&out, "participant", &[]);
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
        // sub-03's shifted timeline is another stimulus: not in this average, and alone.
        assert_eq!(side["RunCount"], 2);
        assert_eq!(side["Participants"], serde_json::json!(["01", "02"]));
        assert_eq!(side["RepetitionTime"], 2.0);
        assert!(side["Stimulus"]["Identity"].is_string());
    }
    eprintln!("group average vs mean of participants: max |diff| = {max_diff:.3e}");
    let listed: Vec<String> = std::fs::read_dir(&group)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_bold.func.gii"))
        .collect();
    assert_eq!(listed.len(), 2, "one average, two hemispheres: {listed:?}");
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
            let subs: Vec<Vec<f64>> = ["01", "02", "03"]
                .iter()
                .map(|s| {
                    arrays(&out.join(format!(
                        "sub-{s}/func/sub-{s}_task-localizer_hemi-{h}_space-fsaverage5_contrast-{c}_stat-effect_statmap.func.gii"
                    )))[0]
                    .clone()
                })
                .collect();
            let mut max_t = 0f64;
            for v in 0..10242 {
                let x: Vec<f64> = subs.iter().map(|s| s[v]).collect();
                let m = x.iter().sum::<f64>() / 3.0;
                // sample variance over 3 participants, divided by n
                let want_var = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 2.0 / 3.0;
                max_diff = max_diff.max((eff[v] - m).abs());
                assert!(
                    (var[v] - want_var).abs() <= 1e-5 * want_var + 1e-12,
                    "variance at {v}: {} vs {want_var}",
                    var[v]
                );
                let want_t = m / want_var.sqrt();
                max_t = max_t.max(((t[v] - want_t) / want_t.abs().max(1.0)).abs());
            }
            assert!(max_t <= 1e-4, "t: relative diff {max_t:.3e}");
            let side = json(&name("z").with_extension("").with_extension("json"));
            assert_eq!(side["ParticipantCount"], 3);
            assert_eq!(side["DegreesOfFreedom"], 2.0);
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
}
