//! The dataset as the pipeline sees it: subjects, sessions and BOLD runs, each with its merged
//! sidecar, timing, volume count, events and stimuli.
//!
//! A run is defined by its bold image (`func/*_bold.nii[.gz]`), not by events or sidecars: that
//! is what fMRIPrep and the validator count. The image may be 0 bytes (all of bids-examples); its
//! volume count is then unknown, and the rest of the run is still read, so `--dry-run` works on
//! those datasets. Everything is read eagerly and checked in [`Layout::runs`], so a bad events file
//! fails before any model is loaded.

use super::description::DatasetDescription;
use super::entities::{BidsName, Entities, RAW_BOLD_ENTITIES};
use super::events::Events;
use super::filters::Filters;
use super::ignore::IgnoreRules;
use super::inheritance::{MetaFile, applicable, nearest};
use super::nifti_header::{BoldHeader, read_bold_header};
use super::stimuli::{Stimulus, resolve_stimuli};
use super::timing::RunTiming;
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// One indexed BOLD image.
#[derive(Debug, Clone)]
struct BoldFile {
    path: PathBuf,
    rel_dir: PathBuf,
    name: BidsName,
}

/// An opened dataset.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    canonical_root: PathBuf,
    description: DatasetDescription,
    ignore: IgnoreRules,
    subjects: Vec<String>,
    sessions: HashMap<String, Vec<String>>,
    bolds: Vec<BoldFile>,
    metadata_files: Vec<MetaFile>,
}

/// One BOLD run, ready for the pipeline and the dry-run table.
#[derive(Debug, Clone)]
pub struct Run {
    pub entities: Entities,
    /// The bold image that defines the run.
    pub bold: PathBuf,
    /// `.nii` or `.nii.gz`.
    pub extension: String,
    /// The image header; `None` when the image is 0 bytes (as every image in bids-examples is).
    pub header: Option<BoldHeader>,
    /// Volumes from the header (`dim[4]`); `None` when the image is 0 bytes. With `VolumeTiming`,
    /// [`RunTiming::n_volumes_hint`] gives the count the sidecar implies.
    pub n_volumes: Option<usize>,
    pub timing: RunTiming,
    /// The merged sidecar (root-level files first, deeper keys winning).
    pub metadata: Map<String, Value>,
    /// The sidecars that were merged, from the root down.
    pub sidecars: Vec<PathBuf>,
    /// The applicable events.tsv (nearest wins), if any.
    pub events_path: Option<PathBuf>,
    pub events: Option<Events>,
    /// Every distinct `stim_file` of the events, resolved under `BIDS_DIR/stimuli`.
    pub stimuli: Vec<Stimulus>,
}

impl Run {
    pub fn subject(&self) -> &str {
        self.entities.sub().unwrap_or("")
    }
    pub fn session(&self) -> Option<&str> {
        self.entities.ses()
    }
    pub fn task(&self) -> &str {
        self.entities.task().unwrap_or("")
    }
    /// `RepetitionTime` in seconds (None for `VolumeTiming` runs).
    pub fn repetition_time(&self) -> Option<f64> {
        self.timing.repetition_time
    }
    /// `TaskName` from the sidecar.
    pub fn task_name(&self) -> Option<&str> {
        self.metadata.get("TaskName").and_then(Value::as_str)
    }
    /// `sub-01_ses-1_task-movie_run-1`: the prefix derivative names start from.
    pub fn id(&self) -> String {
        self.entities.to_filename_prefix()
    }
    /// The time each volume stands for (onset + slice-time reference, `frac` as fMRIPrep's
    /// `--slice-time-ref`), when the volume count is known.
    pub fn acquisition_times(&self, frac: f64) -> Result<Option<Vec<f64>>> {
        match self.n_volumes {
            Some(n) => self.timing.acquisition_times(n, frac, &self.bold).map(Some),
            None => Ok(None),
        }
    }
}

fn rel_string(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

impl Layout {
    /// Opens and indexes `root`: reads `dataset_description.json` and `.bidsignore`, then walks
    /// the tree (not following symlinked folders, so a link cannot pull another tree in).
    pub fn open(root: &Path) -> Result<Layout> {
        let meta = std::fs::metadata(root).map_err(|e| Error::InputMissing {
            path: root.to_path_buf(),
            what: format!("the BIDS dataset folder ({e})"),
            fix: "check BIDS_DIR (inside a container, check that it is mounted)".into(),
        })?;
        if !meta.is_dir() {
            return Err(Error::InputMissing {
                path: root.to_path_buf(),
                what: "a folder (BIDS_DIR is a file)".into(),
                fix: "give the dataset's root folder as BIDS_DIR".into(),
            });
        }
        let canonical_root = std::fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        let description = DatasetDescription::read(root)?;
        if description.dataset_type == "derivative" {
            return Err(Error::DatasetInvalid {
                path: description.path.clone(),
                reason:
                    "this is a BIDS-Derivatives dataset (DatasetType \"derivative\"), not raw data"
                        .into(),
                fix: "give the raw dataset (the one with the events.tsv files) as BIDS_DIR".into(),
            });
        }
        let ignore = IgnoreRules::load(root)?;

        let mut subjects = BTreeSet::new();
        let mut sessions: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut bolds = Vec::new();
        let mut metadata_files = Vec::new();
        let walker = walkdir::WalkDir::new(root)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .map(rel_string)
                    .unwrap_or_default();
                !ignore.is_ignored(&rel)
            });
        for entry in walker {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                Error::io(
                    path,
                    e.into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
                )
            })?;
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap_or(entry.path())
                .to_path_buf();
            let comps: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_dir() {
                if comps.len() == 1 {
                    if let Some(s) = name.strip_prefix("sub-") {
                        subjects.insert(s.to_string());
                    }
                } else if comps.len() == 2
                    && comps[0].starts_with("sub-")
                    && let Some(s) = name.strip_prefix("ses-")
                {
                    sessions
                        .entry(comps[0]["sub-".len()..].to_string())
                        .or_default()
                        .insert(s.to_string());
                }
                continue;
            }
            let Some(parsed) = BidsName::parse(&name) else {
                continue;
            };
            let rel_dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let in_func = comps.len() >= 3
                && comps[comps.len() - 2] == "func"
                && comps[0].starts_with("sub-");
            let is_image = parsed.extension == ".nii" || parsed.extension == ".nii.gz";
            if parsed.suffix == "bold" && is_image {
                if !in_func {
                    continue;
                }
                let raw = parsed
                    .entities
                    .iter()
                    .all(|(k, _)| RAW_BOLD_ENTITIES.contains(&k));
                if !raw || parsed.entities.sub().is_none() || parsed.entities.task().is_none() {
                    tracing::warn!(
                        "{}: not a raw BOLD run name (needs sub- and task-, and only raw entities); skipped",
                        entry.path().display()
                    );
                    continue;
                }
                bolds.push(BoldFile {
                    path: entry.path().to_path_buf(),
                    rel_dir,
                    name: parsed,
                });
            } else if parsed.extension == ".json" || parsed.extension == ".tsv" {
                metadata_files.push(MetaFile {
                    path: entry.path().to_path_buf(),
                    rel_dir,
                    name: parsed,
                });
            }
        }
        bolds.sort_by_key(|b| sort_key(&b.name.entities));
        Ok(Layout {
            root: root.to_path_buf(),
            canonical_root,
            description,
            ignore,
            subjects: subjects.into_iter().collect(),
            sessions: sessions
                .into_iter()
                .map(|(k, v)| (k, v.into_iter().collect()))
                .collect(),
            bolds,
            metadata_files,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn description(&self) -> &DatasetDescription {
        &self.description
    }
    /// The `.bidsignore` patterns in force.
    pub fn ignore_patterns(&self) -> &[String] {
        self.ignore.patterns()
    }
    /// Subject labels (without `sub-`), sorted.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }
    /// Session labels of a subject (without `ses-`), sorted; empty when it has no sessions.
    pub fn sessions(&self, subject: &str) -> &[String] {
        self.sessions
            .get(subject.strip_prefix("sub-").unwrap_or(subject))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// Task labels of all BOLD runs, sorted.
    pub fn tasks(&self) -> Vec<String> {
        self.bolds
            .iter()
            .filter_map(|b| b.name.entities.task().map(str::to_string))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
    /// Paths of all BOLD images (before filtering), in run order.
    pub fn bold_paths(&self) -> Vec<&Path> {
        self.bolds.iter().map(|b| b.path.as_path()).collect()
    }

    /// The runs selected by `filters`, fully read and checked. Errors: unknown participant labels
    /// or an empty selection -> [`Error::NoDataMatched`]; any run's bad sidecar, timing, header,
    /// events or stim_file -> that error (the first one met, in run order).
    pub fn runs(&self, filters: &Filters) -> Result<Vec<Run>> {
        let unknown: Vec<&String> = filters
            .participants
            .iter()
            .filter(|p| !self.subjects.contains(p))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::NoDataMatched {
                filters: filters.describe(),
                fix: format!(
                    "participant label(s) {} are not in {}; it has: {}",
                    unknown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.root.display(),
                    self.subjects.join(", ")
                ),
            });
        }
        let selected: Vec<&BoldFile> = self
            .bolds
            .iter()
            .filter(|b| filters.matches(&b.name.entities, &b.name.extension))
            .collect();
        if selected.is_empty() {
            let fix = if self.bolds.is_empty() {
                format!(
                    "{} has no BOLD runs (sub-*/[ses-*/]func/*_bold.nii[.gz])",
                    self.root.display()
                )
            } else {
                format!(
                    "the dataset has subjects {} and tasks {}; relax the filters",
                    self.subjects.join(", "),
                    self.tasks().join(", ")
                )
            };
            return Err(Error::NoDataMatched {
                filters: filters.describe(),
                fix,
            });
        }
        let mut cache = Cache::default();
        selected
            .into_iter()
            .map(|b| self.load_run(b, &mut cache))
            .collect()
    }

    fn load_run(&self, b: &BoldFile, cache: &mut Cache) -> Result<Run> {
        let sidecar_files = applicable(&self.metadata_files, &b.rel_dir, &b.name, "bold", ".json");
        let mut metadata = Map::new();
        let mut sources: HashMap<String, PathBuf> = HashMap::new();
        for m in &sidecar_files {
            for (k, v) in cache.json(&m.path)? {
                metadata.insert(k.clone(), v.clone());
                sources.insert(k.clone(), m.path.clone());
            }
        }
        let timing = RunTiming::from_metadata(&metadata, &b.path, &sources)?;
        if std::fs::symlink_metadata(&b.path).is_ok() && std::fs::metadata(&b.path).is_err() {
            return Err(Error::InputMissing {
                path: b.path.clone(),
                what: "the image content (a dangling symbolic link, as git-annex leaves files not fetched yet)".into(),
                fix: "fetch the data (`datalad get <path>` or `git annex get <path>`)".into(),
            });
        }
        let header = read_bold_header(&b.path)?;
        let n_volumes = header.as_ref().map(|h| h.n_volumes as usize);
        if let (Some(n), Some(hint)) = (n_volumes, timing.n_volumes_hint())
            && n != hint
        {
            return Err(Error::DatasetInvalid {
                path: b.path.clone(),
                reason: format!(
                    "VolumeTiming lists {hint} onsets but the image header has {n} volumes"
                ),
                fix: "VolumeTiming needs exactly one onset per volume".into(),
            });
        }
        if let (Some(h), Some(tr)) = (&header, timing.repetition_time)
            && let Some(htr) = h.tr_seconds
            && (htr - tr).abs() > 1e-3
        {
            tracing::warn!(
                "{}: RepetitionTime {tr} s differs from the NIfTI header's {htr} s; using RepetitionTime",
                b.path.display()
            );
        }
        let events_candidates =
            applicable(&self.metadata_files, &b.rel_dir, &b.name, "events", ".tsv");
        let events_file = nearest(&events_candidates, &b.path)?;
        let (events_path, events, stimuli) = match events_file {
            Some(m) => {
                let ev = cache.events(&m.path)?.clone();
                let stimuli = resolve_stimuli(&ev, &self.root, &self.canonical_root)?;
                (Some(m.path.clone()), Some(ev), stimuli)
            }
            None => (None, None, Vec::new()),
        };
        Ok(Run {
            entities: b.name.entities.clone(),
            bold: b.path.clone(),
            extension: b.name.extension.clone(),
            header,
            n_volumes,
            timing,
            metadata,
            sidecars: sidecar_files.iter().map(|m| m.path.clone()).collect(),
            events_path,
            events,
            stimuli,
        })
    }
}

/// Parsed files shared by many runs (a root-level `task-x_bold.json` or events.tsv) are read once.
#[derive(Default)]
struct Cache {
    json: HashMap<PathBuf, Map<String, Value>>,
    events: HashMap<PathBuf, Events>,
}

impl Cache {
    fn json(&mut self, path: &Path) -> Result<&Map<String, Value>> {
        if !self.json.contains_key(path) {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::Json {
                path: path.to_path_buf(),
                message: format!("not valid JSON: {e}"),
                fix: "fix the JSON syntax of this sidecar (a JSON linter shows the exact spot)"
                    .into(),
            })?;
            let Value::Object(map) = v else {
                return Err(Error::Json {
                    path: path.to_path_buf(),
                    message: "a sidecar must hold a JSON object".into(),
                    fix: "write the metadata as {\"Key\": value, ...}".into(),
                });
            };
            self.json.insert(path.to_path_buf(), map);
        }
        Ok(&self.json[path])
    }

    fn events(&mut self, path: &Path) -> Result<&Events> {
        if !self.events.contains_key(path) {
            let ev = Events::read(path)?;
            self.events.insert(path.to_path_buf(), ev);
        }
        Ok(&self.events[path])
    }
}

/// Runs in the order fMRIPrep's report uses (sub, ses, task, acq, ce, rec, dir, run, echo, part),
/// with index entities compared as numbers so run-10 follows run-2.
fn sort_key(e: &Entities) -> Vec<(u64, String)> {
    RAW_BOLD_ENTITIES
        .iter()
        .map(|k| match e.get(k) {
            None => (0, String::new()),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if *k == "run" || *k == "echo" || *k == "chunk" => (n + 1, String::new()),
                _ => (1, v.to_string()),
            },
        })
        .collect()
}
