//! The BIDS reader over every vendored dataset (bids-examples, bids-validator test data).
//! Expected counts and values were read off the files with pandas/nibabel (see each test).

mod common;

use common::fixture;
use std::path::{Path, PathBuf};
use tribe_bids::Error;
use tribe_bids::bids::{Filters, Layout, Run, VolumeOnsets};
use tribe_bids::error::exit;

fn ds(rel: &str) -> PathBuf {
    fixture("data").join(rel)
}

fn all_runs(rel: &str) -> Vec<Run> {
    Layout::open(&ds(rel))
        .unwrap()
        .runs(&Filters::all())
        .unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Every dataset vendored in tests/fixtures/data opens and reads completely, or fails with the
/// documented error: `empty_files` has no dataset_description.json and `ds000001-fmriprep` is a
/// derivatives dataset (both exit 16).
#[test]
fn every_vendored_dataset_reads_or_fails_as_documented() {
    let mut seen = Vec::new();
    for group in ["bids-examples", "bids-validator-tests"] {
        for entry in std::fs::read_dir(ds(group)).unwrap() {
            let path = entry.unwrap().path();
            if !path.is_dir() {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let result = Layout::open(&path).and_then(|l| l.runs(&Filters::all()));
            match name.as_str() {
                "empty_files" => {
                    let err = result.unwrap_err();
                    assert!(
                        matches!(&err, Error::DatasetInvalid { path, .. } if path.ends_with("dataset_description.json")),
                        "{err}"
                    );
                    assert_eq!(err.exit_code(), exit::DATASET_INVALID);
                }
                "ds000001-fmriprep" => {
                    let err = result.unwrap_err();
                    assert!(
                        matches!(&err, Error::DatasetInvalid { reason, .. } if reason.contains("derivative")),
                        "{err}"
                    );
                    assert_eq!(err.exit_code(), 16);
                }
                _ => {
                    let runs = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert!(!runs.is_empty(), "{name}");
                    for r in &runs {
                        assert!(r.bold.exists());
                        assert!(r.timing.volume_onset(0).is_some(), "{}", r.bold.display());
                    }
                }
            }
            seen.push(name);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "ds000001-fmriprep",
            "ds000117",
            "ds001",
            "ds006_missing-session",
            "ds114",
            "empty_files",
            "eyetracking_fmri",
            "synthetic",
            "valid_headers",
            "volume_timing"
        ]
    );
}

#[test]
fn ds114_sessions_and_events_inheritance() {
    let layout = Layout::open(&ds("bids-examples/ds114")).unwrap();
    let subjects: Vec<String> = (1..=10).map(|i| format!("{i:02}")).collect();
    assert_eq!(layout.subjects(), subjects.as_slice());
    for s in &subjects {
        assert_eq!(layout.sessions(s), ["retest", "test"]);
    }
    let runs = layout.runs(&Filters::all()).unwrap();
    assert_eq!(runs.len(), 100, "10 subjects x 2 sessions x 5 tasks");
    let root = ds("bids-examples/ds114");
    for r in &runs {
        let events_path = r.events_path.as_ref().expect("every ds114 run has events");
        let events = r.events.as_ref().unwrap();
        match r.task() {
            "linebisection" => {
                // Per subject and session, next to the image; 160 rows (pandas).
                assert_eq!(events_path.parent(), r.bold.parent());
                assert_eq!(events.rows.len(), 160);
            }
            task => {
                // One top-level file for all subjects and sessions.
                assert_eq!(events_path, &root.join(format!("task-{task}_events.tsv")));
            }
        }
        let tr = if r.task().starts_with("overt") {
            5.0
        } else {
            2.5
        };
        assert_eq!(r.repetition_time(), Some(tr), "{}", r.bold.display());
        assert_eq!(
            r.sidecars,
            [root.join(format!("task-{}_bold.json", r.task()))]
        );
        assert_eq!(r.n_volumes, None, "ds114 images are 0 bytes");
        assert!(r.header.is_none());
    }
    let ffl = runs
        .iter()
        .find(|r| {
            r.task() == "fingerfootlips" && r.subject() == "03" && r.session() == Some("retest")
        })
        .unwrap();
    let ev = ffl.events.as_ref().unwrap();
    assert_eq!(ev.rows.len(), 15);
    assert_eq!(
        ev.rows.iter().map(|r| r.onset.unwrap()).sum::<f64>(),
        3300.0
    );
    assert_eq!(ev.rows[0].trial_type.as_deref(), Some("Finger"));
    assert_eq!(ev.rows[0].get("weight"), Some("1"));
    assert_eq!(ffl.task_name(), Some("finger_foot_lips"));
    // SliceTiming from the top-level sidecar: 30 slices spanning 0..2.41667 s; middle = 1.208333.
    assert_eq!(ffl.timing.slice_timing.as_ref().unwrap().len(), 30);
    assert!((ffl.timing.slice_time_reference(0.5) - 2.416666666666665 / 2.0).abs() < 1e-12);
    let lb: f64 = runs
        .iter()
        .find(|r| {
            r.task() == "linebisection" && r.subject() == "01" && r.session() == Some("retest")
        })
        .unwrap()
        .events
        .as_ref()
        .unwrap()
        .rows
        .iter()
        .map(|r| r.onset.unwrap())
        .sum();
    assert!((lb - 44269.5088).abs() < 1e-6, "{lb}");
}

#[test]
fn ds114_filters() {
    let layout = Layout::open(&ds("bids-examples/ds114")).unwrap();
    let f = Filters::from_labels(
        &["sub-02".into(), "03".into()],
        &["ses-test".into()],
        &["linebisection".into()],
        &[],
    );
    let runs = layout.runs(&f).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id()).collect::<Vec<_>>(),
        [
            "sub-02_ses-test_task-linebisection",
            "sub-03_ses-test_task-linebisection"
        ]
    );

    let err = layout
        .runs(&Filters::from_labels(&["11".into()], &[], &[], &[]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoDataMatched { filters, fix } if filters.contains("participant 11") && fix.contains("01, 02")),
        "{err}"
    );
    assert_eq!(err.exit_code(), exit::NO_DATA);
    let err = layout
        .runs(&Filters::from_labels(&[], &[], &["movie".into()], &[]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoDataMatched { filters, .. } if filters.contains("task movie")),
        "{err}"
    );
    assert_eq!(err.exit_code(), 18);

    let dir = tempfile::tempdir().unwrap();
    let ff = dir.path().join("filter.json");
    std::fs::write(&ff, r#"{"t1w": {"session": "test"}, "bold": {"subject": ["01", "sub-02"], "session": "retest", "task": ["fingerfootlips", "linebisection"], "acquisition": null, "run": null}}"#).unwrap();
    let runs = layout
        .runs(&Filters::all().with_filter_file(&ff).unwrap())
        .unwrap();
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r.session() == Some("retest")));
    std::fs::write(&ff, r#"{"bold": {"run": "*"}}"#).unwrap();
    let err = layout
        .runs(&Filters::all().with_filter_file(&ff).unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoDataMatched { filters, .. } if filters.contains("run=*")),
        "{err}"
    );
}

#[test]
fn ds000117_stim_file_resolves_under_stimuli() {
    let runs = all_runs("bids-examples/ds000117");
    assert_eq!(runs.len(), 9);
    let root = ds("bids-examples/ds000117");
    let r1 = &runs[0];
    assert_eq!(r1.id(), "sub-01_ses-mri_task-facerecognition_run-01");
    assert_eq!(r1.events.as_ref().unwrap().rows.len(), 99);
    assert_eq!(
        r1.stimuli.len(),
        50,
        "distinct stim_file values (pandas nunique)"
    );
    let first = &r1.stimuli[0];
    assert_eq!(first.stim_file, "func/f013.bmp");
    assert_eq!(first.path, root.join("stimuli/func/f013.bmp"));
    assert!(first.found);
    assert_eq!(first.line, 2);
    let row = &r1.events.as_ref().unwrap().rows[1];
    assert_eq!(
        (row.onset, row.duration, row.line),
        (Some(3.273), Some(0.962), 3),
        "CRLF file, '.962' style numbers"
    );
    assert!(runs.iter().all(|r| r.stimuli.iter().all(|s| s.found)));
    // The 434 distinct stimuli of sub-01's nine runs (pandas), all staged under stimuli/func/.
    let distinct: std::collections::BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.stimuli.iter().map(|s| s.stim_file.as_str()))
        .collect();
    assert_eq!(distinct.len(), 434);
    // Events in meg/ and beh/ folders never apply to func runs.
    assert!(
        runs.iter()
            .all(|r| r.events_path.as_ref().unwrap().parent() == r.bold.parent())
    );
}

#[test]
fn synthetic_header_only_nifti() {
    let layout = Layout::open(&ds("bids-examples/synthetic")).unwrap();
    let runs = layout.runs(&Filters::all()).unwrap();
    assert_eq!(
        runs.len(),
        30,
        "5 subjects x 2 sessions x (nback run-01, run-02, rest); derivatives/ not indexed"
    );
    for r in &runs {
        // nibabel: dim = [4 64 64 64 64 1 1 1], pixdim[4] = 2.5 s; the file is 352 bytes.
        assert_eq!(std::fs::metadata(&r.bold).unwrap().len(), 352);
        assert_eq!(r.n_volumes, Some(64), "{}", r.bold.display());
        let h = r.header.as_ref().unwrap();
        assert_eq!(h.shape, [64, 64, 64, 64]);
        assert_eq!(h.tr_seconds, Some(2.5));
        assert_eq!(r.repetition_time(), Some(2.5));
        let t = r.acquisition_times(0.5).unwrap().unwrap();
        assert_eq!(t.len(), 64);
        assert!(close(t[0], 1.25) && close(t[63], 63.0 * 2.5 + 1.25));
        if r.task() == "nback" {
            assert!(
                r.events_path
                    .as_ref()
                    .unwrap()
                    .ends_with("synthetic/task-nback_events.tsv")
            );
        } else {
            assert!(r.events.is_none());
        }
    }
    assert_eq!(layout.sessions("01"), ["01", "02"]);
}

#[test]
fn volume_timing_variants() {
    let runs = all_runs("bids-examples/volume_timing");
    let by_acq = |acq: &str| runs.iter().find(|r| r.entities.acq() == Some(acq)).unwrap();
    let times = |acq: &str, n: usize| {
        by_acq(acq)
            .timing
            .acquisition_times(n, 0.5, Path::new("x"))
            .unwrap()
    };
    let clustered = [0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 12.0, 13.0, 14.0];

    // dense: TR 1, TA = TR, reference = middle of TA.
    assert_eq!(times("dense", 3), [0.5, 1.5, 2.5]);
    // constantDelay: TR 2, DelayTime 1 -> TA 1, reference 0.5 s into each volume.
    assert_eq!(
        by_acq("constantDelay").timing.acquisition_duration(),
        Some(1.0)
    );
    assert_eq!(times("constantDelay", 3), [0.5, 2.5, 4.5]);
    // constantST: TR 2, slices at 0..0.9 -> fMRIPrep reference 0.45.
    assert!(
        times("constantST", 3)
            .iter()
            .zip([0.45, 2.45, 4.45])
            .all(|(a, b)| close(*a, b))
    );
    // clusteredTA and deprecated: VolumeTiming + (Frame)AcquisitionDuration 1 -> +0.5.
    for acq in ["clusteredTA", "deprecated"] {
        let r = by_acq(acq);
        assert!(matches!(r.timing.onsets, VolumeOnsets::Explicit { .. }));
        assert_eq!(r.timing.n_volumes_hint(), Some(9));
        let want: Vec<f64> = clustered.iter().map(|t| t + 0.5).collect();
        assert_eq!(times(acq, 9), want, "{acq}");
    }
    // clusteredST: VolumeTiming + SliceTiming 0..0.9 -> +0.45.
    let t = times("clusteredST", 9);
    assert!(
        t.iter().zip(clustered).all(|(a, b)| close(*a, b + 0.45)),
        "{t:?}"
    );
    // Top-level sidecar merged under the run's own: TaskName comes from the root.
    assert!(
        runs.iter()
            .all(|r| r.task_name() == Some("rest") && r.sidecars.len() == 2)
    );
    // A VolumeTiming run cannot be asked for more volumes than it lists.
    assert!(matches!(
        by_acq("clusteredTA")
            .timing
            .acquisition_times(10, 0.5, Path::new("x")),
        Err(Error::DatasetInvalid { .. })
    ));
}

#[test]
fn eyetracking_header_only_events() {
    let runs = all_runs("bids-examples/eyetracking_fmri");
    assert_eq!(runs.len(), 2);
    for r in &runs {
        let ev = r.events.as_ref().unwrap();
        assert!(
            r.events_path
                .as_ref()
                .unwrap()
                .ends_with("eyetracking_fmri/task-rest_events.tsv")
        );
        assert_eq!(ev.columns, ["onset", "duration"]);
        assert!(ev.rows.is_empty());
        assert_eq!(r.repetition_time(), Some(0.8));
        assert!(r.stimuli.is_empty());
    }
}

#[test]
fn valid_headers_real_bold() {
    let runs = all_runs("bids-validator-tests/valid_headers");
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    // nibabel: 16x16x9x20, pixdim[4] = 1.0 s.
    assert_eq!(r.n_volumes, Some(20));
    assert_eq!(r.header.as_ref().unwrap().shape, [16, 16, 9, 20]);
    assert_eq!(r.repetition_time(), Some(1.0));
    assert_eq!(r.events.as_ref().unwrap().rows.len(), 64);
    assert_eq!(r.acquisition_times(0.5).unwrap().unwrap()[19], 19.5);
}

#[test]
fn ds001_and_missing_sessions() {
    let runs = all_runs("bids-examples/ds001");
    assert_eq!(runs.len(), 48);
    assert!(
        runs.iter()
            .all(|r| r.repetition_time() == Some(2.0) && r.events.is_some())
    );
    let e = runs[0].events.as_ref().unwrap();
    assert_eq!(e.rows.len(), 158);
    // 484 n/a cells in sub-01 run-01 (pandas isna().sum()); all in optional columns.
    let na: usize = e
        .rows
        .iter()
        .map(|r| r.other.values().filter(|v| v.is_none()).count() + r.trial_type.is_none() as usize)
        .sum();
    assert_eq!(na, 484);
    // run-10 sorts after run-2 when labels are unpadded; here: run-01..03 in order.
    assert_eq!(
        runs[..3]
            .iter()
            .map(|r| r.entities.run().unwrap())
            .collect::<Vec<_>>(),
        ["01", "02", "03"]
    );

    let layout = Layout::open(&ds("bids-validator-tests/ds006_missing-session")).unwrap();
    assert_eq!(layout.sessions("01"), ["post"]);
    assert_eq!(layout.sessions("02"), ["post", "pre"]);
    let runs = layout
        .runs(&Filters::from_labels(&[], &["pre".into()], &[], &[]))
        .unwrap();
    assert!(runs.iter().all(|r| r.subject() == "02"));
    // `--run-label 5` selects run-05: sub-01/post, sub-02/pre, sub-02/post.
    assert_eq!(
        layout
            .runs(&Filters::from_labels(&[], &[], &[], &["5".into()]))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn bidsignore_hides_files() {
    // valid_headers ignores *_not_bids.txt; ds000117 ignores the FLASH files. Neither may break
    // indexing, and an ignored bold file is no run.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("dataset_description.json"),
        r#"{"Name": "x", "BIDSVersion": "1.10.0"}"#,
    )
    .unwrap();
    std::fs::write(root.join("task-a_bold.json"), r#"{"RepetitionTime": 2}"#).unwrap();
    std::fs::create_dir_all(root.join("sub-01/func")).unwrap();
    std::fs::write(root.join("sub-01/func/sub-01_task-a_bold.nii"), b"").unwrap();
    std::fs::write(root.join("sub-01/func/sub-01_task-b_bold.nii"), b"").unwrap();
    std::fs::write(root.join(".bidsignore"), "*task-b*\n").unwrap();
    let runs = Layout::open(root).unwrap().runs(&Filters::all()).unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id()).collect::<Vec<_>>(),
        ["sub-01_task-a"]
    );
}
