//! `FmriEncoderModel` (tribev2/model.py) with the released weights: per-modality projections,
//! time position embedding, the transformer encoder, the low-rank head, the subject-layers
//! predictor and adaptive average pooling to the output grid (SPEC §1-3).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::checkpoint::{Checkpoint, Format};
use super::config::{
    self, BrainConfig, BuildArgs, FeatureDim, LayerAggregation, ReleaseConfig, TimingConfig,
};
use super::ops::{self, Kernels};
use super::trace::Trace;
use super::transformer::{AttentionBlock, Encoder, FeedForwardBlock};
use crate::error::{Error, Result};

/// Optional exact-math rewrites of the head (SPEC §1.2). They compute the same function; only
/// float rounding differs, which the benches measure against the parity bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadOptions {
    /// Average the encoder output over each output bin, then apply the (affine) head: the head
    /// runs on n_output_timesteps rows instead of T (half the head FLOPs at T = 200).
    pub pool_before_head: bool,
    /// Multiply `low_rank_head` into the predictor once at load (hidden x n_outputs), so one
    /// GEMM replaces two and the (hidden -> low-rank) step disappears.
    pub fold_low_rank: bool,
}

/// The precision the model computes in.
///
/// `Bf16` halves the weights' memory and uses the GPU's bf16 tensor cores; it is outside the f32
/// parity bound (the tests bound it at 2e-2 of max|expected|). What stays in f32 in bf16 mode,
/// and why: the rotary frequencies (the reference computes them with autocast off), the
/// ScaleNorm reductions (a 1152-term sum of squares in bf16 loses the norm's low bits), the
/// attention softmax (SPEC §2.3: float32 softmax) and the output pooling, so the prediction is
/// returned as f32 whatever the compute precision. The fast CPU kernels are f32-only; bf16 on
/// the CPU runs on candle's generic ops (correct, not fast: it exists for testing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDtype {
    #[default]
    F32,
    Bf16,
}

impl ComputeDtype {
    pub fn dtype(self) -> DType {
        match self {
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
        }
    }
}

/// How to load and run the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelOptions {
    /// Row of the subject-layers predictor; `None` = the unseen-subject row (`average_subjects`).
    pub subject_index: Option<usize>,
    pub head: HeadOptions,
    pub kernels: Kernels,
    /// Weights are cast to this on load (from the checkpoint's f32) and inputs on entry.
    pub dtype: ComputeDtype,
}

#[derive(Debug, Clone)]
struct Projector {
    feature: FeatureDim,
    weight: Tensor,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Head {
    /// `low_rank_head` (optional) then the predictor row, as the reference computes it.
    LowRank {
        low_rank: Option<Tensor>,
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// `low_rank_head.weight^T @ predictor.weights[row]`, precomputed.
    Folded {
        weight: Tensor,
        bias: Option<Tensor>,
    },
}

/// The TRIBE v2 brain model, loaded and ready to run on one device.
#[derive(Debug)]
pub struct TribeModel {
    config: ReleaseConfig,
    build_args: BuildArgs,
    device: Device,
    options: ModelOptions,
    subject_row: usize,
    weights_path: PathBuf,
    weights_format: Format,
    n_params: usize,
    projectors: Vec<Projector>,
    proj_out: usize,
    time_pos_embed: Option<Tensor>,
    encoder: Encoder,
    head: Head,
}

/// Where the config and the weights of a model folder are.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
}

impl ModelFiles {
    /// Resolve a folder holding `config.yaml` + `best.ckpt` (release) or `model.safetensors`,
    /// or one of those weight files directly (with `config.yaml` next to it).
    pub fn locate(path: &Path) -> Result<Self> {
        let (dir, weights) = if path.is_file() {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                Some(path.to_path_buf()),
            )
        } else if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            return Err(Error::InputMissing {
                path: path.to_path_buf(),
                what: "the brain-model folder".into(),
                fix: "give the folder holding config.yaml and best.ckpt (facebook/tribev2)".into(),
            });
        };
        let config = dir.join("config.yaml");
        if !config.is_file() {
            return Err(Error::Model {
                path: config,
                message: "config.yaml is missing next to the checkpoint".into(),
                fix: "download config.yaml together with best.ckpt from facebook/tribev2 into the same folder".into(),
            });
        }
        let weights = match weights {
            Some(w) => w,
            None => ["best.ckpt", "model.safetensors"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::Model {
                    path: dir.clone(),
                    message: "no best.ckpt or model.safetensors in this folder".into(),
                    fix: "download best.ckpt from facebook/tribev2 next to config.yaml".into(),
                })?,
        };
        Ok(ModelFiles { config, weights })
    }
}

/// The tensors (name without `model.`, shape) that `config` + `args` imply, in state-dict order.
pub fn expected_tensors(cfg: &BrainConfig, args: &BuildArgs) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden;
    let proj_out = h / args.feature_dims.len().max(1);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    if cfg.time_pos_embedding {
        v.push(("time_pos_embed".into(), vec![1, cfg.max_seq_len, h]));
    }
    for f in &args.feature_dims {
        let input = match cfg.layer_aggregation {
            LayerAggregation::Cat => f.layers * f.dim,
            LayerAggregation::Mean => f.dim,
        };
        v.push((
            format!("projectors.{}.weight", f.name),
            vec![proj_out, input],
        ));
        if cfg.projector_bias {
            v.push((format!("projectors.{}.bias", f.name), vec![proj_out]));
        }
    }
    let bottleneck = match cfg.low_rank_head {
        Some(r) => {
            v.push(("low_rank_head.weight".into(), vec![r, h]));
            r
        }
        None => h,
    };
    v.push((
        "predictor.weights".into(),
        vec![cfg.predictor_rows, bottleneck, args.n_outputs],
    ));
    if cfg.predictor_bias {
        v.push((
            "predictor.bias".into(),
            vec![cfg.predictor_rows, args.n_outputs],
        ));
    }
    let inner = cfg.ff_inner();
    for i in 0..cfg.depth {
        let (a, f) = (2 * i, 2 * i + 1);
        v.push((format!("encoder.layers.{a}.0.0.g"), vec![1]));
        for w in ["to_q", "to_k", "to_v", "to_out"] {
            v.push((format!("encoder.layers.{a}.1.{w}.weight"), vec![h, h]));
        }
        v.push((format!("encoder.layers.{a}.2.residual_scale"), vec![h]));
        v.push((format!("encoder.layers.{f}.0.0.g"), vec![1]));
        v.push((
            format!("encoder.layers.{f}.1.ff.0.0.weight"),
            vec![inner, h],
        ));
        v.push((format!("encoder.layers.{f}.1.ff.0.0.bias"), vec![inner]));
        v.push((format!("encoder.layers.{f}.1.ff.2.weight"), vec![h, inner]));
        v.push((format!("encoder.layers.{f}.1.ff.2.bias"), vec![h]));
        v.push((format!("encoder.layers.{f}.2.residual_scale"), vec![h]));
    }
    v.push((
        "encoder.rotary_pos_emb.inv_freq".into(),
        vec![cfg.rotary_dim() / 2],
    ));
    v.push(("encoder.final_norm.g".into(), vec![1]));
    v
}

/// `model_build_args` for a checkpoint that does not carry them (model.safetensors): the order
/// is `data.features_to_use`, D*L is the projector input, L is the extractor's layer grouping in
/// the config, n_outputs the predictor width and n_output_timesteps `data.duration_trs`.
fn derive_build_args(cfg: &ReleaseConfig, ck: &Checkpoint) -> Result<BuildArgs> {
    let shape_of = |name: &str| {
        ck.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.clone())
    };
    let mut feature_dims = Vec::new();
    for m in &cfg.features_to_use {
        let name = format!("projectors.{m}.weight");
        let Some(shape) = shape_of(&name) else {
            return Err(Error::MissingTensor {
                name,
                path: ck.path.clone(),
            });
        };
        let input = shape.get(1).copied().unwrap_or(0);
        let layers = cfg
            .layer_groups
            .iter()
            .find(|(n, _)| n == m)
            .and_then(|(_, l)| *l);
        let (layers, dim) = match (cfg.brain.layer_aggregation, layers) {
            (LayerAggregation::Mean, Some(l)) => (l, input),
            (LayerAggregation::Cat, Some(l)) if l > 0 && input % l == 0 => (l, input / l),
            _ => {
                return Err(Error::Model {
                    path: ck.path.clone(),
                    message: format!(
                        "cannot tell the (layers, dims) of modality '{m}' (projector input {input}): the file has no \
                         model_build_args and data.{m}_feature's layer settings do not divide it"
                    ),
                    fix:
                        "use best.ckpt, or add model_build_args (JSON) to the safetensors metadata"
                            .into(),
                });
            }
        };
        feature_dims.push(FeatureDim {
            name: m.clone(),
            layers,
            dim,
        });
    }
    let n_outputs = shape_of("predictor.weights")
        .and_then(|s| s.get(2).copied())
        .ok_or_else(|| Error::MissingTensor {
            name: "predictor.weights".into(),
            path: ck.path.clone(),
        })?;
    Ok(BuildArgs {
        feature_dims,
        n_outputs,
        n_output_timesteps: cfg.timing.duration_trs,
    })
}

impl TribeModel {
    /// Load a model folder (`config.yaml` + `best.ckpt` or `model.safetensors`) onto `device`.
    pub fn load(path: &Path, device: &Device, options: ModelOptions) -> Result<Self> {
        let files = ModelFiles::locate(path)?;
        Self::load_files(&files, device, options)
    }

    /// Load from explicit config and weights paths.
    pub fn load_files(files: &ModelFiles, device: &Device, options: ModelOptions) -> Result<Self> {
        let config = config::load_config(&files.config)?;
        let mut ck = Checkpoint::open(&files.weights)?;
        let build_args = match &ck.build_args {
            Some(a) => a.clone(),
            None => derive_build_args(&config, &ck)?,
        };
        if build_args.feature_dims.is_empty()
            || config.brain.hidden % build_args.feature_dims.len() != 0
        {
            return Err(Error::Model {
                path: files.config.clone(),
                message: format!(
                    "hidden {} must be divisible by the number of modalities {} (no combiner)",
                    config.brain.hidden,
                    build_args.feature_dims.len()
                ),
                fix: "use the config.yaml released with this checkpoint".into(),
            });
        }
        let expected = expected_tensors(&config.brain, &build_args);
        ck.check(&expected)?;
        let brain = config.brain.clone();
        let subject_row = match options.subject_index {
            None => brain.default_subject_row(),
            Some(i) if i < brain.predictor_rows => i,
            Some(i) => {
                return Err(Error::Usage(format!(
                    "--subject-index {i} is out of range: this checkpoint's predictor has {} row(s) (0..={}); row {} is the \
                     unseen-subject readout used by default",
                    brain.predictor_rows,
                    brain.predictor_rows - 1,
                    brain.default_subject_row()
                )));
            }
        };
        let n_params = ck.numel();
        let dt = options.dtype.dtype();
        // `get` reads in f32 (what the checkpoint holds) and `cast` rounds to the compute dtype.
        // The rotary buffer and the ScaleNorm gains stay f32 (see ComputeDtype); the low-rank
        // fold is computed in f32 and rounded once.
        let mut get = |name: &str| ck.read_f32(name, device);
        let cast = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(dt)?) };
        let time_pos_embed = if brain.time_pos_embedding {
            Some(cast(get("time_pos_embed")?)?)
        } else {
            None
        };
        let mut projectors = Vec::new();
        for f in &build_args.feature_dims {
            let weight = cast(get(&format!("projectors.{}.weight", f.name))?)?;
            let bias = if brain.projector_bias {
                Some(cast(get(&format!("projectors.{}.bias", f.name))?)?)
            } else {
                None
            };
            projectors.push(Projector {
                feature: f.clone(),
                weight,
                bias,
            });
        }
        let low_rank = match brain.low_rank_head {
            Some(_) => Some(get("low_rank_head.weight")?),
            None => None,
        };
        // Keep only the chosen subject row (a 26-row training head would be 4 GiB).
        let weight = {
            let all = get("predictor.weights")?;
            if brain.predictor_rows == 1 {
                all.squeeze(0)?
            } else {
                all.get(subject_row)?.copy()?
            }
        };
        let bias = if brain.predictor_bias {
            let all = get("predictor.bias")?;
            Some(if brain.predictor_rows == 1 {
                all.squeeze(0)?
            } else {
                all.get(subject_row)?.copy()?
            })
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(brain.depth);
        for i in 0..brain.depth {
            let (a, f) = (2 * i, 2 * i + 1);
            let attn = AttentionBlock {
                norm_g: get(&format!("encoder.layers.{a}.0.0.g"))?,
                to_qkv: {
                    let q = get(&format!("encoder.layers.{a}.1.to_q.weight"))?;
                    let k = get(&format!("encoder.layers.{a}.1.to_k.weight"))?;
                    let v = get(&format!("encoder.layers.{a}.1.to_v.weight"))?;
                    cast(Tensor::cat(&[&q, &k, &v], 0)?)?
                },
                to_out: cast(get(&format!("encoder.layers.{a}.1.to_out.weight"))?)?,
                residual_scale: cast(get(&format!("encoder.layers.{a}.2.residual_scale"))?)?,
            };
            let ff = FeedForwardBlock {
                norm_g: get(&format!("encoder.layers.{f}.0.0.g"))?,
                w1: cast(get(&format!("encoder.layers.{f}.1.ff.0.0.weight"))?)?,
                b1: cast(get(&format!("encoder.layers.{f}.1.ff.0.0.bias"))?)?,
                w2: cast(get(&format!("encoder.layers.{f}.1.ff.2.weight"))?)?,
                b2: cast(get(&format!("encoder.layers.{f}.1.ff.2.bias"))?)?,
                residual_scale: cast(get(&format!("encoder.layers.{f}.2.residual_scale"))?)?,
            };
            blocks.push((attn, ff));
        }
        let encoder = Encoder {
            heads: brain.heads,
            blocks,
            inv_freq: get("encoder.rotary_pos_emb.inv_freq")?,
            final_norm_g: get("encoder.final_norm.g")?,
        };
        let bias = bias.map(cast).transpose()?;
        let head = if options.head.fold_low_rank {
            let weight = match &low_rank {
                // (hidden, r) @ (r, N) -> (hidden, N), folded in f32 and rounded once.
                Some(lr) => ops::matmul(&lr.t()?.contiguous()?, &weight, None, options.kernels)?,
                None => weight,
            };
            Head::Folded {
                weight: cast(weight)?,
                bias,
            }
        } else {
            Head::LowRank {
                low_rank: low_rank.map(cast).transpose()?,
                weight: cast(weight)?,
                bias,
            }
        };
        let proj_out = brain.hidden / build_args.feature_dims.len();
        Ok(TribeModel {
            config,
            build_args,
            device: device.clone(),
            options,
            subject_row,
            weights_path: files.weights.clone(),
            weights_format: ck.format,
            n_params,
            projectors,
            proj_out,
            time_pos_embed,
            encoder,
            head,
        })
    }

    /// Number of predicted values per time step (20,484 fsaverage5 vertices in the release).
    pub fn n_outputs(&self) -> usize {
        self.build_args.n_outputs
    }

    /// Output time steps per window (100 in the release).
    pub fn n_output_timesteps(&self) -> usize {
        self.build_args.n_output_timesteps
    }

    /// Input shapes per modality, (L, D), in the concatenation order.
    pub fn feature_dims(&self) -> &[FeatureDim] {
        &self.build_args.feature_dims
    }

    /// Window length, TR, feature rate and BOLD offset from the release config.
    pub fn timing(&self) -> &TimingConfig {
        &self.config.timing
    }

    pub fn config(&self) -> &ReleaseConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn options(&self) -> &ModelOptions {
        &self.options
    }

    /// The predictor row in use (the unseen-subject row unless `subject_index` was given).
    pub fn subject_row(&self) -> usize {
        self.subject_row
    }

    pub fn weights_path(&self) -> &Path {
        &self.weights_path
    }

    pub fn weights_format(&self) -> Format {
        self.weights_format
    }

    /// Elements stored in the checkpoint (parameters plus the rotary buffer).
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Largest T a window may have (the learned position table's length).
    pub fn max_timesteps(&self) -> usize {
        if self.time_pos_embed.is_some() {
            self.config.brain.max_seq_len
        } else {
            usize::MAX
        }
    }

    /// Run the model on a batch: `inputs[m]` is (B, L, D, T) for each present modality m (a
    /// missing modality is absent: zeros after its projection). Keys that are not modalities of
    /// this model are ignored, as the reference does. Returns (B, n_outputs, n_output_timesteps).
    pub fn forward(&self, inputs: &HashMap<String, Tensor>) -> Result<Tensor> {
        self.forward_traced(inputs, &mut Trace::off())
    }

    /// [`forward`](Self::forward), recording every stage into `trace` when it is enabled.
    pub fn forward_traced(
        &self,
        inputs: &HashMap<String, Tensor>,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let kern = self.options.kernels;
        let dt = self.options.dtype.dtype();
        let (b, t) = self.batch_and_time(inputs)?;
        let mut parts = Vec::with_capacity(self.projectors.len());
        for p in &self.projectors {
            let h = match inputs.get(&p.feature.name) {
                None => Tensor::zeros((b, t, self.proj_out), dt, &self.device)?,
                Some(x) => {
                    let x = self
                        .check_input(&p.feature, x)?
                        .to_device(&self.device)?
                        .to_dtype(dt)?;
                    let x = match self.config.brain.layer_aggregation {
                        // "b l d t -> b (l d) t": layer-major
                        LayerAggregation::Cat => {
                            x.reshape((b, p.feature.layers * p.feature.dim, t))?
                        }
                        LayerAggregation::Mean => x.mean(1)?,
                    };
                    let x = x.transpose(1, 2)?.contiguous()?;
                    ops::linear(&x, &p.weight, p.bias.as_ref(), kern)?
                }
            };
            trace.record(&format!("proj.{}", p.feature.name), &h);
            parts.push(h);
        }
        let mut x = Tensor::cat(&parts, 2)?;
        drop(parts);
        trace.record("x_cat", &x);
        if let Some(pe) = &self.time_pos_embed {
            x = x.broadcast_add(&pe.narrow(1, 0, t)?)?;
        }
        trace.record("x_pos", &x);
        let x = self.encoder.forward(&x, kern, trace)?;
        let n = self.n_output_timesteps();
        let pooled_first = self.options.head.pool_before_head;
        let x = if pooled_first {
            // Bin means in f32 (a no-op cast in f32 mode).
            ops::adaptive_avg_pool_time(&x.to_dtype(DType::F32)?, n)?.to_dtype(dt)?
        } else {
            x
        };
        let (z, weight, bias) = match &self.head {
            Head::LowRank {
                low_rank,
                weight,
                bias,
            } => {
                let z = match low_rank {
                    Some(lr) => ops::linear(&x, lr, None, kern)?,
                    None => x,
                };
                trace.record("low_rank", &z);
                (z, weight, bias)
            }
            Head::Folded { weight, bias } => (x, weight, bias),
        };
        // (B, T or n, K) @ (K, N) + bias, pooled to n steps and laid out (B, N, n) as the
        // reference returns it.
        let out = if dt != DType::F32 {
            // The head's GEMM in the compute dtype, then pooling and the output in f32.
            let y = ops::matmul(&z, weight, bias.as_ref(), kern)?.to_dtype(DType::F32)?;
            if trace.enabled() && !pooled_first {
                trace.record("pre_pool", &y.transpose(1, 2)?.contiguous()?);
            }
            ops::pool_time_transposed(&y, n, kern)?
        } else if trace.enabled() && !pooled_first {
            let y = ops::matmul(&z, weight, bias.as_ref(), kern)?;
            trace.record("pre_pool", &y.transpose(1, 2)?.contiguous()?);
            ops::pool_time_transposed(&y, n, kern)?
        } else {
            ops::matmul_pool_transposed(&z, weight, bias.as_ref(), n, kern)?
        };
        trace.record("expected", &out);
        Ok(out)
    }

    /// B and T from the present modalities, which must agree; at least one must be present.
    fn batch_and_time(&self, inputs: &HashMap<String, Tensor>) -> Result<(usize, usize)> {
        let mut bt: Option<(usize, usize, &str)> = None;
        for p in &self.projectors {
            let Some(x) = inputs.get(&p.feature.name) else {
                continue;
            };
            let dims = x.dims();
            if dims.len() < 3 {
                return Err(feature_err(
                    &p.feature,
                    format!("expected (B, L, D, T), found shape {dims:?}"),
                ));
            }
            let (b, t) = (dims[0], dims[dims.len() - 1]);
            match bt {
                None => bt = Some((b, t, &p.feature.name)),
                Some((b0, t0, m0)) if (b0, t0) != (b, t) => {
                    return Err(feature_err(
                        &p.feature,
                        format!(
                            "batch/time ({b}, {t}) differ from modality '{m0}' ({b0}, {t0}); all modalities share B and T"
                        ),
                    ));
                }
                _ => {}
            }
        }
        let Some((b, t, _)) = bt else {
            let names: Vec<&str> = self
                .projectors
                .iter()
                .map(|p| p.feature.name.as_str())
                .collect();
            return Err(Error::FeatureShape {
                modality: names.join("/"),
                message: "no modality is present: give at least one of these features".into(),
            });
        };
        if b == 0 || t == 0 {
            return Err(Error::FeatureShape {
                modality: "input".into(),
                message: format!("empty batch or time axis (B={b}, T={t})"),
            });
        }
        if t > self.max_timesteps() {
            return Err(Error::FeatureShape {
                modality: "input".into(),
                message: format!(
                    "T = {t} bins exceeds the model's max_seq_len {}: cut the run into windows",
                    self.max_timesteps()
                ),
            });
        }
        Ok((b, t))
    }

    /// (B, L, D, T) with this checkpoint's L and D (a 3-D (B, D, T) is accepted when L = 1, as
    /// the reference unsqueezes it).
    fn check_input(&self, f: &FeatureDim, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let x = if dims.len() == 3 && f.layers == 1 {
            x.unsqueeze(1)?
        } else {
            x.clone()
        };
        let d = x.dims();
        if d.len() != 4 || d[1] != f.layers || d[2] != f.dim {
            return Err(feature_err(
                f,
                format!(
                    "expected (B, L={}, D={}, T), found {:?}: the features come from a different extractor or layer setting \
                     than this checkpoint was trained with",
                    f.layers, f.dim, dims
                ),
            ));
        }
        if !x.dtype().is_float() {
            return Err(feature_err(
                f,
                format!("expected float features, found {:?}", x.dtype()),
            ));
        }
        Ok(x)
    }
}

fn feature_err(f: &FeatureDim, message: String) -> Error {
    Error::FeatureShape {
        modality: f.name.clone(),
        message,
    }
}
