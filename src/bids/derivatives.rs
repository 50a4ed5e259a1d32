//! The BIDS-Derivatives side of the dataset: naming, dataset-level files and sidecars
//! (DESIGN.md §6, BIDS.md §3).
//!
//! Participant-level jobs of one Slurm array write into the same OUTPUT_DIR at the same time, so
//! every dataset-level file here is written idempotently and atomically: the same inputs give the
//! same bytes, and a reader never sees a half-written file.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::util::write_atomic;

/// The app's name as it appears in `GeneratedBy` (and must be a substring of the folder name when
/// the output lives at `BIDS_DIR/derivatives/<dir>`).
pub const PIPELINE_NAME: &str = "tribe-bids";
pub const CODE_URL: &str = "https://github.com/tribe-bids/tribe-bids";
/// The BIDS version the outputs follow.
pub const BIDS_VERSION: &str = "1.11.1";

/// Rank of an entity in a derivative name: the canonical order of the BIDS schema
/// ([`crate::bids::ENTITY_ORDER`], kept in one place), with the FitLins-style `contrast` and `stat`
/// (not in the spec) just before `desc`, as BIDS.md §3.5 extrapolates. Unknown entities go last.
fn entity_rank(key: &str) -> usize {
    let order = crate::bids::ENTITY_ORDER;
    let desc = order
        .iter()
        .position(|o| *o == "desc")
        .unwrap_or(order.len());
    match key {
        "contrast" => 2 * desc - 1,
        "stat" => 2 * desc,
        k => order
            .iter()
            .position(|o| *o == k)
            .map(|p| 2 * p)
            .unwrap_or(2 * order.len() + 1),
    }
}

/// A derivative file name under construction: entity key/value pairs in any order, a suffix and
/// an extension. [`DerivName::file_name`] puts the entities in canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivName {
    pub entities: Vec<(String, String)>,
    pub suffix: String,
    pub extension: String,
}

impl DerivName {
    pub fn new(
        entities: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
        suffix: &str,
        extension: &str,
    ) -> Self {
        DerivName {
            entities: entities
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            suffix: suffix.to_string(),
            extension: extension.to_string(),
        }
    }

    /// Set (or replace) one entity.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        if let Some(e) = self.entities.iter_mut().find(|(k, _)| k == key) {
            e.1 = value.to_string();
        } else {
            self.entities.push((key.to_string(), value.to_string()));
        }
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.entities.retain(|(k, _)| k != key);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entities
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `sub-01_ses-a_task-x_run-1_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii`.
    /// Unknown entities go after the known ones, in the order given.
    pub fn file_name(&self) -> String {
        let rank = entity_rank;
        let mut ents: Vec<(usize, usize, &(String, String))> = self
            .entities
            .iter()
            .enumerate()
            .map(|(i, e)| (rank(&e.0), i, e))
            .collect();
        ents.sort();
        let mut s: String = ents
            .iter()
            .map(|(_, _, (k, v))| format!("{k}-{v}_"))
            .collect();
        s.push_str(&self.suffix);
        s.push_str(&self.extension);
        s
    }

    /// The sidecar's name: everything up to the first '.', then `.json` (niworkflows' rule, so
    /// `…_bold.func.gii` → `…_bold.json`). Both hemispheres therefore get their own sidecar.
    pub fn sidecar_name(&self) -> String {
        DerivName {
            extension: ".json".into(),
            ..self.clone()
        }
        .file_name()
    }

    /// Relative folder: `sub-<s>[/ses-<x>]/<datatype>`.
    pub fn folder(&self, datatype: &str) -> PathBuf {
        let mut p = PathBuf::new();
        if let Some(s) = self.get("sub") {
            p.push(format!("sub-{s}"));
        }
        if let Some(s) = self.get("ses") {
            p.push(format!("ses-{s}"));
        }
        p.push(datatype);
        p
    }
}

/// The `desc` values this app writes, documented in `descriptions.tsv` (BIDS.md §3.2).
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "predicted",
        "BOLD time series predicted by the TRIBE v2 brain-encoding model from the run's stimuli (not measured data), aligned to the run's acquisition times",
    ),
    (
        "mean",
        "Group level: predicted BOLD averaged over the runs that share a stimulus (same stimulus content and timing, volume times, model and features)",
    ),
    (
        "ICA",
        "Independent components of the TRIBE v2 model's cortical readout (FastICA), labelled by in-silico probe stimuli",
    ),
];

/// Patterns for OUTPUT_DIR/.bidsignore: the validator (deno 3.0.2) has no rules for surface
/// BOLD, statmaps or decompositions, and only these patterns also silence their sidecars
/// (BIDS.md §4.2, tested patterns).
pub const BIDSIGNORE: &[&str] = &[
    "*_bold.func.gii",
    "*_bold.dtseries.nii",
    "*hemi-*",
    "*den-*",
    "*_statmap.*",
    "*_mixing.tsv",
    "*_components.*",
    "*_decomposition.json",
    "*_design.tsv",
    // The design matrix's sidecar: without it the validator reports NOT_INCLUDED and
    // SIDECAR_WITHOUT_DATAFILE, since `design` is no BIDS suffix (FitLins convention).
    "*_design.json",
    "*_bold.json",
    "*.html",
    // No trailing slash on folders: bids-validator-deno 3.0.2 still reports NOT_INCLUDED for
    // `figures/` and `group/` (checked with tests/report_app.rs), but ignores `figures`/`group`.
    "figures",
    "logs/",
    // The group level's folder. Not "group/": with that pattern bids-validator 3.0.2 ignores the
    // files but still reports the folder itself as NOT_INCLUDED (tested).
    "group",
];

/// How the app was run, for `GeneratedBy` and for every sidecar.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub version: String,
    pub command_line: Vec<String>,
    /// `{"Type": "docker", "Tag": ...}` when running in a container (from the image's environment).
    pub container: Option<Value>,
}

impl Provenance {
    pub fn current(command_line: Vec<String>) -> Self {
        let container = match std::env::var("TRIBE_BIDS_CONTAINER").ok().as_deref() {
            Some("docker") => {
                Some(json!({"Type": "docker", "Tag": format!("tribe-bids:{}", crate::VERSION)}))
            }
            Some("apptainer") | Some("singularity") => {
                Some(json!({"Type": "apptainer", "Tag": format!("tribe-bids:{}", crate::VERSION)}))
            }
            _ => None,
        };
        Provenance {
            version: crate::VERSION.to_string(),
            command_line,
            container,
        }
    }

    pub fn generated_by(&self) -> Value {
        let mut g = json!({
            "Name": PIPELINE_NAME,
            "Version": self.version,
            "CodeURL": CODE_URL,
            "Description": "TRIBE v2 brain-encoding predictions (Meta FAIR), reimplemented in Rust",
        });
        if let Some(c) = &self.container {
            g["Container"] = c.clone();
        }
        g
    }
}

/// `dataset_description.json` of the derivative dataset. It copies `License` and, from
/// `DatasetDOI`, `SourceDatasets` from the raw dataset, as fMRIPrep does; `DatasetLinks.raw`
/// makes the `bids:raw:` URIs in the sidecars resolvable.
pub fn dataset_description(raw_dir: &Path, raw_description: &Value, prov: &Provenance) -> Value {
    let raw_uri = format!("file://{}", raw_dir.display());
    let mut source = json!({"URL": raw_uri});
    if let Some(doi) = raw_description.get("DatasetDOI").and_then(Value::as_str) {
        source["DOI"] = json!(doi);
    }
    if let Some(v) = raw_description.get("BIDSVersion") {
        source["Version"] = v.clone();
    }
    let raw_name = raw_description
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("the raw dataset");
    let mut d = json!({
        "Name": format!("tribe-bids: TRIBE v2 predicted brain responses for {raw_name}"),
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [prov.generated_by()],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": raw_uri},
        "HowToAcknowledge": "Cite TRIBE v2 (d'Ascoli et al., Meta FAIR) and tribe-bids. The TRIBE v2 weights are licensed CC BY-NC 4.0.",
    });
    if let Some(l) = raw_description.get("License") {
        d["License"] = l.clone();
    }
    d
}

/// Pretty JSON with a trailing newline: stable bytes for identical content.
pub fn json_bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serializing a serde_json::Value cannot fail");
    b.push(b'\n');
    b
}

/// Write `path` only when its content would change. Keeps mtimes stable for reruns and makes
/// concurrent writers of identical content harmless.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

/// The dataset-level files: dataset_description.json, .bidsignore, descriptions.tsv, logs/.
pub fn init_output_dataset(
    out: &Path,
    raw_dir: &Path,
    raw_description: &Value,
    prov: &Provenance,
) -> Result<()> {
    std::fs::create_dir_all(out.join("logs"))
        .map_err(|source| Error::output_write(out.to_path_buf(), source))?;
    write_if_changed(
        &out.join("dataset_description.json"),
        &json_bytes(&dataset_description(raw_dir, raw_description, prov)),
    )?;
    let mut ignore = BIDSIGNORE.join("\n");
    ignore.push('\n');
    write_if_changed(&out.join(".bidsignore"), ignore.as_bytes())?;
    let mut tsv = String::from("desc_id\tdescription\n");
    for (id, d) in DESCRIPTIONS {
        tsv.push_str(&format!("desc-{id}\t{d}\n"));
    }
    write_if_changed(&out.join("descriptions.tsv"), tsv.as_bytes())?;
    Ok(())
}

/// A BIDS URI for a raw file: `bids:raw:sub-01/func/…_bold.nii.gz`.
pub fn raw_uri(raw_dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(raw_dir).unwrap_or(file);
    format!("bids:raw:{}", rel.to_string_lossy().replace('\\', "/"))
}

/// `SpatialReference` for fsaverage5 (required by the validator for the legacy space label).
pub fn fsaverage5_spatial_reference(hemi: &str) -> Value {
    let h = if hemi == "L" { "lh" } else { "rh" };
    json!({
        "URI": format!("https://github.com/nilearn/nilearn/raw/0.14.1/nilearn/datasets/data/fsaverage5/pial_{}.gii.gz",
                       if hemi == "L" { "left" } else { "right" }),
        "Description": format!("fsaverage5: the first 10,242 vertices of FreeSurfer's fsaverage ({h}), in nilearn's fetch_surf_fsaverage('fsaverage5') vertex order, as TRIBE v2 outputs them"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_order() {
        let n = DerivName::new(
            [
                ("desc", "predicted"),
                ("space", "fsaverage5"),
                ("task", "movie"),
                ("sub", "01"),
                ("hemi", "L"),
                ("run", "1"),
                ("ses", "a"),
            ],
            "bold",
            ".func.gii",
        );
        assert_eq!(
            n.file_name(),
            "sub-01_ses-a_task-movie_run-1_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii"
        );
        assert_eq!(
            n.sidecar_name(),
            "sub-01_ses-a_task-movie_run-1_hemi-L_space-fsaverage5_desc-predicted_bold.json"
        );
        assert_eq!(n.folder("func"), PathBuf::from("sub-01/ses-a/func"));
        let s = DerivName::new(
            [
                ("sub", "01"),
                ("task", "loc"),
                ("stat", "z"),
                ("contrast", "facesVsPlaces"),
                ("space", "fsaverage5"),
                ("hemi", "R"),
            ],
            "statmap",
            ".func.gii",
        );
        assert_eq!(
            s.file_name(),
            "sub-01_task-loc_hemi-R_space-fsaverage5_contrast-facesVsPlaces_stat-z_statmap.func.gii"
        );
        let v = DerivName::new(
            [
                ("sub", "01"),
                ("task", "x"),
                ("desc", "predicted"),
                ("res", "2"),
                ("space", "MNI152NLin2009cAsym"),
            ],
            "bold",
            ".nii.gz",
        );
        assert_eq!(
            v.file_name(),
            "sub-01_task-x_space-MNI152NLin2009cAsym_res-2_desc-predicted_bold.nii.gz"
        );
    }

    #[test]
    fn dataset_files_are_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let prov = Provenance {
            version: "0.1.0".into(),
            command_line: vec![],
            container: None,
        };
        let raw = json!({"Name": "ds", "BIDSVersion": "1.8.0", "License": "CC0"});
        init_output_dataset(d.path(), Path::new("/data/ds"), &raw, &prov).unwrap();
        let first = std::fs::read(d.path().join("dataset_description.json")).unwrap();
        init_output_dataset(d.path(), Path::new("/data/ds"), &raw, &prov).unwrap();
        assert_eq!(
            first,
            std::fs::read(d.path().join("dataset_description.json")).unwrap()
        );
        let v: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(v["DatasetType"], "derivative");
        assert_eq!(v["GeneratedBy"][0]["Name"], "tribe-bids");
        assert_eq!(v["License"], "CC0");
        assert_eq!(v["DatasetLinks"]["raw"], "file:///data/ds");
        assert!(
            std::fs::read_to_string(d.path().join(".bidsignore"))
                .unwrap()
                .contains("*hemi-*")
        );
    }
}
