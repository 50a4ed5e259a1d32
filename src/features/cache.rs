//! The feature cache: content-addressed safetensors files in `--work-dir`.
//!
//! Foundation-model features are by far the most expensive step, and labs show the same movie to
//! every participant, so features are keyed by *what determines them*: the bytes of the stimulus,
//! the identity of the model files, and every setting that changes the numbers. A movie watched by
//! 20 participants is then encoded once, even by 20 Slurm array tasks sharing the work folder:
//! the first task takes an exclusive file lock on the entry, computes and writes it atomically;
//! the others block on the lock and then read the finished file. A killed task leaves at most a
//! stale lock file (locks die with their process) and never a partial entry.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::util::write_atomic;

/// A float32 array with its shape: what every extractor returns (e.g. (L, D, n_bins)).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureArray {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl FeatureArray {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not match {} values",
            data.len()
        );
        FeatureArray { shape, data }
    }
}

/// Builds a cache key from named parts. The parts are hashed in order, with their names and
/// lengths, so that no two different descriptions can collide by concatenation.
#[derive(Debug, Clone, Default)]
pub struct CacheKey {
    hasher: Sha256,
    description: Vec<String>,
}

impl CacheKey {
    pub fn new(kind: &str) -> Self {
        let mut k = CacheKey::default();
        k.add("kind", kind.as_bytes());
        k
    }

    pub fn add(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        self.hasher.update((name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self.description.push(name.to_string());
        self
    }

    pub fn add_str(&mut self, name: &str, value: &str) -> &mut Self {
        self.add(name, value.as_bytes())
    }

    pub fn add_f64(&mut self, name: &str, value: f64) -> &mut Self {
        self.add(name, &value.to_le_bytes())
    }

    /// Hash a whole file's content (stimulus bytes): renaming or moving a file keeps its key.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<&mut Self> {
        let digest = sha256_file(path)?;
        Ok(self.add(name, digest.as_bytes()))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

/// sha256 of a file's content, streamed (videos can be gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
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

/// The identity of a model folder without reading gigabytes of weights on every run: the full
/// content of every small file (configs, tokenizer, preprocessor) and, for weight files, name,
/// size and the hash of their first and last MiB. Replacing a checkpoint by a different one
/// changes its header (tensor offsets/metadata) or its size, so this is a sound identity for a
/// cache key; the provenance checksum in sidecars is computed separately over whole files.
pub fn model_identity(dir: &Path) -> Result<String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let len = p.metadata().map_err(|e| Error::io(&p, e))?.len();
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
        let mut f = File::open(&p).map_err(|e| Error::io(&p, e))?;
        const MIB: u64 = 1 << 20;
        if len <= 4 * MIB {
            let mut b = Vec::new();
            f.read_to_end(&mut b).map_err(|e| Error::io(&p, e))?;
            h.update(&b);
        } else {
            use std::io::{Seek, SeekFrom};
            let mut b = vec![0u8; MIB as usize];
            f.read_exact(&mut b).map_err(|e| Error::io(&p, e))?;
            h.update(&b);
            f.seek(SeekFrom::End(-(MIB as i64)))
                .map_err(|e| Error::io(&p, e))?;
            f.read_exact(&mut b).map_err(|e| Error::io(&p, e))?;
            h.update(&b);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The cache in `WORK_DIR/features/`.
pub struct FeatureCache {
    root: PathBuf,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl FeatureCache {
    pub fn new(work_dir: &Path) -> Result<Self> {
        let root = work_dir.join("features");
        std::fs::create_dir_all(&root)
            .map_err(|source| Error::output_write(root.clone(), source))?;
        Ok(FeatureCache {
            root,
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        })
    }

    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        let h = key.hex();
        self.root.join(&h[..2]).join(format!("{h}.safetensors"))
    }

    /// (hits, misses) so far in this process.
    pub fn stats(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The entry for `key`, opened for reading window by window (see [`FeatureFile`]), if it is
    /// there: for readers that run after the extraction pass filled the cache.
    pub fn open(&self, key: &CacheKey, label: &str) -> Result<Option<FeatureFile>> {
        let found = FeatureFile::open(&self.entry_path(key))?;
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("feature cache hit: {label}");
        }
        Ok(found)
    }

    /// Return the cached array for `key`, or compute, store and return it. Concurrent callers
    /// (threads or processes) with the same key compute it once.
    pub fn get_or_compute<F>(&self, key: &CacheKey, label: &str, compute: F) -> Result<FeatureArray>
    where
        F: FnOnce() -> Result<FeatureArray>,
    {
        let path = self.entry_path(key);
        if let Some(a) = read_entry(&path)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::info!("feature cache hit: {label}");
            return Ok(a);
        }
        let dir = path.parent().expect("entry has a parent");
        std::fs::create_dir_all(dir)
            .map_err(|source| Error::output_write(dir.to_path_buf(), source))?;
        let lock_path = path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::output_write(lock_path.clone(), source))?;
        lock.lock()
            .map_err(|source| Error::output_write(lock_path.clone(), source))?;
        // Someone may have finished it while we waited for the lock.
        if let Some(a) = read_entry(&path)? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::info!("feature cache hit (after waiting): {label}");
            return Ok(a);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        tracing::info!("extracting features: {label}");
        let a = compute()?;
        write_entry(&path, &a, label)?;
        drop(lock);
        Ok(a)
    }
}

const TENSOR_NAME: &str = "features";

/// A cached (L, D, n_bins) float32 array read window by window with positioned reads, so a run's
/// features are never all in memory: the brain model needs one 100 s window at a time, and an
/// hour of features at the release's sizes is 300 MiB. (A memory map would do the reads too, but
/// its pages would count in the process's resident memory until the run ends.)
#[derive(Debug, Clone)]
pub struct FeatureFile {
    path: PathBuf,
    file: std::sync::Arc<File>,
    /// Byte offset of element 0 in the file.
    data_start: u64,
    pub shape: [usize; 3],
}

impl FeatureFile {
    /// Open a cache entry written by this module; `None` when it is not there. Reads only the
    /// header.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let Some(e) = RawEntry::open(path)? else {
            return Ok(None);
        };
        let [l, d, bins] = e.shape[..] else {
            return Err(corrupt(
                path,
                format!("shape {:?} is not (L, D, n_bins)", e.shape),
            ));
        };
        Ok(Some(FeatureFile {
            path: e.path,
            file: std::sync::Arc::new(e.file),
            data_start: e.data_start,
            shape: [l, d, bins],
        }))
    }

    /// Bins `first .. first + len` of every (layer, dim) row as an (L, D, len) row-major array;
    /// bins outside the file's `0 .. n_bins` are zeros (the padded windows of SPEC §4).
    pub fn window(&self, first: i64, len: usize) -> Result<Vec<f32>> {
        let [l, d, n] = self.shape;
        let span = WindowSpan::new(first, len, n);
        let mut out = vec![0f32; l * d * len];
        if span.taken == 0 {
            return Ok(out);
        }
        let mut buf = vec![0u8; span.taken * 4];
        for row in 0..l * d {
            self.read_at(&mut buf, (row * n + span.lo) * 4)?;
            let at = row * len + span.pad_front;
            decode_f32(&buf, &mut out[at..at + span.taken]);
        }
        Ok(out)
    }

    /// The whole array, in one read.
    pub fn read_all(&self) -> Result<FeatureArray> {
        let [l, d, n] = self.shape;
        let mut buf = vec![0u8; l * d * n * 4];
        self.read_at(&mut buf, 0)?;
        let mut data = vec![0f32; l * d * n];
        decode_f32(&buf, &mut data);
        Ok(FeatureArray::new(vec![l, d, n], data))
    }

    fn read_at(&self, buf: &mut [u8], data_offset: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .read_exact_at(buf, self.data_start + data_offset as u64)
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn decode_f32(bytes: &[u8], out: &mut [f32]) {
    for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// Where a window of `len` bins starting at bin `first` (possibly negative, possibly past the
/// end) meets an array of `n` bins: `taken` bins from `lo`, placed after `pad_front` zeros. The
/// rest of the window is zeros too (SPEC §4's padded windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    pub lo: usize,
    pub taken: usize,
    pub pad_front: usize,
}

impl WindowSpan {
    pub fn new(first: i64, len: usize, n: usize) -> Self {
        let lo = first.clamp(0, n as i64) as usize;
        let hi = (first + len as i64).clamp(0, n as i64) as usize;
        WindowSpan {
            lo,
            taken: hi.saturating_sub(lo),
            pad_front: (lo as i64 - first).clamp(0, len as i64) as usize,
        }
    }
}

/// An entry's open file and parsed header: the one parser behind [`FeatureFile::open`] (which
/// needs the (L, D, n_bins) layout) and [`read_entry`] (any shape, read whole).
struct RawEntry {
    path: PathBuf,
    file: File,
    /// Byte offset of element 0 in the file.
    data_start: u64,
    shape: Vec<usize>,
}

impl RawEntry {
    fn open(path: &Path) -> Result<Option<Self>> {
        let corrupt = |why: String| corrupt(path, why);
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)
            .map_err(|e| corrupt(e.to_string()))?;
        let n = u64::from_le_bytes(n);
        if n > 100_000_000 || 8 + n > len {
            return Err(corrupt(format!("header of {n} bytes in a {len}-byte file")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| corrupt(e.to_string()))?;
        let meta: safetensors::tensor::Metadata =
            serde_json::from_slice(&header).map_err(|e| corrupt(e.to_string()))?;
        let info = meta
            .info(TENSOR_NAME)
            .ok_or_else(|| corrupt(format!("no '{TENSOR_NAME}' tensor")))?;
        let bytes = info.shape.iter().product::<usize>() as u64 * 4;
        let (a, b) = info.data_offsets;
        let data_start = 8 + n + a as u64;
        if info.dtype != safetensors::Dtype::F32
            || (b - a) as u64 != bytes
            || data_start + bytes > len
        {
            return Err(corrupt(format!(
                "expected {bytes} bytes of float32 data, found {:?} at {a}..{b} in {len} bytes",
                info.dtype
            )));
        }
        Ok(Some(RawEntry {
            path: path.to_path_buf(),
            file,
            data_start,
            shape: info.shape.clone(),
        }))
    }
}

fn corrupt(path: &Path, why: String) -> Error {
    Error::Other(format!(
        "{}: corrupt feature cache entry ({why}); delete it to recompute",
        path.display()
    ))
}

fn read_entry(path: &Path) -> Result<Option<FeatureArray>> {
    use std::os::unix::fs::FileExt;
    let Some(e) = RawEntry::open(path)? else {
        return Ok(None);
    };
    let count = e.shape.iter().product::<usize>();
    let mut buf = vec![0u8; count * 4];
    e.file
        .read_exact_at(&mut buf, e.data_start)
        .map_err(|err| Error::io(path, err))?;
    let mut data = vec![0f32; count];
    decode_f32(&buf, &mut data);
    Ok(Some(FeatureArray::new(e.shape, data)))
}

fn write_entry(path: &Path, a: &FeatureArray, label: &str) -> Result<()> {
    let bytes: Vec<u8> = a.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, a.shape.clone(), &bytes)
            .map_err(|e| Error::Other(format!("feature cache: {e}")))?;
    let meta = std::collections::HashMap::from([("label".to_string(), label.to_string())]);
    let out = safetensors::serialize([(TENSOR_NAME, view)], Some(meta))
        .map_err(|e| Error::Other(format!("feature cache: {e}")))?;
    write_atomic(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_and_reuses() {
        let d = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(d.path()).unwrap();
        let mut key = CacheKey::new("video");
        key.add_str("stim", "abc").add_f64("offset", 0.0);
        let a = cache
            .get_or_compute(&key, "x", || {
                Ok(FeatureArray::new(
                    vec![1, 2, 3],
                    (0..6).map(|v| v as f32).collect(),
                ))
            })
            .unwrap();
        let b = cache
            .get_or_compute(&key, "x", || panic!("must not recompute"))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(cache.stats(), (1, 1));
    }

    #[test]
    fn keys_separate_parts() {
        let mut a = CacheKey::new("k");
        a.add_str("x", "ab").add_str("y", "c");
        let mut b = CacheKey::new("k");
        b.add_str("x", "a").add_str("y", "bc");
        assert_ne!(a.hex(), b.hex());
    }

    #[test]
    fn concurrent_threads_compute_once() {
        let d = tempfile::tempdir().unwrap();
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let calls = calls.clone();
                let root = d.path().to_path_buf();
                s.spawn(move || {
                    let cache = FeatureCache::new(&root).unwrap();
                    let key = CacheKey::new("same");
                    cache
                        .get_or_compute(&key, "same", || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(FeatureArray::new(vec![2], vec![1.0, 2.0]))
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
