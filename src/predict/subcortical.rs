//! The subcortical head (`--subcortical-checkpoint DIR`): a second TRIBE checkpoint whose outputs
//! are the voxels of a subcortical mask, written as a 4-D NIfTI on the 2 mm MNI grid.
//!
//! TRIBE v2's subcortical model (SPEC §9) predicts one value per voxel of nilearn's Harvard-Oxford
//! `sub-maxprob-thr50-2mm` mask with the cortex, white matter, brain stem and background labels
//! zeroed, in numpy C order over (x, y, z). Output k of the checkpoint therefore belongs to the
//! k-th mask voxel in that order, and nothing else in the checkpoint says where a voxel is: the
//! mask is part of the model's definition. The bundled mask (`assets/subcortical/`, rebuilt from
//! the FSL probability maps by `scripts/make_subcortical_mask.py`) is compiled into the binary so
//! containers need no extra file; a checkpoint folder that carries its own
//! [`MASK_OVERRIDE_NAME`] (e.g. the exact FSL/nilearn file its model was trained on) wins.
//!
//! The head shares the run's features with the cortical model (nothing is extracted twice) and
//! goes through the same window and volume alignment, so volume k of the NIfTI and DataArray k of
//! the GIFTI describe the same acquisition. Volumes stream into a gzip encoder one at a time:
//! memory holds one 91x109x91 volume, not the run.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{Value, json};

use crate::bids::Run;
use crate::bids::derivatives::DerivName;
use crate::error::{Error, Result};
use crate::formats::nifti::{Affine, affine_to_quaternion, parse_nifti_header, read_nifti_volume};
use crate::model::{ModelOptions, TribeModel};
use crate::predict::run::{RunSchedule, predict_volumes};

/// File name of the bundled mask under `assets/subcortical/`.
pub const MASK_FILE_NAME: &str = "mask-HarvardOxford-sub-thr50-2mm.nii.gz";

/// A mask in the checkpoint folder under this name replaces the bundled one.
pub const MASK_OVERRIDE_NAME: &str = "subcortical_mask.nii.gz";

static BUNDLED_MASK: &[u8] =
    include_bytes!("../../assets/subcortical/mask-HarvardOxford-sub-thr50-2mm.nii.gz");

/// FSL's MNI152 2 mm grid, where nilearn's `*-2mm` Harvard-Oxford images live (SPEC §9).
pub const GRID_DIMS: [usize; 3] = [91, 109, 91];
pub const GRID_AFFINE: Affine = [
    [-2.0, 0.0, 0.0, 90.0],
    [0.0, 2.0, 0.0, -126.0],
    [0.0, 0.0, 2.0, -72.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Harvard-Oxford "sub" label names by value (nilearn's list); the kept ones are those whose
/// name holds none of "Cortex", "White", "Stem", "Background" (neuralset's rule, SPEC §9).
pub const HO_SUB_LABELS: [&str; 22] = [
    "Background",
    "Left Cerebral White Matter",
    "Left Cerebral Cortex",
    "Left Lateral Ventrical",
    "Left Thalamus",
    "Left Caudate",
    "Left Putamen",
    "Left Pallidum",
    "Brain-Stem",
    "Left Hippocampus",
    "Left Amygdala",
    "Left Accumbens",
    "Right Cerebral White Matter",
    "Right Cerebral Cortex",
    "Right Lateral Ventricle",
    "Right Thalamus",
    "Right Caudate",
    "Right Putamen",
    "Right Pallidum",
    "Right Hippocampus",
    "Right Amygdala",
    "Right Accumbens",
];

/// The voxels a subcortical checkpoint predicts, and where each one sits in the volume.
#[derive(Debug, Clone)]
pub struct SubcorticalMask {
    pub dims: [usize; 3],
    pub affine: Affine,
    /// For output k of the model, the offset of its voxel in NIfTI file order
    /// (`x + nx * (y + ny * z)`); k runs over the mask voxels in numpy C order over (x, y, z).
    offsets: Vec<usize>,
    /// Voxel count per label value present in the mask.
    label_counts: Vec<(u32, usize)>,
    /// Where the mask came from (bundled asset or a file), for the sidecar.
    pub source: String,
    pub sha256: String,
}

impl SubcorticalMask {
    /// The mask compiled into the binary (`assets/subcortical/`).
    pub fn bundled() -> Result<Self> {
        let path = PathBuf::from(format!("assets/subcortical/{MASK_FILE_NAME}"));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(BUNDLED_MASK)
            .read_to_end(&mut raw)
            .map_err(|e| mask_err(&path, format!("cannot gunzip the bundled mask: {e}")))?;
        let h = parse_nifti_header(&raw, &path)?;
        let dims = dims3(&h.shape(), &path)?;
        let n: usize = dims.iter().product();
        let start = h.vox_offset.max(0.0) as usize;
        if h.datatype != 2 || raw.len() < start + n {
            return Err(mask_err(
                &path,
                "the bundled mask must be a complete uint8 image",
            ));
        }
        let labels: Vec<f32> = raw[start..start + n]
            .iter()
            .map(|&b| f32::from(b))
            .collect();
        let affine = h.affine().map_err(|e| mask_err(&path, e))?;
        Self::from_labels(
            dims,
            affine,
            &labels,
            "bundled".into(),
            sha256(BUNDLED_MASK),
            &path,
        )
    }

    /// A label or binary image from a file; non-zero voxels are the mask. It must sit on the
    /// bundled grid, because the output is named and described as that grid.
    pub fn from_file(path: &Path) -> Result<Self> {
        let vol = read_nifti_volume(path)?;
        let dims = dims3(&vol.header.shape(), path)?;
        let affine = vol.header.affine().map_err(|e| mask_err(path, e))?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_labels(
            dims,
            affine,
            &vol.data,
            path.display().to_string(),
            sha256(&bytes),
            path,
        )
    }

    fn from_labels(
        dims: [usize; 3],
        affine: Affine,
        labels: &[f32],
        source: String,
        sha256: String,
        path: &Path,
    ) -> Result<Self> {
        let same_affine = affine
            .iter()
            .flatten()
            .zip(GRID_AFFINE.iter().flatten())
            .all(|(a, b)| (a - b).abs() < 1e-3);
        if dims != GRID_DIMS || !same_affine {
            return Err(mask_err(
                path,
                format!(
                    "the mask must be on FSL's MNI152 2 mm grid (91x109x91, origin 90,-126,-72, x flipped), found {dims:?} with affine {affine:?}"
                ),
            ));
        }
        let [nx, ny, nz] = dims;
        let mut offsets = Vec::new();
        let mut counts: std::collections::BTreeMap<u32, usize> = Default::default();
        // numpy C order over (x, y, z): z fastest, x slowest.
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    let off = x + nx * (y + ny * z);
                    let v = labels[off];
                    if v != 0.0 && v.is_finite() {
                        offsets.push(off);
                        *counts.entry(v.round().max(0.0) as u32).or_default() += 1;
                    }
                }
            }
        }
        if offsets.is_empty() {
            return Err(mask_err(path, "the mask has no non-zero voxel"));
        }
        Ok(SubcorticalMask {
            dims,
            affine,
            offsets,
            label_counts: counts.into_iter().collect(),
            source,
            sha256,
        })
    }

    /// How many outputs a checkpoint for this mask must have.
    pub fn n_voxels(&self) -> usize {
        self.offsets.len()
    }

    /// Scatter one volume of model outputs (mask order) into a zeroed NIfTI-order volume.
    pub fn scatter(&self, values: &[f32], volume: &mut [f32]) {
        volume.fill(0.0);
        for (&o, &v) in self.offsets.iter().zip(values) {
            volume[o] = v;
        }
    }

    /// What the sidecar says about the mask: enough to rebuild the voxel order.
    pub fn definition(&self) -> Value {
        let labels: Vec<Value> = self
            .label_counts
            .iter()
            .map(|(v, n)| {
                let name = if self.source == "bundled" {
                    HO_SUB_LABELS.get(*v as usize).copied().unwrap_or("?")
                } else {
                    "?"
                };
                json!({"Value": v, "Name": name, "Voxels": n})
            })
            .collect();
        json!({
            "Source": if self.source == "bundled" { format!("tribe-bids assets/subcortical/{MASK_FILE_NAME}") } else { self.source.clone() },
            "Sha256": self.sha256,
            "Definition": "Harvard-Oxford subcortical atlas, maximum-probability labels at >= 50 % on FSL's MNI152 2 mm grid, labels naming Cortex, White, Stem or Background removed (TRIBE v2's MaskProjector(mask=\"subcortical\"); see assets/subcortical/README.md for how the bundled copy was rebuilt and how it differs from the paper's 8,802 voxels)",
            "VoxelOrder": "numpy C order over the (x, y, z) voxel indices of this grid: output k of the model is the k-th non-zero mask voxel",
            "Voxels": self.n_voxels(),
            "Labels": labels,
        })
    }
}

fn mask_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: message.into(),
        fix: format!(
            "use the bundled mask (remove {MASK_OVERRIDE_NAME} from the checkpoint folder) or a 3-D label image on the 91x109x91 2 mm MNI grid"
        ),
    }
}

fn dims3(shape: &[usize], path: &Path) -> Result<[usize; 3]> {
    match shape {
        [x, y, z] | [x, y, z, 1] => Ok([*x, *y, *z]),
        _ => Err(mask_err(
            path,
            format!("the mask must be a 3-D image, found shape {shape:?}"),
        )),
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The loaded subcortical checkpoint with its mask.
pub struct SubcorticalHead {
    pub model: TribeModel,
    /// SHA-256 of the checkpoint's weights file.
    pub sha256: String,
    pub mask: SubcorticalMask,
}

impl SubcorticalHead {
    /// Load `dir` (config.yaml + best.ckpt or model.safetensors) and check that it fits both the
    /// mask (one output per voxel) and the cortical model whose features it will share.
    pub fn load(dir: &Path, device: &Device, cortical: &TribeModel) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InputMissing {
                path: dir.to_path_buf(),
                what: "the --subcortical-checkpoint folder".into(),
                fix: "give the folder holding the subcortical model's config.yaml and best.ckpt (or model.safetensors)".into(),
            });
        }
        let own = dir.join(MASK_OVERRIDE_NAME);
        let mask = if own.is_file() {
            SubcorticalMask::from_file(&own)?
        } else {
            SubcorticalMask::bundled()?
        };
        // The unseen-subject row: --subject-index picks a row of the cortical predictor, whose
        // subjects need not be those of this checkpoint.
        let model = TribeModel::load(dir, device, ModelOptions::default())?;
        let weights = model.weights_path().to_path_buf();
        if model.n_outputs() != mask.n_voxels() {
            return Err(Error::Model {
                path: weights,
                message: format!(
                    "the subcortical checkpoint predicts {} outputs but the subcortical mask ({}) has {} voxels, so its outputs cannot be placed in the volume",
                    model.n_outputs(),
                    if mask.source == "bundled" {
                        "bundled Harvard-Oxford thr50 2 mm"
                    } else {
                        mask.source.as_str()
                    },
                    mask.n_voxels()
                ),
                fix: format!(
                    "use a checkpoint trained on this mask, or put the mask it was trained on (3-D, 91x109x91 2 mm MNI grid, non-zero = predicted voxel) in the checkpoint folder as {MASK_OVERRIDE_NAME}; a cortical checkpoint (20,484 outputs) belongs in --models-dir"
                ),
            });
        }
        if model.timing() != cortical.timing() {
            return Err(Error::Model {
                path: dir.join("config.yaml"),
                message: format!(
                    "the subcortical model's timing ({:?}) differs from the cortical model's ({:?}); both read the same feature windows",
                    model.timing(),
                    cortical.timing()
                ),
                fix: "use a subcortical checkpoint trained with the cortical model's data settings (duration_trs, neuro.frequency, frequency, neuro.offset)".into(),
            });
        }
        for f in model.feature_dims() {
            match cortical.feature_dims().iter().find(|c| c.name == f.name) {
                Some(c) if c == f => {}
                other => {
                    return Err(Error::Model {
                        path: weights,
                        message: format!(
                            "the subcortical model reads {} features as (L, D) = ({}, {}) but the cortical model's extractors give {}",
                            f.name,
                            f.layers,
                            f.dim,
                            other.map_or("none".to_string(), |c| format!("({}, {})", c.layers, c.dim))
                        ),
                        fix: "the two checkpoints share one set of features: use a subcortical checkpoint made for the same extractor models".into(),
                    });
                }
            }
        }
        let sha256 = crate::model::checkpoint::file_sha256(&weights)?;
        Ok(SubcorticalHead {
            model,
            sha256,
            mask,
        })
    }

    /// What goes into a run's resume fingerprint: a changed checkpoint or mask redoes the run.
    pub fn identity(&self) -> String {
        format!("{}+{}", self.sha256, self.mask.sha256)
    }

    /// Predict a run on the shared features and write the NIfTI, then its sidecar (`sidecar` is
    /// the cortical sidecar of the same run, adapted here).
    pub fn predict_and_write(
        &self,
        run: &Run,
        output_dir: &Path,
        features: impl Into<crate::predict::run::RunInputs>,
        sched: &RunSchedule,
        tr: f64,
        mut sidecar: Value,
    ) -> Result<()> {
        let name = out_name(run);
        let dir = output_dir.join(name.folder("func"));
        let path = dir.join(name.file_name());
        let n_vol = sched.volume_times.len();
        let mut w = MaskedNiftiWriter::create(&path, &self.mask, n_vol, tr)?;
        predict_volumes(&self.model, features, sched, |_, v| w.push(&v))?;
        w.finish()?;
        self.adapt_sidecar(&mut sidecar);
        crate::util::write_atomic(
            &dir.join(name.sidecar_name()),
            &crate::bids::derivatives::json_bytes(&sidecar),
        )
    }

    fn adapt_sidecar(&self, v: &mut Value) {
        v["Description"] = json!(
            "Subcortical BOLD time series predicted by a TRIBE v2 subcortical checkpoint from this run's stimuli (a model prediction, not measured data); zero outside the subcortical mask."
        );
        v["SpatialReference"] = json!({
            "Description": "FSL's MNI152 2 mm grid (91x109x91, voxel (0,0,0) at x=90, y=-126, z=-72 mm, x axis flipped), on which the Harvard-Oxford atlas is defined. The space label follows the tribe-bids output contract; the grid is FSL's, not TemplateFlow's MNI152NLin2009cAsym res-2 (97x115x97)."
        });
        v["Resolution"] = json!("2 mm isotropic (FSL MNI152 2 mm grid, 91x109x91)");
        v["SkullStripped"] = json!(true);
        v["SubcorticalMask"] = self.mask.definition();
        v["Model"] = json!({
            "Name": "TRIBE v2 (FmriEncoder), subcortical head",
            "Checkpoint": self.model.weights_path().display().to_string(),
            "Sha256": self.sha256,
            "SubjectRow": self.model.subject_row(),
            "Outputs": self.model.n_outputs(),
        });
    }
}

/// `…_space-MNI152NLin2009cAsym_res-2_desc-predicted_bold.nii.gz` (DESIGN.md §6, contract).
pub fn out_name(run: &Run) -> DerivName {
    let ents: Vec<(String, String)> = run
        .entities
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    DerivName::new(ents, "bold", ".nii.gz")
        .with("space", "MNI152NLin2009cAsym")
        .with("res", "2")
        .with("desc", "predicted")
}

/// A gzipped NIfTI-1 float32 4-D image written one volume at a time under a temp name, renamed
/// into place by [`finish`](Self::finish); dropped unfinished, it leaves nothing behind.
pub struct MaskedNiftiWriter<'a> {
    path: PathBuf,
    tmp: Option<tempfile::NamedTempFile>,
    gz: Option<flate2::write::GzEncoder<BufWriter<std::fs::File>>>,
    mask: &'a SubcorticalMask,
    volume: Vec<f32>,
    bytes: Vec<u8>,
    n_vols: usize,
    written: usize,
}

impl<'a> MaskedNiftiWriter<'a> {
    pub fn create(path: &Path, mask: &'a SubcorticalMask, n_vols: usize, tr: f64) -> Result<Self> {
        let not_writable = |source| Error::OutputNotWritable {
            path: path.to_path_buf(),
            source,
        };
        if n_vols == 0 || n_vols > i16::MAX as usize || !(tr.is_finite() && tr > 0.0) {
            return Err(Error::Nifti {
                path: path.to_path_buf(),
                message: format!(
                    "cannot write {n_vols} volumes with TR {tr} s (NIfTI-1 allows 1..=32767 volumes and a positive TR)"
                ),
            });
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(not_writable)?;
        let mut builder = tempfile::Builder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o644));
        }
        let tmp = builder
            .prefix(".tmp-")
            .suffix(".nii.gz")
            .tempfile_in(dir)
            .map_err(not_writable)?;
        let file = tmp.as_file().try_clone().map_err(not_writable)?;
        let mut gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            flate2::Compression::default(),
        );
        gz.write_all(&nifti1_header(mask, n_vols, tr))
            .map_err(not_writable)?;
        let n: usize = mask.dims.iter().product();
        Ok(MaskedNiftiWriter {
            path: path.to_path_buf(),
            tmp: Some(tmp),
            gz: Some(gz),
            mask,
            volume: vec![0.0; n],
            bytes: Vec::with_capacity(4 * n),
            n_vols,
            written: 0,
        })
    }

    /// One volume of model outputs, in mask order.
    pub fn push(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.mask.n_voxels() || self.written >= self.n_vols {
            return Err(Error::Other(format!(
                "internal: volume {} of {} with {} values for a {}-voxel mask ({})",
                self.written + 1,
                self.n_vols,
                values.len(),
                self.mask.n_voxels(),
                self.path.display()
            )));
        }
        self.mask.scatter(values, &mut self.volume);
        self.bytes.clear();
        for x in &self.volume {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }
        let gz = self.gz.as_mut().expect("open until finish");
        gz.write_all(&self.bytes)
            .map_err(|e| Error::OutputNotWritable {
                path: self.path.clone(),
                source: e,
            })?;
        self.written += 1;
        Ok(())
    }

    /// Close the gzip stream, fsync and rename into place.
    pub fn finish(mut self) -> Result<()> {
        let path = self.path.clone();
        let not_writable = |source| Error::OutputNotWritable {
            path: path.clone(),
            source,
        };
        if self.written != self.n_vols {
            return Err(Error::Other(format!(
                "internal: {} of {} volumes written to {}",
                self.written,
                self.n_vols,
                path.display()
            )));
        }
        let gz = self.gz.take().expect("open until finish");
        let mut buf = gz.finish().map_err(not_writable)?;
        buf.flush().map_err(not_writable)?;
        drop(buf);
        let tmp = self.tmp.take().expect("open until finish");
        tmp.as_file().sync_all().map_err(not_writable)?;
        tmp.persist(&path).map_err(|e| not_writable(e.error))?;
        Ok(())
    }
}

/// The 348-byte NIfTI-1 header plus the 4-byte empty extension block (little-endian): float32,
/// qform and sform both MNI_152 (code 4) from the mask's affine, mm + s units, pixdim[4] = TR.
fn nifti1_header(mask: &SubcorticalMask, n_vols: usize, tr: f64) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    let put =
        |b: &mut Vec<u8>, at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut b, 0, &348i32.to_le_bytes());
    b[38] = b'r';
    let dims = [
        4i16,
        mask.dims[0] as i16,
        mask.dims[1] as i16,
        mask.dims[2] as i16,
        n_vols as i16,
        1,
        1,
        1,
    ];
    for (i, d) in dims.iter().enumerate() {
        put(&mut b, 40 + 2 * i, &d.to_le_bytes());
    }
    put(&mut b, 70, &16i16.to_le_bytes()); // NIFTI_TYPE_FLOAT32
    put(&mut b, 72, &32i16.to_le_bytes());
    let (quat, offset, qfac, zooms) = affine_to_quaternion(&mask.affine);
    let pixdim = [
        qfac as f32,
        zooms[0] as f32,
        zooms[1] as f32,
        zooms[2] as f32,
        tr as f32,
        1.0,
        1.0,
        1.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(&mut b, 76 + 4 * i, &p.to_le_bytes());
    }
    put(&mut b, 108, &352f32.to_le_bytes()); // vox_offset
    put(&mut b, 112, &1f32.to_le_bytes()); // scl_slope
    b[123] = 2 | 8; // NIFTI_UNITS_MM | NIFTI_UNITS_SEC
    let descrip = format!("tribe-bids {} subcortical prediction", crate::VERSION);
    let d: Vec<u8> = descrip.bytes().take(79).collect();
    put(&mut b, 148, &d);
    put(&mut b, 252, &4i16.to_le_bytes()); // qform_code MNI_152
    put(&mut b, 254, &4i16.to_le_bytes()); // sform_code MNI_152
    for (i, q) in quat.iter().chain(offset.iter()).enumerate() {
        put(&mut b, 256 + 4 * i, &(*q as f32).to_le_bytes());
    }
    for (r, row) in mask.affine.iter().take(3).enumerate() {
        for (c, x) in row.iter().enumerate() {
            put(&mut b, 280 + 16 * r + 4 * c, &(*x as f32).to_le_bytes());
        }
    }
    put(&mut b, 344, b"n+1\0");
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_mask_is_the_documented_one() {
        let m = SubcorticalMask::bundled().unwrap();
        assert_eq!(m.dims, GRID_DIMS);
        assert_eq!(
            m.n_voxels(),
            8694,
            "assets/subcortical/README.md states 8,694"
        );
        // Sixteen labels: ventricles, thalamus, caudate, putamen, pallidum, hippocampus,
        // amygdala, accumbens on each side; never cortex, white matter or brain stem.
        let values: Vec<u32> = m.label_counts.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            values,
            vec![3, 4, 5, 6, 7, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21]
        );
        // C order: offsets of consecutive outputs step along z (by nx*ny) within a column.
        let nxy = 91 * 109;
        assert!(m.offsets.windows(2).any(|w| w[1] == w[0] + nxy));
        // x is the slowest index: offsets' x components never decrease.
        let xs: Vec<usize> = m.offsets.iter().map(|o| o % 91).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn header_round_trips_through_our_reader() {
        let m = SubcorticalMask::bundled().unwrap();
        let h = nifti1_header(&m, 7, 1.5);
        let info = parse_nifti_header(&h, Path::new("x.nii")).unwrap();
        assert_eq!(info.shape(), vec![91, 109, 91, 7]);
        assert_eq!(info.repetition_time_s(), Some(1.5));
        assert_eq!((info.qform_code, info.sform_code), (4, 4));
        let a = info.affine().unwrap();
        let q = info.qform_affine().unwrap();
        for r in 0..4 {
            for c in 0..4 {
                assert!((a[r][c] - GRID_AFFINE[r][c]).abs() < 1e-6);
                assert!((q[r][c] - GRID_AFFINE[r][c]).abs() < 1e-4, "qform {q:?}");
            }
        }
    }
}
