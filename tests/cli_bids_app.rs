//! The BIDS-App binary end to end on fixture trees in temp dirs: the plan, the exit-code
//! contract, and that a dry run writes nothing.

mod common;

use assert_cmd::Command;
use common::fixture;
use std::path::Path;

fn app() -> Command {
    Command::cargo_bin("tribe-bids").unwrap()
}

fn copy_tree(src: &Path, dst: &Path) {
    for e in walkdir::WalkDir::new(src) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let to = dst.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn dry_run_ds114_plans_10_subjects_by_2_sessions_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("deriv");
    let a = app()
        .arg(fixture("data/bids-examples/ds114"))
        .arg(&target)
        .arg("participant")
        .arg("--dry-run")
        .assert()
        .success();
    let stdout = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    let rows: Vec<&str> = stdout
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    let mut pairs: Vec<(String, String)> = rows
        .iter()
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[0].to_string(), c[1].to_string())
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 20, "10 subjects x 2 sessions:\n{stdout}");
    assert!(stdout.contains("participant(s)"));
    assert!(stdout.contains("fingerfootlips") && stdout.contains("2.5"));
    assert!(!target.exists(), "a dry run writes nothing");
}

#[test]
fn dry_run_example_shows_stimuli_and_features() {
    let a = app()
        .args([
            "examples/bids",
            "/tmp/tribe-never-written",
            "participant",
            "--dry-run",
            "--participant-label",
            "sub-02",
        ])
        .assert()
        .success();
    let stdout = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.contains("localizer") && stdout.contains("12/12"),
        "{stdout}"
    );
    assert!(stdout.contains("text+audio+video"), "{stdout}");
    assert!(
        !stdout.lines().any(|l| l.starts_with("01 ")),
        "filtered to sub-02:\n{stdout}"
    );
    assert!(!Path::new("/tmp/tribe-never-written").exists());
}

fn code_for(bids: &Path, out: &Path, extra: &[&str]) -> (i32, String) {
    code_with_env(bids, out, &[], extra)
}

/// [`code_for`] with environment variables set.
fn code_with_env(bids: &Path, out: &Path, env: &[(&str, &str)], extra: &[&str]) -> (i32, String) {
    let o = app()
        .envs(env.iter().copied())
        .arg(bids)
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exit_code_contract() {
    let d = tempfile::tempdir().unwrap();
    let ds = d.path().join("ds");
    copy_tree(&fixture("data/bids-examples/ds001"), &ds);
    let out = d.path().join("out");

    // 17 unknown analysis level
    assert_eq!(code_for(&ds, &out, &["session"]).0, 17);
    // 2 usage error
    assert_eq!(
        code_for(&ds, &out, &["participant", "--device", "tpu"]).0,
        2
    );
    assert_eq!(code_for(&ds, &out, &["participant", "--no-such-flag"]).0, 2);
    // 2 usage error: an unknown CPU matrix library, named with its fix
    let dry_run = ["participant", "--dry-run"];
    let (c, msg) = code_with_env(&ds, &out, &[("TRIBE_BLAS", "openblas")], &dry_run);
    assert_eq!(c, 2, "{msg}");
    assert!(
        msg.contains("TRIBE_BLAS='openblas'") && msg.contains("TRIBE_BLAS=auto"),
        "{msg}"
    );
    // 2 usage error: an unknown way of decoding video, before any work
    let (c, msg) = code_with_env(&ds, &out, &[("TRIBE_VIDEO_DECODE", "gop")], &dry_run);
    assert_eq!(c, 2, "{msg}");
    assert!(
        msg.contains("TRIBE_VIDEO_DECODE='gop'") && msg.contains("frame-threads"),
        "{msg}"
    );
    // 18 filters matched nothing
    let (c, msg) = code_for(
        &ds,
        &out,
        &["participant", "--dry-run", "--task-label", "nosuchtask"],
    );
    assert_eq!(c, 18, "{msg}");
    // 66 dataset folder missing
    assert_eq!(
        code_for(&d.path().join("nope"), &out, &["participant", "--dry-run"]).0,
        66
    );
    // 73 output inside the raw dataset (but derivatives/<name> is fine)
    let (c, msg) = code_for(&ds, &ds.join("sub-01"), &["participant", "--dry-run"]);
    assert_eq!(c, 73, "{msg}");
    assert!(msg.contains("derivatives"), "{msg}");
    assert_eq!(
        code_for(
            &ds,
            &ds.join("derivatives/tribe-bids"),
            &["participant", "--dry-run"]
        )
        .0,
        0
    );
    // 65 malformed events.tsv, naming file and line
    let ev = ds.join("sub-01/func/sub-01_task-balloonanalogrisktask_run-01_events.tsv");
    std::fs::write(&ev, "onset\tduration\ttrial_type\n0.5\tabc\tpump\n").unwrap();
    let (c, msg) = code_for(&ds, &out, &["participant", "--dry-run"]);
    assert_eq!(c, 65, "{msg}");
    assert!(
        msg.contains("sub-01_task-balloonanalogrisktask_run-01_events.tsv:2"),
        "{msg}"
    );
    std::fs::remove_file(&ev).unwrap();
    // 77 stim_file escaping the dataset
    std::fs::write(
        &ev,
        "onset\tduration\tstim_file\n0\t1\t../../../etc/passwd\n",
    )
    .unwrap();
    let (c, msg) = code_for(&ds, &out, &["participant", "--dry-run"]);
    assert_eq!(c, 77, "{msg}");
    std::fs::remove_file(&ev).unwrap();
    // 16 invalid dataset: no dataset_description.json
    std::fs::remove_file(ds.join("dataset_description.json")).unwrap();
    let (c, msg) = code_for(&ds, &out, &["participant", "--dry-run"]);
    assert_eq!(c, 16, "{msg}");
    assert!(msg.contains("dataset_description.json"), "{msg}");
}

#[test]
fn version_and_help() {
    let a = app().arg("--version").assert().success();
    assert!(String::from_utf8_lossy(&a.get_output().stdout).contains(env!("CARGO_PKG_VERSION")));
    let a = app().arg("--help").assert().success();
    let help = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    for flag in [
        "--participant-label",
        "--bids-filter-file",
        "--models-dir",
        "--work-dir",
        "--dry-run",
        "--cifti-output",
        "--text-context",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
