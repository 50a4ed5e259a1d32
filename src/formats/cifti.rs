//! CIFTI-2 dense time series (`.dtseries.nii`) writer.
//!
//! The container is a NIfTI-2 header (ours: the `nifti` crate is NIfTI-1 only) with intent 3002
//! `ConnDenseSeries`, `dim` = (6, 1, 1, 1, 1, T, N, 1) as the CIFTI-2 spec fixes (dims 1-4 unused,
//! dim 5 = the series, dim 6 = the brainordinates), then one NIfTI extension with code 32 that
//! holds the CIFTI-2 XML, then float32 little-endian values. NIfTI order makes dim 5 the fastest:
//! each brainordinate's whole time course is contiguous on disk (Workbench's "row").
//!
//! The XML has two maps: a Series axis (`SeriesStart`, `SeriesStep` = TR, `SeriesUnit` SECOND)
//! and a BrainModels axis with surface models (`CIFTI_STRUCTURE_CORTEX_LEFT/RIGHT`,
//! `SurfaceNumberOfVertices`, `VertexIndices`) and optional voxel models (`VoxelIndicesIJK` on a
//! `Volume` with its `TransformationMatrixVoxelIndicesIJKtoXYZ`).
//!
//! # Density label
//!
//! fsaverage5 cortex (10,242 vertices per hemisphere) plus subcortical voxels is not a standard
//! CIFTI space: fMRIPrep's `den-91k` names fsLR 32k + 2 mm subcortex. BIDS needs a custom
//! `den-<label>` with a `Density` sidecar description. We follow the HCP convention of naming the
//! density by its grayordinate count rounded to thousands: [`CiftiDtseries::density_label`]
//! returns e.g. `"29k"` for 2 x 10,242 vertices + 8,802 voxels (29,286 grayordinates), and
//! [`CiftiDtseries::density_description`] the matching `Density` text, e.g.
//! `"29,286 grayordinates: fsaverage5 cortex (10,242 + 10,242 vertices) and 8,802 voxels"`.

use std::io::Write;
use std::path::Path;

use super::gifti::Hemisphere;
use super::gifti_write::AtomicOutput;
use super::nifti::{Affine, Nifti2Header};
use crate::error::{Error, Result};

fn cifti_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Cifti {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Brain structure names the CIFTI-2 spec allows (Workbench refuses others).
pub const CIFTI_STRUCTURES: &[&str] = &[
    "CIFTI_STRUCTURE_ACCUMBENS_LEFT",
    "CIFTI_STRUCTURE_ACCUMBENS_RIGHT",
    "CIFTI_STRUCTURE_ALL_WHITE_MATTER",
    "CIFTI_STRUCTURE_ALL_GREY_MATTER",
    "CIFTI_STRUCTURE_AMYGDALA_LEFT",
    "CIFTI_STRUCTURE_AMYGDALA_RIGHT",
    "CIFTI_STRUCTURE_BRAIN_STEM",
    "CIFTI_STRUCTURE_CAUDATE_LEFT",
    "CIFTI_STRUCTURE_CAUDATE_RIGHT",
    "CIFTI_STRUCTURE_CEREBELLAR_WHITE_MATTER_LEFT",
    "CIFTI_STRUCTURE_CEREBELLAR_WHITE_MATTER_RIGHT",
    "CIFTI_STRUCTURE_CEREBELLUM",
    "CIFTI_STRUCTURE_CEREBELLUM_LEFT",
    "CIFTI_STRUCTURE_CEREBELLUM_RIGHT",
    "CIFTI_STRUCTURE_CEREBRAL_WHITE_MATTER_LEFT",
    "CIFTI_STRUCTURE_CEREBRAL_WHITE_MATTER_RIGHT",
    "CIFTI_STRUCTURE_CORTEX",
    "CIFTI_STRUCTURE_CORTEX_LEFT",
    "CIFTI_STRUCTURE_CORTEX_RIGHT",
    "CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_LEFT",
    "CIFTI_STRUCTURE_DIENCEPHALON_VENTRAL_RIGHT",
    "CIFTI_STRUCTURE_HIPPOCAMPUS_LEFT",
    "CIFTI_STRUCTURE_HIPPOCAMPUS_RIGHT",
    "CIFTI_STRUCTURE_INVALID",
    "CIFTI_STRUCTURE_OTHER",
    "CIFTI_STRUCTURE_OTHER_GREY_MATTER",
    "CIFTI_STRUCTURE_OTHER_WHITE_MATTER",
    "CIFTI_STRUCTURE_PALLIDUM_LEFT",
    "CIFTI_STRUCTURE_PALLIDUM_RIGHT",
    "CIFTI_STRUCTURE_PUTAMEN_LEFT",
    "CIFTI_STRUCTURE_PUTAMEN_RIGHT",
    "CIFTI_STRUCTURE_THALAMUS_LEFT",
    "CIFTI_STRUCTURE_THALAMUS_RIGHT",
];

/// The voxel grid that voxel brain models index into.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeSpace {
    pub dims: [usize; 3],
    /// Voxel (i, j, k) to world (mm) affine.
    pub affine: Affine,
}

/// One brain structure's brainordinates, in data order.
#[derive(Debug, Clone, PartialEq)]
pub enum BrainModel {
    Surface {
        /// A `CIFTI_STRUCTURE_*` name.
        structure: String,
        /// Vertices of the whole mesh (`SurfaceNumberOfVertices`), 10,242 for fsaverage5.
        n_vertices: usize,
        /// The vertices that carry data, in data order.
        vertices: Vec<u32>,
    },
    Voxels {
        structure: String,
        /// (i, j, k) of each voxel, in data order.
        voxels: Vec<[u32; 3]>,
    },
}

impl BrainModel {
    /// A cortical surface model covering every vertex of the hemisphere's mesh.
    pub fn cortex(hemi: Hemisphere, n_vertices: usize) -> Self {
        BrainModel::Surface {
            structure: hemi.cifti_structure().to_string(),
            n_vertices,
            vertices: (0..n_vertices as u32).collect(),
        }
    }

    pub fn structure(&self) -> &str {
        match self {
            BrainModel::Surface { structure, .. } | BrainModel::Voxels { structure, .. } => {
                structure
            }
        }
    }

    /// Brainordinates in this model.
    pub fn count(&self) -> usize {
        match self {
            BrainModel::Surface { vertices, .. } => vertices.len(),
            BrainModel::Voxels { voxels, .. } => voxels.len(),
        }
    }
}

/// Everything about a dense time series except the values.
#[derive(Debug, Clone, PartialEq)]
pub struct CiftiDtseries {
    /// Time of the first volume in seconds (0 for volume onsets from acquisition start).
    pub series_start: f64,
    /// Repetition time in seconds.
    pub series_step: f64,
    pub brain_models: Vec<BrainModel>,
    /// Needed when any model is made of voxels.
    pub volume: Option<VolumeSpace>,
}

impl CiftiDtseries {
    /// Both fsaverage-like hemispheres (all vertices), no volume part.
    pub fn cortex_only(n_vertices_per_hemi: usize, tr: f64) -> Self {
        CiftiDtseries {
            series_start: 0.0,
            series_step: tr,
            brain_models: vec![
                BrainModel::cortex(Hemisphere::Left, n_vertices_per_hemi),
                BrainModel::cortex(Hemisphere::Right, n_vertices_per_hemi),
            ],
            volume: None,
        }
    }

    /// Total brainordinates (the length of one volume of data).
    pub fn n_grayordinates(&self) -> usize {
        self.brain_models.iter().map(BrainModel::count).sum()
    }

    /// The custom BIDS `den-` value for this layout: grayordinates rounded to thousands, as in
    /// HCP's `91k` (see the module docs).
    pub fn density_label(&self) -> String {
        format!(
            "{}k",
            (self.n_grayordinates() as f64 / 1000.0).round() as u64
        )
    }

    /// A `Density` sidecar description of this layout.
    pub fn density_description(&self) -> String {
        let surf: Vec<String> = self
            .brain_models
            .iter()
            .filter(|m| matches!(m, BrainModel::Surface { .. }))
            .map(|m| thousands(m.count()))
            .collect();
        let vox: usize = self
            .brain_models
            .iter()
            .filter(|m| matches!(m, BrainModel::Voxels { .. }))
            .map(BrainModel::count)
            .sum();
        let mut s = format!("{} grayordinates:", thousands(self.n_grayordinates()));
        if !surf.is_empty() {
            s.push_str(&format!(
                " cortical surface ({} vertices)",
                surf.join(" + ")
            ));
        }
        if vox > 0 {
            s.push_str(&format!(
                "{} {} voxels",
                if surf.is_empty() { "" } else { " and" },
                thousands(vox)
            ));
        }
        s
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if !(self.series_step.is_finite()
            && self.series_step > 0.0
            && self.series_start.is_finite())
        {
            return Err(cifti_err(
                path,
                format!(
                    "SeriesStep (TR) must be a positive number of seconds, got {}",
                    self.series_step
                ),
            ));
        }
        if self.brain_models.is_empty() {
            return Err(cifti_err(path, "no brain models"));
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.brain_models {
            if !CIFTI_STRUCTURES.contains(&m.structure()) {
                return Err(cifti_err(
                    path,
                    format!("'{}' is not a CIFTI-2 brain structure", m.structure()),
                ));
            }
            if !seen.insert(m.structure().to_string()) {
                return Err(cifti_err(
                    path,
                    format!("brain structure {} appears twice", m.structure()),
                ));
            }
            if m.count() == 0 {
                return Err(cifti_err(
                    path,
                    format!("brain structure {} has no brainordinates", m.structure()),
                ));
            }
            match m {
                BrainModel::Surface {
                    n_vertices,
                    vertices,
                    structure,
                } => {
                    let mut used = vec![false; *n_vertices];
                    for &v in vertices {
                        let slot = used.get_mut(v as usize).ok_or_else(|| {
                            cifti_err(path, format!("{structure}: vertex {v} is outside its {n_vertices}-vertex surface"))
                        })?;
                        if std::mem::replace(slot, true) {
                            return Err(cifti_err(
                                path,
                                format!("{structure}: vertex {v} is listed twice"),
                            ));
                        }
                    }
                }
                BrainModel::Voxels { voxels, structure } => {
                    let vol = self.volume.as_ref().ok_or_else(|| {
                        cifti_err(
                            path,
                            format!("{structure} is made of voxels but no volume space was given"),
                        )
                    })?;
                    if let Some(v) = voxels
                        .iter()
                        .find(|v| (0..3).any(|a| v[a] as usize >= vol.dims[a]))
                    {
                        return Err(cifti_err(
                            path,
                            format!(
                                "{structure}: voxel {v:?} is outside the {:?} volume",
                                vol.dims
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The CIFTI-2 XML for `n_timepoints` volumes.
    pub fn xml(&self, n_timepoints: usize) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CIFTI Version=\"2\">\n  <Matrix>\n",
        );
        s.push_str(&format!(
            "    <MatrixIndicesMap AppliesToMatrixDimension=\"0\" IndicesMapToDataType=\"CIFTI_INDEX_TYPE_SERIES\" NumberOfSeriesPoints=\"{n_timepoints}\" SeriesExponent=\"0\" SeriesStart=\"{:?}\" SeriesStep=\"{:?}\" SeriesUnit=\"SECOND\"/>\n",
            self.series_start, self.series_step
        ));
        s.push_str("    <MatrixIndicesMap AppliesToMatrixDimension=\"1\" IndicesMapToDataType=\"CIFTI_INDEX_TYPE_BRAIN_MODELS\">\n");
        if let Some(vol) = &self.volume {
            s.push_str(&format!(
                "      <Volume VolumeDimensions=\"{},{},{}\">\n        <TransformationMatrixVoxelIndicesIJKtoXYZ MeterExponent=\"-3\">\n",
                vol.dims[0], vol.dims[1], vol.dims[2]
            ));
            for row in &vol.affine {
                s.push_str(&format!(
                    "{:?} {:?} {:?} {:?}\n",
                    row[0], row[1], row[2], row[3]
                ));
            }
            s.push_str("        </TransformationMatrixVoxelIndicesIJKtoXYZ>\n      </Volume>\n");
        }
        let mut offset = 0usize;
        for m in &self.brain_models {
            match m {
                BrainModel::Surface {
                    structure,
                    n_vertices,
                    vertices,
                } => {
                    s.push_str(&format!(
                        "      <BrainModel IndexOffset=\"{offset}\" IndexCount=\"{}\" ModelType=\"CIFTI_MODEL_TYPE_SURFACE\" BrainStructure=\"{structure}\" SurfaceNumberOfVertices=\"{n_vertices}\">\n        <VertexIndices>",
                        vertices.len()
                    ));
                    let idx: Vec<String> = vertices.iter().map(u32::to_string).collect();
                    s.push_str(&idx.join(" "));
                    s.push_str("</VertexIndices>\n      </BrainModel>\n");
                }
                BrainModel::Voxels { structure, voxels } => {
                    s.push_str(&format!(
                        "      <BrainModel IndexOffset=\"{offset}\" IndexCount=\"{}\" ModelType=\"CIFTI_MODEL_TYPE_VOXELS\" BrainStructure=\"{structure}\">\n        <VoxelIndicesIJK>",
                        voxels.len()
                    ));
                    let ijk: Vec<String> = voxels
                        .iter()
                        .map(|v| format!("{} {} {}", v[0], v[1], v[2]))
                        .collect();
                    s.push_str(&ijk.join("\n"));
                    s.push_str("</VoxelIndicesIJK>\n      </BrainModel>\n");
                }
            }
            offset += m.count();
        }
        s.push_str("    </MatrixIndicesMap>\n  </Matrix>\n</CIFTI>\n");
        s
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Write a CIFTI-2 dense time series. `data` is time-major like the GIFTI writer's input:
/// `data[t * n_grayordinates + g]`, grayordinates in the order of `layout.brain_models`.
/// The number of volumes is `data.len() / layout.n_grayordinates()`.
pub fn write_cifti_dtseries(path: &Path, layout: &CiftiDtseries, data: &[f32]) -> Result<()> {
    layout.validate(path)?;
    let n = layout.n_grayordinates();
    if data.is_empty() || !data.len().is_multiple_of(n) {
        return Err(cifti_err(
            path,
            format!(
                "{} values is not a whole number of {n}-grayordinate volumes",
                data.len()
            ),
        ));
    }
    let t = data.len() / n;
    let xml = layout.xml(t);
    // Extension: esize (multiple of 16, including its 8-byte head), ecode 32, XML, zero padding.
    let esize = (8 + xml.len()).div_ceil(16) * 16;
    let vox_offset = 540 + 4 + esize;
    let header = Nifti2Header {
        dim: [6, 1, 1, 1, 1, t as i64, n as i64, 1],
        pixdim: [1.0; 8],
        datatype: 16,
        bitpix: 32,
        vox_offset: vox_offset as i64,
        xyzt_units: 2 | 8,
        intent_code: 3002,
        intent_name: "ConnDenseSeries".into(),
        descrip: format!("tribe-bids {}", crate::VERSION),
    };
    let out = AtomicOutput::create(path)?;
    let mut w = out.writer()?;
    let io = |e| out.not_writable(e);
    w.write_all(&header.to_bytes()).map_err(io)?;
    w.write_all(&[1, 0, 0, 0]).map_err(io)?;
    w.write_all(&(esize as i32).to_le_bytes()).map_err(io)?;
    w.write_all(&32i32.to_le_bytes()).map_err(io)?;
    w.write_all(xml.as_bytes()).map_err(io)?;
    w.write_all(&vec![0u8; esize - 8 - xml.len()]).map_err(io)?;
    // Transpose to brainordinate-major, a block of brainordinates at a time.
    const BLOCK: usize = 256;
    let mut buf = Vec::with_capacity(BLOCK * t * 4);
    for g0 in (0..n).step_by(BLOCK) {
        buf.clear();
        for g in g0..(g0 + BLOCK).min(n) {
            for ti in 0..t {
                buf.extend_from_slice(&data[ti * n + g].to_le_bytes());
            }
        }
        w.write_all(&buf).map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_label_counts_grayordinates() {
        let mut l = CiftiDtseries::cortex_only(10242, 1.0);
        l.brain_models.push(BrainModel::Voxels {
            structure: "CIFTI_STRUCTURE_THALAMUS_LEFT".into(),
            voxels: vec![[0, 0, 0]; 8802],
        });
        assert_eq!(l.n_grayordinates(), 29286);
        assert_eq!(l.density_label(), "29k");
        assert_eq!(
            l.density_description(),
            "29,286 grayordinates: cortical surface (10,242 + 10,242 vertices) and 8,802 voxels"
        );
    }

    #[test]
    fn invalid_layouts_are_refused() {
        let p = Path::new("x.dtseries.nii");
        let mut l = CiftiDtseries::cortex_only(4, 1.0);
        l.brain_models.push(BrainModel::Voxels {
            structure: "CIFTI_STRUCTURE_THALAMUS_LEFT".into(),
            voxels: vec![[0, 0, 0]],
        });
        assert!(
            l.validate(p)
                .unwrap_err()
                .to_string()
                .contains("no volume space")
        );
        let mut l = CiftiDtseries::cortex_only(4, 1.0);
        l.brain_models[0] = BrainModel::Surface {
            structure: "CORTEX".into(),
            n_vertices: 4,
            vertices: vec![0],
        };
        assert!(
            l.validate(p)
                .unwrap_err()
                .to_string()
                .contains("not a CIFTI-2 brain structure")
        );
        let l = CiftiDtseries::cortex_only(4, 0.0);
        assert!(l.validate(p).is_err());
    }
}
