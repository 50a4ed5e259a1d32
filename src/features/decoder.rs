//! A decoder-only language model forward that returns every hidden state (LLaMA 3 and Qwen3).
//!
//! TRIBE's text features are averages of intermediate hidden states, which candle-transformers'
//! models do not expose, so this is our own forward, written to match transformers'
//! `LlamaModel` / `Qwen3Model` with `output_hidden_states=True`: state 0 is the embedding
//! lookup, state i the output of decoder layer i, and the last state goes through the final
//! RMSNorm. The two families share everything except Qwen3's per-head RMSNorm on queries and
//! keys (and its explicit `head_dim`), so one decoder carries a [`Family`] switch rather than
//! two copies drifting apart.
//!
//! There is no KV cache: the reference runs every context from scratch, and a cache changes
//! summation order. Batches are right-padded, and each row attends causally within its own
//! length, so a padded batch gives the same hidden states for the real tokens as running each
//! sequence alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{D, DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::features::attention::{Mask, gqa_attention};
use crate::features::fused_cpu;
use crate::features::matmul::{WeightLayout, linear_bias, map_row_blocks, with_cpu_f32_data};

/// Which model family's details apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `model_type: llama` (Llama 3.x: GQA, llama3 rope scaling).
    Llama,
    /// `model_type: qwen3` (q_norm/k_norm per head, explicit head_dim).
    Qwen3,
}

/// Llama 3 frequency-dependent rope scaling (`rope_type: llama3`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// What the forward needs from an HF `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub vocab_size: usize,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    /// `torch_dtype` / `dtype` as saved (the checkpoint's storage type).
    pub torch_dtype: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl DecoderConfig {
    /// Parse `config.json` (hub layout of transformers 4.x, or 5.x `rope_parameters`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::InputMissing {
                path: path.to_path_buf(),
                what: "the model's config.json".into(),
                fix: "point --model at a Hugging Face model folder (config.json, *.safetensors, tokenizer.json)".into(),
            },
            _ => Error::io(path, e),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
            fix: "restore the config.json shipped with the model".into(),
        })?;
        Self::from_json(&v, path)
    }

    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
            fix: "use the config.json shipped with the model (LLaMA 3.x or Qwen3)".into(),
        };
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "llama" => Family::Llama,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(Error::Model {
                    path: path.to_path_buf(),
                    message: format!(
                        "unsupported text model_type '{other}' (supported: llama, qwen3)"
                    ),
                    fix: "use meta-llama/Llama-3.2-3B (TRIBE v2) or Qwen/Qwen3-0.6B (tribev2-mini)"
                        .into(),
                });
            }
        };
        let usize_of = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("'{key}' is missing or not a positive integer")))
        };
        let hidden_size = usize_of("hidden_size")?;
        let num_attention_heads = usize_of("num_attention_heads")?;
        let num_key_value_heads = v
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map_or(num_attention_heads, |x| x as usize);
        let head_dim = match v.get("head_dim").and_then(Value::as_u64) {
            Some(h) => h as usize,
            None if num_attention_heads > 0 => hidden_size / num_attention_heads,
            None => 0,
        };
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            return Err(bad(format!(
                "num_attention_heads {num_attention_heads} must be a positive multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!(
                "head_dim {head_dim} must be a positive even number"
            )));
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(bad(format!(
                "hidden_act '{act}' is not supported (only silu)"
            )));
        }
        // Sliding-window layers (some Qwen configs) would need a banded mask.
        let sliding = v
            .get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || v.get("layer_types")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|t| t.as_str() != Some("full_attention")));
        if sliding {
            return Err(bad(
                "sliding-window attention layers are not supported".into()
            ));
        }
        // transformers 5 nests rope settings in `rope_parameters`; 4.x has `rope_theta` +
        // `rope_scaling`.
        let rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10000.0);
        let scaling = v
            .get("rope_scaling")
            .filter(|s| s.is_object())
            .or(rope_params);
        let rope_scaling = match scaling {
            None => None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match kind {
                    "default" => None,
                    "llama3" => {
                        let f = |key: &str| {
                            s.get(key)
                                .and_then(Value::as_f64)
                                .ok_or_else(|| bad(format!("rope_scaling.{key} is missing")))
                        };
                        Some(Llama3Scaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f(
                                "original_max_position_embeddings",
                            )?,
                        })
                    }
                    other => {
                        return Err(bad(format!(
                            "rope_type '{other}' is not supported (default, llama3)"
                        )));
                    }
                }
            }
        };
        Ok(DecoderConfig {
            family,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            vocab_size: usize_of("vocab_size")?,
            attention_bias: v
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            torch_dtype: v
                .get("torch_dtype")
                .or_else(|| v.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
            bos_token_id: first_id(v.get("bos_token_id")),
            eos_token_id: first_id(v.get("eos_token_id")),
        })
    }

    /// The rotary inverse frequencies, computed in f32 in the order transformers uses
    /// (`_compute_default_rope_parameters` / `_compute_llama3_parameters`), because positions
    /// of a 1,024-word context reach ~1,500 and amplify a last-bit difference in a frequency.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta as f32;
        let inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / base.powf(i as f32 / dim as f32))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return inv;
        };
        let factor = s.factor as f32;
        let low = s.low_freq_factor as f32;
        let high = s.high_freq_factor as f32;
        let old = s.original_max_position_embeddings as f32;
        let low_freq_wavelen = old / low;
        let high_freq_wavelen = old / high;
        let two_pi = std::f64::consts::TAU as f32;
        inv.iter()
            .map(|&f| {
                // torch evaluates `scalar / tensor` as `reciprocal(tensor) * scalar`.
                let wavelen = (1.0f32 / f) * two_pi;
                let scaled = if wavelen > low_freq_wavelen {
                    f / factor
                } else {
                    f
                };
                let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                if medium {
                    let smooth = ((1.0f32 / wavelen) * old - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                }
            })
            .collect()
    }
}

/// One decoder layer's weights (q/k/v and gate/up fused so each is one matrix product), the
/// projection matrices in the layout [`projection_layout`] chooses.
struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    o: Tensor,
    o_bias: Option<Tensor>,
    gate_up: Tensor,
    down: Tensor,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

/// How the projection matrices are kept, for the library that multiplies them.
///
/// On MKL, as the checkpoint stores them, `(out, in)`: MKL packs a 512-column tile of an
/// `(in, out)` matrix by reading short rows `out` floats apart (64 KB for the fused gate/up), a
/// stride that misses the TLB and aliases in the cache on every row, while an `(out, in)` tile
/// is 512 contiguous rows. On the 2-core AMD EPYC (MKL 2020.4) that weight packing fell from
/// 6.2 % to 3.6 % of a Llama-3.2-3B layer's CPU time at 512 tokens (`perf`, benches/llama.rs).
/// candle's `gemm` measured the other way, 8-32 % slower on `(out, in)` in 4 of 5 alternating
/// rounds, so everything else keeps the `(in, out)` transpose made at load.
fn projection_layout(device: &Device, dtype: DType) -> WeightLayout {
    if device.is_cpu() && dtype == DType::F32 && crate::features::blas::is_mkl() {
        WeightLayout::OutIn
    } else {
        WeightLayout::InOut
    }
}

/// A checkpoint's `(out, in)` matrix in `layout`.
fn arrange(w: Tensor, layout: WeightLayout) -> Result<Tensor> {
    Ok(match layout {
        WeightLayout::OutIn => w,
        WeightLayout::InOut => w.t()?.contiguous()?,
    })
}

/// The decoder, on one device, computing in one dtype.
pub struct Decoder {
    pub config: DecoderConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
    /// How `layers` keep their projection matrices.
    layout: WeightLayout,
    /// Queries per attention block; bounds the (heads, block, keys) score buffer.
    pub query_block: usize,
    /// Token rows per MLP block (see the constructor for the choice).
    pub mlp_rows: usize,
    /// Use the fused CPU f32 attention kernel ([`gqa_attention`], causal); off, the generic
    /// candle-op path (the one GPUs run) is used, which tests compare against.
    pub fused_cpu_attention: bool,
}

/// The weight files of an HF folder: the shards named by `model.safetensors.index.json`, or
/// `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: index.clone(),
            message: e.to_string(),
            fix: "restore the model.safetensors.index.json shipped with the model".into(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Json {
                path: index.clone(),
                message: "no 'weight_map' object".into(),
                fix: "restore the model.safetensors.index.json shipped with the model".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        let mut out = Vec::new();
        for f in files {
            let p = dir.join(&f);
            if !p.is_file() {
                return Err(Error::Model {
                    path: p,
                    message: format!(
                        "weight shard '{f}' listed in model.safetensors.index.json is missing"
                    ),
                    fix: "download the complete model (every model-*.safetensors shard)".into(),
                });
            }
            out.push(p);
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::Model {
        path: dir.to_path_buf(),
        message: "no model.safetensors or model.safetensors.index.json".into(),
        fix: "point --model at a Hugging Face model folder with safetensors weights".into(),
    })
}

/// Safetensors files with a name -> file routing, so errors can name the file.
struct WeightStore {
    files: Vec<PathBuf>,
    st: Vec<MmapedSafetensors>,
    route: HashMap<String, usize>,
    prefix: String,
}

impl WeightStore {
    fn open(dir: &Path) -> Result<Self> {
        let files = weight_files(dir)?;
        let mut st = Vec::new();
        let mut route = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            // SAFETY: the file is mapped read-only and not modified while the model lives;
            // this is how candle and transformers read safetensors.
            let m = unsafe { MmapedSafetensors::new(f) }.map_err(|e| Error::Model {
                path: f.clone(),
                message: format!("not a readable safetensors file: {e}"),
                fix: "re-download this weight file".into(),
            })?;
            for (name, _) in m.tensors() {
                route.insert(name, i);
            }
            st.push(m);
        }
        // The tiny fixture (LlamaForCausalLM.save_pretrained) prefixes "model."; a bare
        // LlamaModel checkpoint does not.
        let prefix = if route.contains_key("model.embed_tokens.weight") {
            "model.".to_string()
        } else if route.contains_key("embed_tokens.weight") {
            String::new()
        } else {
            return Err(Error::MissingTensor {
                name: "model.embed_tokens.weight (or embed_tokens.weight)".into(),
                path: dir.to_path_buf(),
            });
        };
        Ok(WeightStore {
            files,
            st,
            route,
            prefix,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.route.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Load `name` (without the prefix), check its shape, and convert to `dtype`.
    fn get(&self, name: &str, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let Some(&i) = self.route.get(&full) else {
            return Err(Error::MissingTensor {
                name: full,
                path: self
                    .files
                    .first()
                    .and_then(|f| f.parent())
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            });
        };
        let view = self.st[i].get(&full)?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: full,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
                path: Some(self.files[i].clone()),
            });
        }
        let t = self.st[i].load(&full, device)?;
        Ok(if t.dtype() == dtype {
            t
        } else {
            t.to_dtype(dtype)?
        })
    }
}

/// The storage dtype of a checkpoint's embedding (kept as stored: it is only gathered from).
fn embed_dtype(store: &WeightStore) -> Result<DType> {
    let full = format!("{}embed_tokens.weight", store.prefix);
    let i = store.route[&full];
    let view = store.st[i].get(&full)?;
    // (Matched by name: candle links a different safetensors version than this crate.)
    Ok(match format!("{:?}", view.dtype()).as_str() {
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        _ => DType::F32,
    })
}

impl Decoder {
    /// Load an HF folder (`config.json` + safetensors) onto `device`, computing in `dtype`
    /// (f32 on CPU; bf16 or f32 on GPU). The embedding stays in its stored dtype (rows are
    /// converted when gathered, which is exact), which saves 0.8 GB for Llama-3.2-3B in f32.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = DecoderConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        let c = &config;
        let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let layout = projection_layout(device, dtype);
        let (nq, nkv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let edt = match embed_dtype(&store)? {
            // A 16-bit embedding is gathered then upcast; f32 stays f32; on GPU bf16 compute
            // takes bf16 rows directly.
            DType::F32 => dtype,
            t => t,
        };
        let embed = store.get("embed_tokens.weight", &[c.vocab_size, d], device, edt)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("layers.{l}.");
            let g = |n: &str, s: &[usize]| store.get(&format!("{p}{n}"), s, device, dtype);
            let q = g("self_attn.q_proj.weight", &[nq, d])?;
            let k = g("self_attn.k_proj.weight", &[nkv, d])?;
            let v = g("self_attn.v_proj.weight", &[nkv, d])?;
            let qkv = arrange(Tensor::cat(&[&q, &k, &v], 0)?, layout)?;
            drop((q, k, v));
            let qkv_bias = if c.attention_bias {
                let qb = g("self_attn.q_proj.bias", &[nq])?;
                let kb = g("self_attn.k_proj.bias", &[nkv])?;
                let vb = g("self_attn.v_proj.bias", &[nkv])?;
                Some(Tensor::cat(&[&qb, &kb, &vb], 0)?)
            } else {
                None
            };
            let o_bias = if c.attention_bias && store.has(&format!("{p}self_attn.o_proj.bias")) {
                Some(g("self_attn.o_proj.bias", &[d])?)
            } else {
                None
            };
            let gate = g("mlp.gate_proj.weight", &[f, d])?;
            let up = g("mlp.up_proj.weight", &[f, d])?;
            let gate_up = arrange(Tensor::cat(&[&gate, &up], 0)?, layout)?;
            drop((gate, up));
            let (q_norm, k_norm) = match c.family {
                Family::Qwen3 => (
                    Some(g("self_attn.q_norm.weight", &[hd])?),
                    Some(g("self_attn.k_norm.weight", &[hd])?),
                ),
                Family::Llama => (None, None),
            };
            layers.push(Layer {
                input_norm: g("input_layernorm.weight", &[d])?,
                post_norm: g("post_attention_layernorm.weight", &[d])?,
                qkv,
                qkv_bias,
                o: arrange(g("self_attn.o_proj.weight", &[d, nq])?, layout)?,
                o_bias,
                gate_up,
                down: arrange(g("mlp.down_proj.weight", &[d, f])?, layout)?,
                q_norm,
                k_norm,
            });
        }
        let norm = store.get("norm.weight", &[d], device, dtype)?;
        Ok(Self::from_parts(config, embed, layers, norm, device, dtype))
    }

    fn from_parts(
        config: DecoderConfig,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        device: &Device,
        dtype: DType,
    ) -> Self {
        let inv_freq = config.inv_freq();
        Decoder {
            config,
            embed,
            layers,
            norm,
            inv_freq,
            device: device.clone(),
            dtype,
            layout: projection_layout(device, dtype),
            query_block: 512,
            // MKL packs the weights afresh in every call, so it wants tall blocks: the gate and
            // up weights (200 MB at 3B width) are then read once per 2,048 rows, not per 448.
            // At 1,400 tokens that measured 5-15 % faster (6 of 6 runs; benches/llama.rs with
            // TRIBE_BENCH_MLP_ROWS). The built-in gemm measured best at 448, where the
            // activations stay under glibc's 32 MB mmap threshold and are reused from the heap.
            mlp_rows: if crate::features::blas::is_mkl() {
                2048
            } else {
                448
            },
            fused_cpu_attention: true,
        }
    }

    /// A decoder with random weights of the given shape (benchmarks: full-width layers
    /// without downloading 6 GB). Values follow the fixture's scheme (norm weights near 1,
    /// linear weights N(0, 1/fan_in)) so activations stay in a realistic range.
    pub fn random(config: DecoderConfig, device: &Device, dtype: DType) -> Result<Self> {
        let c = &config;
        let (d, f, hd) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let layout = projection_layout(device, dtype);
        let (nq, nkv) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        // Uniform values with the intended standard deviation from a xorshift generator: a
        // normal sampler spent longer filling 400M weights than the benchmark it serves.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut fill = |shape: (usize, usize), mean: f32, std: f32| -> Result<Tensor> {
            let half_width = std * 3f32.sqrt();
            let n = shape.0 * shape.1;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                v.push(mean + half_width * (2.0 * u - 1.0));
            }
            let t = Tensor::from_vec(v, shape, device)?;
            Ok(if shape.0 == 1 { t.squeeze(0)? } else { t }.to_dtype(dtype)?)
        };
        let embed = fill((c.vocab_size, d), 0.0, 0.5)?;
        let mut layers = Vec::new();
        for _ in 0..c.num_hidden_layers {
            let qk = matches!(c.family, Family::Qwen3);
            layers.push(Layer {
                input_norm: fill((1, d), 1.0, 0.1)?,
                post_norm: fill((1, d), 1.0, 0.1)?,
                qkv: arrange(
                    fill((nq + 2 * nkv, d), 0.0, (1.0 / d as f32).sqrt())?,
                    layout,
                )?,
                qkv_bias: None,
                o: arrange(fill((d, nq), 0.0, (1.0 / nq as f32).sqrt())?, layout)?,
                o_bias: None,
                gate_up: arrange(fill((2 * f, d), 0.0, (1.0 / d as f32).sqrt())?, layout)?,
                down: arrange(fill((d, f), 0.0, (1.0 / f as f32).sqrt())?, layout)?,
                q_norm: if qk {
                    Some(fill((1, hd), 1.0, 0.1)?)
                } else {
                    None
                },
                k_norm: if qk {
                    Some(fill((1, hd), 1.0, 0.1)?)
                } else {
                    None
                },
            });
        }
        let norm = fill((1, d), 1.0, 0.1)?;
        Ok(Self::from_parts(config, embed, layers, norm, device, dtype))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Hidden states returned by a forward: embeddings + one per layer.
    pub fn n_hidden_states(&self) -> usize {
        self.config.num_hidden_layers + 1
    }

    /// cos/sin tables (T, head_dim/2) in the compute dtype. The angle is the f32 product
    /// `position * inv_freq` (as transformers computes it) and its cosine is taken in f64,
    /// i.e. correctly rounded.
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for &f in &self.inv_freq {
                let a = (p as f32 * f) as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (t, half), &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (t, half), &self.device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// Run right-padded sequences through the model and hand every hidden state, in order,
    /// to `visit(index, hidden (B, T, hidden_size))`. Padded positions hold garbage that no
    /// real token ever attends to.
    pub fn forward_visit(
        &self,
        seqs: &[&[u32]],
        visit: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<()> {
        let b = seqs.len();
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Ok(());
        }
        let vocab = self.config.vocab_size;
        let mut ids = Vec::with_capacity(b * t);
        for s in seqs {
            if let Some(&bad) = s.iter().find(|&&i| i as usize >= vocab) {
                return Err(Error::Other(format!(
                    "token id {bad} is outside the model's vocabulary ({vocab}): the tokenizer does not belong to this model"
                )));
            }
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, t - s.len()));
        }
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let ids = Tensor::from_vec(ids, b * t, &self.device)?;
        let d = self.config.hidden_size;
        let mut x = self
            .embed
            .index_select(&ids, 0)?
            .to_dtype(self.dtype)?
            .reshape((b, t, d))?;
        visit(0, &x)?;
        let (cos, sin) = self.rope_tables(t)?;
        let eps = self.config.rms_norm_eps as f32;
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, &x, &cos, &sin, &lens)?;
            if l + 1 == n {
                let normed = rms_norm(&x, &self.norm, eps)?;
                visit(l + 1, &normed)?;
            } else {
                visit(l + 1, &x)?;
            }
        }
        Ok(())
    }

    /// All hidden states of one unpadded sequence, each (T, hidden_size) in f32 (tests, goldens).
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        self.forward_visit(&[ids], &mut |_, h| {
            out.push(h.squeeze(0)?.to_dtype(DType::F32)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        lens: &[usize],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, d) = x.dims3()?;
        let eps = c.rms_norm_eps as f32;

        let xn = rms_norm(x, &layer.input_norm, eps)?;
        let qkv = linear_bias(&xn, &layer.qkv, self.layout, layer.qkv_bias.as_ref())?;
        let (q, k, v) = self.split_heads(&qkv, layer, (b, t), cos, sin)?;
        let attn = self.attention(&q, &k, &v, lens)?; // (b, t, h*hd)
        let o = linear_bias(&attn, &layer.o, self.layout, layer.o_bias.as_ref())?;
        let x = (x + o)?.reshape((b * t, d))?;
        // The MLP is row-wise, so it runs in row blocks (see `map_row_blocks`): its (rows,
        // 2 x FFN) activations stay a few MB, which cost ~10 % of CPU time at 512 tokens when
        // they were fresh mappings in every layer.
        let f = c.intermediate_size;
        let x = map_row_blocks(&x, self.mlp_rows, |xr| -> Result<Tensor> {
            let xn = rms_norm(xr, &layer.post_norm, eps)?;
            let gu = linear_bias(&xn, &layer.gate_up, self.layout, None)?;
            let fused = with_cpu_f32_data(&gu, |g| fused_cpu::silu_mul(g, f));
            let act = match fused {
                Some(act) => Tensor::from_vec(act, (xr.dim(0)?, f), &self.device)?,
                None => {
                    (candle_nn::ops::silu(&gu.narrow(D::Minus1, 0, f)?)?
                        * gu.narrow(D::Minus1, f, f)?)?
                }
            };
            Ok((xr + linear_bias(&act, &layer.down, self.layout, None)?)?)
        })?;
        Ok(x.reshape((b, t, d))?)
    }

    /// q, k and v as head-major `(b, heads, t, hd)`, with the rotary embedding applied to q and
    /// k. On the CPU in f32 that is one parallel pass ([`fused_cpu::split_heads_rope`]);
    /// elsewhere, and for Qwen3, whose per-head norms come before the rotation, candle ops.
    fn split_heads(
        &self,
        qkv: &Tensor,
        layer: &Layer,
        (b, t): (usize, usize),
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        if layer.q_norm.is_none() && layer.k_norm.is_none() {
            let shape = fused_cpu::QkvShape {
                batch: b,
                tokens: t,
                heads: h,
                kv_heads: kvh,
                head_dim: hd,
            };
            let fused = with_cpu_f32_data(qkv, |x| {
                with_cpu_f32_data(cos, |cs| {
                    with_cpu_f32_data(sin, |sn| fused_cpu::split_heads_rope(x, shape, cs, sn))
                })
            });
            if let Some(Some(Some((q, k, v)))) = fused {
                return Ok((
                    Tensor::from_vec(q, (b, h, t, hd), &self.device)?,
                    Tensor::from_vec(k, (b, kvh, t, hd), &self.device)?,
                    Tensor::from_vec(v, (b, kvh, t, hd), &self.device)?,
                ));
            }
        }
        let q = qkv.narrow(D::Minus1, 0, h * hd)?.reshape((b, t, h, hd))?;
        let k = qkv
            .narrow(D::Minus1, h * hd, kvh * hd)?
            .reshape((b, t, kvh, hd))?;
        let v = qkv
            .narrow(D::Minus1, (h + kvh) * hd, kvh * hd)?
            .reshape((b, t, kvh, hd))?;
        let (q, k) = match (&layer.q_norm, &layer.k_norm) {
            (Some(qn), Some(kn)) => (
                rms_norm(&q.contiguous()?, qn, eps)?,
                rms_norm(&k.contiguous()?, kn, eps)?,
            ),
            _ => (q, k),
        };
        let q = candle_nn::rotary_emb::rope(&q.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k.transpose(1, 2)?.contiguous()?, cos, sin)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        Ok((q, k, v))
    }

    /// Causal grouped-query attention, row by row of the batch and in query blocks (the
    /// fused kernel on CPU f32, candle ops elsewhere): block
    /// `[a, e)` only needs keys `[0, e)` (halving the work on average) and its score buffer is
    /// `(heads, e - a, e)` instead of `(heads, T, T)`. Queries of a KV head's group are
    /// stacked, so shared keys and values are never copied per head. Padded query rows are
    /// left zero.
    fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let c = &self.config;
        let (b, h, t, hd) = q.dims4()?;
        let kvh = c.num_key_value_heads;
        if self.fused_cpu_attention {
            let fused = with_cpu_f32_data(q, |qd| {
                with_cpu_f32_data(k, |kd| {
                    with_cpu_f32_data(v, |vd| {
                        let (qs, ks) = (h * t * hd, kvh * t * hd);
                        let mut out = Vec::with_capacity(b * t * h * hd);
                        for (bi, &len) in lens.iter().enumerate() {
                            out.extend(gqa_attention(
                                &qd[bi * qs..(bi + 1) * qs],
                                &kd[bi * ks..(bi + 1) * ks],
                                &vd[bi * ks..(bi + 1) * ks],
                                h,
                                kvh,
                                t,
                                hd,
                                len,
                                self.query_block,
                                Mask::Causal,
                            ));
                        }
                        out
                    })
                })
            });
            if let Some(Some(Some(out))) = fused {
                return Ok(Tensor::from_vec(out, (b, t, h * hd), &self.device)?);
            }
        }
        let g = h / kvh;
        let scale = 1.0 / (hd as f64).sqrt();
        let block = self.query_block.max(1);
        let mut rows = Vec::with_capacity(b);
        for (bi, &len) in lens.iter().enumerate() {
            let qb = q.get(bi)?; // (h, t, hd)
            let kb = k.get(bi)?; // (kvh, t, hd)
            let vb = v.get(bi)?;
            let mut heads = Vec::with_capacity(kvh);
            for gi in 0..kvh {
                let kg = kb.get(gi)?; // (t, hd), contiguous
                let vg = vb.get(gi)?;
                let qg = qb.narrow(0, gi * g, g)?; // (g, t, hd)
                let mut blocks = Vec::new();
                let mut a = 0;
                while a < len {
                    let e = (a + block).min(len);
                    let nq = e - a;
                    let qc = qg.narrow(1, a, nq)?.contiguous()?.reshape((g * nq, hd))?;
                    let keys = kg.narrow(0, 0, e)?;
                    let vals = vg.narrow(0, 0, e)?;
                    let scores = (qc.matmul(&keys.t()?)? * scale)?.reshape((g, nq, e))?;
                    let mask = causal_mask(a, e, &self.device)?;
                    let scores = scores.to_dtype(DType::F32)?.broadcast_add(&mask)?;
                    let p = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
                    let out = p
                        .reshape((g * nq, e))?
                        .matmul(&vals)?
                        .reshape((g, nq, hd))?;
                    blocks.push(out);
                    a = e;
                }
                if len < t {
                    blocks.push(Tensor::zeros((g, t - len, hd), self.dtype, &self.device)?);
                }
                heads.push(Tensor::cat(&blocks, 1)?);
            }
            let row = Tensor::cat(&heads, 0)?; // (h, t, hd)
            rows.push(row.transpose(0, 1)?.reshape((t, h * hd))?);
        }
        Ok(Tensor::stack(&rows, 0)?)
    }
}

/// transformers' `LlamaRMSNorm` / `Qwen3RMSNorm`: normalize in f32, cast back to the model
/// dtype, then multiply by the weight in that dtype. In f32 that is candle's fused kernel; in
/// bf16 the two roundings are kept as transformers has them.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return Ok(candle_nn::ops::rms_norm(x, w, eps)?);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let var = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x32.broadcast_div(&(var + eps as f64)?.sqrt()?)?;
    Ok(normed.to_dtype(x.dtype())?.broadcast_mul(w)?)
}

/// Additive causal mask for queries `[a, e)` over keys `[0, e)`: 0 where the key is at or
/// before the query, -inf after it.
fn causal_mask(a: usize, e: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; (e - a) * e];
    for r in 0..(e - a) {
        let p = a + r;
        for s in (p + 1)..e {
            m[r * e + s] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (e - a, e), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: Value) -> Result<DecoderConfig> {
        DecoderConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn llama3_rope_scaling_changes_only_low_frequencies() {
        let c = cfg(serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 10,
            "rope_theta": 500000.0,
            "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"}
        }))
        .unwrap();
        let mut plain = c.clone();
        plain.rope_scaling = None;
        let (a, b) = (c.inv_freq(), plain.inv_freq());
        // hf/README: frequencies 0..3 unchanged, 4 smoothed, 5..7 divided by 32.
        assert_eq!(&a[..4], &b[..4]);
        assert!(a[4] < b[4] && a[4] > b[4] / 32.0);
        for i in 5..8 {
            assert!((a[i] - b[i] / 32.0).abs() <= f32::EPSILON * b[i]);
        }
    }

    #[test]
    fn config_errors_are_clear() {
        let e = cfg(serde_json::json!({"model_type": "gpt2"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported text model_type 'gpt2'"), "{e}");
        let e = cfg(serde_json::json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 3,
            "num_key_value_heads": 2, "intermediate_size": 1, "num_hidden_layers": 1, "vocab_size": 1}))
        .unwrap_err()
        .to_string();
        assert!(e.contains("multiple"), "{e}");
    }

    #[test]
    fn causal_mask_block() {
        let m = causal_mask(1, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0, 0.0, 0.0]);
    }
}
