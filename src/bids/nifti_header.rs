//! The volume count of a BOLD run, from its NIfTI header alone.
//!
//! Planning a run (the `--dry-run` table, the output length) must not read gigabytes of voxels,
//! and the bids-examples images are empty or header-only (352 bytes claiming 64^4 float64), so we
//! read only the header: 348 bytes for NIfTI-1/Analyze, 540 for NIfTI-2, decompressing just that
//! much of a `.nii.gz` through a streaming gzip decoder. Compression is detected from the gzip
//! magic bytes rather than the extension, because misnamed files are common.

use crate::error::{Error, Result};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// What the header says about time.
#[derive(Debug, Clone, PartialEq)]
pub struct BoldHeader {
    /// 1 or 2 (Analyze 7.5 headers read as 1).
    pub nifti_version: u8,
    /// `dim[1..=dim[0]]`.
    pub shape: Vec<u64>,
    /// `dim[4]` when `dim[0] >= 4`, else 1.
    pub n_volumes: u64,
    /// `pixdim[4]` in seconds (after `xyzt_units`), when the header states one; used only to warn
    /// when it disagrees with `RepetitionTime` (validator `REPETITION_TIME_MISMATCH`).
    pub tr_seconds: Option<f64>,
}

/// Reads the header of `path`. `Ok(None)` for a 0-byte file: the bids-examples images are empty,
/// so their volume count is unknown rather than an error.
pub fn read_bold_header(path: &Path) -> Result<Option<BoldHeader>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; 2];
    let got = read_up_to(&mut reader, &mut magic).map_err(|e| Error::io(path, e))?;
    let prefix = &magic[..got];
    let mut buf = Vec::with_capacity(540);
    let res = if prefix == [0x1f, 0x8b] {
        let mut gz = MultiGzDecoder::new(prefix.chain(reader));
        read_header_bytes(&mut gz, &mut buf)
    } else {
        let mut plain = prefix.chain(reader);
        read_header_bytes(&mut plain, &mut buf)
    };
    res.map_err(|e| Error::Nifti {
        path: path.to_path_buf(),
        message: format!("cannot read the header: {e}"),
    })?;
    parse_header(&buf)
        .map(Some)
        .map_err(|message| Error::Nifti {
            path: path.to_path_buf(),
            message,
        })
}

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

/// Reads 348 bytes, then 192 more if `sizeof_hdr` says NIfTI-2. A short read is reported as a
/// truncated header, with how many bytes there were.
fn read_header_bytes(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.resize(348, 0);
    let n = read_up_to(r, &mut buf[..])?;
    if n < 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends after {n} bytes, inside the header"),
        ));
    }
    let le = i32::from_le_bytes(buf[0..4].try_into().unwrap());
    let be = i32::from_be_bytes(buf[0..4].try_into().unwrap());
    let want = if le == 540 || be == 540 { 540 } else { 348 };
    if n < 348 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends after {n} bytes, inside the {want}-byte header"),
        ));
    }
    if want == 540 {
        buf.resize(540, 0);
        let m = read_up_to(r, &mut buf[348..])?;
        if m < 192 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the file ends after {} bytes, inside the 540-byte NIfTI-2 header",
                    348 + m
                ),
            ));
        }
    }
    Ok(())
}

/// Parses a header buffer (348 or 540 bytes). Errors are messages; the caller adds the path.
pub fn parse_header(h: &[u8]) -> std::result::Result<BoldHeader, String> {
    if h.len() < 348 {
        return Err(format!(
            "header is {} bytes, expected at least 348",
            h.len()
        ));
    }
    let le = i32::from_le_bytes(h[0..4].try_into().unwrap());
    let be = i32::from_be_bytes(h[0..4].try_into().unwrap());
    let (version, little) = match (le, be) {
        (348, _) => (1u8, true),
        (_, 348) => (1, false),
        (540, _) => (2, true),
        (_, 540) => (2, false),
        _ => {
            return Err(format!(
                "sizeof_hdr is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2): this is not a NIfTI file"
            ));
        }
    };
    let i16_at = |o: usize| {
        let b = [h[o], h[o + 1]];
        if little {
            i16::from_le_bytes(b) as i64
        } else {
            i16::from_be_bytes(b) as i64
        }
    };
    let i32_at = |o: usize| {
        let b: [u8; 4] = h[o..o + 4].try_into().unwrap();
        if little {
            i32::from_le_bytes(b)
        } else {
            i32::from_be_bytes(b)
        }
    };
    let f32_at = |o: usize| {
        let b: [u8; 4] = h[o..o + 4].try_into().unwrap();
        (if little {
            f32::from_le_bytes(b)
        } else {
            f32::from_be_bytes(b)
        }) as f64
    };
    let i64_at = |o: usize| {
        let b: [u8; 8] = h[o..o + 8].try_into().unwrap();
        if little {
            i64::from_le_bytes(b)
        } else {
            i64::from_be_bytes(b)
        }
    };
    let f64_at = |o: usize| {
        let b: [u8; 8] = h[o..o + 8].try_into().unwrap();
        if little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        }
    };
    let (dims, pixdim4, xyzt_units): ([i64; 8], f64, i32) = if version == 1 {
        let mut d = [0i64; 8];
        for (i, v) in d.iter_mut().enumerate() {
            *v = i16_at(40 + 2 * i);
        }
        (d, f32_at(76 + 4 * 4), h[123] as i32)
    } else {
        if h.len() < 540 {
            return Err(format!("NIfTI-2 header is {} bytes, expected 540", h.len()));
        }
        if &h[4..8] != b"n+2\0" && &h[4..8] != b"ni2\0" {
            return Err("sizeof_hdr says NIfTI-2 but the magic is not 'n+2'/'ni2'".into());
        }
        let mut d = [0i64; 8];
        for (i, v) in d.iter_mut().enumerate() {
            *v = i64_at(16 + 8 * i);
        }
        (d, f64_at(104 + 8 * 4), i32_at(500))
    };
    let ndim = dims[0];
    if !(1..=7).contains(&ndim) {
        return Err(format!(
            "dim[0] is {ndim}, expected 1 to 7 (a byte-order or corruption problem)"
        ));
    }
    let shape: Vec<u64> = dims[1..=ndim as usize]
        .iter()
        .map(|&d| d.max(0) as u64)
        .collect();
    if dims[1..=ndim as usize].iter().any(|&d| d < 1) {
        return Err(format!(
            "dimensions {:?} include a size below 1",
            &dims[1..=ndim as usize]
        ));
    }
    let n_volumes = if ndim >= 4 { shape[3] } else { 1 };
    // xyzt_units bits 3-5: 8 = s, 16 = ms, 24 = us.
    let scale = match xyzt_units & 0x38 {
        8 => Some(1.0),
        16 => Some(1e-3),
        24 => Some(1e-6),
        _ => None,
    };
    let tr_seconds = match scale {
        Some(s) if ndim >= 4 && pixdim4.is_finite() && pixdim4 > 0.0 => Some(pixdim4 * s),
        _ => None,
    };
    Ok(BoldHeader {
        nifti_version: version,
        shape,
        n_volumes,
        tr_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nifti1(dims: [i16; 8], pixdim4: f32, units: u8, big: bool) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let w16 = |v: i16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let sz = if big {
            348i32.to_be_bytes()
        } else {
            348i32.to_le_bytes()
        };
        h[0..4].copy_from_slice(&sz);
        for (i, d) in dims.iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&w16(*d));
        }
        let p = if big {
            pixdim4.to_be_bytes()
        } else {
            pixdim4.to_le_bytes()
        };
        h[92..96].copy_from_slice(&p);
        h[123] = units;
        h[344..348].copy_from_slice(b"n+1\0");
        h
    }

    #[test]
    fn both_endiannesses() {
        for big in [false, true] {
            let h =
                parse_header(&nifti1([4, 64, 64, 30, 120, 1, 1, 1], 2000.0, 2 | 16, big)).unwrap();
            assert_eq!(h.n_volumes, 120);
            assert_eq!(h.shape, vec![64, 64, 30, 120]);
            assert!((h.tr_seconds.unwrap() - 2.0).abs() < 1e-9);
        }
        let h = parse_header(&nifti1([3, 10, 10, 10, 0, 1, 1, 1], 0.0, 10, false)).unwrap();
        assert_eq!(h.n_volumes, 1);
        assert_eq!(h.tr_seconds, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(
            parse_header(&[7u8; 348])
                .unwrap_err()
                .contains("sizeof_hdr")
        );
        assert!(
            parse_header(&nifti1([9, 1, 1, 1, 1, 1, 1, 1], 0.0, 0, false))
                .unwrap_err()
                .contains("dim[0]")
        );
        assert!(parse_header(&nifti1([4, 1, 1, 1, 0, 1, 1, 1], 0.0, 0, false)).is_err());
    }
}
