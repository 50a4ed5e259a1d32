//! The per-subject HTML report, `OUT/sub-<s>.html` with its figures in `OUT/sub-<s>/figures/`
//! (fMRIPrep's layout, BIDS.md §6).
//!
//! Why it is built from what is on disk rather than from the pipeline's memory: a rerun that
//! finds every run up to date, a job that ran only some tasks, or a first-level step run by
//! another invocation must all give a report of everything the output folder holds. So the
//! report reads the predicted-BOLD GIFTIs and their sidecars, any `stat-z` contrast maps, and the
//! group ICA maps, draws the figures, and writes the page last (every file temp-then-rename, so
//! a killed job never leaves a half-written page or figure). The only things that cannot be read
//! back from disk (this invocation's command line, settings and per-run status) come in
//! [`ReportContext`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bids::Run;
use crate::bids::derivatives::DerivName;
use crate::bids::entities::BidsName;
use crate::cli::bids_app::{RunConfig, TextContext};
use crate::cli::participant::Outcome;
use crate::error::{Error, Result};
use crate::formats::gifti::read_gifti;
use crate::report::carpet::{CarpetOptions, render_carpet};
use crate::report::figure::{FigureOptions, render_surface_figure, save_png};
use crate::report::fsaverage;
use crate::report::html::{
    self, ContrastSummary, FigureRef, NetworkSummary, Provenance, ReportSummary, RunSummary,
};
use crate::report::mesh::HemiSurface;
use crate::report::render::MapStyle;

/// z threshold of the contrast figures: |z| ≥ 3.1 is p < 0.001 (one-sided, uncorrected), the
/// customary display threshold for first-level maps.
pub const Z_THRESHOLD: f32 = 3.1;

/// ICA component maps show the vertices whose |loading| is in the top 10 % (the convention of
/// the published re-analyses of TRIBE v2's readout, SPEC §11).
pub const ICA_TOP_FRACTION: f32 = 0.10;

/// Stimuli listed by name per run; the rest are counted.
const MAX_LISTED_STIMULI: usize = 16;

/// What the report needs that is not on disk: how this invocation was run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportContext {
    /// The command line as given.
    pub command_line: Vec<String>,
    /// Settings worth recording (label, value), in display order.
    pub settings: Vec<(String, String)>,
    /// This invocation's status per run id (`sub-01_task-movie_run-1` -> "done", …). Runs on
    /// disk but not listed here were produced by an earlier invocation.
    pub run_status: BTreeMap<String, String>,
    /// Errors of this invocation for this subject, shown under About / Errors.
    pub errors: Vec<String>,
}

impl ReportContext {
    /// The context of a participant-level invocation, restricted to one subject's runs.
    pub fn from_config(cfg: &RunConfig, outcomes: &[(String, Outcome)], subject: &str) -> Self {
        let prefix = format!("sub-{}_", subject.strip_prefix("sub-").unwrap_or(subject));
        let mut run_status = BTreeMap::new();
        let mut errors = Vec::new();
        for (id, o) in outcomes.iter().filter(|(id, _)| id.starts_with(&prefix)) {
            let s = match o {
                Outcome::Done => "done".to_string(),
                Outcome::UpToDate => "up to date (kept from an earlier run)".to_string(),
                Outcome::Skipped(r) => format!("skipped: {r}"),
                Outcome::Failed(e) => {
                    errors.push(format!("{id}: {e}"));
                    format!(
                        "FAILED: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    )
                }
            };
            run_status.insert(id.clone(), s);
        }
        ReportContext {
            command_line: cfg.command_line.clone(),
            settings: settings(cfg),
            run_status,
            errors,
        }
    }
}

fn settings(cfg: &RunConfig) -> Vec<(String, String)> {
    let list = |v: &[String]| {
        if v.is_empty() {
            "all".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut s = vec![
        ("Participant filter".into(), list(&cfg.participants)),
        ("Session filter".into(), list(&cfg.sessions)),
        ("Task filter".into(), list(&cfg.tasks)),
        ("Run filter".into(), list(&cfg.runs)),
        (
            "Modalities".into(),
            cfg.modalities
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "Text context".into(),
            match cfg.text_context {
                TextContext::Exact => "exact".into(),
                TextContext::Fast => "fast".into(),
            },
        ),
        ("Device".into(), format!("{:?}", cfg.device).to_lowercase()),
        (
            "CPU matrix library".into(),
            crate::features::blas::describe(),
        ),
        (
            "Subject row".into(),
            cfg.subject_index
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unseen-subject (average) row".into()),
        ),
        (
            "CIFTI output".into(),
            if cfg.cifti_output { "yes" } else { "no" }.into(),
        ),
        ("Models folder".into(), cfg.models_dir.display().to_string()),
    ];
    if !cfg.contrasts.is_empty() {
        s.push((
            "Contrasts".into(),
            cfg.contrasts
                .iter()
                .map(|c| format!("{}={}", c.name, c.expr))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    if let Some(m) = &cfg.stats_model {
        s.push(("Stats model".into(), m.display().to_string()));
    }
    if cfg.run_ica {
        s.push((
            "Per-run ICA".into(),
            format!("{} components", cfg.ica_components),
        ));
    }
    if let Some(f) = &cfg.bids_filter_file {
        s.push(("BIDS filter file".into(), f.display().to_string()));
    }
    s
}

/// Write the report of every subject in `runs` (the selected runs of this invocation). A failed
/// report does not undo the predictions: it is added to `outcomes` as a failure, so the job
/// summary shows it and the exit code is non-zero, as fMRIPrep does.
pub fn write_reports(cfg: &RunConfig, runs: &[Run], outcomes: &mut Vec<(String, Outcome)>) {
    let subjects: BTreeSet<String> = runs.iter().map(|r| r.subject().to_string()).collect();
    for s in subjects {
        let ctx = ReportContext::from_config(cfg, outcomes, &s);
        match write_subject_report(&cfg.output_dir, &s, &ctx) {
            Ok(()) => tracing::info!(
                "report: {}",
                cfg.output_dir.join(format!("sub-{s}.html")).display()
            ),
            Err(e) => {
                tracing::error!("sub-{s} report: {e}");
                outcomes.push((format!("sub-{s}.html (report)"), Outcome::Failed(e)));
            }
        }
    }
}

/// One predicted-BOLD run found on disk.
#[derive(Debug, Clone)]
struct FoundRun {
    /// Entities without hemi/space/desc (`sub`, `ses`, `task`, `acq`, `run`, …).
    entities: Vec<(String, String)>,
    left: PathBuf,
    right: PathBuf,
}

impl FoundRun {
    fn id(&self) -> String {
        DerivName::new(self.entities.clone(), "x", "")
            .file_name()
            .trim_end_matches("_x")
            .to_string()
    }
}

/// One pair of per-hemisphere maps found on disk (a contrast z map, or the group ICA maps).
#[derive(Debug, Clone)]
struct MapPair {
    /// Entities without hemi (for a contrast: with `contrast`, `stat`, `space`).
    entities: Vec<(String, String)>,
    left: PathBuf,
    right: PathBuf,
}

fn entity<'a>(e: &'a [(String, String)], key: &str) -> Option<&'a str> {
    e.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn without(e: &[(String, String)], keys: &[&str]) -> Vec<(String, String)> {
    e.iter()
        .filter(|(k, _)| !keys.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// The right-hemisphere twin of a `hemi-L` file.
fn right_of(left: &Path) -> PathBuf {
    let name = left
        .file_name()
        .map(|n| n.to_string_lossy().replace("_hemi-L_", "_hemi-R_"))
        .unwrap_or_default();
    left.with_file_name(name)
}

/// Predicted BOLD and contrast maps of one subject, sorted by file name (session, task, run).
fn scan_subject(out: &Path, subject: &str) -> (Vec<FoundRun>, Vec<MapPair>) {
    let dir = out.join(format!("sub-{subject}"));
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
        .max_depth(3)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| !p.components().any(|c| c.as_os_str() == "figures"))
        .collect();
    files.sort();
    let (mut runs, mut contrasts) = (Vec::new(), Vec::new());
    for f in files {
        let Some(name) = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(BidsName::parse)
        else {
            continue;
        };
        let ents: Vec<(String, String)> = name
            .entities
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if name.extension != ".func.gii" || entity(&ents, "hemi") != Some("L") {
            continue;
        }
        let right = right_of(&f);
        if !right.is_file() {
            tracing::warn!(
                "{}: no right-hemisphere file, left out of the report",
                f.display()
            );
            continue;
        }
        if name.suffix == "bold"
            && entity(&ents, "desc") == Some("predicted")
            && entity(&ents, "space") == Some("fsaverage5")
        {
            runs.push(FoundRun {
                entities: without(&ents, &["hemi", "space", "desc"]),
                left: f,
                right,
            });
        } else if name.suffix == "statmap" && entity(&ents, "stat") == Some("z") {
            contrasts.push(MapPair {
                entities: without(&ents, &["hemi"]),
                left: f,
                right,
            });
        }
    }
    (runs, contrasts)
}

/// Group ICA component maps (`OUT/group/*_hemi-L_*desc-ICA_components.func.gii`), if any.
fn scan_ica(out: &Path) -> Option<MapPair> {
    let dir = out.join("group");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.into_iter().find_map(|f| {
        let name = BidsName::parse(f.file_name()?.to_str()?)?;
        let ents: Vec<(String, String)> = name
            .entities
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ok = name.suffix == "components"
            && name.extension == ".func.gii"
            && entity(&ents, "desc") == Some("ICA")
            && entity(&ents, "hemi") == Some("L");
        let right = right_of(&f);
        (ok && right.is_file()).then(|| MapPair {
            entities: without(&ents, &["hemi"]),
            left: f,
            right,
        })
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn sidecar_of(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    path.with_file_name(format!("{stem}.json"))
}

/// Both hemispheres' time series as one `(n_volumes, 20484)` time-major buffer.
fn read_pair(left: &Path, right: &Path) -> Result<(usize, Vec<f32>)> {
    let nv = fsaverage::N_VERTICES;
    let mut halves = Vec::with_capacity(2);
    for p in [left, right] {
        let img = read_gifti(p)?;
        let (n, data) = img.time_series_f32(p)?;
        if n != nv {
            return Err(Error::Gifti {
                path: p.to_path_buf(),
                message: format!("{n} vertices per DataArray, fsaverage5 has {nv}"),
            });
        }
        halves.push(data);
    }
    let (l, r) = (&halves[0], &halves[1]);
    if l.len() != r.len() {
        return Err(Error::Gifti {
            path: right.to_path_buf(),
            message: format!(
                "{} DataArrays, the left hemisphere has {}",
                r.len() / nv,
                l.len() / nv
            ),
        });
    }
    let t = l.len() / nv;
    let mut y = Vec::with_capacity(2 * l.len());
    for k in 0..t {
        y.extend_from_slice(&l[k * nv..(k + 1) * nv]);
        y.extend_from_slice(&r[k * nv..(k + 1) * nv]);
    }
    Ok((t, y))
}

/// Mean over volumes per vertex.
fn temporal_mean(y: &[f32], t: usize, n: usize) -> Vec<f32> {
    let mut m = vec![0.0f64; n];
    for k in 0..t {
        for (a, v) in m.iter_mut().zip(&y[k * n..(k + 1) * n]) {
            *a += *v as f64;
        }
    }
    m.into_iter()
        .map(|v| (v / t.max(1) as f64) as f32)
        .collect()
}

/// The `q` quantile of |v| over finite values.
fn abs_quantile(v: &[f32], q: f32) -> f32 {
    let mut a: Vec<f32> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .collect();
    if a.is_empty() {
        return 0.0;
    }
    let i = (((a.len() - 1) as f32) * q).round() as usize;
    let (_, x, _) = a.select_nth_unstable_by(i, |p, q| p.total_cmp(q));
    *x
}

/// The mean prediction: symmetric limits at the 99th percentile of |value| (TRIBE's own plots
/// use `norm_percentile=99`), no threshold, and colour fading in over the weakest half so the
/// sulcal pattern shows through where the prediction is near zero.
fn mean_style(data: &[f32]) -> MapStyle {
    let hi = abs_quantile(data, 0.99);
    let mut s = MapStyle::signed(data, None, "mean");
    if hi > 0.0 {
        s.vmin = -hi;
        s.vmax = hi;
        s.fade = Some(0.5 * hi);
    }
    s
}

/// The contrast figure exactly as the report draws it: `cold_hot`, symmetric limits at
/// ±max|z| (at least 1.5 × the threshold, so a map where nothing passes by much still has a
/// readable scale), |z| < [`Z_THRESHOLD`] showing the sulcal background. Public so the figure
/// regression test renders the same thing.
pub fn render_contrast_figure(
    left: &HemiSurface,
    right: &HemiSurface,
    z: &[f32],
    title: &str,
) -> Result<(image::RgbImage, MapStyle)> {
    let mut style = MapStyle::signed(z, Some(Z_THRESHOLD), "z");
    if style.vmax < Z_THRESHOLD * 1.5 {
        style.vmax = Z_THRESHOLD * 1.5;
        style.vmin = -style.vmax;
    }
    let img = render_surface_figure(
        left,
        right,
        z,
        &style,
        &FigureOptions {
            title: Some(title.to_string()),
            ..FigureOptions::default()
        },
    )?;
    Ok((img, style))
}

/// The figure name of a run: `sub-01_task-x_run-1[_space-fsaverage5]_desc-<desc>_bold.png`.
fn run_figure_name(run: &FoundRun, desc: &str, on_surface: bool) -> String {
    let mut n = DerivName::new(run.entities.clone(), "bold", ".png").with("desc", desc);
    if on_surface {
        n = n.with("space", "fsaverage5");
    }
    n.file_name()
}

fn rel(out: &Path, p: &Path) -> String {
    p.strip_prefix(out)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

fn fmt_seconds(s: f64) -> String {
    if s >= 120.0 {
        format!("{:.1} min ({s:.0} s)", s / 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// What the page says about one run, from its sidecar (and the raw events file, when the raw
/// dataset is still where `DatasetLinks.raw` says).
struct RunInfo {
    summary: RunSummary,
    n_stimuli: usize,
    models: Vec<(String, String)>,
    extractors: Vec<String>,
    features: Vec<String>,
}

fn run_info(
    out: &Path,
    run: &FoundRun,
    n_vol: usize,
    raw: Option<&Path>,
    status: Option<&String>,
) -> RunInfo {
    let side = read_json(&sidecar_of(&run.left)).unwrap_or(Value::Null);
    let times: Vec<f64> = side["VolumeAcquisitionTimes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let (tr, irregular) = match (
        side["RepetitionTime"].as_f64(),
        side["VolumeTiming"].as_array(),
    ) {
        (Some(tr), _) => (tr, false),
        (None, Some(vt)) => {
            let v: Vec<f64> = vt.iter().filter_map(Value::as_f64).collect();
            let mean = if v.len() > 1 {
                (v[v.len() - 1] - v[0]) / (v.len() - 1) as f64
            } else {
                1.0
            };
            (mean, true)
        }
        _ => (f64::NAN, false),
    };
    let sources: Vec<String> = side["Sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let stimuli: Vec<String> = sources
        .iter()
        .filter(|s| {
            !s.ends_with("_bold.nii.gz") && !s.ends_with("_bold.nii") && !s.ends_with("_events.tsv")
        })
        .map(|s| s.strip_prefix("bids:raw:").unwrap_or(s).to_string())
        .collect();
    // a run can show thousands of images: list the first few, count the rest
    let n_stimuli = stimuli.len();
    let mut stimuli = stimuli;
    if n_stimuli > MAX_LISTED_STIMULI {
        stimuli.truncate(MAX_LISTED_STIMULI);
        stimuli.push(format!(
            "… and {} more (the sidecar's Sources lists all)",
            n_stimuli - MAX_LISTED_STIMULI
        ));
    }
    let mut facts = Vec::new();
    if let Some(s) = status {
        facts.push(("Status (this invocation)".to_string(), s.clone()));
    } else {
        facts.push((
            "Status (this invocation)".to_string(),
            "not selected; outputs from an earlier invocation".to_string(),
        ));
    }
    if let Some(t) = side["TaskName"].as_str() {
        facts.push(("Task name".into(), t.into()));
    }
    if irregular {
        facts.push((
            "Volume timing".into(),
            "irregular (VolumeTiming); the repetition time above is the mean spacing".into(),
        ));
    }
    if let (Some(a), Some(b)) = (times.first(), times.last()) {
        facts.push((
            "Volumes predicted at".into(),
            format!("{a:.2} s … {b:.2} s after the first volume"),
        ));
    }
    if let Some(events) = sources.iter().find(|s| s.ends_with("_events.tsv")) {
        let rel_ev = events.strip_prefix("bids:raw:").unwrap_or(events);
        facts.push(("Events".into(), rel_ev.to_string()));
        if let Some(summary) = raw.and_then(|r| events_summary(&r.join(rel_ev))) {
            facts.push(("Events summary".into(), summary));
        }
    }
    let features: Vec<String> = side["FeaturesUsed"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !features.is_empty() {
        facts.push(("Features used".into(), features.join(", ")));
    }
    if let Some(tc) = side["TextContext"].as_str()
        && features.iter().any(|f| f == "text")
    {
        facts.push(("Text context".into(), tc.into()));
    }
    let mut models = Vec::new();
    let mut extractors = Vec::new();
    if let Some(sha) = side["Model"]["Sha256"].as_str() {
        let ck = side["Model"]["Checkpoint"].as_str().unwrap_or("checkpoint");
        models.push((format!("TRIBE v2 brain model ({ck})"), sha.to_string()));
    }
    if let Some(ex) = side["FeatureExtractors"].as_object() {
        for (m, v) in ex {
            let name = v["Model"].as_str().unwrap_or("?");
            extractors.push(name.to_string());
            if let Some(id) = v["Identity"].as_str() {
                models.push((format!("{m} extractor ({name})"), id.to_string()));
            }
        }
    }
    if let Some(v) = side["GeneratedBy"]["Version"].as_str() {
        facts.push(("Predicted by".into(), format!("tribe-bids {v}")));
    }
    let outputs = vec![
        rel(out, &run.left),
        rel(out, &sidecar_of(&run.left)),
        rel(out, &run.right),
        rel(out, &sidecar_of(&run.right)),
    ]
    .into_iter()
    .filter(|p| out.join(p).is_file())
    .collect();
    let name = run
        .entities
        .iter()
        .filter(|(k, _)| k != "sub")
        .map(|(k, v)| format!("{k}-{v}"))
        .collect::<Vec<_>>()
        .join(" ");
    RunInfo {
        summary: RunSummary {
            name,
            n_volumes: n_vol,
            tr,
            stimuli,
            facts,
            figures: Vec::new(),
            outputs,
        },
        n_stimuli,
        models,
        extractors,
        features,
    }
}

/// "12 events (face 4, place 4, object 4), 2.0 s – 21.0 s" from a raw events.tsv.
fn events_summary(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split('\t').collect();
    let col = |n: &str| header.iter().position(|h| h.trim() == n);
    let (on, du, tt) = (col("onset")?, col("duration"), col("trial_type"));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut n, mut first, mut last) = (0usize, f64::INFINITY, f64::NEG_INFINITY);
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split('\t').collect();
        let Some(o) = f.get(on).and_then(|v| v.trim().parse::<f64>().ok()) else {
            continue;
        };
        let d = du
            .and_then(|i| f.get(i))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        n += 1;
        first = first.min(o);
        last = last.max(o + d);
        if let Some(t) = tt.and_then(|i| f.get(i)).map(|v| v.trim())
            && !t.is_empty()
            && t != "n/a"
        {
            *counts.entry(t.to_string()).or_default() += 1;
        }
    }
    if n == 0 {
        return None;
    }
    let kinds = if counts.is_empty() {
        String::new()
    } else {
        let mut c: Vec<(String, usize)> = counts.into_iter().collect();
        c.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let shown: Vec<String> = c.iter().take(8).map(|(k, v)| format!("{k} {v}")).collect();
        let more = if c.len() > 8 {
            format!(", … {} more types", c.len() - 8)
        } else {
            String::new()
        };
        format!(" ({}{more})", shown.join(", "))
    };
    Some(format!(
        "{n} event{}{kinds}, from {first:.1} s to {last:.1} s",
        if n == 1 { "" } else { "s" }
    ))
}

/// The raw dataset folder from `dataset_description.json`'s `DatasetLinks.raw`, if it exists.
fn raw_dir(out: &Path) -> Option<PathBuf> {
    let d = read_json(&out.join("dataset_description.json"))?;
    let uri = d["DatasetLinks"]["raw"].as_str()?;
    let p = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
    p.is_dir().then_some(p)
}

/// UTC date and time, `2026-11-26 17:30 UTC` (civil-from-days, no time crate needed).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// Shell-quote one argument for display (so the command can be pasted back).
fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn methods_text(
    extractors: &BTreeSet<String>,
    features: &BTreeSet<String>,
    n_contrasts: usize,
    ica: bool,
) -> String {
    let mut s = format!(
        "Brain responses were predicted with tribe-bids {} (a Rust implementation of the TRIBE v2 inference pipeline) \
         from each run's stimuli as listed in its BIDS events file. TRIBE v2 (d'Ascoli et al., 2026, \"A Foundation Model \
         of Vision, Audition, and Language for In-Silico Neuroscience\", Meta FAIR) encodes text, audio and video with pretrained \
         foundation models on a 2 Hz grid and maps them with a transformer onto the fsaverage5 cortical surface \
         (FreeSurfer's fsaverage, Fischl et al., 1999; 20,484 vertices), predicting the response of an average (unseen) subject.",
        crate::VERSION
    );
    if !features.is_empty() {
        s.push_str(&format!(
            " Modalities used: {}; feature extractors: {}.",
            features.iter().cloned().collect::<Vec<_>>().join(", "),
            extractors.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    s.push_str(
        " The model's 1 Hz predictions, which estimate BOLD 5 s after the stimulus, were linearly interpolated to each \
         run's volume acquisition times.",
    );
    if n_contrasts > 0 {
        s.push(' ');
        s.push_str(
            "Contrast maps were computed from the predicted BOLD with a first-level general linear model equivalent to \
             nilearn's FirstLevelModel (Abraham et al., 2014): one regressor per condition convolved with the Glover \
             haemodynamic response function, a cosine drift basis and an AR(1) noise model by default (the statmap \
             sidecars record the settings used); z maps were derived from the t statistics. Because predictions are \
             noise-free, z values measure how consistently the model separates the conditions, not the evidence of a \
             measured effect.",
        );
    }
    if ica {
        s.push_str(
            " Cortical networks were estimated by FastICA (Hyvärinen & Oja, 2000; equivalent to scikit-learn's) on the model's cortical readout, \
             with vertices as features, and labelled by the model's responses to in-silico probe stimuli.",
        );
    }
    s.push_str(
        " Figures show maps on the half-inflated fsaverage5 surface with sulcal-depth shading, rendered by tribe-bids.",
    );
    s
}

/// The works the methods paragraph cites.
fn references(glm: bool, ica: bool) -> Vec<String> {
    let mut r = vec![
        "d'Ascoli, S., et al. (2026). A Foundation Model of Vision, Audition, and Language for In-Silico Neuroscience \
         (TRIBE v2). Meta FAIR. https://ai.meta.com/research/publications/a-foundation-model-of-vision-audition-and-language-for-in-silico-neuroscience/ \
         (weights: https://huggingface.co/facebook/tribev2, CC BY-NC 4.0)."
            .to_string(),
        "Fischl, B., Sereno, M. I., Tootell, R. B., & Dale, A. M. (1999). High-resolution intersubject averaging and a \
         coordinate system for the cortical surface. Human Brain Mapping, 8(4), 272-284 (fsaverage)."
            .to_string(),
    ];
    if glm {
        r.push(
            "Abraham, A., Pedregosa, F., Eickenberg, M., et al. (2014). Machine learning for neuroimaging with \
             scikit-learn. Frontiers in Neuroinformatics, 8, 14 (nilearn)."
                .to_string(),
        );
    }
    if ica {
        r.push(
            "Hyvärinen, A., & Oja, E. (2000). Independent component analysis: algorithms and applications. Neural \
             Networks, 13(4-5), 411-430 (FastICA)."
                .to_string(),
        );
    }
    r
}

/// Build `OUT/sub-<subject>.html` and its figures from what `out` holds.
pub fn write_subject_report(out: &Path, subject: &str, ctx: &ReportContext) -> Result<()> {
    let subject = subject.strip_prefix("sub-").unwrap_or(subject);
    let fig_dir = out.join(format!("sub-{subject}")).join("figures");
    let (runs, contrasts) = scan_subject(out, subject);
    let ica = scan_ica(out);
    let raw = raw_dir(out);
    let (left, right) = fsaverage::load(fsaverage::DEFAULT_INFLATION)?;
    let nv = 2 * fsaverage::N_VERTICES;

    let mut report = ReportSummary {
        subject: subject.to_string(),
        ..Default::default()
    };
    let mut models: BTreeMap<String, String> = BTreeMap::new();
    let mut extractors = BTreeSet::new();
    let mut features = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    let mut overview: Vec<Vec<String>> = Vec::new();

    // A broken file costs its own section, not the page: problems are listed under Errors and
    // make the report count as failed in the job summary.
    let mut problems: Vec<String> = Vec::new();
    for run in &runs {
        let res = (|| -> Result<()> {
            let (t, y) = read_pair(&run.left, &run.right)?;
            let id = run.id();
            let mut info = run_info(out, run, t, raw.as_deref(), ctx.run_status.get(&id));
            for (k, v) in info.models.drain(..) {
                models.insert(k, v);
            }
            extractors.extend(info.extractors.drain(..));
            features.extend(info.features.drain(..));
            if let Some(s) = entity(&run.entities, "ses") {
                sessions.insert(s.to_string());
            }
            let title = info.summary.name.clone();
            // carpet
            if t >= 2 {
                let img = render_carpet(
                    &y,
                    t,
                    nv,
                    fsaverage::N_VERTICES,
                    &CarpetOptions {
                        tr: info.summary.tr.is_finite().then_some(info.summary.tr),
                        title: Some(format!("sub-{subject} {title}: predicted BOLD")),
                        ..CarpetOptions::default()
                    },
                )?;
                let p = fig_dir.join(run_figure_name(run, "carpet", false));
                save_png(&img, &p)?;
                info.summary.figures.push(FigureRef {
                path: rel(out, &p),
                caption: "Carpet plot of the predicted BOLD: the mean over all vertices on top, then one row per \
                          vertex (evenly sampled, left hemisphere above right), each z-scored over time; grey scale \
                          clipped at the 2nd and 98th percentiles."
                    .into(),
            });
            }
            // mean prediction
            let mean = temporal_mean(&y, t, nv);
            drop(y);
            let style = mean_style(&mean);
            let img = render_surface_figure(
                &left,
                &right,
                &mean,
                &style,
                &FigureOptions {
                    title: Some(format!("sub-{subject} {title}: mean predicted BOLD")),
                    ..FigureOptions::default()
                },
            )?;
            let p = fig_dir.join(run_figure_name(run, "mean", true));
            save_png(&img, &p)?;
            info.summary.figures.push(FigureRef {
            path: rel(out, &p),
            caption: format!(
                "Mean predicted BOLD over the run's {t} volumes on the half-inflated fsaverage5 surface (left and right \
                 hemispheres, lateral and medial views). Colour limits ±{} (99th percentile of |mean|); colour fades \
                 into the sulcal background below ±{}, so near-zero values show the folding pattern.",
                crate::report::figure::format_tick(style.vmax),
                crate::report::figure::format_tick(style.fade.unwrap_or(0.0))
            ),
        });
            overview.push(vec![
                info.summary.name.clone(),
                ctx.run_status
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "from an earlier invocation".into()),
                t.to_string(),
                if info.summary.tr.is_finite() {
                    format!("{} s", info.summary.tr)
                } else {
                    "n/a".into()
                },
                fmt_seconds(t as f64 * info.summary.tr),
                info.n_stimuli.to_string(),
            ]);
            report.runs.push(info.summary);
            Ok(())
        })();
        if let Err(e) = res {
            problems.push(format!("{}: {e}", run.id()));
        }
    }
    // runs selected in this invocation that left nothing on disk (skipped or failed)
    let on_disk: BTreeSet<String> = runs.iter().map(FoundRun::id).collect();
    for (id, status) in &ctx.run_status {
        if !on_disk.contains(id) {
            overview.push(vec![
                id.strip_prefix(&format!("sub-{subject}_"))
                    .unwrap_or(id)
                    .replace('_', " "),
                status.clone(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
            ]);
        }
    }

    for c in &contrasts {
        let res = (|| -> Result<()> {
            let z = read_map(&c.left, &c.right, 0)?;
            let name = entity(&c.entities, "contrast").unwrap_or("?").to_string();
            let scope: Vec<String> = c
                .entities
                .iter()
                .filter(|(k, _)| !["sub", "contrast", "stat", "space"].contains(&k.as_str()))
                .map(|(k, v)| format!("{k}-{v}"))
                .collect();
            let side = read_json(&sidecar_of(&c.left)).unwrap_or(Value::Null);
            let expression = ["Expression", "ContrastExpression", "Contrast", "Formula"]
                .iter()
                .find_map(|k| side[*k].as_str().map(str::to_string))
                .or_else(|| {
                    ctx.settings
                        .iter()
                        .find(|(k, _)| k == "Contrasts")
                        .and_then(|(_, v)| {
                            v.split(", ").find_map(|e| {
                                e.strip_prefix(&format!("{name}=")).map(str::to_string)
                            })
                        })
                })
                .unwrap_or_default();
            let n_shown = z.iter().filter(|v| v.abs() >= Z_THRESHOLD).count();
            let title = format!("sub-{subject} {} contrast {name}: z", scope.join(" "));
            let (img, style) = render_contrast_figure(&left, &right, &z, &title)?;
            let p = fig_dir.join(DerivName::new(c.entities.clone(), "statmap", ".png").file_name());
            save_png(&img, &p)?;
            let mut outputs: Vec<String> = Vec::new();
            for stat in ["effect", "variance", "t", "z"] {
                for f in [&c.left, &c.right] {
                    let n = f
                        .file_name()
                        .map(|n| {
                            n.to_string_lossy()
                                .replace("_stat-z_", &format!("_stat-{stat}_"))
                        })
                        .unwrap_or_default();
                    let p = f.with_file_name(n);
                    if p.is_file() {
                        outputs.push(rel(out, &p));
                    }
                }
            }
            report.contrasts.push(ContrastSummary {
            name: if scope.is_empty() {
                name.clone()
            } else {
                format!("{name} ({})", scope.join(" "))
            },
            expression,
            figure: Some(FigureRef {
                path: rel(out, &p),
                caption: format!(
                    "z map of contrast {name}, thresholded at |z| ≥ {Z_THRESHOLD} (p < 0.001 uncorrected; {n_shown} of {nv} vertices \
                     shown); symmetric colour limits ±{}. Warm: positive z (the contrast's positive terms larger); cool: negative z.",
                    crate::report::figure::format_tick(style.vmax)
                ),
            }),
            outputs,
        });
            Ok(())
        })();
        if let Err(e) = res {
            problems.push(format!("contrast map {}: {e}", c.left.display()));
        }
    }

    if let Some(MapPair {
        left: l,
        right: r,
        entities: ents,
    }) = &ica
        && let Err(e) = ica_section(
            out,
            subject,
            &fig_dir,
            &left,
            &right,
            l,
            r,
            ents,
            &mut report,
        )
    {
        problems.push(format!("ICA maps {}: {e}", l.display()));
    }

    let n_done = ctx
        .run_status
        .values()
        .filter(|s| s.as_str() == "done")
        .count();
    let n_kept = ctx
        .run_status
        .values()
        .filter(|s| s.starts_with("up to date"))
        .count();
    let n_skipped = ctx
        .run_status
        .values()
        .filter(|s| s.starts_with("skipped"))
        .count();
    let n_failed = ctx
        .run_status
        .values()
        .filter(|s| s.starts_with("FAILED"))
        .count();
    report.summary = vec![
        ("Subject".into(), format!("sub-{subject}")),
        (
            "Sessions".into(),
            if sessions.is_empty() {
                "none (single-session dataset)".into()
            } else {
                sessions.iter().cloned().collect::<Vec<_>>().join(", ")
            },
        ),
        ("Runs with predicted BOLD".into(), runs.len().to_string()),
        (
            "This invocation".into(),
            format!("{n_done} done, {n_kept} up to date, {n_skipped} skipped, {n_failed} failed"),
        ),
        (
            "Output space".into(),
            "fsaverage5 (10,242 vertices per hemisphere)".into(),
        ),
        ("Contrast maps".into(), contrasts.len().to_string()),
        (
            "ICA networks".into(),
            if ica.is_some() {
                report.networks.len().to_string()
            } else {
                "none at group level".into()
            },
        ),
    ];
    for (k, v) in &models {
        report
            .summary
            .push((format!("Model: {k}"), format!("sha256 {v}")));
    }
    report.overview = overview;
    report.provenance = Provenance {
        version: crate::VERSION.to_string(),
        command: ctx
            .command_line
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        date: utc_now(),
        software: ctx.settings.clone(),
        checksums: models.into_iter().collect(),
        references: references(!report.contrasts.is_empty(), !report.networks.is_empty()),
        methods: methods_text(
            &extractors,
            &features,
            report.contrasts.len(),
            !report.networks.is_empty(),
        ),
    };
    report.errors = ctx.errors.clone();
    report
        .errors
        .extend(problems.iter().map(|p| format!("report: {p}")));

    let page = html::render_html(&report);
    let missing = html::missing_links(&page, out);
    if !missing.is_empty() {
        return Err(Error::Other(format!(
            "sub-{subject}.html would link to missing files: {}",
            missing.join(", ")
        )));
    }
    crate::util::write_atomic(&out.join(format!("sub-{subject}.html")), page.as_bytes())?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "sub-{subject}.html was written without some sections:\n  {}\n  fix: rerun with --force to rewrite the outputs named above",
            problems.join("\n  ")
        )))
    }
}

/// DataArray `index` of both hemispheres as one 20,484-vertex map.
fn read_map(left: &Path, right: &Path, index: usize) -> Result<Vec<f32>> {
    let mut v = Vec::with_capacity(2 * fsaverage::N_VERTICES);
    for p in [left, right] {
        let img = read_gifti(p)?;
        let a = img
            .arrays
            .get(index)
            .and_then(|a| a.data.as_f32())
            .ok_or_else(|| Error::Gifti {
                path: p.to_path_buf(),
                message: format!("no float32 DataArray {index}"),
            })?;
        if a.len() != fsaverage::N_VERTICES {
            return Err(Error::Gifti {
                path: p.to_path_buf(),
                message: format!(
                    "{} values, fsaverage5 has {}",
                    a.len(),
                    fsaverage::N_VERTICES
                ),
            });
        }
        v.extend_from_slice(a);
    }
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn ica_section(
    out: &Path,
    subject: &str,
    fig_dir: &Path,
    left: &HemiSurface,
    right: &HemiSurface,
    l: &Path,
    r: &Path,
    ents: &[(String, String)],
    report: &mut ReportSummary,
) -> Result<()> {
    let (il, ir) = (read_gifti(l)?, read_gifti(r)?);
    let k = il.arrays.len().min(ir.arrays.len());
    // the decomposition JSON: same entities without hemi (and possibly without space)
    let dir = l.parent().unwrap_or(out);
    let base = without(ents, &["hemi"]);
    let json = [base.clone(), without(&base, &["space"])]
        .into_iter()
        .map(|e| dir.join(DerivName::new(e, "decomposition", ".json").file_name()))
        .find_map(|p| read_json(&p));
    for i in 0..k {
        let map = read_map(l, r, i)?;
        let key = format!("ICA_{i:02}");
        let comp = json
            .as_ref()
            .map(|j| j["Components"][&key].clone())
            .unwrap_or(Value::Null);
        let label = comp["Label"].as_str().map(str::to_string);
        let thr = abs_quantile(&map, 1.0 - ICA_TOP_FRACTION);
        let style = MapStyle::signed(&map, Some(thr), "loading");
        let title = format!(
            "ICA component {i}{}",
            label.as_ref().map(|l| format!(": {l}")).unwrap_or_default()
        );
        let img = render_surface_figure(
            left,
            right,
            &map,
            &style,
            &FigureOptions {
                title: Some(title),
                ..FigureOptions::default()
            },
        )?;
        let name = DerivName::new(base.clone(), "components", ".png")
            .with("sub", subject)
            .with("desc", &format!("ICA{i:02}"))
            .file_name();
        let p = fig_dir.join(name);
        save_png(&img, &p)?;
        report.networks.push(NetworkSummary {
            component: key,
            label,
            score: comp["Score"].as_f64(),
            weak_evidence: comp["WeakEvidence"].as_bool().unwrap_or(false),
            explained_variance: comp["ExplainedVariance"].as_f64(),
            figure: Some(FigureRef {
                path: rel(out, &p),
                caption: format!(
                    "Group ICA component {i} (model level, {}), top {:.0} % of |loading| shown (|loading| ≥ {}).",
                    rel(out, l),
                    ICA_TOP_FRACTION * 100.0,
                    crate::report::figure::format_tick(thr)
                ),
            }),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_dates_and_quantiles() {
        assert_eq!(shell_quote("--contrast"), "--contrast");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        let d = utc_now();
        assert!(d.ends_with(" UTC") && d.len() == 20, "{d}");
        assert_eq!(abs_quantile(&[1.0, -3.0, 2.0, f32::NAN], 1.0), 3.0);
        assert_eq!(abs_quantile(&[1.0, -3.0, 2.0], 0.0), 1.0);
    }

    #[test]
    fn events_summary_counts_trial_types() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.tsv");
        std::fs::write(
            &p,
            "onset\tduration\ttrial_type\n2\t1\tface\n3\t1\tface\n10\t2\tplace\n",
        )
        .unwrap();
        assert_eq!(
            events_summary(&p).unwrap(),
            "3 events (face 2, place 1), from 2.0 s to 12.0 s"
        );
    }

    #[test]
    fn figure_names_are_bids_like() {
        let run = FoundRun {
            entities: vec![
                ("sub".into(), "01".into()),
                ("task".into(), "movie".into()),
                ("run".into(), "1".into()),
            ],
            left: PathBuf::new(),
            right: PathBuf::new(),
        };
        assert_eq!(run.id(), "sub-01_task-movie_run-1");
        assert_eq!(
            run_figure_name(&run, "carpet", false),
            "sub-01_task-movie_run-1_desc-carpet_bold.png"
        );
        assert_eq!(
            run_figure_name(&run, "mean", true),
            "sub-01_task-movie_run-1_space-fsaverage5_desc-mean_bold.png"
        );
    }
}
