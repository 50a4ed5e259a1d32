//! Which runs to process: the BIDS-App label options and fMRIPrep's `--bids-filter-file`.
//!
//! Labels accept the prefixed spelling too (`sub-01` = `01`, as fMRIPrep strips it), and run
//! labels compare as integers (`1` = `01`, as pybids parses `run`). The filter file is the same
//! JSON users already hand to fMRIPrep, so one file can drive both apps: we read its `bold`
//! query (other keys, such as `t1w` or `fmap`, are about inputs we do not use) with pybids'
//! entity names and its two special values, `null` (the entity must be absent) and `"*"` (the
//! entity must be present, any value: pybids `Query.ANY`).

use super::entities::{Entities, values_equal};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// pybids entity name -> BIDS key, for the entities a raw bold file can carry.
const PYBIDS_ENTITIES: &[(&str, &str)] = &[
    ("subject", "sub"),
    ("session", "ses"),
    ("task", "task"),
    ("acquisition", "acq"),
    ("ceagent", "ce"),
    ("reconstruction", "rec"),
    ("direction", "dir"),
    ("run", "run"),
    ("echo", "echo"),
    ("part", "part"),
    ("chunk", "chunk"),
];

/// One constraint of the filter file.
#[derive(Debug, Clone, PartialEq)]
pub enum Constraint {
    /// `null`: the entity must not be in the name.
    Absent,
    /// `"*"`: the entity must be there, with any value.
    Present,
    /// A value or a list of values; matches any of them.
    OneOf(Vec<String>),
}

impl Constraint {
    fn matches(&self, key: &str, value: Option<&str>) -> bool {
        match (self, value) {
            (Constraint::Absent, v) => v.is_none(),
            (Constraint::Present, v) => v.is_some(),
            (Constraint::OneOf(_), None) => false,
            (Constraint::OneOf(options), Some(v)) => {
                options.iter().any(|o| values_equal(key, o, v))
            }
        }
    }
}

/// What is fixed about every bold run (datatype, suffix) or varies only by extension: fMRIPrep
/// filter files often spell these out, so we accept and check them.
#[derive(Debug, Clone, PartialEq)]
enum Fixed {
    Datatype,
    Suffix,
    Extension,
}

/// The selection of runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub participants: Vec<String>,
    pub sessions: Vec<String>,
    pub tasks: Vec<String>,
    pub runs: Vec<String>,
    /// `(BIDS key, constraint)` from the filter file's `bold` query.
    pub file_constraints: Vec<(String, Constraint)>,
    fixed: Vec<(Fixed, Constraint)>,
    pub filter_file: Option<PathBuf>,
}

fn strip(labels: &[String], prefix: &str) -> Vec<String> {
    labels
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).to_string())
        .collect()
}

impl Filters {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// From the CLI label options; empty lists select everything. Leading `sub-`, `ses-`,
    /// `task-`, `run-` are stripped.
    pub fn from_labels(
        participants: &[String],
        sessions: &[String],
        tasks: &[String],
        runs: &[String],
    ) -> Self {
        Filters {
            participants: strip(participants, "sub-"),
            sessions: strip(sessions, "ses-"),
            tasks: strip(tasks, "task-"),
            runs: strip(runs, "run-"),
            ..Self::default()
        }
    }

    /// Adds the `bold` query of an fMRIPrep-style `--bids-filter-file`.
    pub fn with_filter_file(mut self, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::InputMissing {
            path: path.to_path_buf(),
            what: format!("the --bids-filter-file ({e})"),
            fix: "check the path given to --bids-filter-file".into(),
        })?;
        let (constraints, fixed) = parse_filter_file(&bytes, path)?;
        self.file_constraints = constraints;
        self.fixed = fixed;
        self.filter_file = Some(path.to_path_buf());
        Ok(self)
    }

    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
            && self.sessions.is_empty()
            && self.tasks.is_empty()
            && self.runs.is_empty()
            && self.file_constraints.is_empty()
            && self.fixed.is_empty()
    }

    /// Does a raw bold run with these entities and this extension (`.nii.gz`) pass?
    pub fn matches(&self, entities: &Entities, extension: &str) -> bool {
        let label_ok = |labels: &[String], key: &str| {
            labels.is_empty()
                || entities
                    .get(key)
                    .is_some_and(|v| labels.iter().any(|l| values_equal(key, l, v)))
        };
        if !(label_ok(&self.participants, "sub")
            && label_ok(&self.sessions, "ses")
            && label_ok(&self.tasks, "task")
            && label_ok(&self.runs, "run"))
        {
            return false;
        }
        if !self
            .file_constraints
            .iter()
            .all(|(k, c)| c.matches(k, entities.get(k)))
        {
            return false;
        }
        self.fixed.iter().all(|(what, c)| match what {
            Fixed::Datatype => c.matches("datatype", Some("func")),
            Fixed::Suffix => c.matches("suffix", Some("bold")),
            Fixed::Extension => match c {
                Constraint::OneOf(opts) => opts
                    .iter()
                    .any(|o| o.trim_start_matches('.') == extension.trim_start_matches('.')),
                other => other.matches("extension", Some(extension)),
            },
        })
    }

    /// A one-line description for messages (`participant 01, 02; task rest; filter file f.json`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (name, labels) in [
            ("participant", &self.participants),
            ("session", &self.sessions),
            ("task", &self.tasks),
            ("run", &self.runs),
        ] {
            if !labels.is_empty() {
                parts.push(format!("{name} {}", labels.join(", ")));
            }
        }
        if let Some(f) = &self.filter_file {
            let cs: Vec<String> = self
                .file_constraints
                .iter()
                .map(|(k, c)| match c {
                    Constraint::Absent => format!("{k}=null"),
                    Constraint::Present => format!("{k}=*"),
                    Constraint::OneOf(v) => format!("{k}={}", v.join("|")),
                })
                .collect();
            parts.push(format!(
                "--bids-filter-file {} ({})",
                f.display(),
                cs.join(", ")
            ));
        }
        if parts.is_empty() {
            "no filters".to_string()
        } else {
            parts.join("; ")
        }
    }
}

type Parsed = (Vec<(String, Constraint)>, Vec<(Fixed, Constraint)>);

fn parse_filter_file(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let jerr = |message: String, fix: &str| Error::Json {
        path: path.to_path_buf(),
        message,
        fix: fix.to_string(),
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| jerr(format!("not valid JSON: {e}"), "fix the JSON syntax; the format is {\"bold\": {\"session\": \"01\", \"task\": [\"a\", \"b\"]}}"))?;
    let Value::Object(top) = v else {
        return Err(jerr(
            "the filter file must hold a JSON object keyed by query type".into(),
            "write {\"bold\": {...}}",
        ));
    };
    let mut constraints = Vec::new();
    let mut fixed = Vec::new();
    let Some(bold) = top.get("bold") else {
        return Ok((constraints, fixed));
    };
    let Value::Object(q) = bold else {
        return Err(jerr(
            format!("\"bold\" must be an object of entity filters, found {bold}"),
            "write {\"bold\": {\"session\": \"01\"}}",
        ));
    };
    for (name, value) in q {
        let c = constraint(name, value).map_err(|m| jerr(m, "filter values are a string, a number, a list of them, null (entity absent) or \"*\" (entity present)"))?;
        let lower = name.to_ascii_lowercase();
        if let Some((_, key)) = PYBIDS_ENTITIES
            .iter()
            .find(|(long, short)| *long == lower || *short == lower)
        {
            let c = match c {
                Constraint::OneOf(v)
                    if *key == "sub" || *key == "ses" || *key == "task" || *key == "run" =>
                {
                    let prefix = format!("{key}-");
                    Constraint::OneOf(
                        v.into_iter()
                            .map(|s| s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s))
                            .collect(),
                    )
                }
                c => c,
            };
            constraints.push((key.to_string(), c));
        } else {
            match lower.as_str() {
                "datatype" => fixed.push((Fixed::Datatype, c)),
                "suffix" => fixed.push((Fixed::Suffix, c)),
                "extension" => fixed.push((Fixed::Extension, c)),
                _ => {
                    let known: Vec<&str> = PYBIDS_ENTITIES.iter().map(|(l, _)| *l).collect();
                    return Err(jerr(
                        format!("unknown entity '{name}' in the \"bold\" filter"),
                        &format!(
                            "use pybids entity names: {}, or datatype, suffix, extension",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok((constraints, fixed))
}

fn constraint(name: &str, v: &Value) -> std::result::Result<Constraint, String> {
    let scalar = |x: &Value| -> std::result::Result<String, String> {
        match x {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!(
                "filter '{name}': {other} is not a string or number"
            )),
        }
    };
    match v {
        Value::Null => Ok(Constraint::Absent),
        Value::String(s) if s == "*" => Ok(Constraint::Present),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(format!("filter '{name}': an empty list matches nothing"));
            }
            Ok(Constraint::OneOf(
                items
                    .iter()
                    .map(scalar)
                    .collect::<std::result::Result<_, _>>()?,
            ))
        }
        other => Ok(Constraint::OneOf(vec![scalar(other)?])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bids::entities::BidsName;

    fn ents(name: &str) -> Entities {
        BidsName::parse(name).unwrap().entities
    }

    #[test]
    fn labels_strip_prefixes_and_runs_are_integers() {
        let f = Filters::from_labels(
            &["sub-01".into()],
            &[],
            &["task-rest".into()],
            &["1".into()],
        );
        assert!(f.matches(&ents("sub-01_task-rest_run-01_bold.nii"), ".nii"));
        assert!(!f.matches(&ents("sub-01_task-rest_run-02_bold.nii"), ".nii"));
        assert!(!f.matches(&ents("sub-01_task-rest_bold.nii"), ".nii"));
        assert!(!f.matches(&ents("sub-02_task-rest_run-1_bold.nii"), ".nii"));
    }

    #[test]
    fn filter_file_semantics() {
        let (c, fx) = parse_filter_file(br#"{"t1w": {"x": 1}, "bold": {"session": "01", "task": ["a","b"], "acquisition": null, "run": "*", "extension": [".nii.gz"]}}"#, Path::new("f.json")).unwrap();
        let f = Filters {
            file_constraints: c,
            fixed: fx,
            filter_file: Some("f.json".into()),
            ..Filters::default()
        };
        assert!(f.matches(&ents("sub-1_ses-01_task-a_run-1_bold.nii.gz"), ".nii.gz"));
        assert!(!f.matches(&ents("sub-1_ses-01_task-a_run-1_bold.nii.gz"), ".nii"));
        assert!(!f.matches(&ents("sub-1_ses-01_task-c_run-1_bold.nii.gz"), ".nii.gz"));
        assert!(!f.matches(
            &ents("sub-1_ses-01_task-b_acq-x_run-1_bold.nii.gz"),
            ".nii.gz"
        ));
        assert!(!f.matches(&ents("sub-1_ses-01_task-b_bold.nii.gz"), ".nii.gz"));
        assert!(f.describe().contains("ses=01"));
        for bad in [
            &b"{"[..],
            b"[1]",
            br#"{"bold": 3}"#,
            br#"{"bold": {"subjectt": "01"}}"#,
            br#"{"bold": {"run": true}}"#,
            br#"{"bold": {"run": []}}"#,
        ] {
            assert!(
                matches!(
                    parse_filter_file(bad, Path::new("f.json")),
                    Err(Error::Json { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
