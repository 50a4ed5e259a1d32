//! `stim_file` -> a file under `BIDS_DIR/stimuli`, refusing anything that leaves the dataset.
//!
//! A BIDS-App often runs on shared clusters with datasets from elsewhere; an events.tsv is
//! untrusted input, and `stim_file = ../../../home/you/.ssh/id_rsa` must never be opened (nor
//! copied into a report). Paths with `..`, absolute paths, and symlinks whose target is outside
//! the dataset root are refused with the events file and line. A stimulus that simply does not
//! exist is not an error at read time: the dry-run table shows it as missing, and the pipeline
//! decides what to do with it.

use super::events::Events;
use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};

/// One stimulus a run refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stimulus {
    /// The `stim_file` cell as written (relative to `BIDS_DIR/stimuli`).
    pub stim_file: String,
    /// `BIDS_DIR/stimuli/<stim_file>` (not canonicalized, so messages show the dataset's path).
    pub path: PathBuf,
    pub found: bool,
    /// First events line that names it.
    pub line: usize,
}

/// Resolves every distinct `stim_file` of `events` (first occurrence order). `root` is the
/// dataset root; `canonical_root` is its canonical form (computed once per layout).
pub fn resolve_stimuli(
    events: &Events,
    root: &Path,
    canonical_root: &Path,
) -> Result<Vec<Stimulus>> {
    let mut out: Vec<Stimulus> = Vec::new();
    for row in &events.rows {
        let Some(s) = &row.stim_file else { continue };
        if out.iter().any(|x| &x.stim_file == s) {
            continue;
        }
        let (path, found) =
            resolve_one(s, root, canonical_root).map_err(|reason| Error::PathEscapes {
                events: events.path.clone(),
                line: row.line,
                stim_file: s.clone(),
                reason,
            })?;
        out.push(Stimulus {
            stim_file: s.clone(),
            path,
            found,
            line: row.line,
        });
    }
    Ok(out)
}

/// `Ok((path, exists))`, or `Err(reason)` when the path would leave the dataset.
pub fn resolve_one(
    stim_file: &str,
    root: &Path,
    canonical_root: &Path,
) -> std::result::Result<(PathBuf, bool), String> {
    let rel = Path::new(stim_file);
    let looks_absolute = stim_file.starts_with('/')
        || stim_file.starts_with('\\')
        || stim_file.get(1..2) == Some(":");
    if rel.is_absolute() || looks_absolute || rel.has_root() {
        return Err("absolute path".into());
    }
    for c in rel.components() {
        match c {
            Component::ParentDir => return Err("it contains a '..' component".into()),
            Component::Prefix(_) | Component::RootDir => return Err("absolute path".into()),
            _ => {}
        }
    }
    if stim_file.split(['/', '\\']).any(|c| c == "..") {
        return Err("it contains a '..' component".into());
    }
    let path = root.join("stimuli").join(rel);
    // Find the deepest part of the path that exists and check where it really is: this catches a
    // symlinked file and a symlinked folder on the way (stimuli/ itself included).
    let mut probe = path.as_path();
    loop {
        if let Ok(meta) = std::fs::symlink_metadata(probe) {
            match std::fs::canonicalize(probe) {
                Ok(real) => {
                    if !real.starts_with(canonical_root) {
                        return Err(format!(
                            "it resolves to {}, outside the dataset (a symbolic link points out)",
                            real.display()
                        ));
                    }
                }
                Err(_) if meta.file_type().is_symlink() => {
                    // A dangling link: judge its target without following it.
                    let target = std::fs::read_link(probe)
                        .map_err(|e| format!("unreadable symbolic link: {e}"))?;
                    let base = probe.parent().unwrap_or(root);
                    let canon_base =
                        std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
                    let lexical = normalize(&if target.is_absolute() {
                        target
                    } else {
                        canon_base.join(target)
                    });
                    if !lexical.starts_with(canonical_root) {
                        return Err(format!(
                            "it is a symbolic link to {}, outside the dataset",
                            lexical.display()
                        ));
                    }
                    return Ok((path.clone(), false));
                }
                Err(_) => {}
            }
            let found =
                probe == path.as_path() && std::fs::metadata(&path).is_ok_and(|m| m.is_file());
            return Ok((path.clone(), found));
        }
        match probe.parent() {
            Some(p) if p.starts_with(root) && p != probe => probe = p,
            _ => return Ok((path.clone(), false)),
        }
    }
}

/// Removes `.` and resolves `..` textually (for dangling symlink targets, which cannot be
/// canonicalized).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
