//! ICA network maps as app outputs: the model-level decomposition written at the group level
//! (`OUT/group/…_desc-ICA_*`), named by in-silico probes, and the optional per-run decomposition
//! of predicted BOLD (`--run-ica`).
//!
//! Model level (SPEC §11): the decomposed matrix is the predictor readout, the unseen-subject row
//! of `predictor.weights` (latent rows × 20,484 vertices: 2,048 rows in the release, 32 in the
//! tiny test model). Latent rows are FastICA samples and vertices its features, as the
//! third-party re-implementations do, so every component is a cortical map. Nothing of the
//! checkpoint is rescaled: ICA is scale-invariant per sample, and whitening absorbs the rest.
//!
//! Names come from probes (`analysis::probes`): the model predicts its response to short
//! generated stimuli, and probe contrasts are correlated with each map. The verdict is written
//! honestly: a component is named only when the evidence is clear, otherwise it is
//! "unlabelled" with its best candidate and the reason (a random test model always ends there).
//!
//! Every file is written atomically and carries no timestamps or temporary paths, so a rerun with
//! the same inputs rewrites the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{Value, json};

use crate::analysis::ica::{IcaOptions, IcaResult, fast_ica};
use crate::analysis::networks::{
    ComponentLabel, LabelThresholds, Probe, component_names, decomposition_json, flag_unstructured,
    label_components, mixing_tsv, morans_i,
};
use crate::analysis::probes::{self, PROBE_SECONDS, ProbeStimuli, ProbeText};
use crate::bids::derivatives::{self, DerivName, json_bytes};
use crate::cli::bids_app::{Modality, RunConfig};
use crate::error::{Error, Result};
use crate::features::cache::{FeatureArray, FeatureCache};
use crate::formats::{DataArray, GiftiImage, Hemisphere, Intent, write_gifti};
use crate::model::checkpoint::{Checkpoint, file_sha256};
use crate::model::models_dir;
use crate::model::{ModelFiles, ModelOptions, TribeModel};
use crate::predict::alignment::HEMODYNAMIC_OFFSET_S;
use crate::predict::run::{Extractors, RunSchedule, check_feature_dims, predict_volumes};

/// The FastICA seed (numpy `RandomState`), fixed so reruns and other machines agree.
pub const ICA_SEED: u32 = 0;
/// Folder of the model-level outputs inside OUTPUT_DIR.
pub const GROUP_DIR: &str = "group";

/// fsaverage5's triangles (the same for both hemispheres), bundled so that labelling needs no
/// template download.
static FSAVERAGE5_SPHERE: &[u8] = include_bytes!("../../assets/fsaverage5/sphere_left.gii.gz");
/// Vertices per fsaverage5 hemisphere.
pub const FSAVERAGE5_VERTICES: usize = 10242;

/// The undirected edges of fsaverage5, both hemispheres, with right-hemisphere vertices offset by
/// 10,242 (the model's left-then-right order).
pub fn fsaverage5_edges() -> Result<Vec<(usize, usize)>> {
    let img = crate::formats::read_gifti_bytes(
        FSAVERAGE5_SPHERE,
        Path::new("assets/fsaverage5/sphere_left.gii.gz"),
        None,
    )?;
    let tri = img
        .arrays_with_intent(Intent::TRIANGLE)
        .next()
        .and_then(|a| a.data.as_i32().map(<[i32]>::to_vec))
        .ok_or_else(|| Error::Other("bundled fsaverage5 mesh has no int32 triangles".into()))?;
    let mut edges = std::collections::BTreeSet::new();
    for t in tri.chunks_exact(3) {
        for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
            let (a, b) = (a.min(b) as usize, a.max(b) as usize);
            edges.insert((a, b));
        }
    }
    let left: Vec<(usize, usize)> = edges.into_iter().collect();
    let right = left
        .iter()
        .map(|&(a, b)| (a + FSAVERAGE5_VERTICES, b + FSAVERAGE5_VERTICES));
    Ok(left.iter().copied().chain(right).collect())
}

/// Moran's I of each component map on fsaverage5 (None for other vertex counts).
fn spatial_autocorrelation(result: &IcaResult) -> Result<Option<Vec<f64>>> {
    if result.n_features != 2 * FSAVERAGE5_VERTICES {
        return Ok(None);
    }
    let edges = fsaverage5_edges()?;
    Ok(Some(
        (0..result.n_components)
            .map(|k| morans_i(result.map(k), &edges))
            .collect(),
    ))
}

/// Label (when there are probes), demote spatially unstructured maps, and record both.
fn label_and_record(
    result: &IcaResult,
    probes: &[Probe],
    decomp_input: &str,
    opts: &IcaOptions,
) -> Result<Value> {
    let thresholds = LabelThresholds::default();
    let moran = spatial_autocorrelation(result)?;
    let mut labels = if probes.is_empty() {
        None
    } else {
        Some(label_components(
            &result.maps,
            result.n_components,
            probes,
            thresholds,
        )?)
    };
    if let (Some(l), Some(m)) = (labels.as_mut(), moran.as_ref()) {
        flag_unstructured(l, m, thresholds.min_spatial_autocorrelation);
    }
    let mut decomp = decomposition_json(result, opts, decomp_input, labels.as_deref());
    honest_labels(&mut decomp, labels.as_deref());
    if let Some(m) = &moran {
        for (name, v) in component_names(result.n_components).iter().zip(m) {
            decomp["Components"][name]["SpatialAutocorrelation"] = json!(v);
        }
        decomp["SpatialAutocorrelationNote"] = json!(
            "Moran's I of each component map over the edges of the fsaverage5 mesh (binary weights, both hemispheres): about 0 for spatially white maps, near 1 for smooth ones"
        );
    }
    decomp["LabelThresholds"] = json!({
        "MinScore": thresholds.min_score,
        "MinMargin": thresholds.min_margin,
        "MinSpatialAutocorrelation": thresholds.min_spatial_autocorrelation,
    });
    Ok(decomp)
}

/// The predictor readout: `n_latent x n_vertices`, row-major (latent rows are ICA samples).
#[derive(Debug, Clone)]
pub struct Readout {
    pub values: Vec<f32>,
    pub n_latent: usize,
    pub n_vertices: usize,
    /// The predictor row used (the unseen-subject row unless `--subject-index` chose one).
    pub row: usize,
    pub weights: PathBuf,
}

/// Read the readout of a TRIBE model folder without loading the rest of the model.
pub fn read_readout(brain_dir: &Path, subject_index: Option<usize>) -> Result<Readout> {
    let files = ModelFiles::locate(brain_dir)?;
    let cfg = crate::model::config::load_config(&files.config)?;
    let mut ck = Checkpoint::open(&files.weights)?;
    let t = ck.read_f32("predictor.weights", &Device::Cpu)?;
    let dims = t.dims().to_vec();
    if dims.len() != 3 {
        return Err(Error::ShapeMismatch {
            name: "predictor.weights".into(),
            expected: vec![cfg.brain.predictor_rows, 0, 0],
            found: dims,
            path: Some(files.weights.clone()),
        });
    }
    let row = match subject_index {
        None => cfg
            .brain
            .default_subject_row()
            .min(dims[0].saturating_sub(1)),
        Some(i) if i < dims[0] => i,
        Some(i) => {
            return Err(Error::Usage(format!(
                "--subject-index {i} is out of range: {} has {} predictor row(s)",
                files.weights.display(),
                dims[0]
            )));
        }
    };
    let values: Vec<f32> = t.get(row)?.flatten_all()?.to_vec1()?;
    Ok(Readout {
        values,
        n_latent: dims[1],
        n_vertices: dims[2],
        row,
        weights: files.weights,
    })
}

/// What the probes gave: contrast maps plus an account of what ran and what could not.
#[derive(Debug, Clone, Default)]
pub struct ProbeOutcome {
    pub probes: Vec<Probe>,
    /// Condition name -> mean predicted response over its [`PROBE_SECONDS`] rows.
    pub responses: BTreeMap<String, Vec<f64>>,
    /// Human-readable reasons for conditions or contrasts that were left out.
    pub notes: Vec<String>,
    pub speech_source: Option<PathBuf>,
    pub modalities: Vec<Modality>,
}

/// Predict the model's responses to the probe conditions and form the probe contrasts.
///
/// `available` are the modalities whose extractor models are present and selected; a condition
/// that varies a missing modality is skipped (with a note). Each condition runs as its own
/// 10 s "run" through the same path as real runs: features (cached in `cache`), then the brain
/// model, then the mean of the rows covering the stimulus.
pub fn run_probes(
    model: &TribeModel,
    ex: &mut Extractors,
    cache: &FeatureCache,
    stimuli: &ProbeStimuli,
    available: &[Modality],
) -> Result<ProbeOutcome> {
    let mut out = ProbeOutcome {
        speech_source: stimuli.speech.as_ref().map(|(p, _)| p.clone()),
        modalities: available.to_vec(),
        ..Default::default()
    };
    let window_s = model.timing().window_seconds();
    let needs = |c: &probes::Condition| -> Option<Modality> {
        use probes::{ProbeAudio, ProbeScreen};
        if c.audio != ProbeAudio::Silence {
            Some(Modality::Audio)
        } else if c.screen != ProbeScreen::Blank {
            Some(Modality::Video)
        } else if c.text == ProbeText::Words {
            Some(Modality::Text)
        } else {
            None
        }
    };
    // Plan the conditions that can run.
    let mut planned = Vec::new();
    for c in probes::conditions() {
        if let Some(m) = needs(&c)
            && !available.contains(&m)
        {
            out.notes.push(format!(
                "condition '{}' not run: no {} model",
                c.name,
                m.name()
            ));
            continue;
        }
        let Some(timeline) = probes::condition_timeline(&c, stimuli) else {
            out.notes.push(format!(
                "condition '{}' not run: no speech recording (a sound file with a <name>_words.tsv transcript in BIDS_DIR/stimuli)",
                c.name
            ));
            continue;
        };
        let times: Vec<f64> = (0..PROBE_SECONDS)
            .map(|j| j as f64 + HEMODYNAMIC_OFFSET_S)
            .collect();
        let sched = RunSchedule::new(&timeline, times);
        planned.push((c, timeline, sched));
    }
    // Features modality by modality (one extractor in memory at a time; shared stimuli such as
    // the silence file or the blank screen are extracted once and then read from the cache).
    let mut feats: Vec<HashMap<String, FeatureArray>> = vec![HashMap::new(); planned.len()];
    for m in available.iter().copied() {
        for (i, (c, timeline, sched)) in planned.iter().enumerate() {
            let a = if m == Modality::Text && c.text == ProbeText::NoWords {
                // Present but empty: zeros, as the reference gives a window without words.
                let fd = model
                    .feature_dims()
                    .iter()
                    .find(|f| f.name == m.name())
                    .ok_or_else(|| Error::FeatureShape {
                        modality: m.name().into(),
                        message: "the brain model has no input for this modality".into(),
                    })?;
                let n = sched.n_bins(window_s);
                FeatureArray::new(
                    vec![fd.layers, fd.dim, n],
                    vec![0.0; fd.layers * fd.dim * n],
                )
            } else {
                ex.features(
                    cache,
                    m,
                    timeline,
                    sched,
                    window_s,
                    &format!("probe {}", c.name),
                )?
            };
            check_feature_dims(model, m, &a)?;
            feats[i].insert(m.name().to_string(), a);
        }
        ex.unload();
    }
    for ((c, _, sched), f) in planned.iter().zip(feats) {
        let mut sum: Vec<f64> = Vec::new();
        let mut rows = 0usize;
        predict_volumes(model, f, sched, |_, v| {
            if sum.is_empty() {
                sum = vec![0.0; v.len()];
            }
            for (s, x) in sum.iter_mut().zip(&v) {
                *s += *x as f64;
            }
            rows += 1;
            Ok(())
        })?;
        for s in &mut sum {
            *s /= rows.max(1) as f64;
        }
        out.responses.insert(c.name.to_string(), sum);
    }
    let (probes, missing) = probes::contrast_maps(&out.responses, &probes::contrast_defs());
    for m in missing {
        out.notes.push(format!(
            "probe contrast '{m}' not formed: a condition did not run"
        ));
    }
    out.probes = probes;
    Ok(out)
}

/// The probe design as it goes into the decomposition JSON.
fn probe_design_json(outcome: &ProbeOutcome, bids_dir: &Path) -> Value {
    let conds: Vec<Value> = probes::conditions()
        .iter()
        .map(|c| {
            json!({
                "Name": c.name,
                "Audio": format!("{:?}", c.audio),
                "Screen": format!("{:?}", c.screen),
                "Words": format!("{:?}", c.text),
                "Run": outcome.responses.contains_key(c.name),
            })
        })
        .collect();
    let contrasts: Vec<Value> = probes::contrast_defs()
        .iter()
        .map(|d| {
            json!({
                "Name": d.name,
                "Network": d.network.name(),
                "Plus": d.plus,
                "Minus": d.minus,
                "Rationale": d.rationale,
                "Formed": outcome.probes.iter().any(|p| p.name == d.name),
            })
        })
        .collect();
    json!({
        "Description": "Each condition is a 10 s stimulus predicted by the model as its own run; a condition's response is the mean of its 10 prediction rows; a probe contrast is the difference of condition responses. Every condition keeps audio, screen and words present (silence, a grey screen, all-zero word features) so contrasts compare stimuli, not modality presence. Components are scored by the Pearson correlation of their map with each probe contrast over the 20,484 vertices; default mode by the mean negated correlation with the task contrasts and the correlation with baselineVsAllProbes.",
        "ConditionSeconds": PROBE_SECONDS,
        "Stimuli": {
            "Silence": "16 kHz digital silence",
            "Tones": "pure-tone pips (250, 500, 1000, 2000, 4000 Hz cycled; 0.4 s on, 0.1 s off; 10 ms ramps)",
            "Speech": outcome.speech_source.as_ref().map(|p| derivatives::raw_uri(bids_dir, p)),
            "Blank": "uniform grey (128) screen",
            "MovingGratings": "sine gratings, 6 cycles per frame, drifting at 2 Hz, 4 orientations of 2.5 s, lossless FFV1 video at 16 fps",
            "StaticGratings": "the same 4 gratings as still images",
            "Images": "5 synthetic still images (gradients with discs and rectangles), 2 s each; stand-ins, not photographs",
            "Words": "a transcript of 5 plain sentences, one word every 0.3 s",
        },
        "Modalities": outcome.modalities.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "Conditions": conds,
        "Contrasts": contrasts,
        "Notes": outcome.notes,
    })
}

/// Rewrite each component's verdict so that "Label" only names a network on clear evidence.
/// Weak evidence gives "unlabelled" with the candidate kept in "CandidateLabel".
fn honest_labels(decomp: &mut Value, labels: Option<&[ComponentLabel]>) {
    let Some(comps) = decomp.get_mut("Components").and_then(Value::as_object_mut) else {
        return;
    };
    for (i, (_, c)) in comps.iter_mut().enumerate() {
        let l = labels.and_then(|ls| ls.iter().find(|l| l.component == i));
        let (label, candidate, evidence) = match l {
            None => ("unlabelled".to_string(), Value::Null, "none"),
            Some(l) => match l.label {
                None => ("unlabelled".to_string(), Value::Null, "none"),
                Some(n) if l.weak_evidence => ("unlabelled".to_string(), json!(n.name()), "weak"),
                Some(n) => (n.name().to_string(), json!(n.name()), "strong"),
            },
        };
        c["Label"] = json!(label);
        c["CandidateLabel"] = candidate;
        c["Evidence"] = json!(evidence);
    }
}

fn component_gifti(
    maps: &IcaResult,
    range: std::ops::Range<usize>,
    hemi: Hemisphere,
    verdicts: &[String],
    description: &str,
) -> GiftiImage {
    let mut img = GiftiImage::for_hemisphere(hemi);
    img.meta.insert("Description", description);
    for (k, name) in component_names(maps.n_components).iter().enumerate() {
        let values: Vec<f32> = maps.map(k)[range.clone()]
            .iter()
            .map(|v| *v as f32)
            .collect();
        img.arrays.push(
            DataArray::vertex_map(Intent::SHAPE, values)
                .with_meta("Name", name.as_str())
                .with_meta("Label", verdicts[k].as_str()),
        );
    }
    img
}

fn verdicts(decomp: &Value, n: usize) -> Vec<String> {
    component_names(n)
        .iter()
        .map(|c| {
            decomp["Components"][c]["Label"]
                .as_str()
                .unwrap_or("unlabelled")
                .to_string()
        })
        .collect()
}

/// Write the decomposition's files: per-hemisphere component GIFTIs with sidecars, the mixing TSV
/// and the decomposition JSON. `base` carries the entities (none at the group level).
fn write_decomposition(
    root: &Path,
    dir: &Path,
    base: &DerivName,
    result: &IcaResult,
    decomp: &Value,
    gifti_description: &str,
    sidecar_extra: &Value,
) -> Result<Vec<PathBuf>> {
    if !result.n_features.is_multiple_of(2) {
        return Err(Error::AnalysisInput {
            what: "ICA maps".into(),
            message: format!(
                "{} vertices cannot be split into two hemispheres",
                result.n_features
            ),
            fix: "give left-then-right vertex values (20,484 for fsaverage5)".into(),
        });
    }
    let half = result.n_features / 2;
    let names = verdicts(decomp, result.n_components);
    let mut written = Vec::new();
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mixing = base
        .clone()
        .with("desc", "ICA")
        .without("hemi")
        .without("space");
    let mixing_path = dir.join(
        DerivName {
            suffix: "mixing".into(),
            extension: ".tsv".into(),
            ..mixing.clone()
        }
        .file_name(),
    );
    let decomp_path = dir.join(
        DerivName {
            suffix: "decomposition".into(),
            extension: ".json".into(),
            ..mixing.clone()
        }
        .file_name(),
    );
    for (hemi, h, range) in [
        ("L", Hemisphere::Left, 0..half),
        ("R", Hemisphere::Right, half..2 * half),
    ] {
        let name = DerivName {
            suffix: "components".into(),
            extension: ".func.gii".into(),
            ..base.clone()
        }
        .with("hemi", hemi)
        .with("space", "fsaverage5")
        .with("desc", "ICA");
        let path = dir.join(name.file_name());
        write_gifti(
            &path,
            &component_gifti(result, range, h, &names, gifti_description),
        )?;
        let mut side = json!({
            "Description": gifti_description,
            "Sources": [format!("bids::{}", rel(&decomp_path)), format!("bids::{}", rel(&mixing_path))],
            "SpatialReference": derivatives::fsaverage5_spatial_reference(hemi),
            "Units": "arbitrary (ICA mixing weights; sign set so each map's largest-magnitude value is positive)",
            "ComponentNames": component_names(result.n_components),
            "ComponentLabels": names,
        });
        if let (Some(s), Some(extra)) = (side.as_object_mut(), sidecar_extra.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        let side_path = dir.join(name.sidecar_name());
        crate::util::write_atomic(&side_path, &json_bytes(&side))?;
        written.push(path);
        written.push(side_path);
    }
    crate::util::write_atomic(&mixing_path, mixing_tsv(result).as_bytes())?;
    crate::util::write_atomic(&decomp_path, &json_bytes(decomp))?;
    written.push(mixing_path);
    written.push(decomp_path);
    Ok(written)
}

/// The model-level ICA, written into `out/group/` (see the module docs). Called by the group
/// level.
pub fn write_group_ica(cfg: &RunConfig, out: &Path) -> Result<()> {
    write_group_ica_files(cfg, out).map(|_| ())
}

/// [`write_group_ica`], returning the files written.
pub fn write_group_ica_files(cfg: &RunConfig, out: &Path) -> Result<Vec<PathBuf>> {
    let models = models_dir::resolve(&cfg.models_dir, &[])?;
    let readout = read_readout(&models.brain, cfg.subject_index)?;
    let model_sha = file_sha256(&readout.weights)?;
    let opts = IcaOptions {
        n_components: cfg.ica_components,
        seed: ICA_SEED,
        ..IcaOptions::default()
    };
    tracing::info!(
        "FastICA of the predictor readout ({} x {}), {} components",
        readout.n_latent,
        readout.n_vertices,
        opts.n_components
    );
    let result = fast_ica(&readout.values, readout.n_latent, readout.n_vertices, &opts).map_err(
        |e| match e {
            Error::AnalysisInput { what, message, .. } => Error::AnalysisInput {
                what,
                message: format!("{message} (the readout of {})", readout.weights.display()),
                fix: format!(
                    "use --ica-components between 1 and {}",
                    readout.n_latent.min(readout.n_vertices)
                ),
            },
            other => other,
        },
    )?;

    // Probes.
    let device = cfg.device.to_device()?;
    let model = TribeModel::load(
        &models.brain,
        &device,
        ModelOptions {
            subject_index: cfg.subject_index,
            ..Default::default()
        },
    )?;
    let pick = |m: Modality, p: &Option<PathBuf>| {
        if cfg.modalities.contains(&m) {
            p.clone()
        } else {
            None
        }
    };
    let (text, audio, video) = (
        pick(Modality::Text, &models.text),
        pick(Modality::Audio, &models.audio),
        pick(Modality::Video, &models.video),
    );
    let available: Vec<Modality> = [
        (Modality::Text, &text),
        (Modality::Audio, &audio),
        (Modality::Video, &video),
    ]
    .into_iter()
    .filter(|(_, p)| p.is_some())
    .map(|(m, _)| m)
    .collect();
    let outcome = if available.is_empty() {
        ProbeOutcome {
            notes: vec!["no probe run: no feature extractor model in the models folder".into()],
            ..Default::default()
        }
    } else {
        std::fs::create_dir_all(&cfg.work_dir)
            .map_err(|source| Error::output_write(cfg.work_dir.clone(), source))?;
        let tmp = tempfile::Builder::new()
            .prefix("probes-")
            .tempdir_in(&cfg.work_dir)
            .map_err(|source| Error::output_write(cfg.work_dir.clone(), source))?;
        let speech = match probes::find_speech_recording(&cfg.bids_dir) {
            Some(p) => {
                // The container's duration avoids decoding a long recording just to measure it.
                let d = match crate::stimulus::audio::probe(&p)?.container_duration_s {
                    Some(d) if d > 0.0 => d,
                    _ => crate::stimulus::audio::decode_auto::<f32>(&p, 0.0, None)?.duration_s(),
                };
                Some((p, d))
            }
            None => None,
        };
        let stimuli = probes::write_probe_stimuli(tmp.path(), speech)?;
        let cache = FeatureCache::new(&cfg.work_dir)?;
        let mut ex = Extractors::new(text, audio, video, cfg.text_context, device.clone())?;
        run_probes(&model, &mut ex, &cache, &stimuli, &available)?
    };
    let ckpt_name = readout
        .weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut decomp = label_and_record(
        &result,
        &outcome.probes,
        &format!(
            "predictor.weights[{}] of {ckpt_name} ({} latent rows x {} vertices): the model's cortical readout",
            readout.row, readout.n_latent, readout.n_vertices
        ),
        &opts,
    )?;
    decomp["Model"] = json!({
        "Name": "TRIBE v2 (FmriEncoder)",
        "Checkpoint": ckpt_name,
        "Sha256": model_sha,
        "ReadoutTensor": "predictor.weights",
        "ReadoutRow": readout.row,
        "ReadoutShape": [readout.n_latent, readout.n_vertices],
    });
    decomp["Samples"] = json!("latent dimensions of the readout (rows of desc-ICA_mixing.tsv)");
    decomp["Features"] = json!("fsaverage5 vertices, left hemisphere (10,242) then right");
    decomp["ExplainedVarianceNote"] = json!(
        "fraction of the centred readout's sum of squares carried by each component alone; the components are not orthogonal, so the fractions need not add up to the total"
    );
    decomp["Probes"] = probe_design_json(&outcome, &cfg.bids_dir);
    decomp["GeneratedBy"] = json!({
        "Name": derivatives::PIPELINE_NAME,
        "Version": crate::VERSION,
        "CommandLine": cfg.command_line.join(" "),
    });
    let dir = out.join(GROUP_DIR);
    let base = DerivName::new(Vec::<(String, String)>::new(), "components", ".func.gii");
    let files = write_decomposition(
        out,
        &dir,
        &base,
        &result,
        &decomp,
        "Independent components (FastICA) of the TRIBE v2 cortical readout; one DataArray per component",
        &json!({"Model": decomp["Model"].clone()}),
    )?;
    tracing::info!("wrote the model-level ICA to {}", dir.display());
    Ok(files)
}

/// ICA of one run's predicted BOLD (`--run-ica`), written next to the run's outputs.
///
/// `bold_name` is the name of the run's predicted BOLD (either hemisphere: `hemi`, `space` and
/// `desc` are replaced). `bold` is time-major, each volume left then right hemisphere
/// (`bold[t * n_vertices + v]`), as `predict_volumes` yields it. Volumes are the ICA samples and
/// vertices its features, so the maps are cortical networks and the mixing TSV holds their time
/// courses (one row per volume). When `probes` are given (the model-level ones), components are
/// named as at the group level. Returns the files written.
pub fn write_run_ica(
    out_dir: &Path,
    bold_name: &DerivName,
    bold: &[f32],
    n_volumes: usize,
    n_components: usize,
    probes: Option<&[Probe]>,
) -> Result<Vec<PathBuf>> {
    if n_volumes == 0 || !bold.len().is_multiple_of(n_volumes) {
        return Err(Error::AnalysisInput {
            what: format!("run ICA of {}", bold_name.file_name()),
            message: format!("{} values are not {n_volumes} whole volumes", bold.len()),
            fix: "pass every predicted volume, time-major".into(),
        });
    }
    let n_vertices = bold.len() / n_volumes;
    let opts = IcaOptions {
        n_components,
        seed: ICA_SEED,
        ..IcaOptions::default()
    };
    let result = fast_ica(bold, n_volumes, n_vertices, &opts).map_err(|e| match e {
        Error::AnalysisInput { message, .. } => Error::AnalysisInput {
            what: format!("run ICA of {}", bold_name.file_name()),
            message,
            fix: format!(
                "use --ica-components below the run's {n_volumes} volumes, or leave out --run-ica"
            ),
        },
        other => other,
    })?;
    let base = DerivName {
        suffix: "components".into(),
        extension: ".func.gii".into(),
        ..bold_name.clone()
    }
    .without("hemi")
    .without("space")
    .without("desc");
    let sources: Vec<String> = ["L", "R"]
        .iter()
        .map(|h| {
            let n = bold_name.clone().with("hemi", h);
            format!(
                "bids::{}/{}",
                n.folder("func").to_string_lossy().replace('\\', "/"),
                n.file_name()
            )
        })
        .collect();
    let mut decomp = label_and_record(
        &result,
        probes.unwrap_or(&[]),
        &format!("predicted BOLD of this run ({n_volumes} volumes x {n_vertices} vertices)"),
        &opts,
    )?;
    decomp["Samples"] = json!("volumes of the run (rows of the _mixing.tsv, in acquisition order)");
    decomp["Features"] = json!("fsaverage5 vertices, left hemisphere then right");
    decomp["Sources"] = json!(sources);
    let dir = out_dir.join(base.folder("func"));
    write_decomposition(
        out_dir,
        &dir,
        &base,
        &result,
        &decomp,
        "Independent components (FastICA) of this run's TRIBE v2 predicted BOLD; one DataArray per component",
        &json!({"PredictedBoldSources": sources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_labels_never_name_on_weak_evidence() {
        let mut v = json!({"Components": {"ICA_00": {}, "ICA_01": {}, "ICA_02": {}}});
        let mk = |component, label, weak| ComponentLabel {
            component,
            label,
            score: 0.5,
            weak_evidence: weak,
            reason: String::new(),
            network_scores: vec![],
            probe_scores: vec![],
        };
        use crate::analysis::networks::Network;
        let labels = vec![
            mk(0, Some(Network::Visual), false),
            mk(1, Some(Network::Language), true),
            mk(2, None, true),
        ];
        honest_labels(&mut v, Some(&labels));
        assert_eq!(v["Components"]["ICA_00"]["Label"], "visual");
        assert_eq!(v["Components"]["ICA_00"]["Evidence"], "strong");
        assert_eq!(v["Components"]["ICA_01"]["Label"], "unlabelled");
        assert_eq!(v["Components"]["ICA_01"]["CandidateLabel"], "language");
        assert_eq!(v["Components"]["ICA_01"]["Evidence"], "weak");
        assert_eq!(v["Components"]["ICA_02"]["Evidence"], "none");
    }
}
