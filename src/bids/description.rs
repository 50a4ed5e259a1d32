//! `dataset_description.json`: the one file that makes a folder a BIDS dataset.
//!
//! We check only what the spec REQUIRES (`Name`, `BIDSVersion`) and what changes our behaviour
//! (`DatasetType`): a derivative dataset is not something to predict from, and saying so early
//! beats a confusing "no runs found".

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DatasetDescription {
    pub path: PathBuf,
    pub name: String,
    pub bids_version: String,
    /// `raw` when absent (spec default).
    pub dataset_type: String,
    /// `License`, copied into the derivatives' description as fMRIPrep does.
    pub license: Option<String>,
    /// The whole object, for provenance (`DatasetDOI`, `Authors`, ...).
    pub raw: Map<String, Value>,
}

impl DatasetDescription {
    /// Reads `<root>/dataset_description.json`.
    pub fn read(root: &Path) -> Result<Self> {
        let path = root.join("dataset_description.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::DatasetInvalid {
                    path,
                    reason: "dataset_description.json is missing".into(),
                    fix: format!(
                        "check that BIDS_DIR ({}) is the dataset root; every BIDS dataset has a dataset_description.json with at least {{\"Name\": \"...\", \"BIDSVersion\": \"1.10.0\"}}",
                        root.display()
                    ),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        Self::parse(&bytes, &path)
    }

    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let invalid = |reason: String, fix: &str| Error::DatasetInvalid {
            path: path.to_path_buf(),
            reason,
            fix: fix.to_string(),
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            invalid(
                format!("dataset_description.json is not valid JSON: {e}"),
                "fix the JSON syntax (a JSON linter shows the exact spot)",
            )
        })?;
        let Value::Object(raw) = value else {
            return Err(invalid(
                "dataset_description.json must hold a JSON object".into(),
                "write an object such as {\"Name\": \"...\", \"BIDSVersion\": \"1.10.0\"}",
            ));
        };
        let required = |key: &str| -> Result<String> {
            match raw.get(key) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(other) => Err(invalid(
                    format!("'{key}' must be a non-empty string, found {other}"),
                    &format!("set \"{key}\" to a string"),
                )),
                None => Err(invalid(
                    format!("the REQUIRED field '{key}' is missing"),
                    &format!("add \"{key}\" to dataset_description.json"),
                )),
            }
        };
        let name = required("Name")?;
        let bids_version = required("BIDSVersion")?;
        let dataset_type = match raw.get("DatasetType") {
            None => "raw".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(invalid(
                    format!("'DatasetType' must be a string, found {other}"),
                    "use \"raw\", \"derivative\" or \"study\"",
                ));
            }
        };
        let license = raw
            .get("License")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(DatasetDescription {
            path: path.to_path_buf(),
            name,
            bids_version,
            dataset_type,
            license,
            raw,
        })
    }
}
