//! Shared helpers for integration tests: fixture paths and the Python oracle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/<rel>`; paths inside `models-tiny` point into its unpacked copy
/// ([`models_tiny`]).
pub fn fixture(rel: &str) -> PathBuf {
    if let Some(rest) = rel.strip_prefix("models-tiny")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        return models_tiny().join(rest.trim_start_matches('/'));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The tiny models folder as users have it (DESIGN.md §3 layout).
///
/// The fixture keeps the real Llama-3.2 `tokenizer.json` gzipped (9.1 MB as JSON, 2.3 MB
/// gzipped) so the fixtures stay near 60 MB. This unpacks the folder once per fixture version
/// into the target directory (everything else hard-linked or copied) and renames it into place,
/// so concurrent test processes never see half of it.
pub fn models_tiny() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models-tiny");
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&src)
            .into_iter()
            .map(|e| e.expect("read tests/fixtures/models-tiny"))
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(&src).unwrap().to_path_buf())
            .collect();
        files.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for f in &files {
            f.hash(&mut h);
            std::fs::metadata(src.join(f)).unwrap().len().hash(&mut h);
        }
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dst = base.join(format!("models-tiny-{:016x}", h.finish()));
        if dst.is_dir() {
            return dst;
        }
        std::fs::create_dir_all(base).unwrap();
        let tmp = tempfile::Builder::new()
            .prefix(".models-tiny-")
            .tempdir_in(base)
            .unwrap()
            .keep();
        for f in &files {
            let from = src.join(f);
            let mut to = tmp.join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            if f.extension().is_some_and(|e| e == "gz") {
                to.set_extension("");
                let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(&from).unwrap());
                let mut out = std::fs::File::create(&to).unwrap();
                std::io::copy(&mut gz, &mut out).unwrap();
            } else if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap();
            }
        }
        if std::fs::rename(&tmp, &dst).is_err() {
            // Another test process finished first: use its copy.
            assert!(dst.is_dir(), "could not place {}", dst.display());
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dst
    })
    .clone()
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

/// Completes the bundled example (`examples/bids`, `examples/models`) once per test process.
/// `scripts/make-example.sh` takes a lock and renames files into place, so the test binaries
/// and threads that call it at the same time never see half a file.
pub fn ensure_example() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-example.sh");
        let st = std::process::Command::new(&script)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(st.success(), "{} failed: {st}", script.display());
    });
}
