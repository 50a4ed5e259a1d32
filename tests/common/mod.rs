//! Shared helpers for integration tests: fixture paths and the Python oracle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The Python interpreter with nibabel/nilearn/scikit-learn used as an independent oracle.
/// `scripts/test.sh` creates `.venv-test` and sets `TRIBE_TEST_PYTHON`; a test that needs it
/// fails (never skips) when it is missing, with the command that fixes it.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python");
    assert!(
        local.exists(),
        "the Python oracle is missing: run scripts/setup-test-env.sh (or set TRIBE_TEST_PYTHON)"
    );
    local
}

/// Run a Python snippet with the oracle interpreter; panics with its stderr on failure.
pub fn run_python(code: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
