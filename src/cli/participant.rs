//! The participant level: every selected run, from events to predicted-BOLD derivatives.
//!
//! Order of work, chosen for memory and reuse: plan every run first (a bad events file fails
//! before any model loads); skip runs whose outputs and provenance already match; extract
//! features modality by modality (one foundation model in memory at a time, each loaded only on
//! a cache miss); then run the brain model per run, streaming volumes into the GIFTI writers.
//! Sidecars are written last, so a run is finished exactly when its sidecars exist: a killed job
//! leaves no partial file (all writes are temp-then-rename) and the rerun redoes only that run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::bids::Run;
use crate::bids::derivatives::{self, DerivName, Provenance, json_bytes, raw_uri};
use crate::cli::bids_app::{Modality, RunConfig, TextContext};
use crate::cli::{interrupt, progress};
use crate::error::{Error, Result};
use crate::features::cache::{FeatureCache, FeatureFile};
use crate::formats::gifti::Hemisphere;
use crate::formats::{GiftiTimeSeriesWriter, TimeSeriesOptions};
use crate::model::models_dir::{self, Role};
use crate::model::{ModelOptions, TribeModel};
use crate::predict::alignment::{ALIGNMENT_RULE, HEMODYNAMIC_OFFSET_S};
use crate::predict::overlap::overlapped;
use crate::predict::run::{
    Extractors, FfmpegProbe, RunSchedule, check_feature_dims, predict_volumes, timeline_has,
};
use crate::predict::subcortical::{self, SubcorticalHead};
use crate::stimulus::timeline::{StimEvent, Timeline};

/// What happened to one run.
#[derive(Debug)]
pub enum Outcome {
    Done,
    UpToDate,
    Skipped(String),
    Failed(Error),
}

/// One run with everything decided before any model runs.
struct PlannedRun<'a> {
    run: &'a Run,
    timeline: Timeline,
    sched: RunSchedule,
    tr: Option<f64>,
    fingerprint: String,
    outputs: Vec<PathBuf>,
}

const N_VERTICES_PER_HEMI: usize = 10242;

fn stim_events(run: &Run) -> Vec<StimEvent> {
    let Some(ev) = &run.events else {
        return Vec::new();
    };
    let path = run.events_path.clone().unwrap_or_default();
    ev.rows
        .iter()
        .filter_map(|r| {
            let onset = r.onset?;
            let stim_file = r
                .stim_file
                .as_ref()
                .and_then(|s| run.stimuli.iter().find(|x| &x.stim_file == s))
                .map(|x| x.path.clone());
            Some(StimEvent {
                onset,
                duration: r.duration,
                trial_type: r.trial_type.clone(),
                stim_file,
                word: r.word.clone(),
                source: path.clone(),
                line: r.line,
            })
        })
        .collect()
}

/// Volume times: onsets plus the slice-time reference. Without `SliceTiming` (or `StartTime`)
/// nothing says when within the volume the slices were taken, so the volume onset is used, which
/// is the reference pipeline's row/volume correspondence (volume k ↔ row k − 5 at TR 1 s).
fn volume_times(run: &Run, n: usize) -> Result<Vec<f64>> {
    let t = &run.timing;
    let has_ref = t.start_time.is_some() || t.slice_timing.is_some();
    let frac = crate::bids::DEFAULT_SLICE_TIME_REF;
    if has_ref {
        t.acquisition_times(n, frac, &run.bold)
    } else {
        (0..n)
            .map(|k| {
                t.volume_onset(k).ok_or_else(|| Error::DatasetInvalid {
                    path: run.bold.clone(),
                    reason: format!("VolumeTiming has no onset for volume {k}"),
                    fix: "VolumeTiming needs one onset per volume".into(),
                })
            })
            .collect()
    }
}

fn volume_count(run: &Run, timeline: &Timeline) -> Result<usize> {
    if let Some(n) = run.n_volumes {
        return Ok(n);
    }
    if let Some(n) = run.timing.n_volumes_hint() {
        return Ok(n);
    }
    match run.timing.repetition_time {
        // No image header: cover the stimulus and the hemodynamic lag.
        Some(tr) => Ok(((timeline.end() + HEMODYNAMIC_OFFSET_S) / tr)
            .ceil()
            .max(1.0) as usize),
        None => Err(Error::MissingTiming {
            path: run.bold.clone(),
            reason: "no RepetitionTime".into(),
            fix: "add RepetitionTime to the bold sidecar".into(),
        }),
    }
}

fn out_name(run: &Run, hemi: &str) -> DerivName {
    let ents: Vec<(String, String)> = run
        .entities
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    DerivName::new(ents, "bold", ".func.gii")
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("desc", "predicted")
}

/// Everything that changes a run's outputs, hashed: a rerun with the same fingerprint skips.
fn fingerprint(
    run: &Run,
    timeline: &Timeline,
    sched: &RunSchedule,
    cfg: &RunConfig,
    model_sha: &str,
    ex: &Extractors,
    sub: Option<&SubcorticalHead>,
) -> Result<String> {
    let mut k = crate::features::cache::CacheKey::new("run-outputs");
    k.add_str("version", crate::VERSION)
        .add_str("brain", model_sha);
    for m in Modality::ALL {
        k.add_str(
            m.name(),
            if cfg.modalities.contains(&m) {
                ex.identity(m).unwrap_or("absent")
            } else {
                "dropped"
            },
        );
    }
    k.add_str(
        "text-context",
        if cfg.text_context == TextContext::Exact {
            "exact"
        } else {
            "fast"
        },
    );
    k.add_str("subject-index", &format!("{:?}", cfg.subject_index));
    k.add_str("cifti", if cfg.cifti_output { "1" } else { "0" });
    if cfg.run_ica {
        k.add_str("run-ica", &cfg.ica_components.to_string());
    }
    if let Some(s) = sub {
        k.add_str("subcortical", &s.identity());
    }
    if let Some(p) = &run.events_path {
        k.add_file("events", p)?;
    }
    for s in timeline
        .visual
        .iter()
        .map(|s| &s.path)
        .chain(timeline.audio.iter().map(|s| &s.path))
        .chain(timeline.transcripts.iter())
    {
        k.add_file("stimulus", s)?;
    }
    for t in &sched.volume_times {
        k.add_f64("t", *t);
    }
    Ok(k.hex())
}

fn sidecar_json(
    p: &PlannedRun,
    cfg: &RunConfig,
    hemi: &str,
    model: &TribeModel,
    model_sha: &str,
    ex: &Extractors,
    used: &[Modality],
) -> Value {
    let run = p.run;
    let mut sources = vec![json!(raw_uri(&cfg.bids_dir, &run.bold))];
    if let Some(e) = &run.events_path {
        sources.push(json!(raw_uri(&cfg.bids_dir, e)));
    }
    for s in &run.stimuli {
        sources.push(json!(raw_uri(&cfg.bids_dir, &s.path)));
    }
    let mut extractors = serde_json::Map::new();
    for m in used {
        let dir = match m {
            Modality::Text => &ex.text,
            Modality::Audio => &ex.audio,
            Modality::Video => &ex.video,
        };
        extractors.insert(
            m.name().into(),
            json!({"Model": dir.as_ref().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()), "Identity": ex.identity(*m)}),
        );
    }
    let mut v = json!({
        "Description": "BOLD time series predicted by TRIBE v2 from this run's stimuli (a model prediction, not measured data).",
        "Sources": sources,
        "TaskName": run.task_name().unwrap_or(run.task()),
        "SpatialReference": derivatives::fsaverage5_spatial_reference(hemi),
        "SliceTimingCorrected": false,
        "Units": "arbitrary (the model's standardized BOLD units)",
        "Model": {
            "Name": "TRIBE v2 (FmriEncoder)",
            "Checkpoint": model.weights_path().file_name().map(|n| n.to_string_lossy().into_owned()),
            "Sha256": model_sha,
            "SubjectRow": model.subject_row(),
        },
        "FeatureExtractors": extractors,
        "FeaturesUsed": used.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "TextContext": if cfg.text_context == TextContext::Exact { "exact" } else { "fast" },
        "CpuMatrixLibrary": crate::features::blas::describe(),
        "AlignmentRule": ALIGNMENT_RULE,
        "VolumeAcquisitionTimes": p.sched.volume_times,
        "GeneratedBy": {"Name": derivatives::PIPELINE_NAME, "Version": crate::VERSION, "CommandLine": cfg.command_line.join(" ")},
        "TribeBidsFingerprint": p.fingerprint,
    });
    match (&run.timing.volume_timing, p.tr) {
        (Some(vt), _) => v["VolumeTiming"] = json!(vt),
        (None, Some(tr)) => v["RepetitionTime"] = json!(tr),
        _ => {}
    }
    v
}

fn is_up_to_date(p: &PlannedRun) -> bool {
    p.outputs.iter().all(|o| o.is_file())
        && p.outputs
            .iter()
            .filter(|o| o.extension().is_some_and(|e| e == "json"))
            .all(|o| {
                std::fs::read(o)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|v| v["TribeBidsFingerprint"] == json!(p.fingerprint))
            })
}

/// Run the participant level. Returns the per-run outcomes (the caller prints the summary).
pub fn run_participants(
    cfg: &RunConfig,
    layout_desc: &crate::bids::DatasetDescription,
    runs: &[Run],
) -> Result<Vec<(String, Outcome)>> {
    let job_start = std::time::Instant::now();
    interrupt::install();
    let prov = Provenance::current(cfg.command_line.clone());
    let raw_desc = Value::Object(layout_desc.raw.clone());
    derivatives::init_output_dataset(&cfg.output_dir, &cfg.bids_dir, &raw_desc, &prov)?;

    // Models: the brain model always; extractors for the modalities the runs use.
    let wanted: Vec<Role> = cfg
        .modalities
        .iter()
        .map(|m| match m {
            Modality::Text => Role::Text,
            Modality::Audio => Role::Audio,
            Modality::Video => Role::Video,
        })
        .collect();
    let models = models_dir::resolve(&cfg.models_dir, &[])?;
    let device = cfg.device.to_device()?;
    tracing::info!("loading the brain model {}", models.brain.display());
    let model = TribeModel::load(
        &models.brain,
        &device,
        ModelOptions {
            subject_index: cfg.subject_index,
            ..Default::default()
        },
    )?;
    let model_sha = crate::model::checkpoint::file_sha256(model.weights_path())?;
    let sub = match &cfg.subcortical_checkpoint {
        Some(dir) => Some(SubcorticalHead::load(dir, &device, &model)?),
        None => None,
    };
    let keep = |m: Modality, p: Option<std::path::PathBuf>| {
        if cfg.modalities.contains(&m) { p } else { None }
    };
    let mut ex = Extractors::new(
        keep(Modality::Text, models.text.clone()),
        keep(Modality::Audio, models.audio.clone()),
        keep(Modality::Video, models.video.clone()),
        cfg.text_context,
        device.clone(),
    )?;
    let _ = wanted;
    let cache = FeatureCache::new(&cfg.work_dir)?;
    let window_s = model.timing().window_seconds();

    // Plan.
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    let mut planned: Vec<PlannedRun> = Vec::new();
    for run in runs {
        let id = run.id();
        let plan = (|| -> Result<Option<PlannedRun>> {
            let timeline = Timeline::from_events(&stim_events(run), &FfmpegProbe)?;
            let usable = cfg.modalities.iter().any(|m| timeline_has(&timeline, *m));
            if timeline.is_empty() || !usable {
                return Ok(None);
            }
            let n = volume_count(run, &timeline)?;
            let sched = RunSchedule::new(&timeline, volume_times(run, n)?);
            let fingerprint =
                fingerprint(run, &timeline, &sched, cfg, &model_sha, &ex, sub.as_ref())?;
            let mut outputs = Vec::new();
            for hemi in ["L", "R"] {
                let name = out_name(run, hemi);
                let dir = cfg.output_dir.join(name.folder("func"));
                outputs.push(dir.join(name.file_name()));
                outputs.push(dir.join(name.sidecar_name()));
            }
            if cfg.cifti_output {
                let c = cifti_name(run);
                let dir = cfg.output_dir.join(c.folder("func"));
                outputs.push(dir.join(c.file_name()));
            }
            if cfg.run_ica {
                let m = run_ica_mixing_name(run);
                outputs.push(cfg.output_dir.join(m.folder("func")).join(m.file_name()));
            }
            if sub.is_some() {
                let s = subcortical::out_name(run);
                let dir = cfg.output_dir.join(s.folder("func"));
                outputs.push(dir.join(s.file_name()));
                outputs.push(dir.join(s.sidecar_name()));
            }
            Ok(Some(PlannedRun {
                run,
                timeline,
                sched,
                tr: run.timing.repetition_time,
                fingerprint,
                outputs,
            }))
        })();
        match plan {
            Ok(None) => outcomes.push((
                id,
                Outcome::Skipped(
                    "no usable stimulus (no stim_file media or words for the selected modalities)"
                        .into(),
                ),
            )),
            Ok(Some(p)) if !cfg.force && is_up_to_date(&p) => {
                outcomes.push((id, Outcome::UpToDate))
            }
            Ok(Some(p)) => planned.push(p),
            Err(e) => {
                tracing::error!("{id}: {e}");
                outcomes.push((id, Outcome::Failed(e)));
            }
        }
    }

    // Wall time per stage, logged at the end (bench/example_stages.sh reads it).
    let mut stages: Vec<(String, f64)> =
        vec![("models and plan".into(), job_start.elapsed().as_secs_f64())];
    // Features, modality by modality.
    let mut failed: BTreeMap<usize, Error> = BTreeMap::new();
    for m in cfg.modalities.iter().copied() {
        let todo: Vec<usize> = (0..planned.len())
            .filter(|&i| timeline_has(&planned[i].timeline, m))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let t0 = std::time::Instant::now();
        let pb = progress::bar(todo.len() as u64, &format!("{} features", m.name()));
        for i in todo {
            if failed.contains_key(&i) {
                pb.inc(1);
                continue;
            }
            interrupt::check()?;
            let p = &planned[i];
            pb.set_message(p.run.id());
            match ex
                .features(&cache, m, &p.timeline, &p.sched, window_s, &p.run.id())
                .and_then(|a| check_feature_dims(&model, m, &a))
            {
                Ok(()) => {}
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    tracing::error!("{}: {e}", p.run.id());
                    failed.insert(i, e);
                }
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        ex.unload();
        stages.push((format!("{} features", m.name()), t0.elapsed().as_secs_f64()));
    }
    let (hits, misses) = cache.stats();
    tracing::info!("feature cache: {misses} extraction(s), {hits} reuse(s)");

    // Brain model and outputs: participants in parallel, each participant's runs in order.
    let t0 = std::time::Instant::now();
    let results: Vec<Mutex<Option<Outcome>>> =
        (0..planned.len()).map(|_| Mutex::new(None)).collect();
    let mut queue: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in planned.iter().enumerate() {
        match failed.remove(&i) {
            Some(e) => *lock(&results[i]) = Some(Outcome::Failed(e)),
            None => queue.entry(p.run.subject()).or_default().push(i),
        }
    }
    let workers = prediction_workers(cfg, &planned, &model, queue.len());
    if workers > 1 {
        tracing::info!(
            "brain model: {workers} participants at a time (--nprocs {}{})",
            cfg.nprocs,
            cfg.mem_gb
                .map(|g| format!(", --mem-gb {g}"))
                .unwrap_or_default()
        );
    }
    let queue = Mutex::new(
        queue
            .into_values()
            .collect::<std::collections::VecDeque<_>>(),
    );
    let total = progress::bar(planned.len() as u64, "predicted BOLD");
    total.inc((planned.len() - lock(&queue).iter().map(Vec::len).sum::<usize>()) as u64);
    let done = AtomicUsize::new(0);
    let interrupted = AtomicBool::new(false);
    let ex = &ex;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let Some(runs_of_subject) = lock(&queue).pop_front() else {
                        break;
                    };
                    for i in runs_of_subject {
                        if interrupted.load(Ordering::Relaxed) {
                            return;
                        }
                        let p = &planned[i];
                        let id = p.run.id();
                        let pb = progress::bar(
                            p.sched.volume_times.len() as u64,
                            &format!("sub-{}", p.run.subject()),
                        );
                        pb.set_message(id.clone());
                        let r = predict_and_write(
                            p,
                            cfg,
                            &model,
                            &model_sha,
                            ex,
                            &cache,
                            window_s,
                            sub.as_ref(),
                            &pb,
                        );
                        pb.finish_and_clear();
                        let outcome = match r {
                            Ok(()) => {
                                fault_injection_point(done.fetch_add(1, Ordering::SeqCst) + 1);
                                Outcome::Done
                            }
                            Err(Error::Interrupted) => {
                                interrupted.store(true, Ordering::Relaxed);
                                return;
                            }
                            Err(e) => {
                                tracing::error!("{id}: {e}");
                                Outcome::Failed(e)
                            }
                        };
                        *lock(&results[i]) = Some(outcome);
                        total.inc(1);
                    }
                }
            });
        }
    });
    total.finish_and_clear();
    stages.push(("brain model and outputs".into(), t0.elapsed().as_secs_f64()));
    if interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for (p, r) in planned.iter().zip(results) {
        let outcome = r
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or_else(|| {
                Outcome::Failed(Error::Other("internal: the run was never predicted".into()))
            });
        outcomes.push((p.run.id(), outcome));
    }
    // Predicted contrasts (first-level GLM); only failures are added to the table.
    let t0 = std::time::Instant::now();
    let failed = crate::cli::first_level::write_first_level(cfg, runs, &outcomes)?;
    stages.push(("contrasts".into(), t0.elapsed().as_secs_f64()));
    outcomes.extend(failed);
    // Per-subject HTML reports, from what OUT now holds (keep this last: it shows every output).
    let t0 = std::time::Instant::now();
    crate::cli::report::write_reports(cfg, runs, &mut outcomes);
    stages.push(("reports".into(), t0.elapsed().as_secs_f64()));
    for (stage, s) in &stages {
        tracing::info!("stage time: {stage}: {s:.2} s");
    }
    Ok(outcomes)
}

/// Test hook: `TRIBE_BIDS_ABORT_AFTER_RUNS=N` aborts the process (as a kill would, with no
/// cleanup) once N runs are finished, so tests can check that an interrupted job leaves no partial
/// file and that the rerun completes it.
fn fault_injection_point(done: usize) {
    if let Some(n) = std::env::var("TRIBE_BIDS_ABORT_AFTER_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        && done >= n
    {
        eprintln!("tribe-bids: TRIBE_BIDS_ABORT_AFTER_RUNS={n}: aborting now (test hook)");
        std::process::abort();
    }
}

fn cifti_name(run: &Run) -> DerivName {
    let ents: Vec<(String, String)> = run
        .entities
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    DerivName::new(ents, "bold", ".dtseries.nii")
        .with("space", "fsaverage")
        .with("den", "10k")
        .with("desc", "predicted")
}

/// A mutex whose holder panicked still holds valid data here (plain queues and slots).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many participants the brain-model stage runs at once.
///
/// Each participant in flight has a thread that feeds the model (whose matrix products share the
/// one `--nprocs` thread pool) and a thread that encodes its GIFTIs, so two threads of `--nprocs`
/// per participant keep the cores busy without oversubscribing them. The model itself is loaded
/// once and shared (on a GPU too: one copy of the weights, the participants' windows queue on the
/// device). `--mem-gb` caps the count by what one run holds in memory: its features, the
/// activations of one window, the volumes queued for the writer, and the whole run when
/// `--cifti-output` or `--run-ica` need it at once.
fn prediction_workers(
    cfg: &RunConfig,
    planned: &[PlannedRun],
    model: &TribeModel,
    participants: usize,
) -> usize {
    let by_cpu = (cfg.nprocs / 2).max(1);
    let mut n = participants.min(by_cpu).max(1);
    if let Some(gb) = cfg.mem_gb {
        let per_run = planned
            .iter()
            .map(|p| run_memory_bytes(p, cfg, model))
            .max()
            .unwrap_or(0)
            .max(1);
        let weights = std::fs::metadata(model.weights_path())
            .map(|m| m.len())
            .unwrap_or(0);
        let budget = (gb * 1024.0 * 1024.0 * 1024.0) as u64;
        let fits = budget.saturating_sub(weights) / per_run;
        n = n.min(fits.max(1) as usize);
    }
    n
}

/// Bytes one run holds while its volumes are predicted and written (an estimate, for --mem-gb):
/// one window of features and activations, the writer's queue, and the whole run only when
/// `--cifti-output` or `--run-ica` need it at once.
fn run_memory_bytes(p: &PlannedRun, cfg: &RunConfig, model: &TribeModel) -> u64 {
    let timing = model.timing();
    let outputs = model.n_outputs() as u64 * 4;
    let window_bins = timing.window_bins() as u64;
    // Features are read from the cache one window at a time (FeatureFile).
    let features: u64 = model
        .feature_dims()
        .iter()
        .map(|f| (f.layers * f.dim) as u64 * window_bins * 4)
        .sum();
    // Activations of one window: a few dozen hidden-size buffers and the head's output rows.
    let window = window_bins * (64 * 1152 * 4) + window_bins * outputs * 2;
    let queue = OUTPUT_QUEUE_VOLUMES as u64 * outputs;
    let whole_run = if cfg.cifti_output || cfg.run_ica {
        p.sched.volume_times.len() as u64 * outputs
    } else {
        0
    };
    features + window + queue + whole_run
}

/// Predicted volumes waiting for the writer thread at most (80 KiB each): enough to absorb one
/// 100 s window, small enough to keep memory flat on hour-long runs.
const OUTPUT_QUEUE_VOLUMES: usize = 256;

/// The per-run ICA's mixing table; its presence is part of "this run is finished".
fn run_ica_mixing_name(run: &Run) -> DerivName {
    DerivName {
        suffix: "mixing".into(),
        extension: ".tsv".into(),
        ..out_name(run, "L")
    }
    .without("hemi")
    .without("space")
    .with("desc", "ICA")
}

/// One run from features to written outputs. Its inputs are the run, the settings and the
/// loaded models of this invocation, each already built once for all runs.
#[allow(clippy::too_many_arguments)]
fn predict_and_write(
    p: &PlannedRun,
    cfg: &RunConfig,
    model: &TribeModel,
    model_sha: &str,
    ex: &Extractors,
    cache: &FeatureCache,
    window_s: f64,
    sub: Option<&SubcorticalHead>,
    pb: &indicatif::ProgressBar,
) -> Result<()> {
    let run = p.run;
    let used: Vec<Modality> = cfg
        .modalities
        .iter()
        .copied()
        .filter(|m| timeline_has(&p.timeline, *m))
        .collect();
    // Cache entries from the modality pass above, read one window at a time.
    let mut feats: std::collections::HashMap<String, FeatureFile> = Default::default();
    for m in &used {
        feats.insert(
            m.name().to_string(),
            ex.cached(cache, *m, &p.timeline, &p.sched, window_s, &run.id())?,
        );
    }
    let n_vol = p.sched.volume_times.len();
    let tr = p.tr.unwrap_or_else(|| {
        let t = &p.sched.volume_times;
        if t.len() > 1 {
            (t[t.len() - 1] - t[0]) / (t.len() - 1) as f64
        } else {
            1.0
        }
    });
    let mut opts = TimeSeriesOptions::new(tr);
    opts.extra_meta
        .insert("Description", "TRIBE v2 predicted BOLD (tribe-bids)");
    let name_l = out_name(run, "L");
    let dir = cfg.output_dir.join(name_l.folder("func"));
    let mut wl = GiftiTimeSeriesWriter::create(
        &dir.join(name_l.file_name()),
        Hemisphere::Left,
        N_VERTICES_PER_HEMI,
        n_vol,
        &opts,
    )?;
    let name_r = out_name(run, "R");
    let mut wr = GiftiTimeSeriesWriter::create(
        &dir.join(name_r.file_name()),
        Hemisphere::Right,
        N_VERTICES_PER_HEMI,
        n_vol,
        &opts,
    )?;
    if model.n_outputs() != 2 * N_VERTICES_PER_HEMI {
        return Err(Error::Model {
            path: model.weights_path().to_path_buf(),
            message: format!("the checkpoint predicts {} outputs, not fsaverage5's 20,484 vertices", model.n_outputs()),
            fix: "use a cortical TRIBE v2 checkpoint (subcortical ones go to --subcortical-checkpoint)".into(),
        });
    }
    let sub_feats = sub.map(|_| feats.clone());
    // Every volume is kept only for the outputs that need the whole run at once.
    let mut all = if cfg.cifti_output || cfg.run_ica {
        Some(Vec::with_capacity(n_vol * model.n_outputs()))
    } else {
        None
    };
    // The GIFTI writers (gzip + base64) run on their own thread while the model computes the
    // next window; see predict::overlap.
    overlapped(
        OUTPUT_QUEUE_VOLUMES,
        |v: Vec<f32>| {
            wl.push_volumes(&v[..N_VERTICES_PER_HEMI])?;
            wr.push_volumes(&v[N_VERTICES_PER_HEMI..])?;
            if let Some(a) = all.as_mut() {
                a.extend_from_slice(&v);
            }
            pb.inc(1);
            Ok(())
        },
        |send| predict_volumes(model, feats, &p.sched, |_, v| send(v)),
    )?;
    wl.finish()?;
    wr.finish()?;
    let all = all.unwrap_or_default();
    if cfg.run_ica {
        crate::cli::networks::write_run_ica(
            &cfg.output_dir,
            &name_l,
            &all,
            n_vol,
            cfg.ica_components,
            None,
        )?;
    }
    if cfg.cifti_output {
        let layout = crate::formats::cifti::CiftiDtseries::cortex_only(N_VERTICES_PER_HEMI, tr);
        let c = cifti_name(run);
        crate::formats::cifti::write_cifti_dtseries(
            &cfg.output_dir.join(c.folder("func")).join(c.file_name()),
            &layout,
            &all,
        )?;
        let mut side = sidecar_json(p, cfg, "L", model, model_sha, ex, &used);
        side["Density"] = json!(layout.density_description());
        side.as_object_mut().map(|o| o.remove("SpatialReference"));
        side["SpatialReference"] = json!({"CIFTI_STRUCTURE_CORTEX_LEFT": derivatives::fsaverage5_spatial_reference("L")["URI"], "CIFTI_STRUCTURE_CORTEX_RIGHT": derivatives::fsaverage5_spatial_reference("R")["URI"]});
        crate::util::write_atomic(
            &cfg.output_dir.join(c.folder("func")).join(c.sidecar_name()),
            &json_bytes(&side),
        )?;
    }
    if let (Some(s), Some(f)) = (sub, sub_feats) {
        let side = sidecar_json(p, cfg, "L", model, model_sha, ex, &used);
        s.predict_and_write(run, &cfg.output_dir, f, &p.sched, tr, side)?;
    }
    // Sidecars last: their presence with a matching fingerprint marks the run finished.
    let stimulus = crate::cli::group::stimulus_provenance(&cfg.bids_dir, &p.timeline)?;
    for (hemi, name) in [("L", &name_l), ("R", &name_r)] {
        let mut side = sidecar_json(p, cfg, hemi, model, model_sha, ex, &used);
        side["Stimulus"] = stimulus.clone();
        crate::util::write_atomic(&dir.join(name.sidecar_name()), &json_bytes(&side))?;
    }
    Ok(())
}

/// The end-of-job table: one line per run, and the exit code (the first failure's).
pub fn summary(outcomes: &[(String, Outcome)]) -> (String, i32) {
    let mut s =
        String::from("\nrun                                           status      reason\n");
    let mut code = 0;
    let (mut done, mut skipped, mut failed) = (0, 0, 0);
    for (id, o) in outcomes {
        let (st, why) = match o {
            Outcome::Done => {
                done += 1;
                ("done", String::new())
            }
            Outcome::UpToDate => {
                skipped += 1;
                (
                    "skipped",
                    "outputs and provenance already match (use --force to redo)".into(),
                )
            }
            Outcome::Skipped(r) => {
                skipped += 1;
                ("skipped", r.clone())
            }
            Outcome::Failed(e) => {
                failed += 1;
                if code == 0 {
                    code = e.exit_code();
                }
                (
                    "FAILED",
                    e.to_string().lines().next().unwrap_or("").to_string(),
                )
            }
        };
        s.push_str(&format!("{id:<45} {st:<11} {why}\n"));
    }
    s.push_str(&format!(
        "\n{done} done, {skipped} skipped, {failed} failed\n"
    ));
    (s, code)
}

/// Write the summary into OUT/logs (one file per invocation).
pub fn write_log(out: &Path, text: &str) -> Result<()> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    crate::util::write_atomic(
        &out.join("logs")
            .join(format!("tribe-bids_{stamp}_{}.log", std::process::id())),
        text.as_bytes(),
    )
}
