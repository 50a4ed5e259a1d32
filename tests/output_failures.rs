//! A full disk and a read-only output folder, for real: the output folder is a tiny tmpfs in a
//! private mount namespace (`unshare`), filled up or remounted read-only between runs of the
//! real binary. Each failure must give its own exit code and a clear message, leave no partial
//! file behind, and leave earlier outputs byte-identical; the rerun after the fix completes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The scenario as one shell script, run inside a private mount namespace so the tmpfs and the
/// remounts are invisible to the rest of the machine and vanish with the process.
const SCENARIO: &str = r#"
set -u
app() { "$BIN" "$BIDS" "$OUT" participant --models-dir "$MODELS" -w "$WORK" --task-label localizer "$@"; }
snapshot() { (cd "$OUT" && find . -type f ! -path './logs/*' ! -name 'filler' -print0 | sort -z | xargs -0 sha256sum); }
partials() { find "$OUT" -name '.tmp-*' -o -name '.*.tmp' | wc -l; }

mount -t tmpfs -o size=16m tmpfs "$OUT" || exit 90

# 1. A first participant, with room to spare.
app --participant-label 01 > "$LOG/first.txt" 2>&1; echo $? > "$LOG/rc_first"
snapshot > "$LOG/before"

# 2. The disk fills up: leave 24 KiB (the small JSON files fit, a GIFTI does not).
avail=$(df --output=avail -B1 "$OUT" | tail -1)
fallocate -l $((avail - 24576)) "$OUT/filler" 2>/dev/null || head -c $((avail - 24576)) /dev/zero > "$OUT/filler"
app --participant-label 02 > "$LOG/full.txt" 2>&1; echo $? > "$LOG/rc_full"
partials > "$LOG/partials_full"
snapshot > "$LOG/after_full"

# 3. Space is freed, but the output folder is now read-only.
rm -f "$OUT/filler"
mount -o remount,ro "$OUT" || exit 91
app --participant-label 02 > "$LOG/ro.txt" 2>&1; echo $? > "$LOG/rc_ro"
snapshot > "$LOG/after_ro"

# 4. Writable again: the rerun completes the second participant and skips the first.
mount -o remount,rw "$OUT" || exit 92
app --participant-label 01 02 > "$LOG/rerun.txt" 2>&1; echo $? > "$LOG/rc_rerun"
partials > "$LOG/partials_rerun"
snapshot > "$LOG/after_rerun"
exit 0
"#;

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn disk_full_and_read_only_output_fail_cleanly_and_resume() {
    common::ensure_example();
    let tmp = tempfile::tempdir().unwrap();
    let (out, work, log) = (
        tmp.path().join("out"),
        tmp.path().join("work"),
        tmp.path().join("log"),
    );
    for d in [&out, &work, &log] {
        std::fs::create_dir_all(d).unwrap();
    }
    let script = tmp.path().join("scenario.sh");
    std::fs::write(&script, SCENARIO).unwrap();
    // Root (CI) gets a plain private mount namespace; anyone else maps themselves to root in a
    // user namespace, which lets them mount a tmpfs there.
    let mut cmd = Command::new("unshare");
    if !is_root() {
        cmd.arg("--map-root-user");
    }
    let status = cmd
        .args(["--mount", "--propagation", "private", "bash"])
        .arg(&script)
        .env("BIN", env!("CARGO_BIN_EXE_tribe-bids"))
        .env("BIDS", root().join("examples/bids"))
        .env("MODELS", root().join("examples/models"))
        .env("OUT", &out)
        .env("WORK", &work)
        .env("LOG", &log)
        .status()
        .expect("unshare (util-linux) is needed for this test");
    assert!(
        status.success(),
        "the scenario could not set up its tmpfs (exit {status}): this test needs `unshare --mount` \
         (root, or unprivileged user namespaces)"
    );

    let first = read(&log, "first.txt");
    assert_eq!(read(&log, "rc_first"), "0", "{first}");

    // Disk full: its own exit code (75), a message that says so, nothing partial, nothing lost.
    let full = read(&log, "full.txt");
    assert_eq!(read(&log, "rc_full"), "75", "{full}");
    assert!(full.contains("disk or quota is full"), "{full}");
    assert!(full.contains("free space"), "{full}");
    assert_eq!(
        read(&log, "partials_full"),
        "0",
        "partial files left behind"
    );
    let before = read(&log, "before");
    let after_full = read(&log, "after_full");
    for line in before.lines() {
        assert!(
            after_full.lines().any(|l| l == line),
            "an earlier output changed while the disk was full: {line}"
        );
    }

    // Read-only: exit 74 with the OS's reason, and the outputs are untouched.
    let ro = read(&log, "ro.txt");
    assert_eq!(read(&log, "rc_ro"), "74", "{ro}");
    assert!(ro.contains("Read-only file system"), "{ro}");
    // The final error names the output that failed, not just the log file.
    let last = ro
        .lines()
        .rev()
        .find(|l| l.contains("tribe-bids: error"))
        .unwrap_or("");
    assert!(last.contains("predicted_bold"), "{ro}");
    assert_eq!(read(&log, "after_ro"), after_full);

    // The rerun finishes sub-02 and keeps sub-01 byte for byte.
    let rerun = read(&log, "rerun.txt");
    assert_eq!(read(&log, "rc_rerun"), "0", "{rerun}");
    assert_eq!(read(&log, "partials_rerun"), "0");
    let after = read(&log, "after_rerun");
    // The subject report is rebuilt on every run (it records what this run did); the data are not.
    for line in before
        .lines()
        .filter(|l| l.contains("sub-01") && !l.ends_with(".html"))
    {
        assert!(after.lines().any(|l| l == line), "sub-01 changed: {line}");
    }
    assert!(
        after
            .lines()
            .any(|l| l.contains("sub-02") && l.contains("predicted_bold.func.gii")),
        "sub-02 was not completed:\n{after}"
    );
}
