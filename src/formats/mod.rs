//! Neuroimaging file formats: NIfTI-1/2, GIFTI, CIFTI-2. One module per format.
//!
//! - [`gifti`]: read every GIFTI encoding; write surface time series and maps (streaming).
//! - [`nifti`]: header-only reader for NIfTI-1/2 (no voxel data read), whole-image reading, and
//!   3-D/4-D float32 writers with a proper qform/sform, `xyzt_units` and TR.
//! - [`cifti`]: CIFTI-2 dense time series (`.dtseries.nii`) writer, NIfTI-2 container ours.
//!
//! The codes shared by the three formats (intent, data type, xform) live here, because GIFTI
//! borrows the NIfTI-1 vocabulary verbatim (`NIFTI_INTENT_*`, `NIFTI_TYPE_*`, `NIFTI_XFORM_*`).

pub mod cifti;
pub mod gifti;
mod gifti_write;
pub mod nifti;

pub use cifti::{BrainModel, CIFTI_STRUCTURES, CiftiDtseries, VolumeSpace, write_cifti_dtseries};
pub use gifti::{
    ArrayData, CoordSystem, DataArray, Encoding, Endian, GiftiImage, Hemisphere, IndexOrder, Label,
    MetaData, read_gifti, read_gifti_bytes,
};
pub use gifti_write::{
    GiftiTimeSeriesWriter, GiftiWriter, TimeSeriesOptions, write_gifti, write_gifti_time_series,
};
pub use nifti::{
    Affine, NiftiHeaderInfo, NiftiVersion, NiftiVolume, NiftiWriteOptions, Unit, VolumeGeometry,
    read_nifti_header, read_nifti_volume, write_nifti_3d, write_nifti_4d,
};

/// A NIfTI intent code (NIfTI-1 `intent_code`, GIFTI `Intent` attribute, CIFTI-2 3000-range).
///
/// A newtype rather than an enum: files in the wild carry codes we have no name for, and a reader
/// must keep them instead of refusing the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Intent(pub i32);

impl Intent {
    pub const NONE: Intent = Intent(0);
    pub const CORREL: Intent = Intent(2);
    pub const TTEST: Intent = Intent(3);
    pub const FTEST: Intent = Intent(4);
    pub const ZSCORE: Intent = Intent(5);
    pub const PVAL: Intent = Intent(22);
    pub const LOG10PVAL: Intent = Intent(24);
    pub const ESTIMATE: Intent = Intent(1001);
    pub const LABEL: Intent = Intent(1002);
    pub const NEURONAME: Intent = Intent(1003);
    pub const GENMATRIX: Intent = Intent(1004);
    pub const SYMMATRIX: Intent = Intent(1005);
    pub const DISPVECT: Intent = Intent(1006);
    pub const VECTOR: Intent = Intent(1007);
    pub const POINTSET: Intent = Intent(1008);
    pub const TRIANGLE: Intent = Intent(1009);
    pub const QUATERNION: Intent = Intent(1010);
    pub const DIMLESS: Intent = Intent(1011);
    pub const TIME_SERIES: Intent = Intent(2001);
    pub const NODE_INDEX: Intent = Intent(2002);
    pub const RGB_VECTOR: Intent = Intent(2003);
    pub const RGBA_VECTOR: Intent = Intent(2004);
    pub const SHAPE: Intent = Intent(2005);
    /// CIFTI-2 dense time series (`.dtseries.nii`).
    pub const CONNECTIVITY_DENSE_SERIES: Intent = Intent(3002);
    /// CIFTI-2 dense scalar (`.dscalar.nii`).
    pub const CONNECTIVITY_DENSE_SCALARS: Intent = Intent(3006);

    /// The `NIFTI_INTENT_*` spelling used in GIFTI files, if the code is a known one.
    pub fn name(self) -> Option<&'static str> {
        INTENT_NAMES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map(|(_, n)| *n)
    }

    /// Parse a GIFTI `Intent` attribute. Besides the canonical `NIFTI_INTENT_X` spelling we accept
    /// the bare suffix (`TIME_SERIES`) and a decimal code, as nibabel's recoder does.
    pub fn from_name(s: &str) -> Option<Intent> {
        let s = s.trim();
        if let Some((c, _)) = INTENT_NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)) {
            return Some(Intent(*c));
        }
        if let Some((c, _)) = INTENT_NAMES.iter().find(|(_, n)| {
            n.strip_prefix("NIFTI_INTENT_")
                .is_some_and(|t| t.eq_ignore_ascii_case(s))
        }) {
            return Some(Intent(*c));
        }
        s.parse::<i32>().ok().map(Intent)
    }
}

const INTENT_NAMES: &[(i32, &str)] = &[
    (0, "NIFTI_INTENT_NONE"),
    (2, "NIFTI_INTENT_CORREL"),
    (3, "NIFTI_INTENT_TTEST"),
    (4, "NIFTI_INTENT_FTEST"),
    (5, "NIFTI_INTENT_ZSCORE"),
    (6, "NIFTI_INTENT_CHISQ"),
    (7, "NIFTI_INTENT_BETA"),
    (8, "NIFTI_INTENT_BINOM"),
    (9, "NIFTI_INTENT_GAMMA"),
    (10, "NIFTI_INTENT_POISSON"),
    (11, "NIFTI_INTENT_NORMAL"),
    (12, "NIFTI_INTENT_FTEST_NONC"),
    (13, "NIFTI_INTENT_CHISQ_NONC"),
    (14, "NIFTI_INTENT_LOGISTIC"),
    (15, "NIFTI_INTENT_LAPLACE"),
    (16, "NIFTI_INTENT_UNIFORM"),
    (17, "NIFTI_INTENT_TTEST_NONC"),
    (18, "NIFTI_INTENT_WEIBULL"),
    (19, "NIFTI_INTENT_CHI"),
    (20, "NIFTI_INTENT_INVGAUSS"),
    (21, "NIFTI_INTENT_EXTVAL"),
    (22, "NIFTI_INTENT_PVAL"),
    (23, "NIFTI_INTENT_LOGPVAL"),
    (24, "NIFTI_INTENT_LOG10PVAL"),
    (1001, "NIFTI_INTENT_ESTIMATE"),
    (1002, "NIFTI_INTENT_LABEL"),
    (1003, "NIFTI_INTENT_NEURONAME"),
    (1004, "NIFTI_INTENT_GENMATRIX"),
    (1005, "NIFTI_INTENT_SYMMATRIX"),
    (1006, "NIFTI_INTENT_DISPVECT"),
    (1007, "NIFTI_INTENT_VECTOR"),
    (1008, "NIFTI_INTENT_POINTSET"),
    (1009, "NIFTI_INTENT_TRIANGLE"),
    (1010, "NIFTI_INTENT_QUATERNION"),
    (1011, "NIFTI_INTENT_DIMLESS"),
    (2001, "NIFTI_INTENT_TIME_SERIES"),
    (2002, "NIFTI_INTENT_NODE_INDEX"),
    (2003, "NIFTI_INTENT_RGB_VECTOR"),
    (2004, "NIFTI_INTENT_RGBA_VECTOR"),
    (2005, "NIFTI_INTENT_SHAPE"),
    (3000, "NIFTI_INTENT_CONNECTIVITY_UNKNOWN"),
    (3001, "NIFTI_INTENT_CONNECTIVITY_DENSE"),
    (3002, "NIFTI_INTENT_CONNECTIVITY_DENSE_SERIES"),
    (3003, "NIFTI_INTENT_CONNECTIVITY_PARCELLATED"),
    (3004, "NIFTI_INTENT_CONNECTIVITY_PARCELLATED_SERIES"),
    (3006, "NIFTI_INTENT_CONNECTIVITY_DENSE_SCALARS"),
    (3007, "NIFTI_INTENT_CONNECTIVITY_DENSE_LABELS"),
    (3008, "NIFTI_INTENT_CONNECTIVITY_PARCELLATED_SCALAR"),
    (3009, "NIFTI_INTENT_CONNECTIVITY_PARCELLATED_DENSE"),
    (3010, "NIFTI_INTENT_CONNECTIVITY_DENSE_PARCELLATED"),
    (
        3011,
        "NIFTI_INTENT_CONNECTIVITY_PARCELLATED_PARCELLATED_SERIES",
    ),
    (
        3012,
        "NIFTI_INTENT_CONNECTIVITY_PARCELLATED_PARCELLATED_SCALAR",
    ),
];

/// NIfTI data type codes (`datatype` field, GIFTI `DataType` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Uint8,
    Int16,
    Int32,
    Float32,
    Float64,
    Int8,
    Uint16,
    Uint32,
    Int64,
    Uint64,
}

impl DataType {
    pub const ALL: [DataType; 10] = [
        DataType::Uint8,
        DataType::Int16,
        DataType::Int32,
        DataType::Float32,
        DataType::Float64,
        DataType::Int8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Int64,
        DataType::Uint64,
    ];

    /// The NIfTI numeric code.
    pub fn code(self) -> i16 {
        match self {
            DataType::Uint8 => 2,
            DataType::Int16 => 4,
            DataType::Int32 => 8,
            DataType::Float32 => 16,
            DataType::Float64 => 64,
            DataType::Int8 => 256,
            DataType::Uint16 => 512,
            DataType::Uint32 => 768,
            DataType::Int64 => 1024,
            DataType::Uint64 => 1280,
        }
    }

    pub fn from_code(code: i32) -> Option<DataType> {
        DataType::ALL
            .into_iter()
            .find(|d| i32::from(d.code()) == code)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// The GIFTI `DataType` attribute value (`NIFTI_TYPE_FLOAT32`, ...).
    pub fn gifti_name(self) -> &'static str {
        match self {
            DataType::Uint8 => "NIFTI_TYPE_UINT8",
            DataType::Int16 => "NIFTI_TYPE_INT16",
            DataType::Int32 => "NIFTI_TYPE_INT32",
            DataType::Float32 => "NIFTI_TYPE_FLOAT32",
            DataType::Float64 => "NIFTI_TYPE_FLOAT64",
            DataType::Int8 => "NIFTI_TYPE_INT8",
            DataType::Uint16 => "NIFTI_TYPE_UINT16",
            DataType::Uint32 => "NIFTI_TYPE_UINT32",
            DataType::Int64 => "NIFTI_TYPE_INT64",
            DataType::Uint64 => "NIFTI_TYPE_UINT64",
        }
    }

    /// Parse a GIFTI `DataType` attribute; the `NIFTI_TYPE_` prefix is optional.
    pub fn from_gifti_name(s: &str) -> Option<DataType> {
        let s = s.trim();
        let bare = s.strip_prefix("NIFTI_TYPE_").unwrap_or(s);
        DataType::ALL.into_iter().find(|d| {
            d.gifti_name()
                .strip_prefix("NIFTI_TYPE_")
                .is_some_and(|n| n.eq_ignore_ascii_case(bare))
        })
    }
}

/// NIfTI `NIFTI_XFORM_*` names by code, for GIFTI `DataSpace`/`TransformedSpace`.
pub fn xform_name(code: i32) -> Option<&'static str> {
    XFORM_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| *n)
}

/// The code of a `NIFTI_XFORM_*` name.
pub fn xform_code(name: &str) -> Option<i32> {
    XFORM_NAMES
        .iter()
        .find(|(_, n)| *n == name.trim())
        .map(|(c, _)| *c)
}

const XFORM_NAMES: &[(i32, &str)] = &[
    (0, "NIFTI_XFORM_UNKNOWN"),
    (1, "NIFTI_XFORM_SCANNER_ANAT"),
    (2, "NIFTI_XFORM_ALIGNED_ANAT"),
    (3, "NIFTI_XFORM_TALAIRACH"),
    (4, "NIFTI_XFORM_MNI_152"),
    (5, "NIFTI_XFORM_TEMPLATE_OTHER"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_names_round_trip() {
        for (code, name) in INTENT_NAMES {
            assert_eq!(Intent::from_name(name), Some(Intent(*code)));
            assert_eq!(Intent(*code).name(), Some(*name));
        }
        assert_eq!(Intent::from_name("TIME_SERIES"), Some(Intent::TIME_SERIES));
        assert_eq!(Intent::from_name("2005"), Some(Intent::SHAPE));
        assert_eq!(Intent::from_name("NIFTI_INTENT_BOGUS"), None);
    }

    #[test]
    fn datatype_codes() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_code(d.code().into()), Some(d));
            assert_eq!(DataType::from_gifti_name(d.gifti_name()), Some(d));
        }
        assert_eq!(DataType::from_gifti_name("NIFTI_TYPE_COMPLEX64"), None);
    }
}
