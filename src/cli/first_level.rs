//! Participant level, second half: predicted contrast maps from each run's predicted BOLD.
//!
//! A virtual experiment is analysed like a real one: the run's events give a nilearn-style
//! design matrix (one Glover-HRF regressor per `trial_type`, cosine drift, constant), the GLM is
//! fitted on the predicted BOLD of both hemispheres at once (20,484 vertices, AR(1) as nilearn's
//! `FirstLevelModel` does by default) and every requested contrast is written as effect, variance
//! and z maps per hemisphere, FitLins-style. Runs of the same task and session are then combined
//! by fixed effects into maps without the `run` entity.
//!
//! Why the GLM reads the predicted BOLD back from the written GIFTIs rather than taking it from
//! memory: the maps are then a function of the published files alone (an independent nilearn
//! analysis of the same files must agree, and the tests check that it does), the prediction
//! loop stays unchanged, and resumed runs need no special path.
//!
//! The frame times are the predicted BOLD sidecar's `VolumeAcquisitionTimes`: exactly the times
//! the participant pipeline aligned the predictions to (volume onsets plus the slice-time
//! reference, or `VolumeTiming`), so design and data can never disagree on the clock.
//!
//! Contrasts come from `--contrast NAME=EXPR`, from the run-level node of a BIDS Stats Model
//! (`-m`, FitLins convention), or by default one per condition against baseline. A contrast
//! applies to the runs whose design has all its conditions; naming a condition that no selected
//! run has is an error, caught by [`check_requests`] before any model is loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::analysis::contrast::{ContrastSpec as Weights, bids_label};
use crate::analysis::design::{
    DesignMatrix, DesignOptions, DriftModel, Event, make_first_level_design_matrix,
};
use crate::analysis::glm::{self, ContrastMaps, FixedEffectsWeighting, GlmOptions};
use crate::analysis::smdl::{self, StatsModel};
use crate::bids::Run;
use crate::bids::derivatives::{self, DerivName, json_bytes, raw_uri};
use crate::cli::bids_app::RunConfig;
use crate::cli::interrupt;
use crate::cli::participant::Outcome;
use crate::error::{Error, Result};
use crate::features::cache::CacheKey;
use crate::formats::gifti::{DataArray, GiftiImage, Hemisphere, read_gifti};
use crate::formats::{Intent, write_gifti};

/// Vertices per hemisphere on fsaverage5.
pub const N_VERTICES_PER_HEMI: usize = 10242;

/// The three maps written per contrast and hemisphere (FitLins `stat-` values).
pub const STATS: [&str; 3] = ["effect", "variance", "z"];

/// The GLM settings every run uses (nilearn `FirstLevelModel` defaults, no signal scaling:
/// predicted BOLD is in the model's standardized units with a mean near zero, where percent
/// signal change is undefined).
fn glm_options() -> GlmOptions {
    GlmOptions::default()
}

/// What the user asked for: a stats model and/or CLI contrasts (none: each condition).
struct Requests {
    model: Option<(PathBuf, StatsModel)>,
    cli: Vec<crate::cli::bids_app::ContrastSpec>,
}

fn load_requests(cfg: &RunConfig) -> Result<Requests> {
    let model = match &cfg.stats_model {
        None => None,
        Some(p) => {
            if !p.is_file() {
                return Err(Error::InputMissing {
                    path: p.clone(),
                    what: "the BIDS Stats Model given with -m/--model".into(),
                    fix:
                        "check the path (models are conventionally models/model-<label>_smdl.json)"
                            .into(),
                });
            }
            let m = smdl::read_stats_model(p).map_err(|e| match e {
                Error::Json { path, message, fix } => {
                    Error::StatsModelInvalid { path, message, fix }
                }
                other => other,
            })?;
            Some((p.clone(), m))
        }
    };
    Ok(Requests {
        model,
        cli: cfg.contrasts.clone(),
    })
}

/// The events of a run as design events: rows with an onset and a `trial_type` (others carry
/// no condition). `n/a` durations count as impulses; a `modulation` column scales the regressor
/// as in nilearn.
fn design_events(run: &Run) -> Vec<Event> {
    let Some(ev) = &run.events else {
        return Vec::new();
    };
    ev.rows
        .iter()
        .filter_map(|r| {
            let tt = r.trial_type.as_deref()?.trim();
            if tt.is_empty() {
                return None;
            }
            let mut e = Event::new(r.onset?, r.duration.unwrap_or(0.0).max(0.0), tt);
            if let Some(m) = r
                .get("modulation")
                .and_then(|m| m.trim().parse::<f64>().ok())
            {
                e.modulation = m;
            }
            Some(e)
        })
        .collect()
}

/// The design settings for a run: the stats model's run node (conditions in `Model.X`, HRF,
/// high-pass) when it applies to the run, else nilearn's defaults with every condition.
fn design_settings(
    req: &Requests,
    conditions: &BTreeSet<String>,
) -> (DesignOptions, Option<Vec<String>>) {
    let mut opts = DesignOptions::default();
    if let Some((_, m)) = &req.model
        && let Some(node) = m.run_node()
    {
        let x: Vec<String> = node
            .x
            .iter()
            .filter(|c| c.as_str() != "constant")
            .cloned()
            .collect();
        if x.is_empty() || x.iter().any(|c| conditions.contains(c)) {
            if let Some(h) = node.hrf {
                opts.hrf = h;
            }
            if let Some(hp) = node.high_pass_hz {
                opts.drift = DriftModel::Cosine { high_pass: hp };
            }
            return (opts, (!x.is_empty()).then_some(x));
        }
    }
    (opts, None)
}

/// One contrast of one run: its weights, its file label and where it came from.
#[derive(Debug, Clone)]
struct RunContrast {
    weights: Weights,
    label: String,
    origin: Value,
}

/// The contrasts that apply to a design. `known` is every condition of every selected run: a
/// contrast naming one of those that this run lacks is skipped for this run; naming anything
/// else is an error.
fn run_contrasts(
    req: &Requests,
    columns: &[String],
    conditions: &[String],
    known: &BTreeSet<String>,
) -> Result<Vec<RunContrast>> {
    let not_here =
        |e: &Error| matches!(e, Error::UnknownCondition { name, .. } if known.contains(name));
    let mut out: Vec<RunContrast> = Vec::new();
    if let Some((path, m)) = &req.model {
        let node = m.run_node().map(|n| n.name.clone()).unwrap_or_default();
        for spec in m.run_contrasts() {
            match spec.vector(columns) {
                Ok(_) => out.push(RunContrast {
                    label: bids_label(&spec.name),
                    origin: json!({"Source": "BIDS Stats Model", "File": path.display().to_string(), "Node": node, "Name": spec.name}),
                    weights: spec,
                }),
                Err(e) if not_here(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for c in &req.cli {
        match Weights::parse_cli(&format!("{}={}", c.name, c.expr), columns) {
            Ok(w) => out.push(RunContrast {
                label: c.name.clone(),
                origin: json!({"Source": "command line", "Expression": c.expr}),
                weights: w,
            }),
            Err(e) if not_here(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if req.model.is_none() && req.cli.is_empty() {
        for c in conditions {
            out.push(RunContrast {
                label: bids_label(c),
                origin: json!({"Source": "default: each condition against baseline"}),
                weights: Weights {
                    name: c.clone(),
                    weights: vec![(c.clone(), 1.0)],
                },
            });
        }
    }
    // Two contrasts may not write the same files with different weights.
    let mut seen: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut unique = Vec::new();
    for c in out {
        let v = c.weights.vector(columns)?;
        match seen.get(&c.label) {
            Some(prev) if *prev == v => continue,
            Some(_) => {
                return Err(Error::Usage(format!(
                    "two different contrasts are both named '{}' (file label contrast-{}): rename one",
                    c.weights.name, c.label
                )));
            }
            None => {
                seen.insert(c.label.clone(), v);
                unique.push(c);
            }
        }
    }
    Ok(unique)
}

/// Every condition name in the selected runs.
fn known_conditions<'a>(runs: impl IntoIterator<Item = &'a Run>) -> BTreeSet<String> {
    runs.into_iter()
        .flat_map(design_events)
        .map(|e| e.trial_type)
        .collect()
}

/// Check the contrast options against the selected runs before any model is loaded, so that a
/// typo costs seconds, not a prediction: the stats model must parse (exit 78 otherwise) and every
/// condition a contrast names must exist in some selected run (exit 2 otherwise).
pub fn check_requests(cfg: &RunConfig, runs: &[Run]) -> Result<()> {
    let req = load_requests(cfg)?;
    let known = known_conditions(runs);
    let mut columns: Vec<String> = known.iter().cloned().collect();
    columns.push("constant".into());
    for c in &req.cli {
        Weights::parse_cli(&format!("{}={}", c.name, c.expr), &columns)?;
    }
    if let Some((_, m)) = &req.model {
        for spec in m.run_contrasts() {
            spec.vector(&columns)?;
        }
    }
    Ok(())
}

fn ents(run: &Run) -> Vec<(String, String)> {
    run.entities
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The predicted BOLD of a run, as the participant pipeline names it.
pub fn predicted_bold_name(entities: &[(String, String)], hemi: &str) -> DerivName {
    DerivName::new(entities.to_vec(), "bold", ".func.gii")
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("desc", "predicted")
}

/// `…_hemi-<h>_space-fsaverage5_contrast-<c>_stat-<s>_statmap.func.gii`.
pub fn statmap_name(
    entities: &[(String, String)],
    hemi: &str,
    contrast: &str,
    stat: &str,
) -> DerivName {
    DerivName::new(entities.to_vec(), "statmap", ".func.gii")
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("contrast", contrast)
        .with("stat", stat)
}

fn design_name(entities: &[(String, String)]) -> DerivName {
    DerivName::new(entities.to_vec(), "design", ".tsv")
}

/// A BIDS URI inside the output dataset (`bids::sub-01/func/…`).
fn out_uri(name: &DerivName) -> String {
    format!(
        "bids::{}/{}",
        name.folder("func").to_string_lossy().replace('\\', "/"),
        name.file_name()
    )
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
        fix: "rerun the participant level with --force to rewrite it".into(),
    })
}

/// The maps of one contrast over both hemispheres (20,484 values each).
struct Fitted {
    contrast: RunContrast,
    maps: ContrastMaps,
}

/// Everything known about one run before fitting.
struct RunJob<'a> {
    run: &'a Run,
    entities: Vec<(String, String)>,
    design: DesignMatrix,
    contrasts: Vec<RunContrast>,
    fingerprint: String,
    bold: [PathBuf; 2],
    bold_sidecar: Value,
    options: DesignOptions,
}

fn plan_run<'a>(
    cfg: &RunConfig,
    req: &Requests,
    run: &'a Run,
    known: &BTreeSet<String>,
) -> Result<Option<RunJob<'a>>> {
    let events = design_events(run);
    if events.is_empty() {
        return Ok(None);
    }
    let conditions: BTreeSet<String> = events.iter().map(|e| e.trial_type.clone()).collect();
    let (options, keep) = design_settings(req, &conditions);
    let events: Vec<Event> = match &keep {
        Some(x) => events
            .into_iter()
            .filter(|e| x.contains(&e.trial_type))
            .collect(),
        None => events,
    };
    let entities = ents(run);
    let dir = cfg
        .output_dir
        .join(predicted_bold_name(&entities, "L").folder("func"));
    let bold = ["L", "R"].map(|h| dir.join(predicted_bold_name(&entities, h).file_name()));
    let sidecars = ["L", "R"].map(|h| dir.join(predicted_bold_name(&entities, h).sidecar_name()));
    let side_l = read_json(&sidecars[0])?;
    let side_r = read_json(&sidecars[1])?;
    let frame_times: Vec<f64> = side_l["VolumeAcquisitionTimes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .ok_or_else(|| Error::AnalysisInput {
            what: sidecars[0].display().to_string(),
            message:
                "no VolumeAcquisitionTimes: the volume times of the predicted BOLD are unknown"
                    .into(),
            fix: "rerun the participant level with --force (older outputs lack the field)".into(),
        })?;
    let design = make_first_level_design_matrix(&frame_times, &events, &options)?;
    let contrasts = run_contrasts(req, &design.columns, design.conditions(), known)?;
    if contrasts.is_empty() {
        tracing::info!(
            "{}: none of the requested contrasts applies to this run",
            run.id()
        );
        return Ok(None);
    }
    let mut k = CacheKey::new("first-level");
    k.add_str("version", crate::VERSION);
    for s in [&side_l, &side_r] {
        k.add_str(
            "predicted",
            s["TribeBidsFingerprint"].as_str().unwrap_or(""),
        );
    }
    k.add_str("design", &design.to_tsv());
    k.add_str("design-options", &format!("{options:?}"));
    k.add_str("glm", &format!("{:?}", glm_options()));
    for c in &contrasts {
        k.add_str("contrast", &c.label);
        for w in c.weights.vector(&design.columns)? {
            k.add_f64("w", w);
        }
        k.add_str("origin", &c.origin.to_string());
    }
    Ok(Some(RunJob {
        run,
        entities,
        design,
        contrasts,
        fingerprint: k.hex(),
        bold,
        bold_sidecar: side_l,
        options,
    }))
}

/// Output files of a run (or of a fixed-effects combination): statmaps and their sidecars, and
/// the design for a single run.
fn outputs(
    cfg: &RunConfig,
    entities: &[(String, String)],
    labels: &[String],
    with_design: bool,
) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for l in labels {
        for h in ["L", "R"] {
            for s in STATS {
                let n = statmap_name(entities, h, l, s);
                let dir = cfg.output_dir.join(n.folder("func"));
                v.push(dir.join(n.file_name()));
                v.push(dir.join(n.sidecar_name()));
            }
        }
    }
    if with_design {
        let n = design_name(entities);
        let dir = cfg.output_dir.join(n.folder("func"));
        v.push(dir.join(n.file_name()));
        v.push(dir.join(n.sidecar_name()));
    }
    v
}

/// Whether every output exists and every sidecar among them carries `fingerprint`.
fn up_to_date(files: &[PathBuf], fingerprint: &str) -> bool {
    files.iter().all(|f| f.is_file())
        && files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
            .all(|f| read_json(f).is_ok_and(|v| v["TribeBidsFingerprint"] == json!(fingerprint)))
}

/// Read both hemispheres of a predicted BOLD into one time-major `n_volumes x 20,484` buffer.
pub fn read_predicted(bold: &[PathBuf; 2]) -> Result<(usize, Vec<f32>)> {
    let mut halves = Vec::with_capacity(2);
    for p in bold {
        let (nv, data) = read_gifti(p)?.time_series_f32(p)?;
        if nv != N_VERTICES_PER_HEMI {
            return Err(Error::Gifti {
                path: p.clone(),
                message: format!("{nv} vertices per volume, fsaverage5 has {N_VERTICES_PER_HEMI}"),
            });
        }
        halves.push(data);
    }
    let n = halves[0].len() / N_VERTICES_PER_HEMI;
    if halves[1].len() != halves[0].len() {
        return Err(Error::Gifti {
            path: bold[1].clone(),
            message: format!(
                "{} volumes, the left hemisphere has {n}",
                halves[1].len() / N_VERTICES_PER_HEMI
            ),
        });
    }
    let mut y = Vec::with_capacity(n * 2 * N_VERTICES_PER_HEMI);
    for t in 0..n {
        for h in &halves {
            y.extend_from_slice(&h[t * N_VERTICES_PER_HEMI..(t + 1) * N_VERTICES_PER_HEMI]);
        }
    }
    Ok((n, y))
}

/// One statistic map of one hemisphere as a GIFTI: a single float32 DataArray over vertices.
pub fn write_map(
    path: &Path,
    hemi: &str,
    stat: &str,
    values: &[f64],
    description: &str,
) -> Result<()> {
    let h = if hemi == "L" {
        Hemisphere::Left
    } else {
        Hemisphere::Right
    };
    let intent = match stat {
        "z" => Intent::ZSCORE,
        "t" => Intent::TTEST,
        _ => Intent::ESTIMATE,
    };
    let mut img = GiftiImage::for_hemisphere(h);
    img.meta.insert("Description", description);
    img.arrays.push(
        DataArray::vertex_map(intent, values.iter().map(|v| *v as f32).collect())
            .with_meta("Name", stat),
    );
    write_gifti(path, &img)
}

fn hemi_slice<'a>(v: &'a [f64], hemi: &str) -> &'a [f64] {
    if hemi == "L" {
        &v[..N_VERTICES_PER_HEMI]
    } else {
        &v[N_VERTICES_PER_HEMI..]
    }
}

fn stat_values<'a>(m: &'a ContrastMaps, stat: &str) -> &'a [f64] {
    match stat {
        "effect" => &m.effect,
        "variance" => &m.variance,
        "t" => &m.t,
        _ => &m.z,
    }
}

const STAT_WORDS: [(&str, &str); 4] = [
    (
        "effect",
        "contrast estimate (effect size) in the predicted BOLD's units",
    ),
    ("variance", "variance of the contrast estimate"),
    ("t", "t statistic"),
    ("z", "z statistic (from t, nilearn's rule)"),
];

fn stat_word(stat: &str) -> &'static str {
    STAT_WORDS
        .iter()
        .find(|(s, _)| *s == stat)
        .map(|(_, w)| *w)
        .unwrap_or("")
}

/// Write effect/variance/z of every contrast for both hemispheres, sidecars last.
#[allow(clippy::too_many_arguments)]
fn write_contrasts(
    cfg: &RunConfig,
    entities: &[(String, String)],
    fitted: &[Fitted],
    task_name: &Value,
    common: &Value,
    fingerprint: &str,
) -> Result<()> {
    let mut sidecars = Vec::new();
    for f in fitted {
        for h in ["L", "R"] {
            for s in STATS {
                let n = statmap_name(entities, h, &f.contrast.label, s);
                let dir = cfg.output_dir.join(n.folder("func"));
                let what = format!(
                    "TRIBE v2 predicted contrast '{}': {}",
                    f.contrast.weights.name,
                    stat_word(s)
                );
                write_map(
                    &dir.join(n.file_name()),
                    h,
                    s,
                    hemi_slice(stat_values(&f.maps, s), h),
                    &what,
                )?;
                let mut side = common.clone();
                side["Description"] = json!(format!(
                    "{what}, from a first-level GLM of the TRIBE v2 predicted BOLD (a model prediction, not measured data)"
                ));
                side["TaskName"] = task_name.clone();
                side["SpatialReference"] = derivatives::fsaverage5_spatial_reference(h);
                side["Contrast"] = json!({
                    "Name": f.contrast.weights.name,
                    "Label": f.contrast.label,
                    "ConditionList": f.contrast.weights.weights.iter().map(|(c, _)| c).collect::<Vec<_>>(),
                    "Weights": f.contrast.weights.weights.iter().map(|(_, w)| w).collect::<Vec<_>>(),
                    "Test": "t",
                    "Origin": f.contrast.origin,
                });
                side["Statistic"] = json!(s);
                side["DegreesOfFreedom"] = json!(f.maps.dof);
                side["TribeBidsFingerprint"] = json!(fingerprint);
                sidecars.push((dir.join(n.sidecar_name()), side));
            }
        }
    }
    for (p, side) in sidecars {
        crate::util::write_atomic(&p, &json_bytes(&side))?;
    }
    Ok(())
}

fn generated_by(cfg: &RunConfig) -> Value {
    json!({"Name": derivatives::PIPELINE_NAME, "Version": crate::VERSION, "CommandLine": cfg.command_line.join(" ")})
}

fn fit_run(cfg: &RunConfig, job: &RunJob) -> Result<Vec<Fitted>> {
    let (n, y) = read_predicted(&job.bold)?;
    if n != job.design.n_rows() {
        return Err(Error::AnalysisInput {
            what: job.bold[0].display().to_string(),
            message: format!(
                "{n} volumes, but its sidecar lists {} volume times",
                job.design.n_rows()
            ),
            fix: "rerun the participant level with --force".into(),
        });
    }
    let opts = glm_options();
    let fit = glm::fit(&y, 2 * N_VERTICES_PER_HEMI, &job.design, &opts)?;
    drop(y);
    let mut fitted = Vec::new();
    for c in &job.contrasts {
        let v = c.weights.vector(&job.design.columns)?;
        fitted.push(Fitted {
            contrast: c.clone(),
            maps: fit.contrast(&c.weights.name, &v)?,
        });
    }
    let run = job.run;
    let mut sources = vec![json!(raw_uri(&cfg.bids_dir, &run.bold))];
    if let Some(e) = &run.events_path {
        sources.push(json!(raw_uri(&cfg.bids_dir, e)));
    }
    for h in ["L", "R"] {
        sources.push(json!(out_uri(&predicted_bold_name(&job.entities, h))));
    }
    let dname = design_name(&job.entities);
    let design_info = json!({
        "File": out_uri(&dname),
        "Columns": job.design.columns,
        "Conditions": job.design.conditions(),
        "HRF": job.options.hrf.name(),
        "DriftModel": match job.options.drift {
            DriftModel::Cosine { .. } => "cosine",
            DriftModel::Polynomial { .. } => "polynomial",
            DriftModel::None => "none",
        },
        "HighPassFilterCutoffHz": match job.options.drift { DriftModel::Cosine { high_pass } => json!(high_pass), _ => Value::Null },
        "Oversampling": job.options.oversampling,
        "MinOnset": job.options.min_onset,
        "FrameTimes": "the predicted BOLD sidecar's VolumeAcquisitionTimes (volume onsets plus the slice-time reference)",
    });
    let common = json!({
        "Sources": sources,
        "Design": design_info,
        "NoiseModel": {"Name": opts.noise_model.name(), "ARBins": opts.bins, "Equivalent": "nilearn FirstLevelModel(noise_model='ar1', signal_scaling=False)"},
        "SignalScaling": false,
        "GeneratedBy": generated_by(cfg),
    });
    let task_name = json!(run.task_name().unwrap_or(run.task()));
    write_contrasts(
        cfg,
        &job.entities,
        &fitted,
        &task_name,
        &common,
        &job.fingerprint,
    )?;
    let dir = cfg.output_dir.join(dname.folder("func"));
    crate::util::write_atomic(&dir.join(dname.file_name()), job.design.to_tsv().as_bytes())?;
    let mut dside = common.clone();
    dside.as_object_mut().map(|o| o.remove("Design"));
    dside["Description"] = json!(
        "First-level design matrix of the GLM on the TRIBE v2 predicted BOLD (nilearn make_first_level_design_matrix layout: conditions, drift_<k>, constant; one row per volume)"
    );
    dside["TaskName"] = task_name;
    dside["Design"] = design_info_without_file(&common["Design"]);
    dside["FrameTimes"] = json!(job.design.frame_times);
    match (
        job.bold_sidecar.get("RepetitionTime"),
        job.bold_sidecar.get("VolumeTiming"),
    ) {
        (Some(tr), _) => dside["RepetitionTime"] = tr.clone(),
        (None, Some(vt)) => dside["VolumeTiming"] = vt.clone(),
        _ => {}
    }
    dside["TribeBidsFingerprint"] = json!(job.fingerprint);
    crate::util::write_atomic(&dir.join(dname.sidecar_name()), &json_bytes(&dside))?;
    Ok(fitted)
}

fn design_info_without_file(d: &Value) -> Value {
    let mut d = d.clone();
    d.as_object_mut().map(|o| o.remove("File"));
    d
}

/// Fixed effects of a contrast over the runs of one task/session: maps without the `run`
/// entity. Precision-weighted (nilearn `compute_fixed_effects(precision_weighted=True)`, dof =
/// the sum of the runs' dofs): a run whose prediction fits the design better counts more.
fn write_fixed_effects(
    cfg: &RunConfig,
    entities: &[(String, String)],
    members: &[(&RunJob, &[Fitted])],
    fingerprint: &str,
) -> Result<()> {
    let mut labels: Vec<String> = Vec::new();
    for (_, f) in members {
        for x in f.iter() {
            if !labels.contains(&x.contrast.label) {
                labels.push(x.contrast.label.clone());
            }
        }
    }
    let mut combined = Vec::new();
    let mut runs_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &labels {
        let maps: Vec<(&RunJob, &Fitted)> = members
            .iter()
            .filter_map(|(j, f)| f.iter().find(|x| &x.contrast.label == l).map(|x| (*j, x)))
            .collect();
        if maps.len() < 2 {
            continue;
        }
        let fx = glm::fixed_effects(
            &maps.iter().map(|(_, f)| &f.maps).collect::<Vec<_>>(),
            FixedEffectsWeighting::Precision,
        )?;
        runs_of.insert(l.clone(), maps.iter().map(|(j, _)| j.run.id()).collect());
        combined.push(Fitted {
            contrast: maps[0].1.contrast.clone(),
            maps: fx,
        });
    }
    if combined.is_empty() {
        return Ok(());
    }
    let first = members[0].0.run;
    let mut sources = Vec::new();
    for (j, _) in members {
        for l in &labels {
            for h in ["L", "R"] {
                sources.push(json!(out_uri(&statmap_name(&j.entities, h, l, "effect"))));
                sources.push(json!(out_uri(&statmap_name(&j.entities, h, l, "variance"))));
            }
        }
    }
    let common = json!({
        "Sources": sources,
        "FixedEffects": {
            "Method": "precision-weighted fixed effects over runs (nilearn compute_fixed_effects, precision_weighted=True; dof = sum of the runs' dofs)",
            "Runs": runs_of,
        },
        "GeneratedBy": generated_by(cfg),
    });
    let task_name = json!(first.task_name().unwrap_or(first.task()));
    write_contrasts(cfg, entities, &combined, &task_name, &common, fingerprint)
}

/// The first-level analysis of every run the participant level predicted (Done or UpToDate).
/// Returns the failures as outcomes (`<run> (contrasts)`), so the end-of-job table shows them and
/// the exit code is the first failure's; successes add nothing to the table.
pub fn write_first_level(
    cfg: &RunConfig,
    runs: &[Run],
    outcomes: &[(String, Outcome)],
) -> Result<Vec<(String, Outcome)>> {
    let predicted: BTreeSet<&str> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Done | Outcome::UpToDate))
        .map(|(id, _)| id.as_str())
        .collect();
    let runs: Vec<&Run> = runs
        .iter()
        .filter(|r| predicted.contains(r.id().as_str()))
        .collect();
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut failures = Vec::new();
    let req = match load_requests(cfg) {
        Ok(r) => r,
        Err(e) => return Ok(vec![("contrasts".into(), Outcome::Failed(e))]),
    };
    let known = known_conditions(runs.iter().copied());
    // Plan each run, grouped by everything but the run entity (the fixed-effects unit).
    let mut groups: BTreeMap<Vec<(String, String)>, Vec<RunJob>> = BTreeMap::new();
    for run in runs {
        match plan_run(cfg, &req, run, &known) {
            Ok(Some(job)) => {
                let key: Vec<(String, String)> = job
                    .entities
                    .iter()
                    .filter(|(k, _)| k != "run")
                    .cloned()
                    .collect();
                groups.entry(key).or_default().push(job);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!("{} (contrasts): {e}", run.id());
                failures.push((format!("{} (contrasts)", run.id()), Outcome::Failed(e)));
            }
        }
    }
    for (key, jobs) in groups {
        interrupt::check()?;
        let multi = jobs.len() >= 2;
        let mut fx = CacheKey::new("fixed-effects");
        for j in &jobs {
            fx.add_str("run", &j.fingerprint);
        }
        let fx_fp = fx.hex();
        let all_labels: Vec<String> = {
            let mut l: Vec<String> = Vec::new();
            for j in &jobs {
                for c in &j.contrasts {
                    if !l.contains(&c.label) {
                        l.push(c.label.clone());
                    }
                }
            }
            l
        };
        let combined_labels: Vec<String> = all_labels
            .iter()
            .filter(|l| {
                jobs.iter()
                    .filter(|j| j.contrasts.iter().any(|c| &c.label == *l))
                    .count()
                    >= 2
            })
            .cloned()
            .collect();
        let current = jobs.iter().all(|j| {
            let labels: Vec<String> = j.contrasts.iter().map(|c| c.label.clone()).collect();
            up_to_date(&outputs(cfg, &j.entities, &labels, true), &j.fingerprint)
        }) && (!multi
            || up_to_date(&outputs(cfg, &key, &combined_labels, false), &fx_fp));
        if current && !cfg.force {
            tracing::info!("contrasts of {} run(s) up to date", jobs.len());
            continue;
        }
        let mut fitted: Vec<(&RunJob, Vec<Fitted>)> = Vec::new();
        for j in &jobs {
            interrupt::check()?;
            tracing::info!(
                "{}: first-level GLM ({} contrast(s))",
                j.run.id(),
                j.contrasts.len()
            );
            match fit_run(cfg, j) {
                Ok(f) => fitted.push((j, f)),
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    tracing::error!("{} (contrasts): {e}", j.run.id());
                    failures.push((format!("{} (contrasts)", j.run.id()), Outcome::Failed(e)));
                }
            }
        }
        if multi && fitted.len() >= 2 {
            let members: Vec<(&RunJob, &[Fitted])> =
                fitted.iter().map(|(j, f)| (*j, f.as_slice())).collect();
            if let Err(e) = write_fixed_effects(cfg, &key, &members, &fx_fp) {
                let id = DerivName::new(key.clone(), "x", "").file_name();
                let id = id.trim_end_matches("_x").to_string();
                tracing::error!("{id} (fixed effects): {e}");
                failures.push((format!("{id} (fixed effects)"), Outcome::Failed(e)));
            }
        }
    }
    Ok(failures)
}
