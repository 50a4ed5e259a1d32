//! The participant level's bad-input table (issue: participant level end to end), run with the
//! real binary on a copy of the bundled example. Each defect gets its own exit code and a message
//! that names the file (and the events.tsv line where there is one) and the fix; the outputs of
//! an earlier good run stay byte for byte, and no partial file is left.
//! The full disk (75) and the read-only output folder (74) are in tests/output_failures.rs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dst = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every output file (logs and the rebuilt report page aside) with its bytes.
fn outputs(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .filter(|e| !e.path().starts_with(out.join("logs")))
        .filter(|e| e.path().extension().is_none_or(|x| x != "html"))
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn partial_files(out: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            n.starts_with(".tmp") || n.ends_with(".tmp")
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

struct Case {
    name: &'static str,
    /// Change the dataset copy, or make a models folder in the scratch folder and return it.
    setup: fn(&Path, &Path) -> Option<PathBuf>,
    code: i32,
    /// Every one of these must appear in the error output.
    says: &'static [&'static str],
}

const EVENTS: &str = "sub-02/func/sub-02_task-speech_events.tsv";

fn events(ds: &Path, body: &str) {
    std::fs::write(
        ds.join(EVENTS),
        format!("onset\tduration\ttrial_type\tstim_file\n{body}"),
    )
    .unwrap();
}

#[test]
fn bad_inputs_get_their_own_exit_code_and_lose_nothing() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let pristine = d.path().join("pristine");
    copy_tree(&root().join("examples/bids"), &pristine);
    let ds = d.path().join("ds");
    copy_tree(&pristine, &ds);
    let models = root().join("examples/models");
    let (out, work) = (d.path().join("out"), d.path().join("work"));
    let app = |ds: &Path, models: &Path, extra: &[String]| {
        Command::cargo_bin("tribe-bids")
            .unwrap()
            .arg(ds)
            .arg(&out)
            .arg("participant")
            .arg("--models-dir")
            .arg(models)
            .arg("-w")
            .arg(&work)
            .args(extra)
            .output()
            .unwrap()
    };

    // Earlier work that must survive every failure below.
    let o = app(
        &ds,
        &models,
        &[
            "--participant-label".into(),
            "01".into(),
            "--task-label".into(),
            "localizer".into(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = outputs(&out);
    assert!(
        before
            .keys()
            .any(|p| p.to_string_lossy().ends_with("predicted_bold.func.gii"))
    );

    let cases = [
        Case {
            name: "missing stim_file",
            setup: |ds, _| {
                events(ds, "1.0\t11.0\tspeech\tspeech/nope.flac\n");
                None
            },
            code: 66,
            says: &[
                "speech/nope.flac",
                "sub-02_task-speech_events.tsv:2",
                "missing",
            ],
        },
        Case {
            name: "corrupt stim_file",
            setup: |ds, _| {
                // FLAC magic, then noise: FFmpeg opens it and cannot read the stream.
                let mut bytes = b"fLaC".to_vec();
                bytes.extend((0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
                std::fs::write(ds.join("stimuli/speech/corrupt.flac"), bytes).unwrap();
                events(ds, "1.0\t11.0\tspeech\tspeech/corrupt.flac\n");
                None
            },
            code: 69,
            says: &["speech/corrupt.flac", "corrupt or truncated"],
        },
        Case {
            name: "not media at all",
            setup: |ds, _| {
                std::fs::write(
                    ds.join("stimuli/speech/notes.wav"),
                    "these are my notes\n".repeat(50),
                )
                .unwrap();
                events(ds, "1.0\t11.0\tspeech\tspeech/notes.wav\n");
                None
            },
            code: 69,
            says: &["speech/notes.wav", "not a media file"],
        },
        Case {
            name: "stim_file outside the dataset",
            setup: |ds, _| {
                events(ds, "1.0\t11.0\tspeech\t../../etc/passwd\n");
                None
            },
            code: 77,
            says: &["sub-02_task-speech_events.tsv:2", "outside the dataset"],
        },
        Case {
            name: "overlapping media",
            setup: |ds, _| {
                events(
                    ds,
                    "1.0\t11.0\tspeech\tspeech/jfk.flac\n5.0\t3.0\tspeech\tspeech/jfk.flac\n",
                );
                None
            },
            code: 65,
            says: &[
                "sub-02_task-speech_events.tsv:3",
                "sub-02_task-speech_events.tsv:2",
                "at once",
            ],
        },
        Case {
            name: "run without timing",
            setup: |ds, _| {
                std::fs::write(
                    ds.join("task-speech_bold.json"),
                    r#"{"TaskName": "speech"}"#,
                )
                .unwrap();
                None
            },
            code: 16,
            says: &["sub-02_task-speech_bold.nii.gz", "RepetitionTime"],
        },
        Case {
            name: "models folder without the audio model",
            setup: |_, scratch| {
                let m = scratch.join("models");
                for name in ["tribev2", "Llama-3.2-3B", "vjepa2-vitg-fpc64-256"] {
                    copy_tree(&root().join("examples/models").join(name), &m.join(name));
                }
                Some(m)
            },
            code: 78,
            says: &["audio model", "--modalities"],
        },
        Case {
            name: "models folder without the brain model",
            setup: |_, scratch| {
                let m = scratch.join("models");
                copy_tree(
                    &root().join("examples/models/w2v-bert-2.0"),
                    &m.join("w2v-bert-2.0"),
                );
                Some(m)
            },
            code: 78,
            says: &["no TRIBE v2 brain model"],
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        // The same dataset path every time (the output's dataset_description names its source).
        let ds = d.path().join("ds");
        let _ = std::fs::remove_dir_all(&ds);
        copy_tree(&pristine, &ds);
        let scratch = d.path().join(format!("scratch{i}"));
        std::fs::create_dir_all(&scratch).unwrap();
        let case_models = (c.setup)(&ds, &scratch).unwrap_or_else(|| models.clone());
        let extra: Vec<String> = ["--participant-label", "02", "--task-label", "speech"]
            .map(String::from)
            .to_vec();
        let input_before = outputs(&ds);
        let o = app(&ds, &case_models, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(c.code), "{}: {err}", c.name);
        for s in c.says {
            assert!(
                err.contains(s),
                "{}: the message should say {s:?}:\n{err}",
                c.name
            );
        }
        assert!(err.contains("tribe-bids: error:"), "{}: {err}", c.name);
        let now = outputs(&out);
        for (p, bytes) in &before {
            assert!(
                now.get(p) == Some(bytes),
                "{}: {} changed",
                c.name,
                p.display()
            );
        }
        assert!(
            partial_files(&out).is_empty(),
            "{}: partial files {:?}",
            c.name,
            partial_files(&out)
        );
        assert!(
            outputs(&ds) == input_before,
            "{}: the input dataset was modified",
            c.name
        );
    }

    // The codes are distinct between kinds of defect (the two model cases share EX_CONFIG, the
    // two undecodable files share 69).
    let mut kinds: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
    for c in &cases {
        kinds.entry(c.code).or_default().push(c.name);
    }
    assert_eq!(kinds.len(), 6, "{kinds:?}");
}
