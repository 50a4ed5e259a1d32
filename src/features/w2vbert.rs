//! Wav2Vec2-BERT (facebook/w2v-bert-2.0) in candle, read from transformers'
//! `modeling_wav2vec2_bert.py` (identical in transformers 4.57 and 5.24 for what TRIBE uses).
//!
//! Model: `feature_projection` (LayerNorm over the 160-dim stacked filterbank, Linear to hidden)
//! then `num_hidden_layers` conformer layers, each
//! `x += 0.5·FFN1(LN(x))`; `x += SelfAttn(LN(x))`; `x += Conv(x)`; `x += 0.5·FFN2(LN(x))`; `x = LN(x)`,
//! where FFN is Linear → swish → Linear, and Conv is LN → pointwise conv to 2C → GLU → causal
//! depthwise conv (kernel 31, padded on the left only) → LN → swish → pointwise conv.
//! Self-attention with `position_embeddings_type = "relative_key"` (the real w2v-bert-2.0 config and
//! the tiny fixture both name it) adds `q·E[clamp(j − i, −left, right) + left] / √d` to the scores,
//! with a learned table E of `left + right + 1` rows; `None` uses plain scaled dot-product.
//! Hidden states returned: the projection output and every layer output (25 for the real model);
//! the encoder has no final norm. Dropout, SpecAugment and layerdrop are inactive at inference.
//! The HF `attention_mask` is never passed by the reference, so none is supported.
//!
//! Efficiency (same math, fewer FLOPs and less memory than the reference): the relative-key term
//! needs only `q·E` for the 73 distinct distances, gathered per score instead of a (T, T, d)
//! product; attention runs in blocks of query rows so the (heads, T, T) score tensor never exists
//! at once; and the depthwise convolution has a direct CPU kernel.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::features::matmul::{WeightLayout, linear_bias};

/// The parts of `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct W2vBertConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_feat_dim")]
    pub feature_projection_input_dim: usize,
    #[serde(default = "default_kernel")]
    pub conv_depthwise_kernel_size: usize,
    #[serde(default)]
    pub position_embeddings_type: Option<String>,
    #[serde(default = "default_left")]
    pub left_max_position_embeddings: usize,
    #[serde(default = "default_right")]
    pub right_max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn default_feat_dim() -> usize {
    160
}
fn default_kernel() -> usize {
    31
}
fn default_left() -> usize {
    64
}
fn default_right() -> usize {
    8
}
fn default_act() -> String {
    "swish".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl W2vBertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let cfg: W2vBertConfig = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
            fix: "use the config.json of facebook/w2v-bert-2.0".into(),
        })?;
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
            fix: "point --model at a Wav2Vec2-BERT folder (facebook/w2v-bert-2.0)".into(),
        };
        if let Some(t) = &cfg.model_type
            && t != "wav2vec2-bert"
        {
            return Err(bad(format!(
                "model_type is '{t}', expected 'wav2vec2-bert'"
            )));
        }
        match cfg.position_embeddings_type.as_deref() {
            None | Some("relative_key") => {}
            Some(other) => {
                return Err(bad(format!(
                    "position_embeddings_type '{other}' is not implemented (w2v-bert-2.0 uses 'relative_key')"
                )));
            }
        }
        if !matches!(cfg.hidden_act.as_str(), "swish" | "silu") {
            return Err(bad(format!(
                "hidden_act '{}' is not implemented (w2v-bert-2.0 uses 'swish')",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.conv_depthwise_kernel_size.is_multiple_of(2) {
            return Err(bad(format!(
                "conv_depthwise_kernel_size {} must be odd",
                cfg.conv_depthwise_kernel_size
            )));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of hidden states `output_hidden_states=True` returns.
    pub fn n_hidden_states(&self) -> usize {
        self.num_hidden_layers + 1
    }

    fn relative_key(&self) -> bool {
        self.position_embeddings_type.as_deref() == Some("relative_key")
    }
}

/// Named tensors from one or more safetensors files, loaded strictly: every tensor the config
/// implies must exist with the expected shape.
struct Weights {
    st: candle_core::safetensors::MmapedSafetensors,
    files: Vec<PathBuf>,
    prefix: String,
    device: Device,
}

impl Weights {
    fn open(dir: &Path, device: &Device) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
                path: index.clone(),
                message: e.to_string(),
                fix: "re-download the model".into(),
            })?;
            let mut names: Vec<String> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            return Err(Error::Model {
                path: dir.to_path_buf(),
                message: "no model.safetensors (or model.safetensors.index.json)".into(),
                fix: "download facebook/w2v-bert-2.0 with its safetensors weights".into(),
            });
        };
        // SAFETY: the weight files are mapped read-only and must not be modified while the model
        // is loaded; tensors are copied out of the map when loaded below.
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
                Error::Checkpoint {
                    path: files.first().cloned().unwrap_or_default(),
                    message: e.to_string(),
                }
            })?;
        // Task-head checkpoints (CTC, classification) nest the encoder under `wav2vec2_bert.`.
        let prefix = if st.get("feature_projection.projection.weight").is_ok() {
            String::new()
        } else if st
            .get("wav2vec2_bert.feature_projection.projection.weight")
            .is_ok()
        {
            "wav2vec2_bert.".into()
        } else {
            String::new()
        };
        Ok(Weights {
            st,
            files,
            prefix,
            device: device.clone(),
        })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let path = self.files.first().cloned().unwrap_or_default();
        let t = self
            .st
            .load(&full, &Device::Cpu)
            .map_err(|_| Error::MissingTensor {
                name: full.clone(),
                path: path.clone(),
            })?;
        if t.dims() != shape {
            return Err(Error::ShapeMismatch {
                name: full,
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
                path: Some(path),
            });
        }
        Ok(t.to_dtype(DType::F32)?.to_device(&self.device)?)
    }
}

struct Linear {
    /// Stored transposed, (in, out), so the forward is a plain matmul.
    wt: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn load(w: &Weights, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Self> {
        let wt = w
            .get(&format!("{name}.weight"), &[out_dim, in_dim])?
            .t()?
            .contiguous()?;
        let b = if bias {
            Some(w.get(&format!("{name}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Linear { wt, b })
    }

    /// From a (out, in, 1) Conv1d weight (the conformer's pointwise convolutions).
    fn load_pointwise(w: &Weights, name: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        let wt = w
            .get(&format!("{name}.weight"), &[out_dim, in_dim, 1])?
            .squeeze(2)?
            .t()?
            .contiguous()?;
        Ok(Linear { wt, b: None })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(linear_bias(
            x,
            &self.wt,
            WeightLayout::InOut,
            self.b.as_ref(),
        )?)
    }
}

/// torch's `nn.LayerNorm` over the last dimension.
///
/// Not candle's `ops::layer_norm`: that takes the variance as `E[x²] − mean²` in float32, which
/// cancels catastrophically when a row is nearly constant. The model's first LayerNorm sees
/// exactly such rows: a digitally silent filterbank frame is the same floor value in every mel
/// bin, so after CMVN its 160 inputs differ only by ~2e-3 around −0.98 (variance ~5e-6, below
/// `eps`). There the one-pass formula lost ~2 % of the variance and moved the projection output
/// by 3.3e-2 on the e2e movie. torch computes the moments properly (Welford); on CPU we take a
/// two-pass mean and centred variance in float64 and then apply torch's float32 output formula
/// `fma((x − mean)·rstd, γ, β)` (bit-exact to torch 2.15 given its mean and rstd; its vectorised
/// Welford moments differ from ours in the last bit of rstd, ~6e-6 on the outputs).
struct LayerNorm {
    w: Tensor,
    b: Tensor,
    /// γ and β on the host, for the CPU kernel.
    w_host: Vec<f32>,
    b_host: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let wt = w.get(&format!("{name}.weight"), &[dim])?;
        let bt = w.get(&format!("{name}.bias"), &[dim])?;
        let host = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?)
        };
        Ok(LayerNorm {
            w_host: host(&wt)?,
            b_host: host(&bt)?,
            w: wt,
            b: bt,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            self.forward_cpu(x)
        } else {
            self.forward_generic(x)
        }
    }

    fn forward_cpu(&self, x: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;
        let dims = x.dims().to_vec();
        let d = *dims.last().unwrap_or(&0);
        if d != self.w_host.len() {
            return Err(Error::FeatureShape {
                modality: "audio".into(),
                message: format!("LayerNorm over {} features got {d}", self.w_host.len()),
            });
        }
        let mut v = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        v.par_chunks_mut(d.max(1) * 64).for_each(|rows| {
            for row in rows.chunks_mut(d) {
                let mean = row.iter().map(|a| *a as f64).sum::<f64>() / d as f64;
                let var = row
                    .iter()
                    .map(|a| {
                        let c = *a as f64 - mean;
                        c * c
                    })
                    .sum::<f64>()
                    / d as f64;
                let rstd = 1.0 / (var as f32 + self.eps).sqrt();
                let mean = mean as f32;
                for ((a, g), b) in row.iter_mut().zip(&self.w_host).zip(&self.b_host) {
                    // fma(c, γ, β): the product is exact in f64, so one rounding of the sum.
                    let c = (*a - mean) * rstd;
                    *a = (c as f64 * *g as f64 + *b as f64) as f32;
                }
            }
        });
        Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
    }

    /// The same moments with tensor ops, for any device (float32 only on some GPUs): shifted by
    /// each row's first value so that the float32 sums see the small deviations, not the offset.
    fn forward_generic(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let last = x.rank() - 1;
        let shifted = x.broadcast_sub(&x.narrow(last, 0, 1)?)?;
        let centred = shifted.broadcast_sub(&shifted.mean_keepdim(last)?)?;
        let var = centred.sqr()?.mean_keepdim(last)?;
        let rstd = (var + self.eps as f64)?.sqrt()?.recip()?;
        let y = centred
            .broadcast_mul(&rstd)?
            .broadcast_mul(&self.w.to_dtype(DType::F32)?)?
            .broadcast_add(&self.b.to_dtype(DType::F32)?)?;
        Ok(y.to_dtype(dtype)?)
    }
}

struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&self.up.forward(x)?.silu()?)
    }
}

struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    /// (left + right + 1, head_dim) for relative_key.
    distance: Option<Tensor>,
}

struct ConvModule {
    ln: LayerNorm,
    pw1: Linear,
    /// (channels, kernel) depthwise weights.
    dw: Tensor,
    dw_ln: LayerNorm,
    pw2: Linear,
}

struct ConformerLayer {
    ffn1_ln: LayerNorm,
    ffn1: FeedForward,
    attn_ln: LayerNorm,
    attn: SelfAttention,
    conv: ConvModule,
    ffn2_ln: LayerNorm,
    ffn2: FeedForward,
    final_ln: LayerNorm,
}

/// Query rows per attention block: bounds the score buffer to heads × block × T floats.
const ATTN_BLOCK: usize = 256;

/// Which implementation runs attention and the depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Fused CPU kernels (the default on CPU).
    Fused,
    /// Plain candle tensor ops, for any device (the default off CPU).
    Generic,
}

/// The Wav2Vec2-BERT encoder.
pub struct W2vBert {
    cfg: W2vBertConfig,
    kernels: Kernels,
    proj_ln: LayerNorm,
    proj: Linear,
    layers: Vec<ConformerLayer>,
    device: Device,
}

impl W2vBert {
    /// Load `config.json` + safetensors weights from an HF model folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = W2vBertConfig::from_file(&dir.join("config.json"))?;
        let w = Weights::open(dir, device)?;
        let (c, i, f) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.feature_projection_input_dim,
        );
        let eps = cfg.layer_norm_eps;
        let proj_ln = LayerNorm::load(&w, "feature_projection.layer_norm", f, eps)?;
        let proj = Linear::load(&w, "feature_projection.projection", c, f, true)?;
        let n_dist = cfg.left_max_position_embeddings + cfg.right_max_position_embeddings + 1;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layers.{l}");
                let ffn = |n: &str| -> Result<FeedForward> {
                    Ok(FeedForward {
                        up: Linear::load(&w, &format!("{p}.{n}.intermediate_dense"), i, c, true)?,
                        down: Linear::load(&w, &format!("{p}.{n}.output_dense"), c, i, true)?,
                    })
                };
                let lin = |n: &str| Linear::load(&w, &format!("{p}.self_attn.{n}"), c, c, true);
                let k = cfg.conv_depthwise_kernel_size;
                Ok(ConformerLayer {
                    ffn1_ln: LayerNorm::load(&w, &format!("{p}.ffn1_layer_norm"), c, eps)?,
                    ffn1: ffn("ffn1")?,
                    attn_ln: LayerNorm::load(&w, &format!("{p}.self_attn_layer_norm"), c, eps)?,
                    attn: SelfAttention {
                        q: lin("linear_q")?,
                        k: lin("linear_k")?,
                        v: lin("linear_v")?,
                        out: lin("linear_out")?,
                        distance: if cfg.relative_key() {
                            Some(w.get(
                                &format!("{p}.self_attn.distance_embedding.weight"),
                                &[n_dist, cfg.head_dim()],
                            )?)
                        } else {
                            None
                        },
                    },
                    conv: ConvModule {
                        ln: LayerNorm::load(&w, &format!("{p}.conv_module.layer_norm"), c, eps)?,
                        pw1: Linear::load_pointwise(
                            &w,
                            &format!("{p}.conv_module.pointwise_conv1"),
                            2 * c,
                            c,
                        )?,
                        dw: w
                            .get(
                                &format!("{p}.conv_module.depthwise_conv.weight"),
                                &[c, 1, k],
                            )?
                            .squeeze(1)?,
                        dw_ln: LayerNorm::load(
                            &w,
                            &format!("{p}.conv_module.depthwise_layer_norm"),
                            c,
                            eps,
                        )?,
                        pw2: Linear::load_pointwise(
                            &w,
                            &format!("{p}.conv_module.pointwise_conv2"),
                            c,
                            c,
                        )?,
                    },
                    ffn2_ln: LayerNorm::load(&w, &format!("{p}.ffn2_layer_norm"), c, eps)?,
                    ffn2: ffn("ffn2")?,
                    final_ln: LayerNorm::load(&w, &format!("{p}.final_layer_norm"), c, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let kernels = if device.is_cpu() {
            Kernels::Fused
        } else {
            Kernels::Generic
        };
        Ok(W2vBert {
            cfg,
            kernels,
            proj_ln,
            proj,
            layers,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &W2vBertConfig {
        &self.cfg
    }

    /// Switch kernels (the generic path is what a GPU runs; tests compare the two on CPU).
    pub fn set_kernels(&mut self, kernels: Kernels) -> Result<()> {
        if kernels == Kernels::Fused && !self.device.is_cpu() {
            return Err(Error::Usage("the fused kernels run on CPU only".into()));
        }
        self.kernels = kernels;
        Ok(())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run on `(frames, feature_dim)` input features, calling `visit(i, h)` with hidden state `i`
    /// (`(frames, hidden)`) as soon as it exists, so callers can keep only what they need.
    pub fn forward_each(
        &self,
        features: &Tensor,
        mut visit: impl FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let (t, f) = features.dims2()?;
        if f != self.cfg.feature_projection_input_dim || t == 0 {
            return Err(Error::FeatureShape {
                modality: "audio".into(),
                message: format!(
                    "input features are ({t}, {f}); the model expects (frames > 0, {})",
                    self.cfg.feature_projection_input_dim
                ),
            });
        }
        let x = features.to_device(&self.device)?.to_dtype(DType::F32)?;
        let mut h = self.proj.forward(&self.proj_ln.forward(&x)?)?;
        visit(0, &h)?;
        // Index tensors for the device-generic attention; the CPU kernel reads q·E directly.
        let rel_index = if self.cfg.relative_key() && self.kernels == Kernels::Generic {
            Some(self.relative_index(t)?)
        } else {
            None
        };
        for (l, layer) in self.layers.iter().enumerate() {
            h = self.layer_forward(layer, &h, rel_index.as_deref())?;
            visit(l + 1, &h)?;
        }
        Ok(())
    }

    /// Every hidden state, `(n_layers + 1)` tensors of `(frames, hidden)`.
    pub fn forward_hidden_states(&self, features: &Tensor) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.cfg.n_hidden_states());
        self.forward_each(features, |_, h| {
            out.push(h.clone());
            Ok(())
        })?;
        Ok(out)
    }

    fn layer_forward(
        &self,
        layer: &ConformerLayer,
        x: &Tensor,
        rel_index: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        let ff1 = layer.ffn1.forward(&layer.ffn1_ln.forward(x)?)?;
        let x = ((ff1 * 0.5)? + x)?;
        let a = self.attention(&layer.attn, &layer.attn_ln.forward(&x)?, rel_index)?;
        let x = (a + &x)?;
        let c = self.conv_module(&layer.conv, &x)?;
        let x = (&x + c)?;
        let ff2 = layer.ffn2.forward(&layer.ffn2_ln.forward(&x)?)?;
        let x = ((ff2 * 0.5)? + x)?;
        layer.final_ln.forward(&x)
    }

    /// For each block of query rows, the flat index into `(block, n_dist)` of `q·E` that every
    /// score needs: row l, column r reads distance `clamp(r − l, −left, right) + left`.
    fn relative_index(&self, t: usize) -> Result<Vec<Tensor>> {
        let (left, right) = (
            self.cfg.left_max_position_embeddings as i64,
            self.cfg.right_max_position_embeddings as i64,
        );
        let n_dist = (left + right + 1) as u32;
        (0..t)
            .step_by(ATTN_BLOCK)
            .map(|l0| {
                let b = ATTN_BLOCK.min(t - l0);
                let mut idx = Vec::with_capacity(b * t);
                for li in 0..b {
                    let l = (l0 + li) as i64;
                    for r in 0..t as i64 {
                        idx.push(li as u32 * n_dist + ((r - l).clamp(-left, right) + left) as u32);
                    }
                }
                Ok(Tensor::from_vec(idx, b * t, &self.device)?)
            })
            .collect()
    }

    fn attention(
        &self,
        a: &SelfAttention,
        x: &Tensor,
        rel_index: Option<&[Tensor]>,
    ) -> Result<Tensor> {
        let (t, c) = x.dims2()?;
        let (nh, d) = (self.cfg.num_attention_heads, self.cfg.head_dim());
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((t, nh, d))?.transpose(0, 1)?.contiguous()?)
        };
        let q = heads(a.q.forward(x)?)?;
        let k = heads(a.k.forward(x)?)?;
        let v = heads(a.v.forward(x)?)?;
        let scale = 1.0 / (d as f64).sqrt();
        // (nh, T, n_dist) = q·E / √d: the relative-key term for every distance.
        let qe = match &a.distance {
            Some(e) => Some(q.broadcast_matmul(&e.t()?)?.affine(scale, 0.0)?),
            None => None,
        };
        let o = if self.kernels == Kernels::Fused {
            let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
            let qe_v = qe.as_ref().map(flat).transpose()?;
            let rel = qe_v.as_deref().map(|s| RelativeKey {
                qe: s,
                left: self.cfg.left_max_position_embeddings,
                right: self.cfg.right_max_position_embeddings,
            });
            let out = attention_cpu(
                &flat(&q)?,
                &flat(&k)?,
                &flat(&v)?,
                rel,
                nh,
                t,
                d,
                scale as f32,
            );
            Tensor::from_vec(out, (t, c), &self.device)?
        } else {
            let kt = k.transpose(1, 2)?;
            let mut outs = Vec::with_capacity(t.div_ceil(ATTN_BLOCK));
            for (blk, l0) in (0..t).step_by(ATTN_BLOCK).enumerate() {
                let b = ATTN_BLOCK.min(t - l0);
                let qb = q.narrow(1, l0, b)?;
                let mut s = qb.matmul(&kt)?.affine(scale, 0.0)?;
                if let (Some(qe), Some(idx)) = (&qe, rel_index) {
                    let n_dist = qe.dim(2)?;
                    let rel = qe
                        .narrow(1, l0, b)?
                        .contiguous()?
                        .reshape((nh, b * n_dist))?
                        .index_select(&idx[blk], 1)?
                        .reshape((nh, b, t))?;
                    s = (s + rel)?;
                }
                let p = candle_nn::ops::softmax_last_dim(&s)?;
                outs.push(p.matmul(&v)?);
            }
            Tensor::cat(&outs, 1)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((t, c))?
        };
        a.out.forward(&o)
    }

    fn conv_module(&self, m: &ConvModule, x: &Tensor) -> Result<Tensor> {
        let (t, c) = x.dims2()?;
        let h = m.pw1.forward(&m.ln.forward(x)?)?;
        // GLU over channels: first half × sigmoid(second half).
        let h = (h.narrow(1, 0, c)? * candle_nn::ops::sigmoid(&h.narrow(1, c, c)?)?)?;
        let h = depthwise_causal_conv(&h, &m.dw, self.kernels)?;
        debug_assert_eq!(h.dims2()?, (t, c));
        let h = m.dw_ln.forward(&h)?.silu()?;
        m.pw2.forward(&h)
    }
}

/// `q·E[clamp(j − i)]` lookups for one model: `qe` is `(heads, T, left + right + 1)`.
#[derive(Clone, Copy)]
struct RelativeKey<'a> {
    qe: &'a [f32],
    left: usize,
    right: usize,
}

/// Fused CPU attention: for each head and block of query rows, scores `Q·Kᵀ·scale` (one GEMM),
/// plus the relative-key term read from `q·E` by distance, a float32 softmax per row, and the
/// product with V (second GEMM). Blocks run in parallel; the (T, T) score matrix is never
/// stored. Inputs are `(heads, T, d)` row-major; the output is `(T, heads·d)`.
#[allow(clippy::too_many_arguments)]
fn attention_cpu(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rel: Option<RelativeKey<'_>>,
    nh: usize,
    t: usize,
    d: usize,
    scale: f32,
) -> Vec<f32> {
    use rayon::prelude::*;
    let n_blocks = t.div_ceil(ATTN_BLOCK);
    let blocks: Vec<(usize, usize, Vec<f32>)> = (0..nh * n_blocks)
        .into_par_iter()
        .map(|task| {
            let (h, blk) = (task / n_blocks, task % n_blocks);
            let l0 = blk * ATTN_BLOCK;
            let b = ATTN_BLOCK.min(t - l0);
            let head = h * t * d..(h + 1) * t * d;
            let (qh, kh, vh) = (&q[head.clone()], &k[head.clone()], &v[head]);
            let mut s = vec![0f32; b * t];
            // SAFETY: every pointer addresses the slices above within the extents given: lhs is
            // rows l0..l0+b of Q (b × d, row stride d), rhs is Kᵀ read in place from K (d × T,
            // element (kk, r) at r·d + kk), dst is `s` (b × T, row stride T).
            unsafe {
                gemm::gemm(
                    b,
                    t,
                    d,
                    s.as_mut_ptr(),
                    1,
                    t as isize,
                    false,
                    qh[l0 * d..].as_ptr(),
                    1,
                    d as isize,
                    kh.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (i, row) in s.chunks_mut(t).enumerate() {
                let l = l0 + i;
                if let Some(r) = rel {
                    let nd = r.left + r.right + 1;
                    let e = &r.qe[(h * t + l) * nd..(h * t + l + 1) * nd];
                    // Key positions before l − left read e[0]; after l + right, e[nd − 1].
                    let lo = l.saturating_sub(r.left);
                    let hi = (l + r.right + 1).min(t);
                    row[..lo].iter_mut().for_each(|x| *x += e[0]);
                    for (j, x) in row[lo..hi].iter_mut().enumerate() {
                        *x += e[lo + j + r.left - l];
                    }
                    row[hi..].iter_mut().for_each(|x| *x += e[nd - 1]);
                }
                softmax_in_place(row);
            }
            let mut o = vec![0f32; b * d];
            // SAFETY: dst `o` is b × d (row stride d); lhs `s` is b × T (row stride T); rhs is
            // V of this head (T × d, row stride d).
            unsafe {
                gemm::gemm(
                    b,
                    d,
                    t,
                    o.as_mut_ptr(),
                    1,
                    d as isize,
                    false,
                    s.as_ptr(),
                    1,
                    t as isize,
                    vh.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            (h, l0, o)
        })
        .collect();
    let c = nh * d;
    let mut out = vec![0f32; t * c];
    for (h, l0, o) in blocks {
        for (i, row) in o.chunks(d).enumerate() {
            out[(l0 + i) * c + h * d..(l0 + i) * c + (h + 1) * d].copy_from_slice(row);
        }
    }
    out
}

/// Row softmax in float32: max, `exp(x − max)`, sum, scale by `1/sum` (torch's order of steps).
/// Written with 8 independent lanes so the compiler vectorises it: this loop touches every
/// attention score (3.5·10⁹ per minute of audio in the real model).
fn softmax_in_place(row: &mut [f32]) {
    const L: usize = 8;
    let mut m = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for k in 0..L {
            m[k] = m[k].max(c[k]);
        }
    }
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    for v in m {
        max = max.max(v);
    }
    let mut acc = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for k in 0..L {
            c[k] = exp_f32(c[k] - max);
            acc[k] += c[k];
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - max);
        sum += *x;
    }
    sum += acc.iter().sum::<f32>();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `e^x` in float32 to about 1 ulp for the range softmax uses (x <= 0), written without branches
/// or float-to-int casts so that loops over it vectorise: x = n·ln2 + r with |r| <= ln2/2, a
/// degree-6 polynomial for e^r (Cephes `expf` coefficients), times 2^n built in the exponent bits.
/// Inputs below −87.3 give e^−87.3 ≈ 1e-38 instead of a denormal.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // Not `clamp`: `max` maps NaN to the lower bound (so its exponential is 0), where `clamp`
    // would pass NaN through.
    #[allow(clippy::manual_clamp)]
    let xc = x.max(-87.3).min(88.7);
    let k = xc * LOG2E + ROUND;
    let n = k - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e = p * r2 + r + 1.0;
    let n_int = k.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// `y[t, c] = Σ_k w[c, k] · x[t + k − (K − 1), c]` with zeros before the start: the conformer's
/// causal depthwise convolution, on `(T, C)` input and `(C, K)` weights.
fn depthwise_causal_conv(x: &Tensor, w: &Tensor, kernels: Kernels) -> Result<Tensor> {
    let (t, c) = x.dims2()?;
    let k = w.dim(1)?;
    if kernels == Kernels::Generic {
        // Device-generic path: sum of K shifted, channel-scaled copies.
        let xp = x.pad_with_zeros(0, k - 1, 0)?;
        let mut y = xp
            .narrow(0, 0, t)?
            .broadcast_mul(&w.narrow(1, 0, 1)?.t()?)?;
        for j in 1..k {
            y = (y + xp
                .narrow(0, j, t)?
                .broadcast_mul(&w.narrow(1, j, 1)?.t()?)?)?;
        }
        return Ok(y);
    }
    use rayon::prelude::*;
    let xv = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    // (K, C) so that the inner loop runs over contiguous channels.
    let wt = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut y = vec![0f32; t * c];
    y.par_chunks_mut(c * 16)
        .enumerate()
        .for_each(|(blk, rows)| {
            for (r, out) in rows.chunks_mut(c).enumerate() {
                let ti = blk * 16 + r;
                for j in 0..k {
                    let src = ti as i64 + j as i64 - (k as i64 - 1);
                    if src < 0 {
                        continue;
                    }
                    let xs = &xv[src as usize * c..(src as usize + 1) * c];
                    let ws = &wt[j * c..(j + 1) * c];
                    for ((o, a), b) in out.iter_mut().zip(xs).zip(ws) {
                        *o += a * b;
                    }
                }
            }
        });
    Ok(Tensor::from_vec(y, (t, c), x.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_norm(d: usize) -> LayerNorm {
        let w: Vec<f32> = (0..d).map(|i| 1.0 + 0.01 * i as f32).collect();
        let b: Vec<f32> = (0..d).map(|i| 0.1 - 0.002 * i as f32).collect();
        LayerNorm {
            w: Tensor::from_vec(w.clone(), d, &Device::Cpu).unwrap(),
            b: Tensor::from_vec(b.clone(), d, &Device::Cpu).unwrap(),
            w_host: w,
            b_host: b,
            eps: 1e-5,
        }
    }

    /// Rows like a silent filterbank frame after CMVN (−0.98 ± 2e-3, variance below eps):
    /// both kernels agree with float64 to float32 precision, where candle's one-pass
    /// `E[x²] − mean²` is off by ~1e-2.
    #[test]
    fn layer_norm_is_accurate_on_nearly_constant_rows() {
        let (t, d) = (7, 160);
        let x: Vec<f32> = (0..t * d)
            .map(|k| -0.98 + 2e-3 * ((k * 37 % 101) as f32 / 50.0 - 1.0) + 0.01 * (k / d) as f32)
            .collect();
        let ln = test_norm(d);
        let xt = Tensor::from_vec(x.clone(), (t, d), &Device::Cpu).unwrap();
        let exact: Vec<f64> = x
            .chunks(d)
            .flat_map(|row| {
                let m = row.iter().map(|v| *v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / d as f64;
                let r = 1.0 / (var + 1e-5).sqrt();
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (*v as f64 - m) * r * ln.w_host[i] as f64 + ln.b_host[i] as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        let err = |y: Tensor| -> f64 {
            y.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .zip(&exact)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max)
        };
        let cpu = err(ln.forward_cpu(&xt).unwrap());
        let generic = err(ln.forward_generic(&xt).unwrap());
        let candle = err(candle_nn::ops::layer_norm(&xt, &ln.w, &ln.b, 1e-5).unwrap());
        println!("max |error|: cpu {cpu:.2e}, generic {generic:.2e}, candle one-pass {candle:.2e}");
        assert!(cpu < 5e-5, "cpu kernel: {cpu:e}");
        assert!(generic < 5e-5, "generic kernel: {generic:e}");
        assert!(
            candle > 1e-3,
            "the one-pass formula is no longer inaccurate here ({candle:e}): is this test still meaningful?"
        );
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x = -87.0 + i as f32 * (87.0 / 200_000.0);
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-100.0) < 2e-38);
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
        let want: Vec<f64> = {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let e: Vec<f64> = row.iter().map(|v| (*v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_in_place(&mut row);
        for (g, w) in row.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
    }
}
