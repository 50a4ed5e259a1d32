//! The TRIBE v2 brain model (FmriEncoder) and its checkpoint loading.
//!
//! - [`config`]: what `config.yaml` / `model_build_args` say (every hyper-parameter comes from there).
//! - [`pickle`] + [`checkpoint`]: restricted readers for `best.ckpt` and `model.safetensors`.
//! - [`transformer`], [`ops`]: the x_transformers encoder and its kernels.
//! - [`fmri_encoder`]: [`TribeModel`], the model itself (`load`, `forward`).
//! - [`trace`]: per-stage tensors for parity tests.

pub mod checkpoint;
pub mod config;
pub mod fmri_encoder;
pub mod ops;
pub mod pickle;
pub mod trace;
pub mod transformer;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use fmri_encoder::{ComputeDtype, HeadOptions, ModelFiles, ModelOptions, TribeModel};
pub use ops::Kernels;

use crate::cli::toolbox::{EncodeArgs, Precision};
use crate::error::{Error, Result};

/// Parse `--device cpu|cuda|cuda:N|auto`. `auto` is CUDA device 0 when this build has CUDA and a
/// GPU is present, else the CPU.
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    let cuda = |i: usize| {
        Device::new_cuda(i).map_err(|e| {
            Error::Usage(format!(
                "--device {spec}: CUDA device {i} is not available ({e}); build with `--features cuda` on a machine with a \
                 GPU, or use --device cpu"
            ))
        })
    };
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if candle_core::utils::cuda_is_available() {
            cuda(0).unwrap_or(Device::Cpu)
        } else {
            Device::Cpu
        }),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::Usage(format!(
                "--device '{spec}' is not understood: use cpu, cuda, cuda:N or auto"
            ))),
        },
    }
}

/// Read a features file for `tribe encode`: every tensor by name, on the CPU.
pub fn read_features(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::InputMissing {
            path: path.to_path_buf(),
            what: "the features file".into(),
            fix: "give a safetensors file with float32 text/audio/video arrays (B, L, D, T)".into(),
        });
    }
    candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::FeaturesFile {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file ({e})"),
        fix: "write it with safetensors (e.g. `tribe features ... --out`), float32 arrays named text/audio/video".into(),
    })
}

/// Write float32 tensors as safetensors, atomically (readers never see a partial file).
pub fn write_safetensors_f32(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut blobs = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for (name, t) in tensors {
        let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let n = v.len() * 4;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": t.dims(), "data_offsets": [offset, offset + n]}),
        );
        offset += n;
        blobs.push(v);
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::Other(e.to_string()))?;
    // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
    while (h.len() + 8) % 8 != 0 {
        h.push(b' ');
    }
    crate::util::write_atomic_with(path, |w| {
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
        for v in &blobs {
            for x in v {
                w.write_all(&x.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

/// `tribe encode`: the brain model alone on a features file (DESIGN.md §2, contract).
pub fn encode_cli(args: &EncodeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let options = ModelOptions {
        subject_index: args.subject_index,
        dtype: match args.dtype {
            Precision::F32 => ComputeDtype::F32,
            Precision::Bf16 => ComputeDtype::Bf16,
        },
        ..Default::default()
    };
    let model = TribeModel::load(&args.checkpoint, &device, options)?;
    let inputs = read_features(&args.features)?;
    for key in inputs.keys() {
        if !model.feature_dims().iter().any(|f| &f.name == key) {
            tracing::warn!(
                "{}: ignoring '{key}', which is not a modality of this model",
                args.features.display()
            );
        }
    }
    let known: Vec<&str> = model
        .feature_dims()
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    if !inputs.keys().any(|k| known.contains(&k.as_str())) {
        return Err(Error::FeaturesFile {
            path: args.features.clone(),
            message: format!(
                "holds none of this model's modalities ({})",
                known.join(", ")
            ),
            fix: "name the arrays text, audio and/or video, each (B, L, D, T) float32".into(),
        });
    }
    let pred = model.forward(&inputs)?.to_device(&Device::Cpu)?;
    write_safetensors_f32(&args.out, &[("prediction", &pred)])?;
    tracing::info!("wrote {} {:?}", args.out.display(), pred.dims());
    Ok(())
}

/// `tribe inspect`: print what a model folder or checkpoint holds.
pub fn inspect_cli(path: &Path) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let report = inspect(path)?;
    out.write_all(report.text.as_bytes())
        .map_err(|e| Error::io("<stdout>", e))?;
    match report.problem {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The text `tribe inspect` prints, and the first inconsistency found (printed, then returned
/// as the exit status).
pub struct InspectReport {
    pub text: String,
    pub problem: Option<Error>,
}

/// Describe a TRIBE model folder (config.yaml + best.ckpt/model.safetensors), a single
/// checkpoint file, or any folder of safetensors weights (the extractor models).
pub fn inspect(path: &Path) -> Result<InspectReport> {
    use std::fmt::Write as _;
    let mut s = String::new();
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new("."))
    } else {
        path
    };
    if !path.exists() {
        return Err(Error::InputMissing {
            path: path.to_path_buf(),
            what: "the model folder or checkpoint".into(),
            fix: "give a folder such as models/tribev2 or a checkpoint file".into(),
        });
    }
    let tribe = dir.join("config.yaml").is_file();
    let mut problem = None;
    if tribe {
        let files = ModelFiles::locate(path)?;
        let cfg = config::load_config(&files.config);
        let _ = writeln!(s, "TRIBE v2 brain model: {}", dir.display());
        match &cfg {
            Ok(c) => {
                let b = &c.brain;
                let _ = writeln!(s, "config: {}", files.config.display());
                let _ = writeln!(
                    s,
                    "  encoder: hidden {}, depth {}, heads {} (dim_head {}, rotary on first {}), ff {}, max_seq_len {}, time_pos_embedding {}",
                    b.hidden,
                    b.depth,
                    b.heads,
                    b.dim_head(),
                    b.rotary_dim(),
                    b.ff_inner(),
                    b.max_seq_len,
                    b.time_pos_embedding
                );
                let _ = writeln!(
                    s,
                    "  head: low_rank_head {:?}, predictor rows {} (unseen-subject row {}), layer_aggregation {:?}",
                    b.low_rank_head,
                    b.predictor_rows,
                    b.default_subject_row(),
                    b.layer_aggregation
                );
                let t = &c.timing;
                let _ = writeln!(
                    s,
                    "  data: features_to_use {:?}; window {} TR x {} s = {} bins at {} Hz; BOLD offset {} s",
                    c.features_to_use,
                    t.duration_trs,
                    t.tr_seconds,
                    t.window_bins(),
                    t.feature_frequency,
                    t.bold_offset
                );
                for (m, name) in &c.extractor_models {
                    let _ = writeln!(s, "  extractor {m}: {name}");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "config: {}: {e}", files.config.display());
            }
        }
        let ck = checkpoint::Checkpoint::open(&files.weights)?;
        describe_weights(&mut s, &ck, &files.weights)?;
        if let Some(a) = &ck.build_args {
            let dims: Vec<String> = a
                .feature_dims
                .iter()
                .map(|f| format!("{} ({}, {})", f.name, f.layers, f.dim))
                .collect();
            let _ = writeln!(
                s,
                "model_build_args: feature_dims {}; n_outputs {}; n_output_timesteps {}",
                dims.join(", "),
                a.n_outputs,
                a.n_output_timesteps
            );
        }
        // Full consistency check: the same strict load `tribe encode` does, on the CPU.
        drop(ck);
        let check =
            cfg.and_then(|_| TribeModel::load_files(&files, &Device::Cpu, ModelOptions::default()));
        match check {
            Ok(m) => {
                let _ = writeln!(
                    s,
                    "check: OK (every tensor matches the config); outputs {} x {} steps; inputs {}",
                    m.n_outputs(),
                    m.n_output_timesteps(),
                    m.feature_dims()
                        .iter()
                        .map(|f| format!("{} (L={}, D={})", f.name, f.layers, f.dim))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(e) => {
                let _ = writeln!(s, "check: FAILED: {e}");
                problem = Some(e);
            }
        }
    } else if path.is_file() {
        let ck = checkpoint::Checkpoint::open(path)?;
        describe_weights(&mut s, &ck, path)?;
    } else {
        let _ = writeln!(s, "model folder: {}", dir.display());
        if let Ok(text) = std::fs::read_to_string(dir.join("config.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            for key in [
                "model_type",
                "architectures",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "torch_dtype",
                "dtype",
            ] {
                if let Some(x) = v.get(key) {
                    let _ = writeln!(s, "  config.json {key}: {x}");
                }
            }
        }
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "safetensors" || e == "ckpt" || e == "pt")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            let _ = writeln!(s, "  no weights found (*.safetensors, *.ckpt)");
        }
        for f in files {
            let ck = checkpoint::Checkpoint::open(&f)?;
            describe_weights(&mut s, &ck, &f)?;
        }
    }
    Ok(InspectReport { text: s, problem })
}

fn describe_weights(s: &mut String, ck: &checkpoint::Checkpoint, path: &Path) -> Result<()> {
    use std::fmt::Write as _;
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let sha = checkpoint::file_sha256(path)?;
    let fmt = match ck.format {
        checkpoint::Format::TorchZip => "torch zip (restricted pickle)",
        checkpoint::Format::Safetensors => "safetensors",
    };
    let _ = writeln!(
        s,
        "weights: {} ({fmt}, {:.1} MiB)",
        path.display(),
        size as f64 / (1u64 << 20) as f64
    );
    let _ = writeln!(s, "  sha256 {sha}");
    for (k, v) in &ck.extras {
        let _ = writeln!(s, "  {k}: {v}");
    }
    let mut dtypes: Vec<&str> = ck.tensors.iter().map(|t| t.dtype.as_str()).collect();
    dtypes.sort();
    dtypes.dedup();
    let _ = writeln!(
        s,
        "tensors: {} ({} elements, dtypes {})",
        ck.tensors.len(),
        group_digits(ck.numel()),
        dtypes.join("/")
    );
    let width = ck.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in &ck.tensors {
        let _ = writeln!(s, "  {:width$}  {:?}  {}", t.name, t.shape, t.dtype);
    }
    Ok(())
}

fn group_digits(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse_device("CPU"), Ok(Device::Cpu)));
        assert!(parse_device("auto").is_ok());
        assert!(matches!(parse_device("tpu"), Err(Error::Usage(_))));
        assert!(matches!(parse_device("cuda:x"), Err(Error::Usage(_))));
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(parse_device("cuda:0"), Err(Error::Usage(_))));
    }

    #[test]
    fn digits() {
        assert_eq!(group_digits(177205397), "177,205,397");
        assert_eq!(group_digits(12), "12");
    }
}

pub mod models_dir;
