//! GIFTI (surface data) reading and the in-memory model shared with the writer.
//!
//! Reads what real tools write: all four encodings (ASCII, Base64Binary, GZipBase64Binary,
//! ExternalFileBinary), both endiannesses, row- or column-major arrays, every integer and float
//! type, gifticlib's alternative spellings (`GIFTI_ENCODING_B64GZ`, `GIFTI_ENDIAN_LITTLE`), and a
//! whole file that is itself gzip- or bzip2-compressed (`.gii.gz`, as nilearn ships fsaverage5).
//!
//! Values match nibabel bit for bit: ASCII floats are parsed as f64 and then rounded to the array
//! type, as numpy's `loadtxt` does, and column-major arrays are transposed so that [`ArrayData`]
//! is always row-major (C order), which is what `np.ascontiguousarray(darray.data)` gives.
//!
//! Pitfalls handled here (RUST-STACK.md 7-8): "GZipBase64Binary" is zlib, not gzip (a gzip
//! stream is accepted too, since some writers got it wrong), base64 text is whitespace-stripped
//! before decoding, and quick-xml 0.42 reports entity references as separate events.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rayon::prelude::*;

use super::{DataType, Intent, xform_code};
use crate::error::{Error, Result};

/// Ordered name/value metadata (`<MetaData><MD>`). Order is kept because writers and readers of
/// GIFTI files show it to users; lookups are linear, which is fine for the handful of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaData(pub Vec<(String, String)>);

impl MetaData {
    pub fn new() -> Self {
        MetaData(Vec::new())
    }

    /// The value for `name` (the last one wins when a file repeats a name, as in nibabel).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set `name` to `value`, replacing an existing entry in place.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        if let Some(entry) = self.0.iter_mut().find(|(n, _)| *n == name) {
            entry.1 = value;
        } else {
            self.0.push((name, value));
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Insert a name/value pair the way nibabel's parser does: a repeated name overwrites the
    /// earlier value (Python dict semantics), keeping the first position.
    fn push_dict_like(&mut self, name: String, value: String) {
        self.insert(name, value);
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MetaData {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = MetaData::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// One entry of a `<LabelTable>`: the integer key used in LABEL arrays, its name and colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub key: i32,
    pub name: String,
    /// Red, green, blue, alpha in 0..=1; `None` when the file gives no colour.
    pub rgba: Option<[f32; 4]>,
}

/// A `<CoordinateSystemTransformMatrix>`: maps the array's coordinates (`data_space`) into
/// `transformed_space`. Meaningful for POINTSET arrays only (gifticlib warns on others).
#[derive(Debug, Clone, PartialEq)]
pub struct CoordSystem {
    /// `NIFTI_XFORM_*` name as written in the file.
    pub data_space: String,
    pub transformed_space: String,
    /// Row-major 4x4 matrix.
    pub matrix: [[f64; 4]; 4],
}

impl CoordSystem {
    /// Numeric `NIFTI_XFORM_*` codes of (data space, transformed space), if the names are known.
    pub fn codes(&self) -> (Option<i32>, Option<i32>) {
        (
            xform_code(&self.data_space),
            xform_code(&self.transformed_space),
        )
    }
}

/// How a DataArray's values are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Ascii,
    Base64Binary,
    /// Base64 of a zlib stream (the name says gzip; the GIFTI spec and every writer use zlib).
    GZipBase64Binary,
    /// Raw bytes in a separate file, named relative to the .gii.
    ExternalFileBinary,
}

impl Encoding {
    pub fn gifti_name(self) -> &'static str {
        match self {
            Encoding::Ascii => "ASCII",
            Encoding::Base64Binary => "Base64Binary",
            Encoding::GZipBase64Binary => "GZipBase64Binary",
            Encoding::ExternalFileBinary => "ExternalFileBinary",
        }
    }

    fn parse(s: &str) -> Option<Encoding> {
        match s.trim() {
            "ASCII" | "GIFTI_ENCODING_ASCII" => Some(Encoding::Ascii),
            "Base64Binary" | "GIFTI_ENCODING_B64BIN" => Some(Encoding::Base64Binary),
            "GZipBase64Binary" | "GIFTI_ENCODING_B64GZ" => Some(Encoding::GZipBase64Binary),
            "ExternalFileBinary" | "GIFTI_ENCODING_EXTBIN" => Some(Encoding::ExternalFileBinary),
            _ => None,
        }
    }
}

/// Byte order of binary-encoded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    pub fn gifti_name(self) -> &'static str {
        match self {
            Endian::Little => "LittleEndian",
            Endian::Big => "BigEndian",
        }
    }

    fn parse(s: &str) -> Option<Endian> {
        match s.trim() {
            "LittleEndian" | "GIFTI_ENDIAN_LITTLE" => Some(Endian::Little),
            "BigEndian" | "GIFTI_ENDIAN_BIG" => Some(Endian::Big),
            _ => None,
        }
    }
}

/// `ArrayIndexingOrder` of the stored values. In memory, [`ArrayData`] is always row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexOrder {
    RowMajor,
    ColumnMajor,
}

impl IndexOrder {
    pub fn gifti_name(self) -> &'static str {
        match self {
            IndexOrder::RowMajor => "RowMajorOrder",
            IndexOrder::ColumnMajor => "ColumnMajorOrder",
        }
    }

    fn parse(s: &str) -> Option<IndexOrder> {
        match s.trim() {
            "RowMajorOrder" => Some(IndexOrder::RowMajor),
            "ColumnMajorOrder" => Some(IndexOrder::ColumnMajor),
            _ => None,
        }
    }
}

/// Which cortical hemisphere a surface file describes (`AnatomicalStructurePrimary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hemisphere {
    Left,
    Right,
}

impl Hemisphere {
    /// The GIFTI `AnatomicalStructurePrimary` value Workbench and fMRIPrep use.
    pub fn anatomical_structure(self) -> &'static str {
        match self {
            Hemisphere::Left => "CortexLeft",
            Hemisphere::Right => "CortexRight",
        }
    }

    /// The CIFTI-2 brain structure name.
    pub fn cifti_structure(self) -> &'static str {
        match self {
            Hemisphere::Left => "CIFTI_STRUCTURE_CORTEX_LEFT",
            Hemisphere::Right => "CIFTI_STRUCTURE_CORTEX_RIGHT",
        }
    }

    /// The BIDS `hemi-` entity value.
    pub fn bids_label(self) -> &'static str {
        match self {
            Hemisphere::Left => "L",
            Hemisphere::Right => "R",
        }
    }
}

/// The values of one DataArray, row-major, in native byte order.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    U8(Vec<u8>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

macro_rules! for_each_variant {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            ArrayData::U8($v) => $body,
            ArrayData::I8($v) => $body,
            ArrayData::I16($v) => $body,
            ArrayData::U16($v) => $body,
            ArrayData::I32($v) => $body,
            ArrayData::U32($v) => $body,
            ArrayData::I64($v) => $body,
            ArrayData::U64($v) => $body,
            ArrayData::F32($v) => $body,
            ArrayData::F64($v) => $body,
        }
    };
}

impl ArrayData {
    pub fn datatype(&self) -> DataType {
        match self {
            ArrayData::U8(_) => DataType::Uint8,
            ArrayData::I8(_) => DataType::Int8,
            ArrayData::I16(_) => DataType::Int16,
            ArrayData::U16(_) => DataType::Uint16,
            ArrayData::I32(_) => DataType::Int32,
            ArrayData::U32(_) => DataType::Uint32,
            ArrayData::I64(_) => DataType::Int64,
            ArrayData::U64(_) => DataType::Uint64,
            ArrayData::F32(_) => DataType::Float32,
            ArrayData::F64(_) => DataType::Float64,
        }
    }

    pub fn len(&self) -> usize {
        for_each_variant!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The float32 values, when that is the stored type (the common case for maps and series).
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            ArrayData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The int32 values, when that is the stored type (triangles, labels).
    pub fn as_i32(&self) -> Option<&[i32]> {
        match self {
            ArrayData::I32(v) => Some(v),
            _ => None,
        }
    }

    /// Every value widened to f64 (exact for all types but 64-bit integers beyond 2^53).
    #[allow(clippy::unnecessary_cast)] // the macro also expands for the f64 variant
    pub fn to_f64_vec(&self) -> Vec<f64> {
        for_each_variant!(self, v => v.iter().map(|&x| x as f64).collect())
    }

    /// Little-endian bytes of the values, in memory order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        for_each_variant!(self, v => v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    /// Decode `bytes` (exactly `n * size` of them) of type `dt` in byte order `endian`.
    fn from_bytes(dt: DataType, bytes: &[u8], endian: Endian) -> ArrayData {
        macro_rules! conv {
            ($t:ty, $variant:ident) => {{
                const N: usize = std::mem::size_of::<$t>();
                ArrayData::$variant(
                    bytes
                        .chunks_exact(N)
                        .map(|c| {
                            let a: [u8; N] = c.try_into().expect("chunks_exact yields N bytes");
                            match endian {
                                Endian::Little => <$t>::from_le_bytes(a),
                                Endian::Big => <$t>::from_be_bytes(a),
                            }
                        })
                        .collect(),
                )
            }};
        }
        match dt {
            DataType::Uint8 => ArrayData::U8(bytes.to_vec()),
            DataType::Int8 => ArrayData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DataType::Int16 => conv!(i16, I16),
            DataType::Uint16 => conv!(u16, U16),
            DataType::Int32 => conv!(i32, I32),
            DataType::Uint32 => conv!(u32, U32),
            DataType::Int64 => conv!(i64, I64),
            DataType::Uint64 => conv!(u64, U64),
            DataType::Float32 => conv!(f32, F32),
            DataType::Float64 => conv!(f64, F64),
        }
    }

    /// Reorder column-major (Fortran) values of shape `dims` into row-major order.
    fn fortran_to_c(self, dims: &[usize]) -> ArrayData {
        if dims.iter().filter(|&&d| d > 1).count() < 2 {
            return self;
        }
        fn reorder<T: Copy>(v: Vec<T>, dims: &[usize]) -> Vec<T> {
            let n = v.len();
            // Fortran strides: the first index varies fastest.
            let mut fstride = vec![1usize; dims.len()];
            for k in 1..dims.len() {
                fstride[k] = fstride[k - 1] * dims[k - 1];
            }
            let mut out = Vec::with_capacity(n);
            let mut idx = vec![0usize; dims.len()];
            for _ in 0..n {
                let off: usize = idx.iter().zip(&fstride).map(|(i, s)| i * s).sum();
                out.push(v[off]);
                // advance the C-order multi-index (last index fastest)
                for k in (0..dims.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < dims[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
            out
        }
        match self {
            ArrayData::U8(v) => ArrayData::U8(reorder(v, dims)),
            ArrayData::I8(v) => ArrayData::I8(reorder(v, dims)),
            ArrayData::I16(v) => ArrayData::I16(reorder(v, dims)),
            ArrayData::U16(v) => ArrayData::U16(reorder(v, dims)),
            ArrayData::I32(v) => ArrayData::I32(reorder(v, dims)),
            ArrayData::U32(v) => ArrayData::U32(reorder(v, dims)),
            ArrayData::I64(v) => ArrayData::I64(reorder(v, dims)),
            ArrayData::U64(v) => ArrayData::U64(reorder(v, dims)),
            ArrayData::F32(v) => ArrayData::F32(reorder(v, dims)),
            ArrayData::F64(v) => ArrayData::F64(reorder(v, dims)),
        }
    }
}

/// Decode raw values of a NIfTI/GIFTI data type into f64 (used by the NIfTI-2 image reader).
pub(crate) fn decode_values(dt: DataType, bytes: &[u8], endian: Endian) -> Vec<f64> {
    ArrayData::from_bytes(dt, bytes, endian).to_f64_vec()
}

/// One `<DataArray>`: values plus what the file said about them.
#[derive(Debug, Clone, PartialEq)]
pub struct DataArray {
    pub intent: Intent,
    /// `Dim0`, `Dim1`, ... (`Dimensionality` entries).
    pub dims: Vec<usize>,
    /// Row-major values (converted on read if the file was column-major).
    pub data: ArrayData,
    pub meta: MetaData,
    pub coord_systems: Vec<CoordSystem>,
    /// Encoding to use when writing (on read: the encoding found in the file).
    pub encoding: Encoding,
    /// Byte order found in the file (the writer always writes little-endian).
    pub endian: Endian,
    /// Index order found in the file (the writer always writes row-major).
    pub order: IndexOrder,
    /// `ExternalFileName` and `ExternalFileOffset` for external arrays.
    pub external: Option<(String, u64)>,
}

impl DataArray {
    /// A new array for writing, GZipBase64Binary-encoded. `dims` must multiply to `data.len()`
    /// (checked when written).
    pub fn new(intent: Intent, dims: Vec<usize>, data: ArrayData) -> Self {
        DataArray {
            intent,
            dims,
            data,
            meta: MetaData::new(),
            coord_systems: Vec::new(),
            encoding: Encoding::GZipBase64Binary,
            endian: Endian::Little,
            order: IndexOrder::RowMajor,
            external: None,
        }
    }

    /// A 1-D float32 map over vertices (statmap, shape, one time point).
    pub fn vertex_map(intent: Intent, values: Vec<f32>) -> Self {
        DataArray::new(intent, vec![values.len()], ArrayData::F32(values))
    }

    pub fn with_meta(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(name, value);
        self
    }

    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Number of values the dims promise (None on overflow).
    pub fn expected_len(&self) -> Option<usize> {
        self.dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// A whole GIFTI file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GiftiImage {
    pub version: String,
    pub meta: MetaData,
    pub labels: Vec<Label>,
    pub arrays: Vec<DataArray>,
}

impl GiftiImage {
    /// An empty image with `AnatomicalStructurePrimary` set, ready for arrays.
    pub fn for_hemisphere(hemi: Hemisphere) -> Self {
        let mut meta = MetaData::new();
        meta.insert("AnatomicalStructurePrimary", hemi.anatomical_structure());
        GiftiImage {
            version: "1.0".into(),
            meta,
            labels: Vec::new(),
            arrays: Vec::new(),
        }
    }

    /// The arrays with a given intent (e.g. the POINTSET and TRIANGLE of a mesh).
    pub fn arrays_with_intent(&self, intent: Intent) -> impl Iterator<Item = &DataArray> {
        self.arrays.iter().filter(move |a| a.intent == intent)
    }

    /// Stack all 1-D float32 arrays into a time-major `(n_arrays, n_vertices)` buffer, the
    /// layout of a `.func.gii` time series (nibabel's `agg_data()` transposed).
    pub fn time_series_f32(&self, path: &Path) -> Result<(usize, Vec<f32>)> {
        let n_vertices = self.arrays.first().map(|a| a.data.len()).unwrap_or(0);
        let mut out = Vec::with_capacity(n_vertices * self.arrays.len());
        for (i, a) in self.arrays.iter().enumerate() {
            let v = a.data.as_f32().ok_or_else(|| {
                gifti_err(
                    path,
                    format!(
                        "DataArray {i}: expected NIFTI_TYPE_FLOAT32, found {}",
                        a.datatype().gifti_name()
                    ),
                )
            })?;
            if v.len() != n_vertices {
                return Err(gifti_err(
                    path,
                    format!(
                        "DataArray {i} has {} values, DataArray 0 has {n_vertices}: not a time series",
                        v.len()
                    ),
                ));
            }
            out.extend_from_slice(v);
        }
        Ok((n_vertices, out))
    }
}

pub(crate) fn gifti_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Gifti {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Read a GIFTI file (`.gii`, or a gzip/bzip2-compressed `.gii.gz`/`.gii.bz2`).
///
/// External data files are resolved relative to the folder of `path`, as nibabel does.
pub fn read_gifti(path: &Path) -> Result<GiftiImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    read_gifti_bytes(&bytes, path, Some(&base))
}

/// Parse GIFTI from memory. `path` is only used in error messages; external arrays are read
/// relative to `external_dir`, and refused when it is `None` (e.g. untrusted in-memory input).
pub fn read_gifti_bytes(
    bytes: &[u8],
    path: &Path,
    external_dir: Option<&Path>,
) -> Result<GiftiImage> {
    let decompressed;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        decompressed = read_all(flate2::read::MultiGzDecoder::new(bytes), path, "gzip")?;
        &decompressed[..]
    } else if bytes.starts_with(b"BZh") {
        decompressed = read_all(bzip2::read::MultiBzDecoder::new(bytes), path, "bzip2")?;
        &decompressed[..]
    } else {
        bytes
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        gifti_err(
            path,
            format!(
                "not UTF-8 text at byte {} (is this a GIFTI .gii file?)",
                e.valid_up_to()
            ),
        )
    })?;
    let parsed = Parser::new(text, path).parse_document()?;
    let arrays = parsed
        .pending
        .into_par_iter()
        .enumerate()
        .map(|(i, p)| p.decode(i, path, external_dir))
        .collect::<Result<Vec<_>>>()?;
    Ok(GiftiImage {
        version: parsed.version,
        meta: parsed.meta,
        labels: parsed.labels,
        arrays,
    })
}

fn read_all(mut r: impl Read, path: &Path, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| {
        gifti_err(
            path,
            format!(
                "the file is {what}-compressed but does not decompress: {e} (truncated download?)"
            ),
        )
    })?;
    Ok(out)
}

/// A DataArray whose attributes are parsed but whose values are still text, so that decoding
/// (base64, zlib, number parsing) can run in parallel over arrays.
struct PendingArray<'a> {
    intent: Intent,
    datatype: DataType,
    dims: Vec<usize>,
    encoding: Encoding,
    endian: Endian,
    order: IndexOrder,
    external: Option<(String, u64)>,
    meta: MetaData,
    coord_systems: Vec<CoordSystem>,
    data: Option<Cow<'a, str>>,
    line: usize,
}

impl PendingArray<'_> {
    fn decode(self, index: usize, path: &Path, external_dir: Option<&Path>) -> Result<DataArray> {
        let at = format!("DataArray {index} (line {})", self.line);
        let n = self
            .dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|n| n.checked_mul(self.datatype.size()).is_some())
            .ok_or_else(|| gifti_err(path, format!("{at}: dimensions {:?} overflow", self.dims)))?;
        let nbytes = n * self.datatype.size();
        let text = self.data.as_deref().unwrap_or("");
        let data = match self.encoding {
            Encoding::Ascii => parse_ascii(text, self.datatype, n)
                .map_err(|m| gifti_err(path, format!("{at}: {m}")))?,
            Encoding::Base64Binary | Encoding::GZipBase64Binary => {
                let raw = decode_base64(text).map_err(|m| gifti_err(path, format!("{at}: {m}")))?;
                let bytes = if self.encoding == Encoding::GZipBase64Binary {
                    inflate(&raw, nbytes).map_err(|m| gifti_err(path, format!("{at}: {m}")))?
                } else {
                    raw
                };
                if bytes.len() != nbytes {
                    return Err(gifti_err(
                        path,
                        format!(
                            "{at}: wrong byte count: dims {:?} of {} need {nbytes} bytes, the data holds {}",
                            self.dims,
                            self.datatype.gifti_name(),
                            bytes.len()
                        ),
                    ));
                }
                ArrayData::from_bytes(self.datatype, &bytes, self.endian)
            }
            Encoding::ExternalFileBinary => {
                let (name, offset) = self.external.clone().unwrap_or_default();
                let bytes = read_external(path, external_dir, &name, offset, nbytes)
                    .map_err(|m| gifti_err(path, format!("{at}: {m}")))?;
                ArrayData::from_bytes(self.datatype, &bytes, self.endian)
            }
        };
        let data = match self.order {
            IndexOrder::RowMajor => data,
            IndexOrder::ColumnMajor => data.fortran_to_c(&self.dims),
        };
        Ok(DataArray {
            intent: self.intent,
            dims: self.dims,
            data,
            meta: self.meta,
            coord_systems: self.coord_systems,
            encoding: self.encoding,
            endian: self.endian,
            order: self.order,
            external: self.external,
        })
    }
}

fn decode_base64(text: &str) -> std::result::Result<Vec<u8>, String> {
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(&compact)
        .map_err(|e| format!("bad base64 data: {e}"))
}

/// Inflate a zlib (or, leniently, gzip) stream, reading at most one byte beyond what the dims
/// promise so that a corrupt or hostile stream cannot blow up memory.
fn inflate(raw: &[u8], expected: usize) -> std::result::Result<Vec<u8>, String> {
    let limit = expected as u64 + 1;
    let mut out = Vec::with_capacity(expected.min(raw.len().saturating_mul(64)).min(1 << 30));
    let res = if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out)
    } else {
        flate2::read::ZlibDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out)
    };
    res.map_err(|e| {
        format!("GZipBase64Binary data does not inflate ({e}); the file is corrupt or truncated")
    })?;
    Ok(out)
}

fn read_external(
    gii: &Path,
    dir: Option<&Path>,
    name: &str,
    offset: u64,
    nbytes: usize,
) -> std::result::Result<Vec<u8>, String> {
    let dir = dir
        .ok_or_else(|| "ExternalFileBinary data cannot be read from in-memory input".to_string())?;
    if name.trim().is_empty() {
        return Err("ExternalFileBinary without an ExternalFileName".into());
    }
    let ext: PathBuf = dir.join(name.trim());
    let mut f = std::fs::File::open(&ext).map_err(|e| {
        format!(
            "cannot open external data file {} ({e}); it must sit next to {}",
            ext.display(),
            gii.display()
        )
    })?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(|e| format!("{}: cannot seek to {offset}: {e}", ext.display()))?;
    let mut out = Vec::new();
    f.take(nbytes as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", ext.display()))?;
    if out.len() != nbytes {
        return Err(format!(
            "wrong byte count: external file {} holds {} bytes after offset {offset}, the dims need {nbytes}",
            ext.display(),
            out.len()
        ));
    }
    Ok(out)
}

/// Parse whitespace-separated ASCII numbers like numpy's `loadtxt(dtype=...)`.
fn parse_ascii(text: &str, dt: DataType, n: usize) -> std::result::Result<ArrayData, String> {
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    if tokens.len() != n {
        return Err(format!(
            "wrong value count: the dims need {n} ASCII values, the data holds {}",
            tokens.len()
        ));
    }
    fn ints<T: TryFrom<i128>>(tokens: &[&str]) -> std::result::Result<Vec<T>, String> {
        tokens
            .iter()
            .map(|t| {
                let v: i128 = t.parse().map_err(|_| format!("'{t}' is not an integer"))?;
                T::try_from(v).map_err(|_| format!("{t} is out of range for the array type"))
            })
            .collect()
    }
    fn floats(tokens: &[&str]) -> std::result::Result<Vec<f64>, String> {
        tokens
            .iter()
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| format!("'{t}' is not a number"))
            })
            .collect()
    }
    Ok(match dt {
        DataType::Uint8 => ArrayData::U8(ints(&tokens)?),
        DataType::Int8 => ArrayData::I8(ints(&tokens)?),
        DataType::Int16 => ArrayData::I16(ints(&tokens)?),
        DataType::Uint16 => ArrayData::U16(ints(&tokens)?),
        DataType::Int32 => ArrayData::I32(ints(&tokens)?),
        DataType::Uint32 => ArrayData::U32(ints(&tokens)?),
        DataType::Int64 => ArrayData::I64(ints(&tokens)?),
        DataType::Uint64 => ArrayData::U64(ints(&tokens)?),
        // numpy parses to double, then rounds to float32: same here, for bit-equal values.
        DataType::Float32 => {
            ArrayData::F32(floats(&tokens)?.into_iter().map(|x| x as f32).collect())
        }
        DataType::Float64 => ArrayData::F64(floats(&tokens)?),
    })
}

struct ParsedDocument<'a> {
    version: String,
    meta: MetaData,
    labels: Vec<Label>,
    pending: Vec<PendingArray<'a>>,
}

/// A pull parser over the XML events, with line numbers for error messages.
struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    src: &'a str,
    path: &'a Path,
    /// (byte position, line) of the last line-number query.
    line_at: std::cell::Cell<(usize, usize)>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, path: &'a Path) -> Self {
        let mut reader = Reader::from_str(src);
        reader.config_mut().trim_text(false);
        Parser {
            reader,
            src,
            path,
            line_at: std::cell::Cell::new((0, 1)),
        }
    }

    /// Line of the current position. Counted incrementally from the last query (positions only
    /// move forward), so recording the line of each of 3,600 DataArrays stays linear in the file.
    fn line(&self) -> usize {
        let pos = (self.reader.buffer_position() as usize).min(self.src.len());
        let (last_pos, last_line) = self.line_at.get();
        let (from, base) = if pos >= last_pos {
            (last_pos, last_line)
        } else {
            (0, 1)
        };
        let line = base
            + self.src.as_bytes()[from..pos]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        self.line_at.set((pos, line));
        line
    }

    fn err(&self, message: impl std::fmt::Display) -> Error {
        gifti_err(self.path, format!("line {}: {message}", self.line()))
    }

    fn next(&mut self) -> Result<Event<'a>> {
        match self.reader.read_event() {
            Ok(e) => Ok(e),
            Err(e) => {
                let at_end = self.reader.buffer_position() as usize >= self.src.len();
                let hint = if at_end {
                    " (the file ends early: it is truncated)"
                } else {
                    ""
                };
                Err(self.err(format!("malformed XML: {e}{hint}")))
            }
        }
    }

    fn eof_error(&self, inside: &str) -> Error {
        self.err(format!("the file ends inside <{inside}>: it is truncated"))
    }

    fn parse_document(mut self) -> Result<ParsedDocument<'a>> {
        // Prologue: declaration, DOCTYPE, comments, whitespace.
        let (root, empty) = loop {
            match self.next()? {
                Event::Start(e) => break (e, false),
                Event::Empty(e) => break (e, true),
                Event::Eof => return Err(self.err("no <GIFTI> element: this is not a GIFTI file")),
                Event::Text(t) if !t.as_ref().trim().is_empty() => {
                    return Err(self.err("text before the root element: this is not a GIFTI file"));
                }
                _ => {}
            }
        };
        if root.name().as_ref() != "GIFTI" {
            return Err(self.err(format!(
                "root element is <{}>, expected <GIFTI>",
                root.name().as_ref()
            )));
        }
        let version = self
            .attr(&root, "Version")?
            .unwrap_or_default()
            .into_owned();
        let mut doc = ParsedDocument {
            version,
            meta: MetaData::new(),
            labels: Vec::new(),
            pending: Vec::new(),
        };
        if empty {
            return Ok(doc);
        }
        loop {
            match self.next()? {
                Event::Start(e) => match e.name().as_ref() {
                    "MetaData" => doc.meta = self.parse_metadata()?,
                    "LabelTable" => doc.labels = self.parse_label_table()?,
                    "DataArray" => {
                        let a = self.parse_data_array(&e, false)?;
                        doc.pending.push(a);
                    }
                    other => {
                        let other = other.to_string();
                        self.skip_element(&other)?
                    }
                },
                Event::Empty(e) if e.name().as_ref() == "DataArray" => {
                    let a = self.parse_data_array(&e, true)?;
                    doc.pending.push(a);
                }
                Event::End(e) if e.name().as_ref() == "GIFTI" => break,
                Event::End(e) => {
                    return Err(self.err(format!("unexpected </{}>", e.name().as_ref())));
                }
                Event::Eof => return Err(self.eof_error("GIFTI")),
                _ => {}
            }
        }
        Ok(doc)
    }

    fn attr(&self, e: &BytesStart<'a>, name: &str) -> Result<Option<Cow<'a, str>>> {
        for a in e.attributes() {
            let a = a.map_err(|err| {
                self.err(format!("bad attribute in <{}>: {err}", e.name().as_ref()))
            })?;
            if a.key.as_ref() == name {
                let v = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|err| self.err(format!("bad value of attribute {name}: {err}")))?;
                // The attribute borrows from `e`; own it so the event can be dropped.
                return Ok(Some(Cow::Owned(v.into_owned())));
            }
        }
        Ok(None)
    }

    /// Skip an element we do not model (and its subtree).
    fn skip_element(&mut self, name: &str) -> Result<()> {
        let mut depth = 1usize;
        loop {
            match self.next()? {
                Event::Start(_) => depth += 1,
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Event::Eof => return Err(self.eof_error(name)),
                _ => {}
            }
        }
    }

    /// Character content of the current element up to its end tag, with CDATA sections and
    /// entity references resolved. Borrowed when it is one plain text run (the big `<Data>`).
    fn text_content(&mut self, name: &str) -> Result<Cow<'a, str>> {
        let mut acc: Option<Cow<'a, str>> = None;
        let push = |acc: &mut Option<Cow<'a, str>>, s: Cow<'a, str>| match acc {
            None => *acc = Some(s),
            Some(a) => a.to_mut().push_str(&s),
        };
        loop {
            match self.next()? {
                Event::Text(t) => push(&mut acc, t.into_inner()),
                Event::CData(c) => push(&mut acc, c.into_inner()),
                Event::GeneralRef(r) => {
                    let resolved = if r.is_char_ref() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => c.to_string(),
                            _ => {
                                return Err(
                                    self.err(format!("bad character reference &{};", r.as_ref()))
                                );
                            }
                        }
                    } else {
                        match quick_xml::escape::resolve_predefined_entity(r.as_ref()) {
                            Some(s) => s.to_string(),
                            None => {
                                return Err(self.err(format!("unknown entity &{};", r.as_ref())));
                            }
                        }
                    };
                    push(&mut acc, Cow::Owned(resolved));
                }
                Event::End(e) if e.name().as_ref() == name => break,
                Event::End(e) => {
                    return Err(self.err(format!(
                        "unexpected </{}> inside <{name}>",
                        e.name().as_ref()
                    )));
                }
                Event::Start(e) => {
                    return Err(self.err(format!(
                        "unexpected <{}> inside <{name}>",
                        e.name().as_ref()
                    )));
                }
                Event::Eof => return Err(self.eof_error(name)),
                _ => {}
            }
        }
        Ok(acc.unwrap_or(Cow::Borrowed("")))
    }

    fn parse_metadata(&mut self) -> Result<MetaData> {
        let mut meta = MetaData::new();
        loop {
            match self.next()? {
                Event::Start(e) if e.name().as_ref() == "MD" => {
                    let (mut name, mut value) = (String::new(), String::new());
                    loop {
                        match self.next()? {
                            Event::Start(e) if e.name().as_ref() == "Name" => {
                                name = self.text_content("Name")?.trim().to_string()
                            }
                            Event::Start(e) if e.name().as_ref() == "Value" => {
                                value = self.text_content("Value")?.trim().to_string()
                            }
                            Event::Start(e) => {
                                let n = e.name().as_ref().to_string();
                                self.skip_element(&n)?
                            }
                            Event::End(e) if e.name().as_ref() == "MD" => break,
                            Event::End(e) => {
                                return Err(self.err(format!(
                                    "unexpected </{}> inside <MD>",
                                    e.name().as_ref()
                                )));
                            }
                            Event::Eof => return Err(self.eof_error("MD")),
                            _ => {}
                        }
                    }
                    meta.push_dict_like(name, value);
                }
                Event::Start(e) => {
                    let n = e.name().as_ref().to_string();
                    self.skip_element(&n)?
                }
                Event::End(e) if e.name().as_ref() == "MetaData" => return Ok(meta),
                Event::End(e) => {
                    return Err(self.err(format!(
                        "unexpected </{}> inside <MetaData>",
                        e.name().as_ref()
                    )));
                }
                Event::Eof => return Err(self.eof_error("MetaData")),
                _ => {}
            }
        }
    }

    fn parse_label_table(&mut self) -> Result<Vec<Label>> {
        let mut labels = Vec::new();
        loop {
            let (e, empty) = match self.next()? {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(e) if e.name().as_ref() == "LabelTable" => return Ok(labels),
                Event::End(e) => {
                    return Err(self.err(format!(
                        "unexpected </{}> inside <LabelTable>",
                        e.name().as_ref()
                    )));
                }
                Event::Eof => return Err(self.eof_error("LabelTable")),
                _ => continue,
            };
            if e.name().as_ref() != "Label" {
                if !empty {
                    let n = e.name().as_ref().to_string();
                    self.skip_element(&n)?;
                }
                continue;
            }
            // `Key` is GIFTI 1.0; `Index` is the older Caret spelling.
            let key = match self.attr(&e, "Key")?.or(self.attr(&e, "Index")?) {
                Some(k) => k
                    .trim()
                    .parse::<i32>()
                    .map_err(|_| self.err(format!("label key '{k}' is not an integer")))?,
                None => return Err(self.err("<Label> without a Key attribute")),
            };
            let mut rgba = [0f32; 4];
            let mut any_colour = false;
            for (i, c) in ["Red", "Green", "Blue", "Alpha"].iter().enumerate() {
                if let Some(v) = self.attr(&e, c)? {
                    rgba[i] = v
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| self.err(format!("label {c} '{v}' is not a number")))?
                        as f32;
                    any_colour = true;
                }
            }
            let name = if empty {
                String::new()
            } else {
                self.text_content("Label")?.trim().to_string()
            };
            labels.push(Label {
                key,
                name,
                rgba: any_colour.then_some(rgba),
            });
        }
    }

    fn parse_data_array(&mut self, e: &BytesStart<'a>, empty: bool) -> Result<PendingArray<'a>> {
        let line = self.line();
        let required = |p: &Self, name: &str| -> Result<Cow<'a, str>> {
            p.attr(e, name)?
                .ok_or_else(|| p.err(format!("<DataArray> without the {name} attribute")))
        };
        let intent_s = self
            .attr(e, "Intent")?
            .unwrap_or(Cow::Borrowed("NIFTI_INTENT_NONE"));
        let intent = Intent::from_name(&intent_s)
            .ok_or_else(|| self.err(format!("unknown Intent '{intent_s}'")))?;
        let dt_s = required(self, "DataType")?;
        let datatype = DataType::from_gifti_name(&dt_s)
            .ok_or_else(|| self.err(format!("unsupported DataType '{dt_s}' (supported: NIFTI_TYPE_UINT8, INT8, INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT32, FLOAT64)")))?;
        let order = match self.attr(e, "ArrayIndexingOrder")? {
            None => IndexOrder::RowMajor,
            Some(s) => IndexOrder::parse(&s)
                .ok_or_else(|| self.err(format!("unknown ArrayIndexingOrder '{s}'")))?,
        };
        let ndim_s = required(self, "Dimensionality")?;
        let ndim: usize = ndim_s
            .trim()
            .parse()
            .ok()
            .filter(|&n| n <= 16)
            .ok_or_else(|| self.err(format!("bad Dimensionality '{ndim_s}'")))?;
        let mut dims = Vec::with_capacity(ndim);
        for i in 0..ndim {
            let s = required(self, &format!("Dim{i}"))?;
            dims.push(
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| self.err(format!("bad Dim{i} '{s}'")))?,
            );
        }
        let enc_s = required(self, "Encoding")?;
        let encoding = Encoding::parse(&enc_s).ok_or_else(|| {
            self.err(format!(
                "unknown Encoding '{enc_s}' (expected ASCII, Base64Binary, GZipBase64Binary or ExternalFileBinary)"
            ))
        })?;
        let endian = match self.attr(e, "Endian")? {
            None => Endian::Little,
            Some(s) => {
                Endian::parse(&s).ok_or_else(|| self.err(format!("unknown Endian '{s}'")))?
            }
        };
        let external = if encoding == Encoding::ExternalFileBinary {
            let name = self
                .attr(e, "ExternalFileName")?
                .unwrap_or_default()
                .into_owned();
            let off_s = self.attr(e, "ExternalFileOffset")?.unwrap_or_default();
            let offset = if off_s.trim().is_empty() {
                0
            } else {
                off_s
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| self.err(format!("bad ExternalFileOffset '{off_s}'")))?
            };
            Some((name, offset))
        } else {
            None
        };
        let mut a = PendingArray {
            intent,
            datatype,
            dims,
            encoding,
            endian,
            order,
            external,
            meta: MetaData::new(),
            coord_systems: Vec::new(),
            data: None,
            line,
        };
        if !empty {
            loop {
                match self.next()? {
                    Event::Start(e) => match e.name().as_ref() {
                        "MetaData" => a.meta = self.parse_metadata()?,
                        "CoordinateSystemTransformMatrix" => {
                            a.coord_systems.push(self.parse_coord_system()?)
                        }
                        "Data" => a.data = Some(self.text_content("Data")?),
                        other => {
                            let other = other.to_string();
                            self.skip_element(&other)?
                        }
                    },
                    Event::Empty(e) if e.name().as_ref() == "Data" => {
                        a.data = Some(Cow::Borrowed(""))
                    }
                    Event::End(e) if e.name().as_ref() == "DataArray" => break,
                    Event::End(e) => {
                        return Err(self.err(format!(
                            "unexpected </{}> inside <DataArray>",
                            e.name().as_ref()
                        )));
                    }
                    Event::Eof => return Err(self.eof_error("DataArray")),
                    _ => {}
                }
            }
        }
        if a.data.is_none() && encoding != Encoding::ExternalFileBinary {
            return Err(gifti_err(
                self.path,
                format!("line {line}: <DataArray> has no <Data> element"),
            ));
        }
        Ok(a)
    }

    fn parse_coord_system(&mut self) -> Result<CoordSystem> {
        let mut cs = CoordSystem {
            data_space: "NIFTI_XFORM_UNKNOWN".into(),
            transformed_space: "NIFTI_XFORM_UNKNOWN".into(),
            matrix: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        loop {
            match self.next()? {
                Event::Start(e) => match e.name().as_ref() {
                    "DataSpace" => {
                        cs.data_space = self.text_content("DataSpace")?.trim().to_string()
                    }
                    "TransformedSpace" => {
                        cs.transformed_space =
                            self.text_content("TransformedSpace")?.trim().to_string()
                    }
                    "MatrixData" => {
                        let t = self.text_content("MatrixData")?;
                        let v: Vec<f64> = t
                            .split_ascii_whitespace()
                            .map(|x| x.parse::<f64>())
                            .collect::<std::result::Result<_, _>>()
                            .map_err(|_| self.err("MatrixData holds a non-number"))?;
                        if v.len() != 16 {
                            return Err(self.err(format!(
                                "MatrixData holds {} numbers, expected 16",
                                v.len()
                            )));
                        }
                        for (r, row) in cs.matrix.iter_mut().enumerate() {
                            row.copy_from_slice(&v[r * 4..r * 4 + 4]);
                        }
                    }
                    other => {
                        let other = other.to_string();
                        self.skip_element(&other)?
                    }
                },
                Event::End(e) if e.name().as_ref() == "CoordinateSystemTransformMatrix" => {
                    return Ok(cs);
                }
                Event::End(e) => {
                    return Err(self.err(format!(
                        "unexpected </{}> inside <CoordinateSystemTransformMatrix>",
                        e.name().as_ref()
                    )));
                }
                Event::Eof => return Err(self.eof_error("CoordinateSystemTransformMatrix")),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?>\n<GIFTI Version=\"1.0\" NumberOfDataArrays=\"1\">{body}</GIFTI>"
        )
    }

    fn parse(s: &str) -> Result<GiftiImage> {
        read_gifti_bytes(s.as_bytes(), Path::new("mem.gii"), None)
    }

    #[test]
    fn ascii_column_major_is_transposed() {
        let s = doc(
            r#"<DataArray Intent="NIFTI_INTENT_NONE" DataType="NIFTI_TYPE_INT32" ArrayIndexingOrder="ColumnMajorOrder" Dimensionality="2" Dim0="2" Dim1="3" Encoding="ASCII" Endian="LittleEndian"><Data>1 4 2 5 3 6</Data></DataArray>"#,
        );
        let g = parse(&s).unwrap();
        assert_eq!(g.arrays[0].data, ArrayData::I32(vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn big_endian_base64() {
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let s = doc(&format!(
            r#"<DataArray DataType="NIFTI_TYPE_FLOAT32" Dimensionality="1" Dim0="2" Encoding="Base64Binary" Endian="BigEndian"><Data>
{} {}
</Data></DataArray>"#,
            &b64[..4],
            &b64[4..]
        ));
        let g = parse(&s).unwrap();
        assert_eq!(g.arrays[0].data, ArrayData::F32(vec![1.5, -2.0]));
    }

    #[test]
    fn metadata_entities_and_cdata() {
        let s = doc(
            r#"<MetaData><MD><Name>a&amp;b</Name><Value><![CDATA[x<y]]> &#65;</Value></MD></MetaData><DataArray DataType="NIFTI_TYPE_UINT8" Dimensionality="1" Dim0="1" Encoding="ASCII"><Data>7</Data></DataArray>"#,
        );
        let g = parse(&s).unwrap();
        assert_eq!(g.meta.get("a&b"), Some("x<y A"));
        assert_eq!(g.arrays[0].data, ArrayData::U8(vec![7]));
    }

    #[test]
    fn errors_are_typed_and_located() {
        let truncated = doc(
            r#"<DataArray DataType="NIFTI_TYPE_UINT8" Dimensionality="1" Dim0="1" Encoding="ASCII"><Data>7"#,
        );
        let truncated = &truncated[..truncated.len() - "</GIFTI>".len()];
        let e = parse(truncated).unwrap_err();
        assert!(matches!(e, Error::Gifti { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");

        let bad = doc(
            r#"<DataArray DataType="NIFTI_TYPE_UINT8" Dimensionality="1" Dim0="1" Encoding="Base64Binary"><Data>!!!!</Data></DataArray>"#,
        );
        let e = parse(&bad).unwrap_err();
        assert!(e.to_string().contains("bad base64"), "{e}");

        let count = doc(
            r#"<DataArray DataType="NIFTI_TYPE_INT32" Dimensionality="1" Dim0="2" Encoding="Base64Binary"><Data>AAAAAA==</Data></DataArray>"#,
        );
        let e = parse(&count).unwrap_err();
        assert!(e.to_string().contains("wrong byte count"), "{e}");

        let enc = doc(
            r#"<DataArray DataType="NIFTI_TYPE_INT32" Dimensionality="1" Dim0="1" Encoding="Hex"><Data>00</Data></DataArray>"#,
        );
        let e = parse(&enc).unwrap_err();
        assert!(e.to_string().contains("unknown Encoding 'Hex'"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
