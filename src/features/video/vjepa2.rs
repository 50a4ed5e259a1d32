//! The V-JEPA2 video encoder in candle (transformers `VJEPA2Model`, encoder part only).
//!
//! Read from the HF implementation and config, not copied. What matters for parity:
//! - The tubelet embedding is a Conv3d whose stride equals its kernel (2 x 16 x 16), so it is a
//!   reshape of the clip into non-overlapping patches followed by one matrix product. Tokens are
//!   ordered t-major: index = (t * rows + h) * cols + w.
//! - The 3-D rotary embedding rotates three equal slices of each head (`2 * ((head_dim / 3) / 2)`
//!   dims each, for frame, row and column positions) and leaves the remainder alone. Inside a
//!   slice, element i uses frequency `omega[i mod (slice / 2)]` (the reference repeats the table
//!   instead of interleaving it), and pairs are rotated as (x0, x1) -> (-x1, x0). Both quirks are
//!   reproduced.
//! - hidden_states has one entry per layer input plus the last output. Whether that last entry
//!   is layer-normed depends on the transformers version (SPEC §5.5): see [`LastHiddenState`].
//!
//! The predictor (unused by TRIBE) is never loaded.

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::features::attention::full_attention_tiled;
use crate::features::matmul::{WeightLayout, linear_bias, map_row_blocks, with_cpu_f32_data};

/// What the last entry of `hidden_states` holds.
///
/// transformers 5.x (the goldens, and the pip demo) returns the raw output of the last layer;
/// transformers 4.x returns it after the encoder's final LayerNorm. The last entry belongs to
/// TRIBE's second layer group, so this changes video features. The default matches the goldens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LastHiddenState {
    /// transformers 5.x: the last layer's output as is.
    #[default]
    Raw,
    /// transformers 4.x: `encoder.layernorm(last layer output)`.
    LayerNormed,
}

/// The fields of `config.json` the encoder needs (defaults are transformers' `VJEPA2Config`).
#[derive(Debug, Clone, Deserialize)]
pub struct Vjepa2Config {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_tubelet")]
    pub tubelet_size: usize,
    #[serde(default = "d_crop")]
    pub crop_size: usize,
    #[serde(default = "d_fpc")]
    pub frames_per_clip: usize,
    #[serde(default = "d_mlp")]
    pub mlp_ratio: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_chans")]
    pub in_chans: usize,
}

fn d_hidden() -> usize {
    1024
}
fn d_layers() -> usize {
    24
}
fn d_heads() -> usize {
    16
}
fn d_patch() -> usize {
    16
}
fn d_tubelet() -> usize {
    2
}
fn d_crop() -> usize {
    256
}
fn d_fpc() -> usize {
    64
}
fn d_mlp() -> f64 {
    4.0
}
fn d_eps() -> f64 {
    1e-6
}
fn d_true() -> bool {
    true
}
fn d_act() -> String {
    "gelu".into()
}
fn d_chans() -> usize {
    3
}

impl Vjepa2Config {
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Model {
            path: path.clone(),
            message: format!("cannot read the V-JEPA2 config: {e}"),
            fix: "point --model at a V-JEPA2 folder (config.json, model.safetensors, video_preprocessor_config.json)".into(),
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
            fix: "use the config.json shipped with the model".into(),
        })?;
        if let Some(t) = &cfg.model_type
            && t != "vjepa2"
        {
            return Err(Error::Model {
                path,
                message: format!("model_type is '{t}', not 'vjepa2'"),
                fix: "the video extractor needs facebook/vjepa2-vitg-fpc64-256 (or another V-JEPA2 checkpoint)".into(),
            });
        }
        cfg.validate(&path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
            fix: "use the config.json shipped with the model".into(),
        };
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(bad(format!(
                "head dim {} is odd; the rotary embedding needs pairs",
                self.head_dim()
            )));
        }
        if self.patch_size == 0
            || self.tubelet_size == 0
            || !self.crop_size.is_multiple_of(self.patch_size)
        {
            return Err(bad(format!(
                "crop_size {} is not a multiple of patch_size {}",
                self.crop_size, self.patch_size
            )));
        }
        if self.frames_per_clip == 0 || !self.frames_per_clip.is_multiple_of(self.tubelet_size) {
            return Err(bad(format!(
                "frames_per_clip {} is not a multiple of tubelet_size {}",
                self.frames_per_clip, self.tubelet_size
            )));
        }
        activation(&self.hidden_act)
            .map_err(|_| bad(format!("hidden_act '{}' is not supported", self.hidden_act)))?;
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Hidden states returned by a forward pass: the embedding output plus one per layer.
    pub fn n_hidden_states(&self) -> usize {
        self.num_hidden_layers + 1
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Tokens of one clip of `frames` frames at the configured crop.
    pub fn n_tokens(&self, frames: usize) -> usize {
        let g = self.crop_size / self.patch_size;
        frames / self.tubelet_size * g * g
    }
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    GeluErf,
    GeluTanh,
    Silu,
    Relu,
}

fn activation(name: &str) -> std::result::Result<Activation, ()> {
    match name {
        "gelu" => Ok(Activation::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
        "silu" | "swish" => Ok(Activation::Silu),
        "relu" => Ok(Activation::Relu),
        _ => Err(()),
    }
}

/// Rows per MLP block ([`map_row_blocks`]). A whole ViT-g clip's MLP activations are 8,192 x
/// 6,144 floats (200 MB) per intermediate, faulted in and zeroed afresh in every layer (about
/// 6 % of the CPU time in perf); blocks of at most 1,024 rows (25 MB) are reused from the heap
/// and cut the peak memory. The GEMMs stay large enough to run at full speed.
const MLP_ROWS: usize = 1024;

struct Linear {
    /// (out, in), as stored; used transposed.
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear_bias(x, &self.weight, WeightLayout::OutIn, self.bias.as_ref())
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

struct Layer {
    norm1: LayerNorm,
    /// query, key and value fused into one (3 * hidden, hidden) product.
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The V-JEPA2 encoder with its weights.
pub struct Vjepa2Encoder {
    cfg: Vjepa2Config,
    device: Device,
    dtype: DType,
    act: Activation,
    /// Conv3d weight flattened to (hidden, channels * tubelet * patch * patch).
    patch_weight: Tensor,
    patch_bias: Tensor,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    last: LastHiddenState,
    /// Rows per MLP block (1,024 by default: see `MLP_ROWS`); a setting so tests can force
    /// several blocks.
    pub mlp_rows: usize,
}

/// Tensors read from one or more safetensors files, with errors that name the file.
struct WeightFile {
    st: candle_core::safetensors::MmapedSafetensors,
    path: PathBuf,
    prefix: String,
    device: Device,
    dtype: DType,
}

impl WeightFile {
    fn open(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let (files, path) = if single.is_file() {
            (vec![single.clone()], single)
        } else if index.is_file() {
            (shards_from_index(&index)?, index)
        } else {
            return Err(Error::Model {
                path: dir.to_path_buf(),
                message:
                    "no model.safetensors (or model.safetensors.index.json) in the V-JEPA2 folder"
                        .into(),
                fix: "download the model's safetensors weights; .bin/.pth checkpoints are not read"
                    .into(),
            });
        };
        // SAFETY: the files are memory-mapped read-only; like every mmap reader we rely on
        // them not being truncated while the model is loaded.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
                Error::Checkpoint {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        // Classification checkpoints nest the encoder under `vjepa2.`.
        let prefix = if st.get("encoder.layernorm.weight").is_ok() {
            ""
        } else if st.get("vjepa2.encoder.layernorm.weight").is_ok() {
            "vjepa2."
        } else {
            return Err(Error::MissingTensor {
                name: "encoder.layernorm.weight".into(),
                path,
            });
        };
        Ok(Self {
            st,
            path,
            prefix: prefix.into(),
            device: device.clone(),
            dtype,
        })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let view = self.st.get(&full).map_err(|_| Error::MissingTensor {
            name: full.clone(),
            path: self.path.clone(),
        })?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: full,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
                path: Some(self.path.clone()),
            });
        }
        let t = self
            .st
            .load(&full, &self.device)
            .map_err(|e| Error::Checkpoint {
                path: self.path.clone(),
                message: format!("tensor '{full}': {e}"),
            })?;
        Ok(t.to_dtype(self.dtype)?)
    }
}

fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let idx: Index = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index.to_path_buf(),
        message: e.to_string(),
        fix: "re-download the model's model.safetensors.index.json".into(),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl Vjepa2Encoder {
    /// Load `config.json` + safetensors from an HF model folder. `dtype` is the compute type
    /// (F32 reproduces the goldens; BF16/F16 are for GPUs and outside the parity bound).
    pub fn load(dir: &Path, device: &Device, dtype: DType, last: LastHiddenState) -> Result<Self> {
        let cfg = Vjepa2Config::from_model_dir(dir)?;
        let w = WeightFile::open(dir, device, dtype)?;
        let (h, c, t, p) = (
            cfg.hidden_size,
            cfg.in_chans,
            cfg.tubelet_size,
            cfg.patch_size,
        );
        let patch_weight = w
            .get(
                "encoder.embeddings.patch_embeddings.proj.weight",
                &[h, c, t, p, p],
            )?
            .reshape((h, c * t * p * p))?;
        let patch_bias = w.get("encoder.embeddings.patch_embeddings.proj.bias", &[h])?;
        let eps = cfg.layer_norm_eps as f32;
        let norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: w.get(&format!("{name}.weight"), &[h])?,
                bias: w.get(&format!("{name}.bias"), &[h])?,
                eps,
            })
        };
        let linear = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            Ok(Linear {
                weight: w.get(&format!("{name}.weight"), &[out, inp])?,
                bias: if bias {
                    Some(w.get(&format!("{name}.bias"), &[out])?)
                } else {
                    None
                },
            })
        };
        let m = cfg.mlp_hidden();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let pre = format!("encoder.layer.{i}");
            let q = linear(&format!("{pre}.attention.query"), h, h, cfg.qkv_bias)?;
            let k = linear(&format!("{pre}.attention.key"), h, h, cfg.qkv_bias)?;
            let v = linear(&format!("{pre}.attention.value"), h, h, cfg.qkv_bias)?;
            let qkv = Linear {
                weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                bias: match (q.bias, k.bias, v.bias) {
                    (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[&a, &b, &c], 0)?),
                    _ => None,
                },
            };
            layers.push(Layer {
                norm1: norm(&format!("{pre}.norm1"))?,
                qkv,
                proj: linear(&format!("{pre}.attention.proj"), h, h, true)?,
                norm2: norm(&format!("{pre}.norm2"))?,
                fc1: linear(&format!("{pre}.mlp.fc1"), m, h, true)?,
                fc2: linear(&format!("{pre}.mlp.fc2"), h, m, true)?,
            });
        }
        let final_norm = norm("encoder.layernorm")?;
        let act = activation(&cfg.hidden_act).expect("validated in from_model_dir");
        Ok(Self {
            cfg,
            device: device.clone(),
            dtype,
            act,
            patch_weight,
            patch_bias,
            layers,
            final_norm,
            last,
            mlp_rows: MLP_ROWS,
        })
    }

    /// An encoder with random weights (normal, scaled by 1/sqrt(fan_in)), for benchmarks.
    /// `seed` seeds the generator on devices that support it (not the CPU).
    pub fn random(cfg: Vjepa2Config, device: &Device, dtype: DType, seed: u64) -> Result<Self> {
        if !device.is_cpu() {
            device.set_seed(seed)?;
        }
        let (h, m) = (cfg.hidden_size, cfg.mlp_hidden());
        let pdim = cfg.in_chans * cfg.tubelet_size * cfg.patch_size * cfg.patch_size;
        let randn = |shape: &[usize], fan_in: usize| -> Result<Tensor> {
            Ok(
                Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, shape, device)?
                    .to_dtype(dtype)?,
            )
        };
        let ones = |n| -> Result<Tensor> { Ok(Tensor::ones(n, dtype, device)?) };
        let zeros = |n| -> Result<Tensor> { Ok(Tensor::zeros(n, dtype, device)?) };
        let eps = cfg.layer_norm_eps as f32;
        let norm = || -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: ones(h)?,
                bias: zeros(h)?,
                eps,
            })
        };
        let mut layers = Vec::new();
        for _ in 0..cfg.num_hidden_layers {
            layers.push(Layer {
                norm1: norm()?,
                qkv: Linear {
                    weight: randn(&[3 * h, h], h)?,
                    bias: Some(zeros(3 * h)?),
                },
                proj: Linear {
                    weight: randn(&[h, h], h)?,
                    bias: Some(zeros(h)?),
                },
                norm2: norm()?,
                fc1: Linear {
                    weight: randn(&[m, h], h)?,
                    bias: Some(zeros(m)?),
                },
                fc2: Linear {
                    weight: randn(&[h, m], m)?,
                    bias: Some(zeros(h)?),
                },
            });
        }
        let act = activation(&cfg.hidden_act)
            .map_err(|_| Error::Other(format!("unsupported activation {}", cfg.hidden_act)))?;
        Ok(Self {
            patch_weight: randn(&[h, pdim], pdim)?,
            patch_bias: zeros(h)?,
            final_norm: norm()?,
            layers,
            act,
            device: device.clone(),
            dtype,
            cfg,
            last: LastHiddenState::Raw,
            mlp_rows: MLP_ROWS,
        })
    }

    pub fn config(&self) -> &Vjepa2Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn last_hidden_state(&self) -> LastHiddenState {
        self.last
    }

    /// Cut a clip `(frames, channels, crop, crop)` into tubelet patches
    /// `(tokens, channels * tubelet * patch * patch)`, t-major, each patch flattened in the
    /// Conv3d weight's (channel, dt, dy, dx) order.
    pub fn patchify(&self, clip: &Tensor) -> Result<Tensor> {
        let (t, c, hh, ww) = clip.dims4()?;
        let (ts, p) = (self.cfg.tubelet_size, self.cfg.patch_size);
        if c != self.cfg.in_chans
            || hh != self.cfg.crop_size
            || ww != self.cfg.crop_size
            || !t.is_multiple_of(ts)
            || t == 0
        {
            return Err(Error::ShapeMismatch {
                name: "pixel_values_videos".into(),
                expected: vec![
                    self.cfg.frames_per_clip,
                    self.cfg.in_chans,
                    self.cfg.crop_size,
                    self.cfg.crop_size,
                ],
                found: vec![t, c, hh, ww],
                path: None,
            });
        }
        let (nt, nh, nw) = (t / ts, hh / p, ww / p);
        let x = clip.reshape(vec![nt, ts, c, nh, p, nw, p])?;
        let x = x.permute(vec![0, 3, 5, 2, 1, 4, 6])?.contiguous()?;
        Ok(x.reshape((nt * nh * nw, c * ts * p * p))?)
    }

    /// [`Self::patchify`] for a clip given as its frames (each `channels x crop x crop`, as
    /// the clip assembler keeps them), without first copying them into one clip tensor: each
    /// row of 16 pixels goes straight to its patch. The result is on the encoder's device, in
    /// its dtype (the same values, since the cut only moves them).
    pub fn patchify_frames(&self, frames: &[&[f32]]) -> Result<Tensor> {
        let (c, crop) = (self.cfg.in_chans, self.cfg.crop_size);
        let (ts, p) = (self.cfg.tubelet_size, self.cfg.patch_size);
        if frames.is_empty()
            || !frames.len().is_multiple_of(ts)
            || frames.iter().any(|f| f.len() != c * crop * crop)
            || !crop.is_multiple_of(p)
        {
            return Err(Error::ShapeMismatch {
                name: "pixel_values_videos".into(),
                expected: vec![self.cfg.frames_per_clip, c, crop, crop],
                found: vec![
                    frames.len(),
                    frames.first().map_or(0, |f| f.len() / (crop * crop).max(1)),
                    crop,
                    crop,
                ],
                path: None,
            });
        }
        let (nt, ng) = (frames.len() / ts, crop / p);
        let pdim = c * ts * p * p;
        let mut out = vec![0f32; nt * ng * ng * pdim];
        // One tubelet row of patches (ng tokens) at a time; its source rows are contiguous.
        out.par_chunks_mut(ng * pdim)
            .enumerate()
            .for_each(|(row, dst)| {
                let (t, y) = (row / ng, row % ng);
                for ch in 0..c {
                    for dt in 0..ts {
                        let frame = frames[t * ts + dt];
                        for dy in 0..p {
                            let at = ch * crop * crop + (y * p + dy) * crop;
                            let src = &frame[at..at + crop];
                            let o = ((ch * ts + dt) * p + dy) * p;
                            for (x, seg) in src.chunks_exact(p).enumerate() {
                                dst[x * pdim + o..x * pdim + o + p].copy_from_slice(seg);
                            }
                        }
                    }
                }
            });
        Ok(Tensor::from_vec(out, (nt * ng * ng, pdim), &Device::Cpu)?
            .to_device(&self.device)?
            .to_dtype(self.dtype)?)
    }

    /// Run one clip and hand every hidden state `(tokens, hidden)` to `visit` in order
    /// (index 0 = patch embedding, index i = output of layer i - 1; the last one follows
    /// [`LastHiddenState`]). Passing states to a visitor instead of returning them keeps the
    /// memory of a ViT-g pass at a few states instead of 41.
    pub fn forward_visit(
        &self,
        clip: &Tensor,
        visit: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let clip = clip.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.forward_patches_visit(&self.patchify(&clip)?, visit)
    }

    /// [`Self::forward_visit`] from the clip's patches ([`Self::patchify`] or
    /// [`Self::patchify_frames`]), on the encoder's device and in its dtype.
    pub fn forward_patches_visit(
        &self,
        patches: &Tensor,
        mut visit: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let n = patches.dim(0)?;
        // On MKL where it is the backend, like every other product of the encoder.
        let mut h = linear_bias(
            patches,
            &self.patch_weight,
            WeightLayout::OutIn,
            Some(&self.patch_bias),
        )?;
        let rope = self.rope_tables(n)?;
        visit(0, &h)?;
        let n_layers = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            h = self.layer_forward(layer, &h, &rope)?;
            if i + 1 == n_layers && self.last == LastHiddenState::LayerNormed {
                visit(i + 1, &self.final_norm.forward(&h)?)?;
            } else {
                visit(i + 1, &h)?;
            }
        }
        Ok(())
    }

    /// Every hidden state of one clip, `(n_hidden_states, tokens, hidden)` as f32.
    pub fn hidden_states(&self, clip: &Tensor) -> Result<Tensor> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        self.forward_visit(clip, |_, h| {
            states.push(h.to_dtype(DType::F32)?);
            Ok(())
        })?;
        Ok(Tensor::stack(&states, 0)?)
    }

    /// The mean over tokens of the hidden states listed in `keep` (each `< n_hidden_states`),
    /// as f32 `(keep.len(), hidden)`: TRIBE's token aggregation.
    pub fn token_means(&self, clip: &Tensor, keep: &[usize]) -> Result<Tensor> {
        let clip = clip.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.patch_token_means(&self.patchify(&clip)?, keep)
    }

    /// [`Self::token_means`] from the clip's patches (see [`Self::forward_patches_visit`]).
    pub fn patch_token_means(&self, patches: &Tensor, keep: &[usize]) -> Result<Tensor> {
        let mut means: Vec<Option<Tensor>> = vec![None; keep.len()];
        self.forward_patches_visit(patches, |i, h| {
            let m = h.to_dtype(DType::F32)?.mean(0)?;
            for (slot, &k) in means.iter_mut().zip(keep) {
                if k == i {
                    *slot = Some(m.clone());
                }
            }
            Ok(())
        })?;
        let means: Vec<Tensor> = means
            .into_iter()
            .zip(keep)
            .map(|(m, &k)| {
                m.ok_or_else(|| Error::Other(format!("hidden state {k} does not exist")))
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::stack(&means, 0)?)
    }

    fn layer_forward(&self, layer: &Layer, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let (n, hidden) = x.dims2()?;
        let heads = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let a = layer.norm1.forward(x)?;
        let qkv = layer.qkv.forward(&a)?; // (n, 3 * hidden)
        let o = match fused_cpu_attention(&qkv, rope, heads, hd) {
            Some(o) => Tensor::from_vec(o, (n, hidden), qkv.device())?,
            None => {
                let split = |i: usize| -> Result<Tensor> {
                    Ok(qkv
                        .narrow(1, i * hidden, hidden)?
                        .reshape((n, heads, hd))?
                        .transpose(0, 1)?
                        .contiguous()?)
                };
                let (q, k, v) = (split(0)?, split(1)?, split(2)?); // (heads, n, hd)
                let k = rope.apply(&k)?;
                let q = rope.apply(&q)?;
                attention(&q, &k, &v)? // (n, hidden)
            }
        };
        let x = (layer.proj.forward(&o)? + x)?;
        // The MLP is row-wise, so it runs in row blocks (see `MLP_ROWS`).
        map_row_blocks(&x, self.mlp_rows, |xr| self.mlp(layer, xr))
    }

    /// `x + fc2(act(fc1(norm2(x))))` for a block of rows.
    fn mlp(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let m = layer.norm2.forward(x)?;
        let m = layer.fc1.forward(&m)?;
        let m = match self.act {
            Activation::GeluErf => super::fastmath::gelu_erf(&m)?,
            Activation::GeluTanh => m.gelu()?,
            Activation::Silu => m.silu()?,
            Activation::Relu => m.relu()?,
        };
        Ok((layer.fc2.forward(&m)? + x)?)
    }

    /// cos/sin tables `(tokens, head_dim)` of the 3-D rotary embedding.
    fn rope_tables(&self, n: usize) -> Result<Rope> {
        let hd = self.cfg.head_dim();
        let grid = self.cfg.crop_size / self.cfg.patch_size;
        let per_frame = grid * grid;
        let sd = 2 * ((hd / 3) / 2); // dims per axis
        let mut cos = vec![1f32; n * hd];
        let mut sin = vec![0f32; n * hd];
        if sd > 0 {
            let half = sd / 2;
            // omega = 1 / 10000^(arange(half) / half), in float32 as the reference.
            let omega: Vec<f32> = (0..half)
                .map(|i| 1.0f32 / 10000f32.powf(i as f32 / half as f32))
                .collect();
            for tok in 0..n {
                let f = tok / per_frame;
                let rem = tok - per_frame * f;
                let r = rem / grid;
                let c = rem - grid * r;
                for (axis, pos) in [f, r, c].into_iter().enumerate() {
                    for i in 0..sd {
                        let ang = pos as f32 * omega[i % half];
                        cos[tok * hd + axis * sd + i] = ang.cos();
                        sin[tok * hd + axis * sd + i] = ang.sin();
                    }
                }
            }
        }
        let to = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (1, n, hd), &Device::Cpu)?
                .to_device(&self.device)?
                .to_dtype(self.dtype)?)
        };
        Ok(Rope {
            cos: to(cos)?,
            sin: to(sin)?,
        })
    }
}

/// Rotary tables; `apply` works on `(heads, tokens, head_dim)`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (h, n, d) = x.dims3()?;
        // (x0, x1) -> (-x1, x0) on consecutive pairs.
        let pairs = x.reshape((h, n, d / 2, 2))?;
        let x0 = pairs.narrow(D::Minus1, 0, 1)?;
        let x1 = pairs.narrow(D::Minus1, 1, 1)?;
        let rot = Tensor::cat(&[&x1.neg()?, &x0], D::Minus1)?.reshape((h, n, d))?;
        Ok((x.broadcast_mul(&self.cos)? + rot.broadcast_mul(&self.sin)?)?)
    }
}

/// Query and key block sizes of the CPU attention ([`full_attention_tiled`]): a 512 x 512
/// score block is 1 MiB, so it stays in cache instead of 512 queries against all 8,192 keys at
/// once (16 MiB of scores a thread, written out and read back twice).
/// - On the Intel Xeon (AVX-512, 2 MiB L2), 256 x 1,024 was 6-19 % faster than 512 x 8,192 in
///   6 of 6 runs side by side, and 128 or 512 queries, 512 or 2,048 keys were no better.
/// - On the AMD EPYC (AVX2, 512 KiB L2, MKL's Zen kernels), 512 x 512 had the lowest median of
///   5 alternating rounds: 3.20 s per ViT-g layer's attention, against 3.54 s for 256 x 1,024,
///   3.28 s for 256 x 512 and 3.20 s for 128 x 2,048 (`benches/vjepa2.rs attn` with
///   `TRIBE_BENCH_QB`/`TRIBE_BENCH_KB`).
const Q_BLOCK: usize = 512;
const K_BLOCK: usize = 512;

/// The CPU f32 attention of one layer, from the fused `(n, 3 * hidden)` q/k/v product to the
/// `(n, hidden)` input of the output projection; `None` off the CPU or in another dtype.
///
/// One pass splits the product into heads and rotates q and k (candle's narrow, transpose,
/// contiguous and rotary ops took 0.45 s of a 5 s layer, mostly strided copies), then the
/// fused kernel of [`crate::features::attention`] runs a block of queries at a time in a
/// buffer each thread reuses: the 16 x 8192 x 8192 scores of a clip (4.3 GB) never exist at
/// once and no fresh pages are mapped per block. The rotation is the reference's
/// `x * cos + rotate(x) * sin` with the same f32 roundings as [`Rope::apply`].
fn fused_cpu_attention(qkv: &Tensor, rope: &Rope, heads: usize, hd: usize) -> Option<Vec<f32>> {
    use rayon::prelude::*;
    let hidden = heads * hd;
    let run = |x: &[f32], cos: &[f32], sin: &[f32]| {
        let n = x.len() / (3 * hidden);
        // (3, heads, n, hd): q, k, v, each head's tokens contiguous.
        let mut split = vec![0f32; 3 * hidden * n];
        split
            .par_chunks_mut(n * hd)
            .enumerate()
            .for_each(|(i, dst)| {
                let (part, h) = (i / heads, i % heads);
                for (tok, d) in dst.chunks_exact_mut(hd).enumerate() {
                    let src = &x[tok * 3 * hidden + part * hidden + h * hd..][..hd];
                    if part == 2 {
                        d.copy_from_slice(src);
                        continue;
                    }
                    let (c, s) = (&cos[tok * hd..][..hd], &sin[tok * hd..][..hd]);
                    for j in (0..hd).step_by(2) {
                        let (x0, x1) = (src[j], src[j + 1]);
                        d[j] = x0 * c[j] + (-x1) * s[j];
                        d[j + 1] = x1 * c[j + 1] + x0 * s[j + 1];
                    }
                }
            });
        let (q, kv) = split.split_at(hidden * n);
        let (k, v) = kv.split_at(hidden * n);
        full_attention_tiled(q, k, v, heads, heads, n, hd, n, Q_BLOCK, K_BLOCK)
    };
    with_cpu_f32_data(qkv, |x| {
        with_cpu_f32_data(&rope.cos, |cos| {
            with_cpu_f32_data(&rope.sin, |sin| run(x, cos, sin))
        })
    })
    .flatten()
    .flatten()
}

/// Softmax attention over `(heads, tokens, head_dim)` with candle ops (GPU, bf16), returned as
/// `(tokens, heads * head_dim)`: one head at a time in blocks of 512 queries, so the scores of
/// a clip never exist at once. The scale is applied to the queries (one small product instead
/// of a pass over every score; the difference is float rounding), and the softmax runs in
/// float32 whatever the compute type, as the reference's.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    const BLOCK: usize = 512;
    let (heads, n, hd) = q.dims3()?;
    let q = (q * (hd as f64).powf(-0.5))?;
    let mut per_head = Vec::with_capacity(heads);
    for h in 0..heads {
        let (qh, vh) = (q.get(h)?, v.get(h)?);
        let kt = k.get(h)?.t()?.contiguous()?; // (hd, n)
        let mut outs = Vec::with_capacity(n.div_ceil(BLOCK));
        let mut start = 0;
        while start < n {
            let len = BLOCK.min(n - start);
            let scores = qh.narrow(0, start, len)?.matmul(&kt)?;
            let probs = if scores.dtype() == DType::F32 {
                super::fastmath::softmax_last_dim(&scores)?
            } else {
                super::fastmath::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                    .to_dtype(scores.dtype())?
            };
            outs.push(probs.matmul(&vh)?);
            start += len;
        }
        per_head.push(if outs.len() == 1 {
            outs.pop().expect("one block")
        } else {
            Tensor::cat(&outs, 0)?
        });
    }
    Ok(Tensor::stack(&per_head, 0)?
        .transpose(0, 1)?
        .reshape((n, heads * hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small V-JEPA2 (hidden 96, 4 heads, 64 x 64 crops, 8 frames: 64 tokens).
    fn small_config(layers: usize) -> Vjepa2Config {
        serde_json::from_value(serde_json::json!({
            "model_type": "vjepa2", "hidden_size": 96, "num_hidden_layers": layers,
            "num_attention_heads": 4, "patch_size": 16, "tubelet_size": 2,
            "crop_size": 64, "frames_per_clip": 8,
        }))
        .unwrap()
    }

    /// Cutting patches from the frames is the same permutation as cutting them from the
    /// stacked clip tensor, value for value; a wrong frame count or frame size is refused.
    #[test]
    fn patches_from_frames_equal_patches_from_the_clip() {
        let enc = Vjepa2Encoder::random(small_config(1), &Device::Cpu, DType::F32, 5).unwrap();
        let clip = Tensor::randn(0f32, 1f32, (8, 3, 64, 64), &Device::Cpu).unwrap();
        let want = enc.patchify(&clip).unwrap();
        let frames: Vec<Vec<f32>> = (0..8)
            .map(|f| {
                clip.get(f)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let refs: Vec<&[f32]> = frames.iter().map(Vec::as_slice).collect();
        let got = enc.patchify_frames(&refs).unwrap();
        assert_eq!(got.dims(), want.dims());
        let (got, want): (Vec<f32>, Vec<f32>) = (
            got.flatten_all().unwrap().to_vec1().unwrap(),
            want.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(got == want, "patches differ");
        assert!(enc.patchify_frames(&refs[..7]).is_err());
        let short = vec![0f32; 3 * 64 * 63];
        let mut bad = refs.clone();
        bad[3] = &short;
        assert!(enc.patchify_frames(&bad).is_err());
    }

    /// The MLP in row blocks against the MLP over the whole clip, through two layers.
    #[test]
    fn mlp_row_blocks_change_nothing() {
        let cfg = small_config(2);
        let mut enc = Vjepa2Encoder::random(cfg, &Device::Cpu, DType::F32, 3).unwrap();
        let clip = Tensor::randn(0f32, 1f32, (8, 3, 64, 64), &Device::Cpu).unwrap();
        enc.mlp_rows = usize::MAX;
        let whole = enc.hidden_states(&clip).unwrap();
        // 64 tokens in blocks of at most 13 rows: 5 equal blocks of 13, the last of 12.
        enc.mlp_rows = 13;
        let blocked = enc.hidden_states(&clip).unwrap();
        let worst = (whole - blocked)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .unwrap();
        assert!(
            worst < 1e-5,
            "row blocks changed the hidden states by {worst}"
        );
    }

    /// The fused CPU attention (one split-and-rotate pass, then the fused kernel) against the
    /// candle ops the GPU and bf16 paths run, on a small clip with every rotary axis in use.
    #[test]
    fn fused_cpu_attention_matches_the_candle_path() {
        let cfg = small_config(1);
        let enc = Vjepa2Encoder::random(cfg, &Device::Cpu, DType::F32, 1).unwrap();
        let (heads, hd) = (4, 24);
        let n = enc.cfg.n_tokens(8); // 4 tubelets x 4 x 4 patches
        let rope = enc.rope_tables(n).unwrap();
        let qkv = Tensor::randn(0f32, 1f32, (n, 3 * heads * hd), &Device::Cpu).unwrap();
        let fused = fused_cpu_attention(&qkv, &rope, heads, hd).expect("CPU f32 path");
        let split = |i: usize| {
            qkv.narrow(1, i * heads * hd, heads * hd)
                .unwrap()
                .reshape((n, heads, hd))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let q = rope.apply(&split(0)).unwrap();
        let k = rope.apply(&split(1)).unwrap();
        let want: Vec<f32> = attention(&q, &k, &split(2))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(fused.len(), want.len());
        let worst = fused
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-6, "fused and candle attention differ by {worst}");
    }
}
