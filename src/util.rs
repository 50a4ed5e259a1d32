//! Small shared helpers: atomic file writes and Python-compatible rounding.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, then rename.
/// A reader (or a rerun after a kill) sees either the old file or the complete new one, never a
/// partial file, because rename within one filesystem is atomic.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], streaming through a writer (for large GIFTI/NIfTI outputs).
pub fn write_atomic_with<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let not_writable = |source| Error::output_write(path.to_path_buf(), source);
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut builder = tempfile::Builder::new();
    // Outputs are shared results: the usual mode of a new file (0666 less the umask), not
    // tempfile's private 0600, which the rename would otherwise keep (a lab's group could not
    // read the sidecars).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(not_writable)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        f(&mut w).map_err(not_writable)?;
        w.flush().map_err(not_writable)?;
    }
    tmp.as_file().sync_all().map_err(not_writable)?;
    tmp.persist(path).map_err(|e| not_writable(e.error))?;
    Ok(())
}

/// Python's `round(x)` (round half to even), which the reference uses for every time→index
/// conversion (SPEC §13.1). `f64::round` rounds half away from zero and would shift bins.
pub fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(-0.5), 0);
        assert_eq!(round_half_even(2.6), 3);
    }

    /// Atomic outputs get the same mode as a file the user creates by hand (umask applies).
    #[cfg(unix)]
    #[test]
    fn atomic_write_uses_the_normal_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain.json");
        std::fs::write(&plain, b"{}").unwrap();
        let ours = d.path().join("ours.json");
        write_atomic(&ours, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }
}
