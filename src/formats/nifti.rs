//! NIfTI-1 and NIfTI-2: a header-only reader, whole-image reading, and float32 writers.
//!
//! The header reader reads only the first 348 (NIfTI-1) or 540 (NIfTI-2) bytes, gunzipping as a
//! stream, so checking the geometry of a 1 GB `.nii.gz` bold run costs microseconds and works on
//! the header-only files of bids-examples. Either byte order is detected from `sizeof_hdr`.
//!
//! Affines follow nibabel exactly: `sform` when `sform_code > 0`, else `qform` (quaternion,
//! `pixdim`, `qfac`), else the Analyze base affine (x flipped, origin at the volume centre).
//!
//! Writing goes through the `nifti` crate (NIfTI-1, gzip by extension). That crate resets
//! `scl_slope`/`scl_inter` to 1/0 (pitfall 9), which is right for float32 data and is checked by
//! the tests. We fill the rest of the header ourselves: `xyzt_units` = mm + s, `pixdim[4]` = TR,
//! qform (quaternion from the affine, as nifti1_io's `nifti_mat44_to_quatern`) and sform, both
//! with the caller's xform code.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Intent;
use super::gifti_write::AtomicOutput;
use crate::error::{Error, Result};

pub type Affine = [[f64; 4]; 4];

const IDENTITY: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn nifti_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Nifti {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// NIfTI format generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NiftiVersion {
    One,
    Two,
}

/// Every field of a NIfTI-1 or NIfTI-2 header, widened to the NIfTI-2 types.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeaderInfo {
    pub version: NiftiVersion,
    /// True when the file is big-endian.
    pub big_endian: bool,
    /// `n+1`/`n+2` (single file) rather than `ni1`/`ni2` (header/image pair).
    pub single_file: bool,
    /// `dim[0]` is the number of dimensions, `dim[1..=dim[0]]` their sizes.
    pub dim: [i64; 8],
    pub intent_p: [f64; 3],
    pub intent_code: i32,
    pub intent_name: String,
    pub datatype: i16,
    pub bitpix: i16,
    pub slice_start: i64,
    pub slice_end: i64,
    /// `pixdim[0]` is qfac; `pixdim[1..=3]` voxel sizes; `pixdim[4]` the TR for 4-D data.
    pub pixdim: [f64; 8],
    pub vox_offset: f64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub slice_code: i32,
    pub xyzt_units: i32,
    pub cal_max: f64,
    pub cal_min: f64,
    pub slice_duration: f64,
    pub toffset: f64,
    pub descrip: String,
    pub aux_file: String,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    pub dim_info: u8,
}

/// Spatial/temporal units of `xyzt_units`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Unknown,
    Meter,
    Millimeter,
    Micron,
    Second,
    Millisecond,
    Microsecond,
    Hertz,
    Ppm,
    RadPerSec,
}

impl Unit {
    fn from_code(c: i32) -> Unit {
        match c {
            1 => Unit::Meter,
            2 => Unit::Millimeter,
            3 => Unit::Micron,
            8 => Unit::Second,
            16 => Unit::Millisecond,
            24 => Unit::Microsecond,
            32 => Unit::Hertz,
            40 => Unit::Ppm,
            48 => Unit::RadPerSec,
            _ => Unit::Unknown,
        }
    }

    /// nibabel's unit label (`get_xyzt_units()`).
    pub fn label(self) -> &'static str {
        match self {
            Unit::Unknown => "unknown",
            Unit::Meter => "meter",
            Unit::Millimeter => "mm",
            Unit::Micron => "micron",
            Unit::Second => "sec",
            Unit::Millisecond => "msec",
            Unit::Microsecond => "usec",
            Unit::Hertz => "hz",
            Unit::Ppm => "ppm",
            Unit::RadPerSec => "rads",
        }
    }
}

impl NiftiHeaderInfo {
    /// Sizes of the `dim[0]` dimensions.
    pub fn shape(&self) -> Vec<usize> {
        let n = self.dim[0].clamp(0, 7) as usize;
        self.dim[1..=n].iter().map(|&d| d.max(0) as usize).collect()
    }

    /// Voxel sizes along the `dim[0]` dimensions (`pixdim[1..=dim[0]]`, nibabel's `get_zooms`).
    pub fn zooms(&self) -> Vec<f64> {
        let n = self.dim[0].clamp(0, 7) as usize;
        self.pixdim[1..=n].to_vec()
    }

    pub fn space_unit(&self) -> Unit {
        Unit::from_code(self.xyzt_units & 0x07)
    }

    pub fn time_unit(&self) -> Unit {
        Unit::from_code(self.xyzt_units & 0x38)
    }

    /// The repetition time in seconds, from `pixdim[4]` and the time unit (unknown unit = seconds,
    /// as BIDS requires). `None` for data with fewer than 4 dimensions or a zero `pixdim[4]`.
    pub fn repetition_time_s(&self) -> Option<f64> {
        if self.dim[0] < 4 || self.pixdim[4] == 0.0 {
            return None;
        }
        let scale = match self.time_unit() {
            Unit::Millisecond => 1e-3,
            Unit::Microsecond => 1e-6,
            _ => 1.0,
        };
        Some(self.pixdim[4] * scale)
    }

    /// Bytes of voxel data the header promises.
    pub fn data_bytes(&self) -> Option<u64> {
        let n = self
            .shape()
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?;
        n.checked_mul((self.bitpix.max(0) as u64) / 8)
    }

    /// The qform affine (always computed, like nibabel's `get_qform()`), or an error message when
    /// the quaternion or pixdims are invalid.
    pub fn qform_affine(&self) -> std::result::Result<Affine, String> {
        let [b, c, d] = self.quatern;
        // nibabel's threshold on w^2, matched to the precision the header stores.
        let thresh = match self.version {
            NiftiVersion::One => f32::EPSILON as f64 * 3.0,
            NiftiVersion::Two => f64::EPSILON * 3.0,
        };
        let w2 = 1.0 - (b * b + c * c + d * d);
        let a = if w2.abs() < thresh {
            0.0
        } else if w2 < 0.0 {
            return Err(format!(
                "invalid qform quaternion (b, c, d) = ({b}, {c}, {d}): |q| > 1"
            ));
        } else {
            w2.sqrt()
        };
        let r = quat_to_mat([a, b, c, d]);
        let mut vox = [self.pixdim[1], self.pixdim[2], self.pixdim[3]];
        if vox.iter().any(|&v| v < 0.0) {
            return Err("pixdim[1..3] must be positive".into());
        }
        let qfac = self.pixdim[0];
        if qfac != 1.0 && qfac != -1.0 {
            return Err(format!("qfac (pixdim[0]) must be 1 or -1, found {qfac}"));
        }
        vox[2] *= qfac;
        let mut out = IDENTITY;
        for i in 0..3 {
            for j in 0..3 {
                out[i][j] = r[i][j] * vox[j];
            }
            out[i][3] = self.qoffset[i];
        }
        Ok(out)
    }

    /// The sform affine (`srow_x/y/z`).
    pub fn sform_affine(&self) -> Affine {
        let mut out = IDENTITY;
        out[..3].copy_from_slice(&self.srow);
        out
    }

    /// nibabel's `get_base_affine()`: voxel sizes on the diagonal, x flipped, origin at the centre.
    pub fn base_affine(&self) -> Affine {
        let n = self.dim[0].clamp(0, 7) as usize;
        let mut shape = [1.0f64; 3];
        let mut zooms = [1.0f64; 3];
        for i in 0..n.min(3) {
            shape[i] = self.dim[i + 1] as f64;
            zooms[i] = self.pixdim[i + 1];
        }
        zooms[0] = -zooms[0];
        let mut out = IDENTITY;
        for i in 0..3 {
            out[i][i] = zooms[i];
            out[i][3] = -((shape[i] - 1.0) / 2.0) * zooms[i];
        }
        out
    }

    /// The voxel-to-world affine nibabel's `get_best_affine()` returns.
    pub fn affine(&self) -> std::result::Result<Affine, String> {
        if self.sform_code != 0 {
            Ok(self.sform_affine())
        } else if self.qform_code != 0 {
            self.qform_affine()
        } else {
            Ok(self.base_affine())
        }
    }
}

fn quat_to_mat([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// Parse a header from its first bytes (at least 348 for NIfTI-1, 540 for NIfTI-2).
pub fn parse_nifti_header(bytes: &[u8], path: &Path) -> Result<NiftiHeaderInfo> {
    if bytes.len() < 4 {
        return Err(nifti_err(
            path,
            format!("file is {} bytes long: truncated or empty", bytes.len()),
        ));
    }
    let le = i32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let be = i32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"));
    let (version, big_endian) = match (le, be) {
        (348, _) => (NiftiVersion::One, false),
        (_, 348) => (NiftiVersion::One, true),
        (540, _) => (NiftiVersion::Two, false),
        (_, 540) => (NiftiVersion::Two, true),
        _ => {
            return Err(nifti_err(
                path,
                format!(
                    "sizeof_hdr is {le} (expected 348 for NIfTI-1 or 540 for NIfTI-2): not a NIfTI file"
                ),
            ));
        }
    };
    let need = if version == NiftiVersion::One {
        348
    } else {
        540
    };
    if bytes.len() < need {
        return Err(nifti_err(
            path,
            format!(
                "the file ends after {} bytes, inside the {need}-byte header: it is truncated",
                bytes.len()
            ),
        ));
    }
    let r = FieldReader {
        b: bytes,
        big: big_endian,
    };
    let text = |range: std::ops::Range<usize>| {
        let raw = &bytes[range];
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    };
    let h = match version {
        NiftiVersion::One => {
            let magic = &bytes[344..348];
            let single_file = match magic {
                b"n+1\0" => true,
                b"ni1\0" => false,
                _ => {
                    return Err(nifti_err(
                        path,
                        format!(
                            "magic is {magic:?}, not \"n+1\" or \"ni1\": an Analyze 7.5 or damaged header; convert it to NIfTI (e.g. nibabel: nib.save(nib.Nifti1Image.from_image(nib.load(f)), 'x.nii.gz'))"
                        ),
                    ));
                }
            };
            let mut dim = [0i64; 8];
            for (i, d) in dim.iter_mut().enumerate() {
                *d = r.i16(40 + 2 * i) as i64;
            }
            let mut pixdim = [0f64; 8];
            for (i, p) in pixdim.iter_mut().enumerate() {
                *p = r.f32(76 + 4 * i);
            }
            let mut srow = [[0f64; 4]; 3];
            for (row, s) in srow.iter_mut().enumerate() {
                for (col, v) in s.iter_mut().enumerate() {
                    *v = r.f32(280 + 16 * row + 4 * col);
                }
            }
            NiftiHeaderInfo {
                version,
                big_endian,
                single_file,
                dim,
                intent_p: [r.f32(56), r.f32(60), r.f32(64)],
                intent_code: r.i16(68) as i32,
                intent_name: text(328..344),
                datatype: r.i16(70),
                bitpix: r.i16(72),
                slice_start: r.i16(74) as i64,
                slice_end: r.i16(120) as i64,
                pixdim,
                vox_offset: r.f32(108),
                scl_slope: r.f32(112),
                scl_inter: r.f32(116),
                slice_code: bytes[122] as i32,
                xyzt_units: bytes[123] as i32,
                cal_max: r.f32(124),
                cal_min: r.f32(128),
                slice_duration: r.f32(132),
                toffset: r.f32(136),
                descrip: text(148..228),
                aux_file: text(228..252),
                qform_code: r.i16(252) as i32,
                sform_code: r.i16(254) as i32,
                quatern: [r.f32(256), r.f32(260), r.f32(264)],
                qoffset: [r.f32(268), r.f32(272), r.f32(276)],
                srow,
                dim_info: bytes[39],
            }
        }
        NiftiVersion::Two => {
            let magic = &bytes[4..12];
            let single_file = match magic {
                b"n+2\0\r\n\x1a\n" => true,
                b"ni2\0\r\n\x1a\n" => false,
                _ => {
                    return Err(nifti_err(
                        path,
                        format!(
                            "NIfTI-2 magic is {magic:?}, not \"n+2\" or \"ni2\": damaged header"
                        ),
                    ));
                }
            };
            let mut dim = [0i64; 8];
            for (i, d) in dim.iter_mut().enumerate() {
                *d = r.i64(16 + 8 * i);
            }
            let mut pixdim = [0f64; 8];
            for (i, p) in pixdim.iter_mut().enumerate() {
                *p = r.f64(104 + 8 * i);
            }
            let mut srow = [[0f64; 4]; 3];
            for (row, s) in srow.iter_mut().enumerate() {
                for (col, v) in s.iter_mut().enumerate() {
                    *v = r.f64(400 + 32 * row + 8 * col);
                }
            }
            NiftiHeaderInfo {
                version,
                big_endian,
                single_file,
                dim,
                intent_p: [r.f64(80), r.f64(88), r.f64(96)],
                intent_code: r.i32(504),
                intent_name: text(508..524),
                datatype: r.i16(12),
                bitpix: r.i16(14),
                slice_start: r.i64(224),
                slice_end: r.i64(232),
                pixdim,
                vox_offset: r.i64(168) as f64,
                scl_slope: r.f64(176),
                scl_inter: r.f64(184),
                slice_code: r.i32(496),
                xyzt_units: r.i32(500),
                cal_max: r.f64(192),
                cal_min: r.f64(200),
                slice_duration: r.f64(208),
                toffset: r.f64(216),
                descrip: text(240..320),
                aux_file: text(320..344),
                qform_code: r.i32(344),
                sform_code: r.i32(348),
                quatern: [r.f64(352), r.f64(360), r.f64(368)],
                qoffset: [r.f64(376), r.f64(384), r.f64(392)],
                srow,
                dim_info: bytes[524],
            }
        }
    };
    if !(0..=7).contains(&h.dim[0]) {
        return Err(nifti_err(
            path,
            format!("dim[0] = {} is outside 0..7: damaged header", h.dim[0]),
        ));
    }
    if let Some(i) = (1..=h.dim[0] as usize).find(|&i| h.dim[i] < 0) {
        return Err(nifti_err(
            path,
            format!("dim[{i}] = {} is negative: damaged header", h.dim[i]),
        ));
    }
    Ok(h)
}

struct FieldReader<'a> {
    b: &'a [u8],
    big: bool,
}

impl FieldReader<'_> {
    fn arr<const N: usize>(&self, at: usize) -> [u8; N] {
        self.b[at..at + N]
            .try_into()
            .expect("header length checked")
    }
    fn i16(&self, at: usize) -> i16 {
        let a = self.arr::<2>(at);
        if self.big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }
    fn i32(&self, at: usize) -> i32 {
        let a = self.arr::<4>(at);
        if self.big {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn i64(&self, at: usize) -> i64 {
        let a = self.arr::<8>(at);
        if self.big {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        }
    }
    fn f32(&self, at: usize) -> f64 {
        let a = self.arr::<4>(at);
        (if self.big {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        let a = self.arr::<8>(at);
        if self.big {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    }
}

/// Open a possibly gzipped file as a byte stream (gzip detected from the magic bytes, not the
/// extension, so a mis-named `.nii` that is really gzipped still reads).
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut f, &mut magic).map_err(|e| Error::io(path, e))?;
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let f = std::io::BufReader::with_capacity(1 << 16, f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// Read until `buf` is full or the stream ends; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read only the header of a `.nii`, `.nii.gz`, `.hdr` (NIfTI-1 or NIfTI-2, either byte order).
/// Voxel data is never read, so header-only files (bids-examples) work.
pub fn read_nifti_header(path: &Path) -> Result<NiftiHeaderInfo> {
    let mut r = open_maybe_gz(path)?;
    let mut buf = [0u8; 540];
    let n = read_up_to(&mut r, &mut buf[..348]).map_err(|e| {
        nifti_err(
            path,
            format!("cannot decompress the header ({e}): the .nii.gz is damaged or truncated"),
        )
    })?;
    let mut len = n;
    if n == 348 {
        let le = i32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
        let be = i32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        if le == 540 || be == 540 {
            len += read_up_to(&mut r, &mut buf[348..]).map_err(|e| {
                nifti_err(
                    path,
                    format!(
                        "cannot decompress the header ({e}): the .nii.gz is damaged or truncated"
                    ),
                )
            })?;
        }
    }
    parse_nifti_header(&buf[..len], path)
}

/// A whole image: header plus voxel values as f32 in file (Fortran) order, scaled by
/// `scl_slope`/`scl_inter` when the slope is non-zero (as NIfTI readers do).
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    pub header: NiftiHeaderInfo,
    /// `data[x + nx * (y + ny * (z + nz * t))]`.
    pub data: Vec<f32>,
}

/// Read a whole NIfTI-1 or NIfTI-2 single-file image (`.nii`, `.nii.gz`) as float32.
///
/// NIfTI-1 goes through the `nifti` crate; NIfTI-2 (which that crate does not know) is read
/// here after our header parser. A file that ends before its voxel data does gives
/// [`Error::Nifti`] naming the path.
pub fn read_nifti_volume(path: &Path) -> Result<NiftiVolume> {
    let header = read_nifti_header(path)?;
    if !header.single_file {
        return Err(nifti_err(
            path,
            "a header/image pair (.hdr/.img): only single-file .nii/.nii.gz images are read",
        ));
    }
    let data = match header.version {
        NiftiVersion::One => read_nifti1_data(path, &header)?,
        NiftiVersion::Two => read_nifti2_data(path, &header)?,
    };
    Ok(NiftiVolume { header, data })
}

fn read_nifti1_data(path: &Path, header: &NiftiHeaderInfo) -> Result<Vec<f32>> {
    use nifti::{IntoNdArray, NiftiObject};
    // The crate would `expect` on a size mismatch; check the promise first (uncompressed files).
    check_uncompressed_size(path, header)?;
    let obj = nifti::ReaderOptions::new().read_file(path).map_err(|e| {
        nifti_err(
            path,
            format!("cannot read the image: {e} (truncated or damaged file?)"),
        )
    })?;
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| nifti_err(path, format!("cannot convert voxel data to float32: {e}")))?;
    // The crate returns a Fortran-ordered array; its memory order is the file order.
    let arr = arr.reversed_axes();
    let data = if let Some(s) = arr.as_slice() {
        s.to_vec()
    } else {
        arr.iter().copied().collect()
    };
    Ok(data)
}

fn check_uncompressed_size(path: &Path, header: &NiftiHeaderInfo) -> Result<()> {
    let mut magic = [0u8; 2];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = read_up_to(&mut f, &mut magic).map_err(|e| Error::io(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        return Ok(());
    }
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let need = header
        .data_bytes()
        .unwrap_or(u64::MAX)
        .saturating_add(header.vox_offset.max(0.0) as u64);
    if len < need {
        return Err(nifti_err(
            path,
            format!("the file has {len} bytes but the header promises {need}: it is truncated"),
        ));
    }
    Ok(())
}

fn read_nifti2_data(path: &Path, h: &NiftiHeaderInfo) -> Result<Vec<f32>> {
    let dt = super::DataType::from_code(h.datatype.into())
        .ok_or_else(|| nifti_err(path, format!("unsupported datatype code {}", h.datatype)))?;
    // Size from the datatype, not `bitpix` (a header may disagree with itself).
    let nbytes = h
        .shape()
        .iter()
        .try_fold(dt.size() as u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| nifti_err(path, "dimensions overflow"))?;
    let mut r = open_maybe_gz(path)?;
    let skip = h.vox_offset.max(0.0) as u64;
    let skipped = std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())
        .map_err(|e| nifti_err(path, format!("cannot read: {e} (damaged or truncated)")))?;
    let mut raw = Vec::new();
    (&mut r).take(nbytes).read_to_end(&mut raw).map_err(|e| {
        nifti_err(
            path,
            format!("cannot read voxel data: {e} (damaged or truncated)"),
        )
    })?;
    if skipped < skip || (raw.len() as u64) < nbytes {
        return Err(nifti_err(
            path,
            format!("the file ends before its {nbytes} bytes of voxel data: it is truncated"),
        ));
    }
    let endian = if h.big_endian {
        super::gifti::Endian::Big
    } else {
        super::gifti::Endian::Little
    };
    let values = super::gifti::decode_values(dt, &raw, endian);
    let (slope, inter) = (h.scl_slope, h.scl_inter);
    let scale =
        slope != 0.0 && slope.is_finite() && inter.is_finite() && !(slope == 1.0 && inter == 0.0);
    Ok(values
        .into_iter()
        .map(|v| {
            if scale {
                (v * slope + inter) as f32
            } else {
                v as f32
            }
        })
        .collect())
}

/// Where a volume sits in space: grid size, voxel-to-world affine (mm) and the NIfTI xform code
/// that says which space the affine maps into (`4` = MNI_152, `2` = aligned anat, `5` = other
/// template).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeGeometry {
    pub dims: [usize; 3],
    pub affine: Affine,
    pub xform_code: i16,
}

impl VolumeGeometry {
    /// Voxel sizes: the column norms of the affine's 3x3 part (what nibabel stores in pixdim).
    pub fn zooms(&self) -> [f64; 3] {
        let mut z = [0.0; 3];
        for (j, zj) in z.iter_mut().enumerate() {
            *zj = (0..3)
                .map(|i| self.affine[i][j] * self.affine[i][j])
                .sum::<f64>()
                .sqrt();
        }
        z
    }
}

/// Options shared by the float32 writers.
#[derive(Debug, Clone)]
pub struct NiftiWriteOptions {
    /// NIfTI intent (e.g. `Intent::ZSCORE` for a z map); `NONE` for plain images.
    pub intent: Intent,
    /// Up to 79 ASCII characters stored in `descrip`.
    pub description: String,
}

impl Default for NiftiWriteOptions {
    fn default() -> Self {
        NiftiWriteOptions {
            intent: Intent::NONE,
            description: format!("tribe-bids {}", crate::VERSION),
        }
    }
}

/// Quaternion parameters (b, c, d, qx, qy, qz, qfac) of an affine, as nifti1_io's
/// `nifti_mat44_to_quatern`: column norms are the voxel sizes, shears are removed by a polar
/// decomposition, and a left-handed frame is encoded with qfac = -1.
pub fn affine_to_quaternion(m: &Affine) -> ([f64; 3], [f64; 3], f64, [f64; 3]) {
    let offset = [m[0][3], m[1][3], m[2][3]];
    let mut r = [[0.0f64; 3]; 3];
    let mut zooms = [0.0f64; 3];
    for j in 0..3 {
        let mut norm = (0..3).map(|i| m[i][j] * m[i][j]).sum::<f64>().sqrt();
        if norm == 0.0 {
            // degenerate column: nifti1_io substitutes the unit axis
            for (i, row) in r.iter_mut().enumerate() {
                row[j] = if i == j { 1.0 } else { 0.0 };
            }
            norm = 1.0;
        } else {
            for (i, row) in r.iter_mut().enumerate() {
                row[j] = m[i][j] / norm;
            }
        }
        zooms[j] = norm;
    }
    let mut p = polar(r);
    let det = det3(&p);
    let qfac = if det > 0.0 {
        1.0
    } else {
        for row in p.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    };
    let (r11, r12, r13) = (p[0][0], p[0][1], p[0][2]);
    let (r21, r22, r23) = (p[1][0], p[1][1], p[1][2]);
    let (r31, r32, r33) = (p[2][0], p[2][1], p[2][2]);
    let trace = r11 + r22 + r33 + 1.0;
    let (a, mut b, mut c, mut d): (f64, f64, f64, f64);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r32 - r23) / a;
        c = 0.25 * (r13 - r31) / a;
        d = 0.25 * (r21 - r12) / a;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            a = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            a = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            a = 0.25 * (r21 - r12) / d;
        }
        if a < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], offset, qfac, zooms)
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

#[allow(clippy::needless_range_loop)] // cofactor indices read clearer than iterators
fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let d = det3(m);
    let mut o = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            o[i][j] = (m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]) / d;
        }
    }
    o
}

/// The orthogonal factor of a 3x3 matrix (nifti1_io's `nifti_mat33_polar`, Newton iteration).
fn polar(a: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let rownorm = |m: &[[f64; 3]; 3]| {
        m.iter()
            .map(|r| r.iter().map(|x| x.abs()).sum::<f64>())
            .fold(0.0, f64::max)
    };
    let colnorm = |m: &[[f64; 3]; 3]| {
        (0..3)
            .map(|j| (0..3).map(|i| m[i][j].abs()).sum::<f64>())
            .fold(0.0, f64::max)
    };
    let mut x = a;
    let mut gam = det3(&x);
    while gam == 0.0 {
        gam = 0.00001 * (0.001 + rownorm(&x));
        for (i, row) in x.iter_mut().enumerate() {
            row[i] += gam;
        }
        gam = det3(&x);
    }
    let mut dif = 1.0;
    let mut z = x;
    for _ in 0..100 {
        let y = inv3(&x);
        let (g, gi) = if dif > 0.3 {
            let alp = (rownorm(&x) * colnorm(&x)).sqrt();
            let bet = (rownorm(&y) * colnorm(&y)).sqrt();
            let g = (bet / alp).sqrt();
            (g, 1.0 / g)
        } else {
            (1.0, 1.0)
        };
        for i in 0..3 {
            for j in 0..3 {
                z[i][j] = 0.5 * (g * x[i][j] + gi * y[j][i]);
            }
        }
        dif = (0..3)
            .flat_map(|i| (0..3).map(move |j| (i, j)))
            .map(|(i, j)| (z[i][j] - x[i][j]).abs())
            .sum();
        if dif < 3e-6 {
            break;
        }
        x = z;
    }
    z
}

fn build_header(
    geom: &VolumeGeometry,
    tr: Option<f64>,
    opts: &NiftiWriteOptions,
) -> nifti::NiftiHeader {
    let ([b, c, d], [qx, qy, qz], qfac, _) = affine_to_quaternion(&geom.affine);
    let zooms = geom.zooms();
    // 4-D: the fourth "voxel size" is the TR (volumes start at time 0, toffset stays 0).
    let t = tr.unwrap_or(1.0) as f32;
    let srow = |r: usize| geom.affine[r].map(|x| x as f32);
    let mut h = nifti::NiftiHeader {
        pixdim: [
            qfac as f32,
            zooms[0] as f32,
            zooms[1] as f32,
            zooms[2] as f32,
            t,
            1.0,
            1.0,
            1.0,
        ],
        xyzt_units: 2 | 8, // NIFTI_UNITS_MM | NIFTI_UNITS_SEC
        intent_code: opts.intent.0 as i16,
        qform_code: geom.xform_code,
        sform_code: geom.xform_code,
        quatern_b: b as f32,
        quatern_c: c as f32,
        quatern_d: d as f32,
        quatern_x: qx as f32,
        quatern_y: qy as f32,
        quatern_z: qz as f32,
        srow_x: srow(0),
        srow_y: srow(1),
        srow_z: srow(2),
        ..nifti::NiftiHeader::default()
    };
    let mut descrip: Vec<u8> = opts
        .description
        .bytes()
        .filter(|b| b.is_ascii() && *b != 0)
        .take(79)
        .collect();
    descrip.resize(80, 0);
    h.descrip = descrip;
    h
}

fn check_geometry(
    path: &Path,
    geom: &VolumeGeometry,
    n_vols: usize,
    data_len: usize,
) -> Result<()> {
    if geom.dims.iter().any(|&d| d == 0 || d > i16::MAX as usize) || n_vols > i16::MAX as usize {
        return Err(nifti_err(
            path,
            format!(
                "cannot write dims {:?} x {n_vols}: each must be 1..=32767 for NIfTI-1",
                geom.dims
            ),
        ));
    }
    let n = geom.dims.iter().product::<usize>() * n_vols.max(1);
    if n != data_len {
        return Err(nifti_err(
            path,
            format!(
                "dims {:?} x {n_vols} need {n} values, got {data_len}",
                geom.dims
            ),
        ));
    }
    if geom.affine.iter().flatten().any(|x| !x.is_finite()) || geom.zooms().contains(&0.0) {
        return Err(nifti_err(
            path,
            "the affine must be finite with non-zero voxel sizes",
        ));
    }
    Ok(())
}

fn write_via_crate(
    path: &Path,
    header: &nifti::NiftiHeader,
    shape: &[usize],
    data: &[f32],
) -> Result<()> {
    use ndarray::ShapeBuilder;
    let out = AtomicOutput::create(path)?;
    // `data` is in file (Fortran) order; a Fortran-layout view gives it the logical (x, y, z, t)
    // indexing the crate expects, without copying.
    let view = ndarray::ArrayView::from_shape(ndarray::IxDyn(shape).f(), data)
        .map_err(|e| nifti_err(path, format!("internal shape error: {e}")))?;
    let tmp: PathBuf = out.tmp_path().to_path_buf();
    let gz = path.to_string_lossy().ends_with(".gz");
    nifti::writer::WriterOptions::new(&tmp)
        .reference_header(header)
        .compress(gz)
        .write_nifti(&view)
        .map_err(|e| match e {
            nifti::NiftiError::Io(io) => out.not_writable(io),
            other => nifti_err(path, format!("cannot write: {other}")),
        })?;
    out.commit()
}

/// Write a 3-D float32 image (statistical map, mask, probability map). `data` is in NIfTI file
/// order: `data[x + nx * (y + ny * z)]`. Gzipped when `path` ends in `.gz`.
pub fn write_nifti_3d(
    path: &Path,
    geom: &VolumeGeometry,
    data: &[f32],
    opts: &NiftiWriteOptions,
) -> Result<()> {
    check_geometry(path, geom, 0, data.len())?;
    let h = build_header(geom, None, opts);
    write_via_crate(path, &h, &geom.dims, data)
}

/// Write a 4-D float32 time series with `pixdim[4]` = `tr` seconds (e.g. the subcortical
/// predicted BOLD on the 91x109x91 2 mm grid). `data` is in NIfTI file order, each volume
/// contiguous: `data[x + nx * (y + ny * (z + nz * t))]`. Gzipped when `path` ends in `.gz`.
pub fn write_nifti_4d(
    path: &Path,
    geom: &VolumeGeometry,
    tr: f64,
    data: &[f32],
    opts: &NiftiWriteOptions,
) -> Result<()> {
    if !(tr.is_finite() && tr > 0.0) {
        return Err(nifti_err(
            path,
            format!("repetition time must be a positive number of seconds, got {tr}"),
        ));
    }
    let vol: usize = geom.dims.iter().product();
    let n_vols = data.len().checked_div(vol).unwrap_or(0);
    if n_vols == 0 {
        return Err(nifti_err(path, "a 4-D image needs at least one volume"));
    }
    check_geometry(path, geom, n_vols, data.len())?;
    let h = build_header(geom, Some(tr), opts);
    let shape = [geom.dims[0], geom.dims[1], geom.dims[2], n_vols];
    write_via_crate(path, &h, &shape, data)
}

/// Write a NIfTI-2 header (540 bytes, little-endian) for a single-file image. Used by the CIFTI
/// writer; the fields mirror what Connectome Workbench writes.
pub(crate) struct Nifti2Header {
    pub dim: [i64; 8],
    pub pixdim: [f64; 8],
    pub datatype: i16,
    pub bitpix: i16,
    pub vox_offset: i64,
    pub xyzt_units: i32,
    pub intent_code: i32,
    pub intent_name: String,
    pub descrip: String,
}

impl Nifti2Header {
    pub(crate) fn to_bytes(&self) -> [u8; 540] {
        let mut b = [0u8; 540];
        let put = |b: &mut [u8; 540], at: usize, bytes: &[u8]| {
            b[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut b, 0, &540i32.to_le_bytes());
        put(&mut b, 4, b"n+2\0\r\n\x1a\n");
        put(&mut b, 12, &self.datatype.to_le_bytes());
        put(&mut b, 14, &self.bitpix.to_le_bytes());
        for (i, d) in self.dim.iter().enumerate() {
            put(&mut b, 16 + 8 * i, &d.to_le_bytes());
        }
        for (i, p) in self.pixdim.iter().enumerate() {
            put(&mut b, 104 + 8 * i, &p.to_le_bytes());
        }
        put(&mut b, 168, &self.vox_offset.to_le_bytes());
        put(&mut b, 176, &1.0f64.to_le_bytes()); // scl_slope
        put(&mut b, 184, &0.0f64.to_le_bytes()); // scl_inter
        let descrip: Vec<u8> = self
            .descrip
            .bytes()
            .filter(|c| c.is_ascii() && *c != 0)
            .take(79)
            .collect();
        put(&mut b, 240, &descrip);
        put(&mut b, 500, &self.xyzt_units.to_le_bytes());
        put(&mut b, 504, &self.intent_code.to_le_bytes());
        let name: Vec<u8> = self.intent_name.bytes().take(15).collect();
        put(&mut b, 508, &name);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat_close(a: &Affine, b: &Affine, tol: f64) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn quaternion_round_trip() {
        let mni = [
            [-2.0, 0.0, 0.0, 90.0],
            [0.0, 2.0, 0.0, -126.0],
            [0.0, 0.0, 2.0, -72.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let rot = {
            let (s, c) = (0.3f64.sin(), 0.3f64.cos());
            [
                [c * 1.5, -s * 2.0, 0.0, 4.0],
                [s * 1.5, c * 2.0, 0.0, 5.0],
                [0.0, 0.0, 3.0, -6.0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        };
        for m in [mni, rot, IDENTITY] {
            let (q, off, qfac, zooms) = affine_to_quaternion(&m);
            let h = NiftiHeaderInfo {
                version: NiftiVersion::Two,
                big_endian: false,
                single_file: true,
                dim: [3, 2, 2, 2, 1, 1, 1, 1],
                intent_p: [0.0; 3],
                intent_code: 0,
                intent_name: String::new(),
                datatype: 16,
                bitpix: 32,
                slice_start: 0,
                slice_end: 0,
                pixdim: [qfac, zooms[0], zooms[1], zooms[2], 1.0, 1.0, 1.0, 1.0],
                vox_offset: 544.0,
                scl_slope: 1.0,
                scl_inter: 0.0,
                slice_code: 0,
                xyzt_units: 10,
                cal_max: 0.0,
                cal_min: 0.0,
                slice_duration: 0.0,
                toffset: 0.0,
                descrip: String::new(),
                aux_file: String::new(),
                qform_code: 4,
                sform_code: 0,
                quatern: q,
                qoffset: off,
                srow: [[0.0; 4]; 3],
                dim_info: 0,
            };
            let back = h.qform_affine().unwrap();
            assert!(mat_close(&back, &m, 1e-9), "{m:?} -> {back:?}");
        }
    }

    #[test]
    fn truncated_header_is_an_error() {
        let e = parse_nifti_header(&348i32.to_le_bytes(), Path::new("t.nii")).unwrap_err();
        assert!(matches!(e, Error::Nifti { .. }));
        assert!(
            e.to_string().contains("t.nii") && e.to_string().contains("truncated"),
            "{e}"
        );
        let e = parse_nifti_header(&[0u8; 400], Path::new("z.nii")).unwrap_err();
        assert!(e.to_string().contains("not a NIfTI file"), "{e}");
    }
}
