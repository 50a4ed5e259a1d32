//! Reading brain-model weights: Lightning `best.ckpt` (a `torch.save` zip) or `model.safetensors`.
//!
//! Both readers first list every tensor's name, shape and dtype without touching the data, so a
//! checkpoint that does not match the config is refused before 676 MiB are read. Then each tensor
//! is read with `read_exact` from its zip entry (or file range) straight into the `Vec<f32>` that
//! becomes the candle tensor: one copy of the weights in memory, and none of it in a mmap that
//! would count a second time in the resident set.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::config::{BuildArgs, FeatureDim};
use super::pickle::{self, StorageDtype, TensorRef, Value};
use crate::error::{Error, Result};

/// The key prefix Lightning puts before every module parameter (`model.<param>`).
const LIGHTNING_PREFIX: &str = "model.";

/// Name, shape and dtype of one stored tensor (name without the `model.` prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    /// safetensors-style dtype name ("F32", "F16", ...).
    pub dtype: String,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TorchZip,
    Safetensors,
}

enum Source {
    Zip {
        archive: zip::ZipArchive<File>,
        /// `<archive name>/` inside the zip, e.g. `best/`.
        prefix: String,
        refs: HashMap<String, TensorRef>,
        /// How many tensors still need each storage, so a shared storage is read once.
        users: HashMap<String, usize>,
        cache: HashMap<String, Vec<f32>>,
    },
    Safetensors {
        file: File,
        data_start: u64,
        ranges: HashMap<String, (u64, u64)>,
    },
}

/// An opened checkpoint: the tensor list is known, the data is read on demand.
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: Format,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// `model_build_args` when the file carries them (best.ckpt; optional for safetensors).
    pub build_args: Option<BuildArgs>,
    /// Other top-level entries (epoch, global_step, ...) as text, for `tribe inspect`.
    pub extras: Vec<(String, String)>,
    source: Source,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Checkpoint {
    /// Open `best.ckpt`/`*.ckpt`/`*.pt` (torch zip) or `*.safetensors`, by content not by name.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut magic = [0u8; 8];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        if n >= 4 && &magic[..4] == b"PK\x03\x04" {
            Self::open_zip(path, file)
        } else if n >= 2 && magic[0] == 0x80 && magic[1] <= 5 {
            Err(ckpt_err(
                path,
                "this is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; \
                 re-save it with a current PyTorch (torch.save(torch.load(f), f)) or convert it to safetensors",
            ))
        } else if n == 8
            && u64::from_le_bytes(magic) < (1 << 27)
            && path.extension().is_some_and(|e| e == "safetensors")
        {
            Self::open_safetensors(path, file)
        } else {
            Err(ckpt_err(
                path,
                "not a checkpoint: expected a PyTorch zip (best.ckpt from facebook/tribev2) or a model.safetensors",
            ))
        }
    }

    fn open_zip(path: &Path, file: File) -> Result<Self> {
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            ckpt_err(path, format!("the zip archive cannot be read ({e}); the file is truncated or corrupt, download it again"))
        })?;
        let pkl_name = archive
            .file_names()
            .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
            .min_by_key(|n| n.len())
            .map(str::to_owned)
            .ok_or_else(|| {
                ckpt_err(
                    path,
                    "zip archive has no data.pkl: not a torch.save checkpoint",
                )
            })?;
        let prefix = pkl_name
            .strip_suffix("data.pkl")
            .unwrap_or_default()
            .to_string();
        if let Ok(mut bo) = archive.by_name(&format!("{prefix}byteorder")) {
            let mut s = String::new();
            bo.read_to_string(&mut s)
                .map_err(|e| ckpt_err(path, format!("byteorder entry: {e}")))?;
            if s.trim() != "little" {
                return Err(ckpt_err(
                    path,
                    format!(
                        "byte order '{}' is not supported (only little-endian)",
                        s.trim()
                    ),
                ));
            }
        }
        let pkl = {
            let mut f = archive
                .by_name(&pkl_name)
                .map_err(|e| ckpt_err(path, format!("{pkl_name}: {e}")))?;
            if f.size() > 256 << 20 {
                return Err(ckpt_err(
                    path,
                    "data.pkl is implausibly large for a weights-only checkpoint",
                ));
            }
            let mut v = Vec::with_capacity(f.size() as usize);
            f.read_to_end(&mut v).map_err(|e| {
                ckpt_err(
                    path,
                    format!("{pkl_name} cannot be read ({e}); the file is truncated or corrupt"),
                )
            })?;
            v
        };
        let root = pickle::parse(&pkl).map_err(|e| ckpt_err(path, format!("{pkl_name}: {e}")))?;
        let Some(top) = root.as_dict() else {
            return Err(ckpt_err(
                path,
                "the pickle does not hold a dict: not a Lightning checkpoint or state dict",
            ));
        };
        // Lightning: {'state_dict': {...}, 'model_build_args': {...}, 'epoch': ..}; a bare state dict is accepted too.
        let (state, build_args, extras) = match root.get("state_dict") {
            Some(sd) => {
                let ba = match root.get("model_build_args") {
                    Some(v) => Some(super::config::build_args_from_pickle(&v, path)?),
                    None => None,
                };
                let extras = top
                    .iter()
                    .filter_map(|(k, v)| {
                        let k = k.as_str()?;
                        (k != "state_dict" && k != "model_build_args")
                            .then(|| (k.to_string(), short_repr(v)))
                    })
                    .collect();
                (sd, ba, extras)
            }
            None => (root.clone(), None, Vec::new()),
        };
        let Some(entries) = state.as_dict() else {
            return Err(ckpt_err(path, "'state_dict' is not a dict"));
        };
        let mut tensors = Vec::new();
        let mut refs = HashMap::new();
        let mut users: HashMap<String, usize> = HashMap::new();
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                return Err(ckpt_err(path, "a state_dict key is not a string"));
            };
            let Value::Tensor(t) = v else {
                return Err(ckpt_err(
                    path,
                    format!("state_dict['{key}'] is not a tensor"),
                ));
            };
            let name = key
                .strip_prefix(LIGHTNING_PREFIX)
                .unwrap_or(key)
                .to_string();
            tensors.push(TensorInfo {
                name: name.clone(),
                shape: t.shape.clone(),
                dtype: t.dtype.name().to_string(),
            });
            *users.entry(t.storage_key.clone()).or_default() += 1;
            if refs.insert(name.clone(), (*t).clone()).is_some() {
                return Err(ckpt_err(
                    path,
                    format!("tensor '{name}' appears twice (with and without the 'model.' prefix)"),
                ));
            }
        }
        if tensors.is_empty() {
            return Err(ckpt_err(path, "the checkpoint holds no tensors"));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format: Format::TorchZip,
            tensors,
            build_args,
            extras,
            source: Source::Zip {
                archive,
                prefix,
                refs,
                users,
                cache: HashMap::new(),
            },
        })
    }

    fn open_safetensors(path: &Path, mut file: File) -> Result<Self> {
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut len8 = [0u8; 8];
        file.read_exact(&mut len8).map_err(|e| Error::io(path, e))?;
        let hlen = u64::from_le_bytes(len8);
        if hlen + 8 > file_len {
            return Err(ckpt_err(
                path,
                "safetensors header runs past the end of the file (truncated?)",
            ));
        }
        let mut header = vec![0u8; hlen as usize];
        file.read_exact(&mut header)
            .map_err(|e| Error::io(path, e))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| ckpt_err(path, format!("safetensors header is not valid JSON ({e})")))?;
        let Some(map) = header.as_object() else {
            return Err(ckpt_err(path, "safetensors header is not a JSON object"));
        };
        let data_start = 8 + hlen;
        let data_len = file_len - data_start;
        let mut tensors = Vec::new();
        let mut ranges = HashMap::new();
        let mut build_args = None;
        let mut extras = Vec::new();
        for (key, v) in map {
            if key == "__metadata__" {
                if let Some(meta) = v.as_object() {
                    for (mk, mv) in meta {
                        let text = mv.as_str().unwrap_or_default();
                        if mk == "model_build_args" {
                            build_args = Some(build_args_from_json(text, path)?);
                        } else {
                            extras.push((mk.clone(), text.to_string()));
                        }
                    }
                }
                continue;
            }
            let bad = |m: &str| ckpt_err(path, format!("safetensors entry '{key}': {m}"));
            let dtype = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .ok_or_else(|| bad("no dtype"))?;
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| {
                    d.as_u64()
                        .map(|d| d as usize)
                        .ok_or_else(|| bad("shape is not a list of ints"))
                })
                .collect::<Result<_>>()?;
            let offs = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no data_offsets"))?;
            let (Some(s), Some(e)) = (
                offs.first().and_then(|x| x.as_u64()),
                offs.get(1).and_then(|x| x.as_u64()),
            ) else {
                return Err(bad("data_offsets is not [start, end]"));
            };
            let elem = match dtype {
                "F64" | "I64" | "U64" => 8,
                "F32" | "I32" | "U32" => 4,
                "F16" | "BF16" | "I16" | "U16" => 2,
                _ => 1,
            };
            let numel: usize = shape.iter().product();
            if e < s || e > data_len || (e - s) as usize != numel * elem {
                return Err(bad(
                    "data range does not match its shape and dtype, or runs past the end (truncated?)",
                ));
            }
            let name = key
                .strip_prefix(LIGHTNING_PREFIX)
                .unwrap_or(key)
                .to_string();
            tensors.push(TensorInfo {
                name: name.clone(),
                shape,
                dtype: dtype.to_string(),
            });
            ranges.insert(name, (s, e));
        }
        // Report in file order, as the writer laid them out.
        tensors.sort_by_key(|t| ranges[&t.name].0);
        if tensors.is_empty() {
            return Err(ckpt_err(path, "the safetensors file holds no tensors"));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format: Format::Safetensors,
            tensors,
            build_args,
            extras,
            source: Source::Safetensors {
                file,
                data_start,
                ranges,
            },
        })
    }

    /// Total number of stored elements (parameters plus buffers).
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(TensorInfo::numel).sum()
    }

    /// Strict check against the tensors the config implies: every expected tensor present with
    /// the expected shape and F32 dtype, nothing else.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let have: HashMap<&str, &TensorInfo> =
            self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        for (name, _) in expected {
            if !have.contains_key(name.as_str()) {
                return Err(Error::MissingTensor {
                    name: name.clone(),
                    path: self.path.clone(),
                });
            }
        }
        let want: HashMap<&str, &Vec<usize>> =
            expected.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for t in &self.tensors {
            if !want.contains_key(t.name.as_str()) {
                return Err(Error::UnexpectedTensor {
                    name: t.name.clone(),
                    path: self.path.clone(),
                });
            }
        }
        for (name, shape) in expected {
            let t = have[name.as_str()];
            if &t.shape != shape {
                return Err(Error::ShapeMismatch {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.shape.clone(),
                    path: Some(self.path.clone()),
                });
            }
            if t.dtype != "F32" {
                return Err(Error::DtypeMismatch {
                    name: name.clone(),
                    expected: "F32".into(),
                    found: t.dtype.clone(),
                });
            }
        }
        Ok(())
    }

    /// Read one F32 tensor onto `device`, straight from the file into its final buffer.
    pub fn read_f32(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        let path = self.path.clone();
        let info = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                path: path.clone(),
            })?;
        if info.dtype != "F32" {
            return Err(Error::DtypeMismatch {
                name: name.to_string(),
                expected: "F32".into(),
                found: info.dtype,
            });
        }
        let data = match &mut self.source {
            Source::Safetensors {
                file,
                data_start,
                ranges,
            } => {
                let (s, _) = ranges[name];
                file.seek(SeekFrom::Start(*data_start + s))
                    .map_err(|e| Error::io(&path, e))?;
                let mut v = vec![0f32; info.numel()];
                read_f32_into(file, &mut v)
                    .map_err(|e| ckpt_err(&path, format!("tensor '{name}': {e} (truncated?)")))?;
                v
            }
            Source::Zip {
                archive,
                prefix,
                refs,
                users,
                cache,
            } => {
                let r = refs[name].clone();
                if r.dtype != StorageDtype::F32 {
                    return Err(Error::DtypeMismatch {
                        name: name.to_string(),
                        expected: "F32".into(),
                        found: r.dtype.name().into(),
                    });
                }
                let left = users.get_mut(&r.storage_key).map(|u| {
                    *u = u.saturating_sub(1);
                    *u
                });
                let storage = match cache.remove(&r.storage_key) {
                    Some(s) => s,
                    None => read_storage(archive, prefix, &r, &path, name)?,
                };
                let numel = info.numel();
                let contiguous = is_row_major(&r.shape, &r.stride);
                if contiguous && r.offset == 0 && numel == storage.len() && left == Some(0) {
                    storage // the common case: the tensor owns its storage; no copy
                } else {
                    let v = gather(&storage, &r);
                    if left.is_some_and(|l| l > 0) {
                        cache.insert(r.storage_key.clone(), storage);
                    }
                    v
                }
            }
        };
        Ok(Tensor::from_vec(data, info.shape.clone(), device)?)
    }
}

/// Read a whole f32 storage (`<prefix>data/<key>`) into a new buffer.
fn read_storage(
    archive: &mut zip::ZipArchive<File>,
    prefix: &str,
    r: &TensorRef,
    path: &Path,
    name: &str,
) -> Result<Vec<f32>> {
    let entry = format!("{prefix}data/{}", r.storage_key);
    let mut f = archive.by_name(&entry).map_err(|e| {
        ckpt_err(
            path,
            format!(
                "tensor '{name}': storage entry {entry}: {e} (truncated or corrupt checkpoint)"
            ),
        )
    })?;
    let want = r.storage_numel as u64 * 4;
    if f.size() < want {
        return Err(ckpt_err(
            path,
            format!(
                "tensor '{name}': storage {entry} holds {} bytes, expected {want}",
                f.size()
            ),
        ));
    }
    let mut v = vec![0f32; r.storage_numel];
    read_f32_into(&mut f, &mut v)
        .map_err(|e| ckpt_err(path, format!("tensor '{name}': storage {entry}: {e}")))?;
    Ok(v)
}

fn is_row_major(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// Copy a (possibly strided) view out of its storage in row-major order. Bounds were checked
/// by the pickle reader against the storage size.
fn gather(storage: &[f32], r: &TensorRef) -> Vec<f32> {
    let numel: usize = r.shape.iter().product();
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; r.shape.len()];
    for _ in 0..numel {
        let off = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(storage[off]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < r.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// `read_exact` of little-endian f32 data into `dst` without an intermediate byte buffer.
fn read_f32_into(r: &mut impl Read, dst: &mut [f32]) -> std::io::Result<()> {
    // SAFETY: f32 has no invalid bit patterns and the byte view covers exactly `dst`'s memory,
    // which stays borrowed mutably for the duration of the read.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst))
    };
    r.read_exact(bytes)?;
    if cfg!(target_endian = "big") {
        for x in dst.iter_mut() {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
    }
    Ok(())
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn short_repr(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("'{s}'"),
        Value::Dict(d) => format!("dict ({} entries)", d.borrow().len()),
        Value::List(l) => format!("list ({} items)", l.borrow().len()),
        Value::Tuple(t) => format!("tuple ({} items)", t.len()),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

/// `model_build_args` stored as JSON in safetensors metadata (our own convention, optional):
/// `{"feature_dims": {"text": [2, 3072], ...}, "n_outputs": 20484, "n_output_timesteps": 100}`.
fn build_args_from_json(text: &str, path: &Path) -> Result<BuildArgs> {
    let bad = |m: &str| ckpt_err(path, format!("metadata model_build_args: {m}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let fd = v
        .get("feature_dims")
        .and_then(|f| f.as_object())
        .ok_or_else(|| bad("no feature_dims object"))?;
    let mut feature_dims = Vec::new();
    for (name, ld) in fd {
        let pair: Vec<u64> = ld
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        if pair.len() != 2 || pair.contains(&0) {
            return Err(bad(&format!("feature_dims['{name}'] is not [L, D]")));
        }
        feature_dims.push(FeatureDim {
            name: name.clone(),
            layers: pair[0] as usize,
            dim: pair[1] as usize,
        });
    }
    let int = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_u64())
            .filter(|&x| x > 0)
            .map(|x| x as usize)
            .ok_or_else(|| bad(&format!("no {k}")))
    };
    Ok(BuildArgs {
        feature_dims,
        n_outputs: int("n_outputs")?,
        n_output_timesteps: int("n_output_timesteps")?,
    })
}

/// SHA-256 of a file, hex, streamed (for provenance and `tribe inspect`).
pub fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_detection() {
        assert!(is_row_major(&[2, 3], &[3, 1]));
        assert!(!is_row_major(&[2, 3], &[1, 2]));
        assert!(is_row_major(&[1, 5], &[99, 1]));
    }

    #[test]
    fn gather_transposed_view() {
        // storage 0..6 as (2,3); view its transpose (3,2) with strides (1,3)
        let s: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let r = TensorRef {
            storage_key: "0".into(),
            dtype: StorageDtype::F32,
            storage_numel: 6,
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        assert_eq!(gather(&s, &r), vec![0., 3., 1., 4., 2., 5.]);
    }
}
