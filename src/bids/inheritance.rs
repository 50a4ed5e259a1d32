//! The inheritance principle (BIDS.md §2.4): which metadata files apply to a data file.
//!
//! A metadata file applies when it (a) lies in the data file's folder or one above it, up to the
//! dataset root, (b) has the same suffix, and (c) has no entity the data file lacks (and none with
//! another value). JSON sidecars are merged from the root down, deeper keys winning; a tabular
//! file such as events.tsv is never merged: the nearest applicable one wins.
//!
//! The spec says at most one applicable file per folder level. Older datasets break that
//! (`task-a_bold.json` next to `task-a_run-1_bold.json`); we then let the file with more entities
//! win, as it is the more specific, and refuse only a true tie, which has no sensible reading.

use super::entities::BidsName;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A metadata file candidate: its folder relative to the root and its parsed name.
#[derive(Debug, Clone)]
pub struct MetaFile {
    pub path: PathBuf,
    /// Folder relative to the dataset root ("" for the root itself).
    pub rel_dir: PathBuf,
    pub name: BidsName,
}

/// Applicable files for a data file in `data_rel_dir` named `data`, ordered from the root down
/// (and, within one folder, fewest entities first), so a JSON merge in this order lets the most
/// specific file win. `suffix` and `extension` select the kind (`bold`/`.json`, `events`/`.tsv`).
pub fn applicable<'a>(
    candidates: &'a [MetaFile],
    data_rel_dir: &Path,
    data: &BidsName,
    suffix: &str,
    extension: &str,
) -> Vec<&'a MetaFile> {
    let mut out: Vec<&MetaFile> = candidates
        .iter()
        .filter(|m| m.name.suffix == suffix && m.name.extension == extension)
        .filter(|m| data_rel_dir.starts_with(&m.rel_dir))
        .filter(|m| m.name.entities.is_subset_of(&data.entities))
        .collect();
    out.sort_by(|a, b| {
        let da = a.rel_dir.components().count();
        let db = b.rel_dir.components().count();
        da.cmp(&db)
            .then(a.name.entities.len().cmp(&b.name.entities.len()))
            .then(a.path.cmp(&b.path))
    });
    out
}

/// The nearest applicable file (for TSV metadata such as events.tsv), or `None`. `data_path`
/// names the data file in the error for an ambiguous tie.
pub fn nearest<'a>(applicable: &[&'a MetaFile], data_path: &Path) -> Result<Option<&'a MetaFile>> {
    let Some(last) = applicable.last() else {
        return Ok(None);
    };
    let depth = last.rel_dir.components().count();
    let n = last.name.entities.len();
    let ties: Vec<&&MetaFile> = applicable
        .iter()
        .filter(|m| m.rel_dir.components().count() == depth && m.name.entities.len() == n)
        .collect();
    if ties.len() > 1 {
        return Err(Error::DatasetInvalid {
            path: data_path.to_path_buf(),
            reason: format!(
                "{} metadata files apply equally at the same folder level: {}",
                ties.len(),
                ties.iter().map(|m| m.path.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            fix: "keep one (the spec allows at most one applicable file per folder level), or add an entity such as run- to tell them apart".into(),
        });
    }
    Ok(Some(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dir: &str, name: &str) -> MetaFile {
        MetaFile {
            path: Path::new(dir).join(name),
            rel_dir: PathBuf::from(dir),
            name: BidsName::parse(name).unwrap(),
        }
    }

    #[test]
    fn order_and_nearest() {
        let c = vec![
            meta("sub-01/func", "sub-01_task-a_events.tsv"),
            meta("", "task-a_events.tsv"),
            meta("", "task-b_events.tsv"),
            meta("sub-02/func", "sub-02_task-a_events.tsv"),
            meta("sub-01", "sub-01_task-a_acq-x_events.tsv"),
            meta("sub-01/anat", "sub-01_task-a_events.tsv"),
        ];
        let data = BidsName::parse("sub-01_task-a_run-1_bold.nii.gz").unwrap();
        let a = applicable(&c, Path::new("sub-01/func"), &data, "events", ".tsv");
        let names: Vec<_> = a
            .iter()
            .map(|m| m.path.to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            ["task-a_events.tsv", "sub-01/func/sub-01_task-a_events.tsv"]
        );
        assert_eq!(
            nearest(&a, Path::new("x")).unwrap().unwrap().path,
            Path::new("sub-01/func/sub-01_task-a_events.tsv")
        );
        let tie = vec![
            meta("", "task-a_run-1_events.tsv"),
            meta("", "sub-01_task-a_events.tsv"),
        ];
        let a = applicable(&tie, Path::new("sub-01/func"), &data, "events", ".tsv");
        assert!(matches!(
            nearest(&a, Path::new("x")),
            Err(Error::DatasetInvalid { .. })
        ));
    }
}
