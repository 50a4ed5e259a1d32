//! What the release `config.yaml` (and the checkpoint's `model_build_args`) say about the model.
//!
//! The file is a PyYAML dump of the whole training experiment, Python tags included
//! (`!!python/tuple`, `!!python/object/apply:pathlib.PosixPath`). We read it into a generic tree
//! (serde-saphyr tolerates the tags) and pick out only what changes the math, so that every
//! hyper-parameter comes from the release files and none from constants here. Options this
//! port does not implement (a combiner MLP, causal attention, temporal smoothing, ...) are
//! refused with the offending key named, rather than silently computed differently.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Error, Result};

/// How the (L, D) layer groups of one modality enter its projector (`FmriEncoder.layer_aggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerAggregation {
    /// `b l d t -> b (l d) t`: layer-major concatenation (the release setting).
    Cat,
    /// Mean over the L axis.
    Mean,
}

/// The brain model's architecture, from `brain_model_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct BrainConfig {
    pub hidden: usize,
    pub max_seq_len: usize,
    pub heads: usize,
    pub depth: usize,
    pub ff_mult: usize,
    pub layer_aggregation: LayerAggregation,
    pub projector_bias: bool,
    pub time_pos_embedding: bool,
    pub low_rank_head: Option<usize>,
    /// `subject_layers.n_subjects`: index of the "unseen subject" row when `subject_dropout` is set.
    pub n_subjects: usize,
    /// Rows of `predictor.weights`: `n_subjects + 1` when `subject_dropout` is set (SPEC §3).
    pub predictor_rows: usize,
    pub predictor_bias: bool,
}

impl BrainConfig {
    /// x_transformers `dim_head` as neuraltrain passes it (`dim // heads`).
    pub fn dim_head(&self) -> usize {
        self.hidden / self.heads
    }

    /// x_transformers partial rotary width: `max(dim_head // 2, 32)`.
    pub fn rotary_dim(&self) -> usize {
        (self.dim_head() / 2).max(32)
    }

    pub fn ff_inner(&self) -> usize {
        self.hidden * self.ff_mult
    }

    /// The unseen-subject row used when no subject is chosen (`average_subjects=True`).
    pub fn default_subject_row(&self) -> usize {
        self.n_subjects.min(self.predictor_rows.saturating_sub(1))
    }
}

/// How runs are cut into windows and how output rows map to time, from `data.*` (SPEC §4).
#[derive(Debug, Clone, PartialEq)]
pub struct TimingConfig {
    /// `data.duration_trs`: window length in TRs (100 in the release).
    pub duration_trs: usize,
    /// Seconds per TR: `1 / data.neuro.frequency`.
    pub tr_seconds: f64,
    /// Feature grid rate in Hz (`data.frequency`, 2 in the release).
    pub feature_frequency: f64,
    /// `data.neuro.offset`: seconds between a stimulus row and the BOLD it predicts (5 s).
    pub bold_offset: f64,
}

impl TimingConfig {
    /// Window length in seconds (100 s in the release).
    pub fn window_seconds(&self) -> f64 {
        self.duration_trs as f64 * self.tr_seconds
    }

    /// Feature bins per window (200 in the release).
    pub fn window_bins(&self) -> usize {
        crate::util::round_half_even(self.window_seconds() * self.feature_frequency).max(0) as usize
    }
}

/// One modality's input shape (L layer groups, D dims), in concatenation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureDim {
    pub name: String,
    pub layers: usize,
    pub dim: usize,
}

/// `model_build_args` of the checkpoint (or their equivalent derived for model.safetensors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    pub feature_dims: Vec<FeatureDim>,
    pub n_outputs: usize,
    pub n_output_timesteps: usize,
}

/// Everything read from `config.yaml`.
#[derive(Debug, Clone)]
pub struct ReleaseConfig {
    pub path: PathBuf,
    pub brain: BrainConfig,
    pub timing: TimingConfig,
    /// `data.features_to_use`, the concatenation order.
    pub features_to_use: Vec<String>,
    /// Per modality, L as the extractor's layer grouping implies it (`None` when it cannot be
    /// told): only used when a checkpoint carries no `model_build_args` (model.safetensors).
    pub layer_groups: Vec<(String, Option<usize>)>,
    /// Extractor model names (`data.<m>_feature.model_name`), for `tribe inspect`.
    pub extractor_models: Vec<(String, String)>,
}

/// Parse YAML text into a generic tree; Python tags are kept as plain values.
pub fn parse_yaml(text: &str, path: &Path) -> Result<Json> {
    serde_saphyr::from_str::<Json>(text).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        message: format!("cannot parse YAML: {e}"),
        fix: "use the config.yaml shipped with the checkpoint (facebook/tribev2 layout)".into(),
    })
}

/// Read and interpret `config.yaml`.
pub fn load_config(path: &Path) -> Result<ReleaseConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let root = parse_yaml(&text, path)?;
    ReleaseConfig::from_tree(&root, path)
}

/// A typed view on the tree that names the full key path in its errors.
struct Node<'a> {
    value: &'a Json,
    key: String,
    file: &'a Path,
}

impl<'a> Node<'a> {
    fn err(&self, message: String) -> Error {
        Error::Model {
            path: self.file.to_path_buf(),
            message,
            fix: "use the config.yaml shipped with the checkpoint (facebook/tribev2 layout); it holds brain_model_config and data".into(),
        }
    }

    fn child(&self, name: &str) -> Result<Node<'a>> {
        let key = if self.key.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.key)
        };
        match self.value.get(name) {
            Some(v) => Ok(Node {
                value: v,
                key,
                file: self.file,
            }),
            None => Err(self.err(format!("key '{key}' is missing"))),
        }
    }

    fn opt_child(&self, name: &str) -> Option<Node<'a>> {
        self.child(name).ok().filter(|n| !n.value.is_null())
    }

    fn usize(&self) -> Result<usize> {
        match self.value.as_u64() {
            Some(v) => Ok(v as usize),
            None => Err(self.err(format!(
                "'{}' must be a non-negative integer, found {}",
                self.key, self.value
            ))),
        }
    }

    fn f64(&self) -> Result<f64> {
        match self.value.as_f64() {
            Some(v) => Ok(v),
            None => Err(self.err(format!(
                "'{}' must be a number, found {}",
                self.key, self.value
            ))),
        }
    }

    fn bool(&self) -> Result<bool> {
        match self.value.as_bool() {
            Some(v) => Ok(v),
            None => Err(self.err(format!(
                "'{}' must be true or false, found {}",
                self.key, self.value
            ))),
        }
    }

    fn str(&self) -> Result<&'a str> {
        match self.value.as_str() {
            Some(v) => Ok(v),
            None => Err(self.err(format!(
                "'{}' must be a string, found {}",
                self.key, self.value
            ))),
        }
    }

    /// Refuse a setting whose value would change the math in a way this port does not implement.
    fn require(&self, name: &str, want: &Json) -> Result<()> {
        let c = self.child(name)?;
        if c.value != want {
            return Err(self.err(format!(
                "'{}' is {} but only {} is supported by this implementation of FmriEncoder",
                c.key, c.value, want
            )));
        }
        Ok(())
    }
}

impl ReleaseConfig {
    pub fn from_tree(root: &Json, path: &Path) -> Result<Self> {
        let top = Node {
            value: root,
            key: String::new(),
            file: path,
        };
        if !root.is_object() {
            return Err(top
                .err("the file is not a YAML mapping (expected the TribeExperiment dump)".into()));
        }
        let Some(bm) = top.opt_child("brain_model_config") else {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: "config.yaml has no 'brain_model_config' section, so the brain model cannot be built".into(),
                fix: "use the config.yaml released with the checkpoint (facebook/tribev2), not another model's config".into(),
            });
        };
        let brain = brain_config(&bm)?;
        let data = top.child("data")?;
        let neuro = data.child("neuro")?;
        let neuro_freq = neuro.child("frequency")?.f64()?;
        if neuro_freq.is_nan() || neuro_freq <= 0.0 {
            return Err(neuro.err("'data.neuro.frequency' must be positive".into()));
        }
        let timing = TimingConfig {
            duration_trs: data.child("duration_trs")?.usize()?,
            tr_seconds: 1.0 / neuro_freq,
            feature_frequency: data.child("frequency")?.f64()?,
            bold_offset: neuro.child("offset")?.f64()?,
        };
        let freq = timing.feature_frequency;
        if timing.duration_trs == 0 || freq.is_nan() || freq <= 0.0 {
            return Err(
                data.err("'data.duration_trs' and 'data.frequency' must be positive".into())
            );
        }
        let ftu = data.child("features_to_use")?;
        let features_to_use: Vec<String> = match ftu.value.as_array() {
            Some(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ftu.err(format!("'{}' must list names", ftu.key)))
                })
                .collect::<Result<_>>()?,
            None => return Err(ftu.err(format!("'{}' must be a list of modality names", ftu.key))),
        };
        let mut layer_groups = Vec::new();
        let mut extractor_models = Vec::new();
        for m in &features_to_use {
            let section = data.opt_child(&format!("{m}_feature"));
            // The video extractor nests its image model one level down.
            let ex = section.as_ref().map(|s| {
                s.opt_child("image").unwrap_or(Node {
                    value: s.value,
                    key: s.key.clone(),
                    file: path,
                })
            });
            layer_groups.push((m.clone(), ex.as_ref().and_then(layer_group_count)));
            if let Some(name) = ex
                .as_ref()
                .and_then(|e| e.opt_child("model_name"))
                .and_then(|n| n.str().ok().map(str::to_owned))
            {
                extractor_models.push((m.clone(), name));
            }
        }
        Ok(ReleaseConfig {
            path: path.to_path_buf(),
            brain,
            timing,
            features_to_use,
            layer_groups,
            extractor_models,
        })
    }
}

/// L for one extractor: neuralset's `group_mean` over `layers=[a, b, c]` makes len-1 groups
/// (SPEC §5.2), `mean` makes one, no aggregation keeps one per listed layer.
fn layer_group_count(ex: &Node) -> Option<usize> {
    let layers = ex.opt_child("layers")?;
    let n = match layers.value {
        Json::Array(a) => a.len(),
        Json::Number(_) => 1,
        _ => return None,
    };
    let agg = ex
        .opt_child("layer_aggregation")
        .and_then(|a| a.str().ok().map(str::to_owned));
    match agg.as_deref() {
        Some("group_mean") => n.checked_sub(1).filter(|&g| g > 0),
        Some("mean") => Some(1),
        None | Some("cat") => Some(n),
        Some(_) => None,
    }
}

fn brain_config(bm: &Node) -> Result<BrainConfig> {
    use serde_json::json;
    if let Some(name) = bm.opt_child("name")
        && name.str()? != "FmriEncoder"
    {
        return Err(bm.err(format!(
            "'brain_model_config.name' is '{}', expected 'FmriEncoder'",
            name.str()?
        )));
    }
    // Options whose other values change the forward pass and are not implemented here.
    bm.require("combiner", &Json::Null)?;
    bm.require("extractor_aggregation", &json!("cat"))?;
    bm.require("linear_baseline", &json!(false))?;
    bm.require("subject_embedding", &json!(false))?;
    bm.require("temporal_smoothing", &Json::Null)?;
    let layer_aggregation = match bm.child("layer_aggregation")?.str()? {
        "cat" => LayerAggregation::Cat,
        "mean" => LayerAggregation::Mean,
        other => {
            return Err(bm.err(format!(
                "'brain_model_config.layer_aggregation' is '{other}'; expected cat or mean"
            )));
        }
    };
    let proj = bm.child("projector")?;
    if let Some(h) = proj.opt_child("hidden_sizes")
        && h.value.as_array().is_none_or(|a| !a.is_empty())
    {
        return Err(proj.err(format!(
            "'{}' is {}: projectors with hidden layers are not supported (the release uses a single Linear)",
            h.key, h.value
        )));
    }
    let enc = bm.child("encoder")?;
    for (key, want) in [
        ("use_scalenorm", json!(true)),
        ("use_rmsnorm", json!(false)),
        ("rotary_pos_emb", json!(true)),
        ("rotary_xpos", json!(false)),
        ("scale_residual", json!(true)),
        ("residual_attn", json!(false)),
        ("cross_attend", json!(false)),
        ("causal", json!(false)),
        ("rel_pos_bias", json!(false)),
        ("alibi_pos_bias", json!(false)),
    ] {
        // `causal` is absent from some dumps; an absent flag means neuraltrain's default (off).
        if key == "causal" && enc.opt_child(key).is_none() {
            continue;
        }
        enc.require(key, &want)?;
    }
    let hidden = bm.child("hidden")?.usize()?;
    let heads = enc.child("heads")?.usize()?;
    let depth = enc.child("depth")?.usize()?;
    let ff_mult = enc.child("ff_mult")?.usize()?;
    if hidden == 0 || heads == 0 || hidden % heads != 0 {
        return Err(bm.err(format!(
            "hidden {hidden} must be a positive multiple of encoder.heads {heads}"
        )));
    }
    let sl = bm.child("subject_layers")?;
    let n_subjects = sl.child("n_subjects")?.usize()?;
    let dropout = sl
        .opt_child("subject_dropout")
        .map(|d| d.f64())
        .transpose()?
        .unwrap_or(0.0);
    let predictor_rows = n_subjects + usize::from(dropout != 0.0);
    if predictor_rows == 0 {
        return Err(
            sl.err("subject_layers has no rows (n_subjects 0 and no subject_dropout)".into())
        );
    }
    let low_rank_head = bm
        .opt_child("low_rank_head")
        .map(|n| n.usize())
        .transpose()?;
    let cfg = BrainConfig {
        hidden,
        max_seq_len: bm.child("max_seq_len")?.usize()?,
        heads,
        depth,
        ff_mult,
        layer_aggregation,
        projector_bias: proj.child("bias")?.bool()?,
        time_pos_embedding: bm.child("time_pos_embedding")?.bool()?,
        low_rank_head,
        n_subjects,
        predictor_rows,
        predictor_bias: sl.child("bias")?.bool()?,
    };
    if cfg.rotary_dim() > cfg.dim_head() {
        return Err(bm.err(format!(
            "head dim {} is below x_transformers' minimum rotary width 32; hidden/heads too small",
            cfg.dim_head()
        )));
    }
    Ok(cfg)
}

/// `model_build_args` read from a checkpoint's pickle (`{feature_dims: {m: (L, D)}, n_outputs, n_output_timesteps}`).
pub fn build_args_from_pickle(v: &super::pickle::Value, path: &Path) -> Result<BuildArgs> {
    let bad = |m: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("model_build_args: {m}"),
    };
    let fd = v
        .get("feature_dims")
        .ok_or_else(|| bad("'feature_dims' is missing".into()))?;
    let entries = fd
        .as_dict()
        .ok_or_else(|| bad("'feature_dims' is not a dict".into()))?;
    let mut feature_dims = Vec::new();
    for (k, val) in entries {
        let name = k
            .as_str()
            .ok_or_else(|| bad("a feature_dims key is not a string".into()))?
            .to_owned();
        let seq = val
            .as_seq()
            .ok_or_else(|| bad(format!("feature_dims['{name}'] is not an (L, D) tuple")))?;
        let ints: Vec<i64> = seq.iter().filter_map(|x| x.as_int()).collect();
        if seq.len() != 2 || ints.len() != 2 || ints.iter().any(|&x| x <= 0) {
            return Err(bad(format!(
                "feature_dims['{name}'] is not an (L, D) pair of positive ints"
            )));
        }
        feature_dims.push(FeatureDim {
            name,
            layers: ints[0] as usize,
            dim: ints[1] as usize,
        });
    }
    let int = |key: &str| -> Result<usize> {
        match v.get(key).and_then(|x| x.as_int()) {
            Some(i) if i > 0 => Ok(i as usize),
            _ => Err(bad(format!("'{key}' is missing or not a positive int"))),
        }
    };
    Ok(BuildArgs {
        feature_dims,
        n_outputs: int("n_outputs")?,
        n_output_timesteps: int("n_output_timesteps")?,
    })
}
