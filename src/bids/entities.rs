//! BIDS file names: `key-value` entities, a suffix and an extension.
//!
//! One type serves both directions: the reader parses raw names into [`Entities`], and the
//! derivatives writer builds output names from the same type, so the canonical entity order
//! (BIDS.md §3.2, `rules/entities.yaml`) lives in exactly one place and a derivative name can
//! never drift from its source name's order.

use crate::error::{Error, Result};
use std::fmt;

/// The canonical entity order of the BIDS schema (`rules/entities.yaml`, spec v1.11.1). Names are
/// built in this order, whatever order the entities were added in; `desc` is last by convention.
pub const ENTITY_ORDER: &[&str] = &[
    "sub",
    "tpl",
    "ses",
    "cohort",
    "sample",
    "task",
    "tracksys",
    "acq",
    "nuc",
    "voi",
    "ce",
    "trc",
    "stain",
    "rec",
    "dir",
    "run",
    "mod",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "proc",
    "hemi",
    "space",
    "split",
    "recording",
    "chunk",
    "atlas",
    "seg",
    "scale",
    "res",
    "den",
    "label",
    "desc",
];

/// Entities a raw `func/*_bold` file may carry (`rules/files/raw/func.yaml`). A `_bold` image with
/// any other entity (`space`, `desc`, ...) is a derivative, not a run to predict.
pub const RAW_BOLD_ENTITIES: &[&str] = &[
    "sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "part", "chunk",
];

/// Entities whose values are indices (`run-1` and `run-01` are the same run, as in pybids).
const INDEX_ENTITIES: &[&str] = &["run", "echo", "flip", "inv", "split", "chunk"];

fn rank(key: &str) -> usize {
    ENTITY_ORDER
        .iter()
        .position(|k| *k == key)
        .unwrap_or(ENTITY_ORDER.len())
}

/// True when `value` is a valid BIDS label: letters, digits and `+` (`objects/formats.yaml`).
pub fn is_valid_label(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
}

/// Turns free text (a contrast name, a stimulus name) into a valid label by dropping every
/// character a label may not hold, so callers never have to invent their own rule.
/// Returns `None` when nothing usable is left.
pub fn sanitize_label(text: &str) -> Option<String> {
    let s: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+')
        .collect();
    (!s.is_empty()).then_some(s)
}

/// Two values of the same entity name the same thing: identical text, or equal integers for
/// index entities (`run-1` == `run-01`).
pub fn values_equal(key: &str, a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if INDEX_ENTITIES.contains(&key)
        && let (Ok(x), Ok(y)) = (a.parse::<u64>(), b.parse::<u64>())
    {
        return x == y;
    }
    false
}

/// An ordered set of BIDS entities, always kept in canonical order (unknown keys after the known
/// ones, in the order they were added).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Entities {
    pairs: Vec<(String, String)>,
}

impl Entities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder form of [`Entities::set`], for the derivatives writer:
    /// `Entities::new().with("sub", "01")?.with("desc", "predicted")?`.
    pub fn with(mut self, key: &str, value: &str) -> Result<Self> {
        self.set(key, value)?;
        Ok(self)
    }

    /// Sets (or replaces) one entity. The value must be a valid label, because a name we write
    /// with `_` or `-` inside a value could not be parsed back.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !key.chars().all(|c| c.is_ascii_alphanumeric()) || key.is_empty() {
            return Err(Error::InvalidLabel {
                entity: key.to_string(),
                value: value.to_string(),
                reason: "entity names are letters and digits".into(),
            });
        }
        if !is_valid_label(value) {
            return Err(Error::InvalidLabel {
                entity: key.to_string(),
                value: value.to_string(),
                reason: "labels may only hold letters, digits and '+'".into(),
            });
        }
        self.insert_unchecked(key, value);
        Ok(())
    }

    /// Parsing raw names must accept what exists on disk (a `-` inside a value included), so the
    /// parser bypasses label validation.
    pub(crate) fn insert_unchecked(&mut self, key: &str, value: &str) {
        if let Some(p) = self.pairs.iter_mut().find(|(k, _)| k == key) {
            p.1 = value.to_string();
            return;
        }
        let r = rank(key);
        let pos = if r == ENTITY_ORDER.len() {
            self.pairs.len()
        } else {
            self.pairs
                .iter()
                .position(|(k, _)| rank(k) > r)
                .unwrap_or(self.pairs.len())
        };
        self.pairs.insert(pos, (key.to_string(), value.to_string()));
    }

    /// Removes an entity (e.g. `echo` when one output covers all echoes); returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn sub(&self) -> Option<&str> {
        self.get("sub")
    }
    pub fn ses(&self) -> Option<&str> {
        self.get("ses")
    }
    pub fn task(&self) -> Option<&str> {
        self.get("task")
    }
    pub fn acq(&self) -> Option<&str> {
        self.get("acq")
    }
    pub fn ce(&self) -> Option<&str> {
        self.get("ce")
    }
    pub fn rec(&self) -> Option<&str> {
        self.get("rec")
    }
    pub fn dir(&self) -> Option<&str> {
        self.get("dir")
    }
    pub fn run(&self) -> Option<&str> {
        self.get("run")
    }
    pub fn echo(&self) -> Option<&str> {
        self.get("echo")
    }
    pub fn part(&self) -> Option<&str> {
        self.get("part")
    }

    /// The run index as an integer (`run-01` -> 1), as pybids reports it.
    pub fn run_index(&self) -> Option<u64> {
        self.run().and_then(|r| r.parse().ok())
    }

    /// `sub-01_ses-x_task-y_run-1`: the part of a file name before `_<suffix>`.
    pub fn to_filename_prefix(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect::<Vec<_>>()
            .join("_")
    }

    /// A full file name: `<prefix>_<suffix><extension>`; `extension` includes its leading dot
    /// (`.func.gii`, `.nii.gz`, `.json`). Without entities the name is just `<suffix><ext>`
    /// (as in top-level `bold.json`).
    pub fn filename(&self, suffix: &str, extension: &str) -> String {
        if self.pairs.is_empty() {
            format!("{suffix}{extension}")
        } else {
            format!("{}_{suffix}{extension}", self.to_filename_prefix())
        }
    }

    /// The inheritance test (BIDS.md §2.4 (c)): every entity of `self` is in `other` with the
    /// same value, so a metadata file named by `self` applies to a data file named by `other`.
    pub fn is_subset_of(&self, other: &Entities) -> bool {
        self.pairs
            .iter()
            .all(|(k, v)| other.get(k).is_some_and(|w| values_equal(k, v, w)))
    }
}

impl fmt::Display for Entities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_filename_prefix())
    }
}

/// A parsed BIDS file name: `sub-01_task-x_bold.nii.gz` -> entities {sub: 01, task: x},
/// suffix `bold`, extension `.nii.gz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidsName {
    pub entities: Entities,
    pub suffix: String,
    /// Everything from the first `.` on, including the dot (`.nii.gz`, `.func.gii`); may be empty.
    pub extension: String,
}

impl BidsName {
    /// Parses a file name (not a path). Returns `None` for names that do not follow the
    /// `key-value_..._suffix.ext` pattern (`extra_file_that_is_not_bids.txt`), which the layout
    /// then simply does not index.
    pub fn parse(file_name: &str) -> Option<BidsName> {
        if file_name.starts_with('.') {
            return None;
        }
        let (stem, extension) = match file_name.find('.') {
            Some(i) => (&file_name[..i], &file_name[i..]),
            None => (file_name, ""),
        };
        let mut parts: Vec<&str> = stem.split('_').collect();
        let suffix = parts.pop()?;
        if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let mut entities = Entities::new();
        for part in parts {
            let (k, v) = part.split_once('-')?;
            if k.is_empty() || v.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            if entities.contains(k) {
                return None;
            }
            entities.insert_unchecked(k, v);
        }
        Some(BidsName {
            entities,
            suffix: suffix.to_string(),
            extension: extension.to_string(),
        })
    }

    pub fn filename(&self) -> String {
        self.entities.filename(&self.suffix, &self.extension)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_raw_bold_name() {
        let n =
            BidsName::parse("sub-01_ses-test_task-finger+foot_acq-mb_run-02_echo-1_bold.nii.gz")
                .unwrap();
        assert_eq!(n.suffix, "bold");
        assert_eq!(n.extension, ".nii.gz");
        assert_eq!(n.entities.sub(), Some("01"));
        assert_eq!(n.entities.ses(), Some("test"));
        assert_eq!(n.entities.task(), Some("finger+foot"));
        assert_eq!(n.entities.acq(), Some("mb"));
        assert_eq!(n.entities.run_index(), Some(2));
        assert_eq!(n.entities.echo(), Some("1"));
        assert_eq!(
            n.filename(),
            "sub-01_ses-test_task-finger+foot_acq-mb_run-02_echo-1_bold.nii.gz"
        );
    }

    #[test]
    fn rejects_non_bids_names() {
        // README/CHANGES parse as a bare suffix, which is harmless: only .json/.tsv/.nii are indexed.
        for name in [
            "extra_file_that_is_not_bids.txt",
            ".bidsignore",
            "sub-01__bold.nii",
            "sub-01_sub-02_bold.nii",
            "sub-_bold.nii",
        ] {
            assert!(BidsName::parse(name).is_none(), "{name}");
        }
        let top = BidsName::parse("task-rest_bold.json").unwrap();
        assert_eq!(top.entities.task(), Some("rest"));
        let bare = BidsName::parse("dwi.bval").unwrap();
        assert!(bare.entities.is_empty());
        assert_eq!(bare.suffix, "dwi");
    }

    #[test]
    fn formats_in_canonical_order_whatever_the_insertion_order() {
        let e = Entities::new()
            .with("desc", "predicted")
            .unwrap()
            .with("space", "fsaverage5")
            .unwrap()
            .with("hemi", "L")
            .unwrap()
            .with("run", "1")
            .unwrap()
            .with("task", "movie")
            .unwrap()
            .with("ses", "01")
            .unwrap()
            .with("sub", "01")
            .unwrap();
        assert_eq!(
            e.filename("bold", ".func.gii"),
            "sub-01_ses-01_task-movie_run-1_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii"
        );
        let p = BidsName::parse("sub-10_task-x_space-fsaverage5_hemi-L_bold.func.gii").unwrap();
        assert_eq!(
            p.filename(),
            "sub-10_task-x_hemi-L_space-fsaverage5_bold.func.gii"
        );
    }

    #[test]
    fn invalid_labels_are_refused_when_building() {
        let err = Entities::new().with("desc", "faces-vs-houses").unwrap_err();
        assert!(matches!(err, Error::InvalidLabel { .. }));
        assert_eq!(
            sanitize_label("faces-vs-houses").as_deref(),
            Some("facesvshouses")
        );
        assert_eq!(sanitize_label("--"), None);
    }

    #[test]
    fn subset_uses_index_equality_for_runs() {
        let run = BidsName::parse("sub-01_task-a_run-01_bold.nii")
            .unwrap()
            .entities;
        assert!(
            BidsName::parse("task-a_run-1_events.tsv")
                .unwrap()
                .entities
                .is_subset_of(&run)
        );
        assert!(
            BidsName::parse("task-a_events.tsv")
                .unwrap()
                .entities
                .is_subset_of(&run)
        );
        assert!(
            !BidsName::parse("task-a_acq-x_events.tsv")
                .unwrap()
                .entities
                .is_subset_of(&run)
        );
        assert!(
            !BidsName::parse("task-b_events.tsv")
                .unwrap()
                .entities
                .is_subset_of(&run)
        );
    }
}
