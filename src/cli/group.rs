//! The group level (`tribe-bids BIDS OUT group`): reads the participant outputs in OUT and writes
//! into OUT/group/
//!
//! - group-average predicted BOLD, `task-<t>[_<shared entities>]_hemi-{L,R}_space-fsaverage5_desc-mean_bold.func.gii`,
//!   for every set of two or more runs that saw the same stimulus on the same clock;
//! - group contrast maps, `task-<t>_hemi-{L,R}_space-fsaverage5_contrast-<c>_stat-{effect,variance,t,z}_statmap.func.gii`:
//!   the mean of the participants' effect maps and a one-sample t test across participants.
//!
//! "Same stimulus" is decided from provenance, never from file names: the participant sidecars
//! record `Stimulus.Identity`, a hash of what the model was shown and when (the content hash of
//! every stimulus file with its onset and duration, and every word with its timing; see
//! [`stimulus_provenance`]). Runs are averaged only when that identity, the volume acquisition
//! times, the brain model's checksum and the features used all agree, because only then is the
//! average of volume k over runs the average response to one moment of one stimulus.
//!
//! OUT/group/ has no `sub-` entity: file names start at `task-`. The folder is listed in the
//! output's `.bidsignore` (the validator has no rules for group-level surface maps), and every
//! file keeps the BIDS entity order, so pybids can still parse the names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::analysis::stats::z_from_t;
use crate::bids::BidsName;
use crate::bids::derivatives::{self, DerivName, json_bytes, raw_uri};
use crate::cli::bids_app::RunConfig;
use crate::cli::first_level::{N_VERTICES_PER_HEMI, write_map};
use crate::cli::interrupt;
use crate::error::{Error, Result};
use crate::features::cache::{CacheKey, sha256_file};
use crate::formats::gifti::{Hemisphere, read_gifti};
use crate::formats::{TimeSeriesOptions, write_gifti_time_series};
use crate::stimulus::timeline::Timeline;

/// The group-level statistics written per contrast and hemisphere.
pub const GROUP_STATS: [&str; 4] = ["effect", "variance", "t", "z"];

/// What a run's model input was, for the participant sidecars (`"Stimulus"`): the stimulus files
/// with their content hashes, and `Identity`, one hash over the timeline (each visual and audio
/// segment's file hash, onset and duration, each word and its timing). Two runs with the same
/// identity were shown the same thing at the same times, whatever the files are called.
pub fn stimulus_provenance(bids_dir: &Path, timeline: &Timeline) -> Result<Value> {
    let mut sha: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut hash_of = |p: &Path| -> Result<String> {
        if let Some(h) = sha.get(p) {
            return Ok(h.clone());
        }
        let h = sha256_file(p)?;
        sha.insert(p.to_path_buf(), h.clone());
        Ok(h)
    };
    let mut k = CacheKey::new("stimulus-identity");
    for s in &timeline.visual {
        k.add_str("visual", &hash_of(&s.path)?)
            .add_f64("onset", s.onset)
            .add_f64("duration", s.duration)
            .add_str("still", if s.still { "1" } else { "0" });
    }
    for s in &timeline.audio {
        k.add_str("audio", &hash_of(&s.path)?)
            .add_f64("onset", s.onset)
            .add_f64("duration", s.duration);
    }
    for w in &timeline.words {
        k.add_str("word", &w.text)
            .add_f64("onset", w.onset)
            .add_f64("duration", w.duration);
    }
    for t in &timeline.transcripts {
        hash_of(t)?;
    }
    let files: Vec<Value> = sha
        .iter()
        .map(|(p, h)| json!({"URI": raw_uri(bids_dir, p), "Sha256": h}))
        .collect();
    Ok(json!({
        "Identity": k.hex(),
        "IdentityRule": "sha256 over the model's input timeline: each stimulus file's content hash with its onset and duration, each word with its timing",
        "Files": files,
    }))
}

/// One participant-level output found in OUT.
#[derive(Debug, Clone)]
struct Found {
    /// Entities without hemi/space/desc/stat (the run's own, plus `contrast` for statmaps).
    entities: Vec<(String, String)>,
    /// Folder holding the files.
    dir: PathBuf,
}

impl Found {
    fn get(&self, k: &str) -> Option<&str> {
        self.entities
            .iter()
            .find(|(e, _)| e == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The participant outputs under OUT/sub-*: predicted BOLD (left hemisphere, standing for the
/// pair) and participant-level effect maps.
fn scan(cfg: &RunConfig) -> (Vec<Found>, Vec<Found>) {
    let out = &cfg.output_dir;
    let mut bold = Vec::new();
    let mut effects = Vec::new();
    let keep = |f: &Found| {
        let ok = |list: &[String], key: &str| {
            list.is_empty() || f.get(key).is_some_and(|v| list.iter().any(|l| l == v))
        };
        ok(&cfg.participants, "sub") && ok(&cfg.sessions, "ses") && ok(&cfg.tasks, "task")
    };
    let Ok(top) = std::fs::read_dir(out) else {
        return (bold, effects);
    };
    let mut subs: Vec<PathBuf> = top
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("sub-"))
        })
        .collect();
    subs.sort();
    for sub in subs {
        for e in walkdir::WalkDir::new(&sub)
            .max_depth(3)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
        {
            if !e.file_type().is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy();
            let Some(b) = BidsName::parse(&name) else {
                continue;
            };
            if b.extension != ".func.gii" || b.entities.get("hemi") != Some("L") {
                continue;
            }
            let entities: Vec<(String, String)> = b
                .entities
                .iter()
                .filter(|(k, _)| !matches!(*k, "hemi" | "space" | "desc" | "stat"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let f = Found {
                entities,
                dir: e.path().parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            if !keep(&f) || b.entities.get("space") != Some("fsaverage5") {
                continue;
            }
            match (
                b.suffix.as_str(),
                b.entities.get("desc"),
                b.entities.get("stat"),
            ) {
                ("bold", Some("predicted"), _) => bold.push(f),
                ("statmap", _, Some("effect")) => effects.push(f),
                _ => {}
            }
        }
    }
    (bold, effects)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
        fix: "rerun the participant level with --force to rewrite it".into(),
    })
}

fn bold_name(entities: &[(String, String)], hemi: &str, desc: &str) -> DerivName {
    DerivName::new(entities.to_vec(), "bold", ".func.gii")
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("desc", desc)
}

fn statmap_name(entities: &[(String, String)], hemi: &str, stat: &str) -> DerivName {
    DerivName::new(entities.to_vec(), "statmap", ".func.gii")
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("stat", stat)
}

/// `bids::sub-01/func/<file>` for a file under OUT.
fn out_uri(out: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(out).unwrap_or(file);
    format!("bids::{}", rel.to_string_lossy().replace('\\', "/"))
}

/// The entities every member shares, minus `sub` (the group name's entities).
fn shared_entities(members: &[&Found]) -> Vec<(String, String)> {
    members[0]
        .entities
        .iter()
        .filter(|(k, v)| k != "sub" && members.iter().all(|m| m.get(k) == Some(v.as_str())))
        .cloned()
        .collect()
}

fn is_current(files: &[PathBuf], fingerprint: &str) -> bool {
    files.iter().all(|f| f.is_file())
        && files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
            .all(|f| read_json(f).is_ok_and(|v| v["TribeBidsFingerprint"] == json!(fingerprint)))
}

fn generated_by(cfg: &RunConfig) -> Value {
    json!({"Name": derivatives::PIPELINE_NAME, "Version": crate::VERSION, "CommandLine": cfg.command_line.join(" ")})
}

fn subject_list(members: &[&Found]) -> Vec<String> {
    let mut s: Vec<String> = members
        .iter()
        .filter_map(|m| m.get("sub").map(str::to_string))
        .collect();
    s.sort();
    s.dedup();
    s
}

/// Entities of a name, in the order found.
type EntityList = Vec<(String, String)>;
/// Runs that share a stimulus: each with its predicted BOLD sidecar.
type Members<'a> = Vec<(&'a Found, Value)>;

/// Group-average predicted BOLD. Returns the number of averages written or up to date.
fn write_averages(cfg: &RunConfig, bold: &[Found]) -> Result<usize> {
    let out = &cfg.output_dir;
    let group_dir = out.join("group");
    // Group the runs by what makes volume-by-volume averaging meaningful.
    let mut groups: BTreeMap<String, (Value, Members)> = BTreeMap::new();
    for f in bold {
        let side_path = f
            .dir
            .join(bold_name(&f.entities, "L", "predicted").sidecar_name());
        let side = read_json(&side_path)?;
        let Some(identity) = side["Stimulus"]["Identity"].as_str() else {
            tracing::warn!(
                "{}: no Stimulus.Identity (written by an older tribe-bids): not averaged; rerun the participant level with --force",
                side_path.display()
            );
            continue;
        };
        let key = json!([
            f.get("task"),
            identity,
            side["VolumeAcquisitionTimes"],
            side["Model"]["Sha256"],
            side["Model"]["SubjectRow"],
            side["FeaturesUsed"],
            side["TextContext"],
        ]);
        let k = key.to_string();
        groups
            .entry(k)
            .or_insert_with(|| (key, Vec::new()))
            .1
            .push((f, side));
    }
    // Names: the shared entities; groups that would collide get the identity's first 8 hex
    // digits in `desc` (`desc-mean1a2b3c4d`).
    let mut named: Vec<(EntityList, String, &Members)> = Vec::new();
    for (key, members) in groups.values() {
        if members.len() < 2 {
            continue;
        }
        let founds: Vec<&Found> = members.iter().map(|(f, _)| *f).collect();
        let ents = shared_entities(&founds);
        let ident = key[1].as_str().unwrap_or("").to_string();
        named.push((ents, ident, members));
    }
    let mut count: BTreeMap<Vec<(String, String)>, usize> = BTreeMap::new();
    for (e, _, _) in &named {
        *count.entry(e.clone()).or_default() += 1;
    }
    let mut written = 0;
    for (ents, ident, members) in named {
        interrupt::check()?;
        let desc = if count[&ents] > 1 {
            format!("mean{}", &ident[..8.min(ident.len())])
        } else {
            "mean".to_string()
        };
        let mut fp = CacheKey::new("group-average");
        fp.add_str("version", crate::VERSION);
        for (f, side) in members {
            fp.add_str(
                "member",
                &f.dir
                    .join(bold_name(&f.entities, "L", "predicted").file_name())
                    .to_string_lossy(),
            );
            fp.add_str(
                "fingerprint",
                side["TribeBidsFingerprint"].as_str().unwrap_or(""),
            );
        }
        let fp = fp.hex();
        let files: Vec<PathBuf> = ["L", "R"]
            .iter()
            .flat_map(|h| {
                let n = bold_name(&ents, h, &desc);
                [
                    group_dir.join(n.file_name()),
                    group_dir.join(n.sidecar_name()),
                ]
            })
            .collect();
        written += 1;
        if !cfg.force && is_current(&files, &fp) {
            tracing::info!(
                "group average {} up to date",
                bold_name(&ents, "L", &desc).file_name()
            );
            continue;
        }
        let first = &members[0].1;
        let tr = first["RepetitionTime"].as_f64().unwrap_or_else(|| {
            let t: Vec<f64> = first["VolumeAcquisitionTimes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            if t.len() > 1 {
                (t[t.len() - 1] - t[0]) / (t.len() - 1) as f64
            } else {
                1.0
            }
        });
        let founds: Vec<&Found> = members.iter().map(|(f, _)| *f).collect();
        let mut sidecars = Vec::new();
        for h in ["L", "R"] {
            let mut sum: Vec<f64> = Vec::new();
            let mut sources = Vec::new();
            for f in &founds {
                let p = f
                    .dir
                    .join(bold_name(&f.entities, h, "predicted").file_name());
                let (nv, data) = read_gifti(&p)?.time_series_f32(&p)?;
                if nv != N_VERTICES_PER_HEMI {
                    return Err(Error::Gifti {
                        path: p,
                        message: format!(
                            "{nv} vertices per volume, fsaverage5 has {N_VERTICES_PER_HEMI}"
                        ),
                    });
                }
                if sum.is_empty() {
                    sum = vec![0.0; data.len()];
                }
                if data.len() != sum.len() {
                    return Err(Error::Gifti {
                        path: p,
                        message: format!(
                            "{} volumes where the other runs of this stimulus have {}",
                            data.len() / nv,
                            sum.len() / nv
                        ),
                    });
                }
                for (s, v) in sum.iter_mut().zip(&data) {
                    *s += *v as f64;
                }
                sources.push(json!(out_uri(out, &p)));
            }
            let n = founds.len() as f64;
            let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
            let name = bold_name(&ents, h, &desc);
            let mut opts = TimeSeriesOptions::new(tr);
            opts.extra_meta.insert(
                "Description",
                "TRIBE v2 predicted BOLD averaged over runs that share a stimulus (tribe-bids group level)",
            );
            let hemi = if h == "L" {
                Hemisphere::Left
            } else {
                Hemisphere::Right
            };
            write_gifti_time_series(
                &group_dir.join(name.file_name()),
                hemi,
                N_VERTICES_PER_HEMI,
                &mean,
                &opts,
            )?;
            let mut side = json!({
                "Description": "Average over runs that share a stimulus (same Stimulus.Identity, volume times, model and features) of the TRIBE v2 predicted BOLD; a model prediction, not measured data.",
                "TaskName": first["TaskName"],
                "SpatialReference": derivatives::fsaverage5_spatial_reference(h),
                "SliceTimingCorrected": false,
                "Units": first["Units"],
                "Sources": sources,
                "RunCount": founds.len(),
                "Participants": subject_list(&founds),
                "Stimulus": first["Stimulus"],
                "VolumeAcquisitionTimes": first["VolumeAcquisitionTimes"],
                "Model": first["Model"],
                "FeaturesUsed": first["FeaturesUsed"],
                "AlignmentRule": first["AlignmentRule"],
                "GeneratedBy": generated_by(cfg),
                "TribeBidsFingerprint": fp,
            });
            match (first.get("VolumeTiming"), first.get("RepetitionTime")) {
                (Some(vt), _) => side["VolumeTiming"] = vt.clone(),
                (None, Some(r)) => side["RepetitionTime"] = r.clone(),
                _ => side["RepetitionTime"] = json!(tr),
            }
            sidecars.push((group_dir.join(name.sidecar_name()), side));
        }
        for (p, side) in sidecars {
            crate::util::write_atomic(&p, &json_bytes(&side))?;
        }
        tracing::info!(
            "group average {} ({} runs)",
            bold_name(&ents, "L", &desc).file_name(),
            founds.len()
        );
    }
    Ok(written)
}

/// Read one float32 map of 10,242 values.
fn read_map(path: &Path) -> Result<Vec<f64>> {
    let img = read_gifti(path)?;
    let a = img.arrays.first().ok_or_else(|| Error::Gifti {
        path: path.to_path_buf(),
        message: "no DataArray".into(),
    })?;
    let v = a.data.to_f64_vec();
    if v.len() != N_VERTICES_PER_HEMI {
        return Err(Error::Gifti {
            path: path.to_path_buf(),
            message: format!("{} values, fsaverage5 has {N_VERTICES_PER_HEMI}", v.len()),
        });
    }
    Ok(v)
}

/// One-sample t test per vertex over participants' maps (n >= 2): the mean, the variance of the
/// mean (sample variance / n), t and z (nilearn's t-to-z with n - 1 dof). The variance has the
/// first-level GLM's floor, so identical maps give t = ±huge and z clipped, not NaN.
pub fn one_sample_t(maps: &[Vec<f64>]) -> [Vec<f64>; 4] {
    let nf = maps.len() as f64;
    let nv = maps.first().map(Vec::len).unwrap_or(0);
    let mean: Vec<f64> = (0..nv)
        .map(|v| maps.iter().map(|m| m[v]).sum::<f64>() / nf)
        .collect();
    let var: Vec<f64> = (0..nv)
        .map(|v| maps.iter().map(|m| (m[v] - mean[v]).powi(2)).sum::<f64>() / (nf - 1.0) / nf)
        .collect();
    let t: Vec<f64> = mean
        .iter()
        .zip(&var)
        .map(|(m, v)| m / v.max(1e-50).sqrt())
        .collect();
    let z: Vec<f64> = t.iter().map(|t| z_from_t(*t, nf - 1.0)).collect();
    [mean, var, t, z]
}

/// Group contrasts: per task and contrast, the participants' effect maps (the fixed-effects map
/// when a participant has several runs, else the single run's map; a participant's sessions
/// averaged), their mean and a one-sample t test. Returns the number of contrasts written or
/// up to date.
fn write_group_contrasts(cfg: &RunConfig, effects: &[Found]) -> Result<usize> {
    let out = &cfg.output_dir;
    let group_dir = out.join("group");
    // One map per participant/session/task/contrast: the map without `run` wins.
    let mut per_unit: BTreeMap<Vec<(String, String)>, Vec<&Found>> = BTreeMap::new();
    for f in effects {
        let key: Vec<(String, String)> = f
            .entities
            .iter()
            .filter(|(k, _)| k != "run")
            .cloned()
            .collect();
        per_unit.entry(key).or_default().push(f);
    }
    let mut per_group: BTreeMap<EntityList, BTreeMap<String, Vec<&Found>>> = BTreeMap::new();
    for (key, maps) in &per_unit {
        let chosen = match maps.iter().find(|m| m.get("run").is_none()) {
            Some(m) => *m,
            None if maps.len() == 1 => maps[0],
            None => {
                tracing::warn!(
                    "{} run-level maps of {} but no fixed-effects map: rerun the participant level",
                    maps.len(),
                    DerivName::new(key.clone(), "statmap", "").file_name()
                );
                continue;
            }
        };
        let gkey: Vec<(String, String)> = key
            .iter()
            .filter(|(k, _)| k != "sub" && k != "ses")
            .cloned()
            .collect();
        let sub = chosen.get("sub").unwrap_or("").to_string();
        per_group
            .entry(gkey)
            .or_default()
            .entry(sub)
            .or_default()
            .push(chosen);
    }
    let mut written = 0;
    for (gkey, subjects) in &per_group {
        interrupt::check()?;
        let n = subjects.len();
        let label = DerivName::new(gkey.clone(), "statmap", "").file_name();
        if n < 2 {
            tracing::info!("{label}: {n} participant(s); a group test needs at least 2");
            continue;
        }
        // Source files and fingerprint.
        let mut fp = CacheKey::new("group-contrast");
        fp.add_str("version", crate::VERSION);
        let mut src_sidecar = Value::Null;
        for (sub, maps) in subjects {
            fp.add_str("sub", sub);
            for m in maps {
                let side = read_json(
                    &m.dir
                        .join(statmap_name(&m.entities, "L", "effect").sidecar_name()),
                )?;
                fp.add_str(
                    "fingerprint",
                    side["TribeBidsFingerprint"].as_str().unwrap_or(""),
                );
                if src_sidecar.is_null() {
                    src_sidecar = side;
                }
            }
        }
        let fp = fp.hex();
        let files: Vec<PathBuf> = ["L", "R"]
            .iter()
            .flat_map(|h| GROUP_STATS.iter().map(move |s| (h, s)))
            .flat_map(|(h, s)| {
                let nm = statmap_name(gkey, h, s);
                [
                    group_dir.join(nm.file_name()),
                    group_dir.join(nm.sidecar_name()),
                ]
            })
            .collect();
        written += 1;
        if !cfg.force && is_current(&files, &fp) {
            tracing::info!("group contrast {label} up to date");
            continue;
        }
        let dof = (n - 1) as f64;
        let mut sidecars = Vec::new();
        for h in ["L", "R"] {
            // Each participant's map (sessions averaged).
            let mut per_sub: Vec<Vec<f64>> = Vec::with_capacity(n);
            let mut sources = Vec::new();
            for maps in subjects.values() {
                let mut acc = vec![0.0; N_VERTICES_PER_HEMI];
                for m in maps {
                    let p = m
                        .dir
                        .join(statmap_name(&m.entities, h, "effect").file_name());
                    for (a, v) in acc.iter_mut().zip(read_map(&p)?) {
                        *a += v;
                    }
                    sources.push(json!(out_uri(out, &p)));
                }
                let k = maps.len() as f64;
                per_sub.push(acc.into_iter().map(|a| a / k).collect());
            }
            let [mean, var, t, z] = one_sample_t(&per_sub);
            let mut maps: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            maps.insert("effect", mean);
            maps.insert("variance", var);
            maps.insert("t", t);
            maps.insert("z", z);
            let contrast_name = src_sidecar["Contrast"]["Name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            for s in GROUP_STATS {
                let nm = statmap_name(gkey, h, s);
                let what = match s {
                    "effect" => "mean over participants of the participant-level effect maps",
                    "variance" => "variance of that mean (sample variance over participants / n)",
                    "t" => "one-sample t statistic across participants",
                    _ => "z statistic of the one-sample t test (nilearn's t-to-z rule)",
                };
                write_map(
                    &group_dir.join(nm.file_name()),
                    h,
                    s,
                    &maps[s],
                    &format!("TRIBE v2 predicted contrast '{contrast_name}', group level: {what}"),
                )?;
                let side = json!({
                    "Description": format!("Group-level predicted contrast '{contrast_name}': {what}. From TRIBE v2 predicted BOLD (a model prediction, not measured data)."),
                    "TaskName": src_sidecar["TaskName"],
                    "SpatialReference": derivatives::fsaverage5_spatial_reference(h),
                    "Contrast": src_sidecar["Contrast"],
                    "Statistic": s,
                    "Test": "one-sample t test across participants of the participant-level effect maps (a participant's sessions averaged first)",
                    "ParticipantCount": n,
                    "Participants": subjects.keys().collect::<Vec<_>>(),
                    "DegreesOfFreedom": dof,
                    "Sources": sources,
                    "GeneratedBy": generated_by(cfg),
                    "TribeBidsFingerprint": fp,
                });
                sidecars.push((group_dir.join(nm.sidecar_name()), side));
            }
        }
        for (p, side) in sidecars {
            crate::util::write_atomic(&p, &json_bytes(&side))?;
        }
        tracing::info!("group contrast {label}: {n} participants");
    }
    Ok(written)
}

/// Run the group level on the participant outputs in `cfg.output_dir`.
pub fn run_group(cfg: &RunConfig) -> Result<()> {
    let (bold, effects) = scan(cfg);
    if bold.is_empty() && effects.is_empty() {
        return Err(Error::InputMissing {
            path: cfg.output_dir.clone(),
            what: "participant-level output (sub-*/func/*_desc-predicted_bold.func.gii)".into(),
            fix: format!(
                "run the participant level first: tribe-bids {} {} participant",
                cfg.bids_dir.display(),
                cfg.output_dir.display()
            ),
        });
    }
    std::fs::create_dir_all(cfg.output_dir.join("group"))
        .map_err(|source| Error::output_write(cfg.output_dir.join("group"), source))?;
    let averages = write_averages(cfg, &bold)?;
    let contrasts = write_group_contrasts(cfg, &effects)?;
    // The model-level ICA networks (named by in-silico probes) go beside the group maps.
    crate::cli::networks::write_group_ica(cfg, &cfg.output_dir)?;
    eprintln!(
        "group level: {averages} group-average predicted BOLD set(s), {contrasts} group contrast(s) in {}",
        cfg.output_dir.join("group").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sample_t_matches_scipy() {
        // scipy.stats.ttest_1samp([1, 2, 4], 0): t = 2.6457513110645907, p = 0.1180...
        let maps = vec![vec![1.0, -1.0], vec![2.0, -1.0], vec![4.0, -1.0]];
        let [m, v, t, z] = one_sample_t(&maps);
        assert!((m[0] - 7.0 / 3.0).abs() < 1e-12);
        assert!((v[0] - 7.0 / 9.0).abs() < 1e-12);
        assert!((t[0] - 2.645_751_311_064_590_7).abs() < 1e-12);
        // z = norm.isf(t.sf(2.6457513, 2)) = 1.5628711856718809
        assert!((z[0] - 1.562_871_185_671_881).abs() < 1e-6, "{}", z[0]);
        // identical maps: no NaN, z clipped
        assert_eq!(v[1], 0.0);
        assert!(t[1] < -1e20 && z[1] < -8.0 && z[1].is_finite());
    }
}
