//! NIfTI-1/2 parity with nibabel: the header-only reader on every NIfTI file of the fixtures
//! (484 files: real images, header-only bids-examples, empty placeholders, NIfTI-2, big-endian,
//! header/image pairs), whole-image reading, and our 3-D/4-D writers read back by nibabel and
//! checked by `nifti_tool -check_hdr`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tribe_bids::Error;
use tribe_bids::formats::nifti::{Affine, NiftiVersion, parse_nifti_header};
use tribe_bids::formats::{
    Intent, NiftiWriteOptions, VolumeGeometry, read_nifti_header, read_nifti_volume,
    write_nifti_3d, write_nifti_4d,
};

/// nibabel's view of the raw header (no image-level rewriting of scl_*), or the reason it fails.
const HEADER_ORACLE: &str = r#"
import sys, json, numpy as np, nibabel as nib
from nibabel.openers import ImageOpener
hx = lambda a: np.asarray(a, '<f8').tobytes().hex()  # exact floats through JSON
out = []
for f in sys.argv[1:]:
    try:
        with ImageOpener(f) as fo:
            raw = fo.read(540)
        if len(raw) < 348: raise ValueError('short')
        le = int.from_bytes(raw[:4], 'little'); be = int.from_bytes(raw[:4], 'big')
        if 348 in (le, be):
            klass, raw = nib.Nifti1Header, raw[:348]
            if raw[344:348] not in (b'n+1\0', b'ni1\0'): raise ValueError('magic')
        elif 540 in (le, be) and len(raw) == 540:
            klass = nib.Nifti2Header
        else:
            raise ValueError('sizeof_hdr')
        h = klass(raw, check=False)
        d = dict(file=f, version=2 if klass is nib.Nifti2Header else 1, endian=h.endianness,
                 dim=[int(x) for x in h['dim']], pixdim=hx(h['pixdim']),
                 datatype=int(h['datatype']), bitpix=int(h['bitpix']), xyzt=list(h.get_xyzt_units()),
                 qform_code=int(h['qform_code']), sform_code=int(h['sform_code']),
                 intent=int(h['intent_code']), vox_offset=float(h['vox_offset']),
                 slope=float(h['scl_slope']), inter=float(h['scl_inter']),
                 descrip=h['descrip'].item().split(b'\0')[0].decode('latin-1'),
                 sform=hx(h.get_sform().ravel()))
        try:
            d['qform'] = h.get_qform().ravel().tolist()
        except Exception:
            d['qform'] = None
        try:
            d['affine'] = h.get_best_affine().ravel().tolist()
        except Exception:
            d['affine'] = None
        out.append(d)
    except Exception as e:
        out.append(dict(file=f, error=repr(e)))
print(json.dumps(out))
"#;

fn all_nifti_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(common::fixture("data"))
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.ends_with(".nii") || n.ends_with(".nii.gz") || n.ends_with(".hdr")
        })
        .collect();
    v.sort();
    v
}

fn oracle(code: &str, files: &[PathBuf]) -> Vec<Value> {
    let args: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str::<Value>(&common::run_python(code, &args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Floats the oracle sent as little-endian f64 hex (JSON text would not be bit-exact here).
fn unhex(v: &Value) -> Vec<f64> {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn flat(a: &Affine) -> Vec<f64> {
    a.iter().flatten().copied().collect()
}

fn max_abs_diff(a: &[f64], b: &Value) -> f64 {
    let b: Vec<f64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn every_fixture_header_matches_nibabel() {
    let files = all_nifti_fixtures();
    assert!(files.len() >= 480, "{}", files.len());
    let dumps = oracle(HEADER_ORACLE, &files);
    let (mut ok, mut refused, mut worst_affine) = (0, 0, 0.0f64);
    for (f, o) in files.iter().zip(&dumps) {
        let name = f.display();
        let ours = read_nifti_header(f);
        if o.get("error").is_some() {
            match ours {
                Err(Error::Nifti { path, .. }) => assert_eq!(&path, f),
                other => panic!(
                    "{name}: nibabel refuses ({}), we returned {other:?}",
                    o["error"]
                ),
            }
            refused += 1;
            continue;
        }
        let h = ours.unwrap_or_else(|e| panic!("{e}"));
        let v = if h.version == NiftiVersion::One { 1 } else { 2 };
        assert_eq!(v, o["version"].as_i64().unwrap(), "{name}: version");
        assert_eq!(
            if h.big_endian { ">" } else { "<" },
            o["endian"].as_str().unwrap(),
            "{name}: endianness"
        );
        let dim: Vec<i64> = o["dim"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        assert_eq!(h.dim.to_vec(), dim, "{name}: dim");
        assert_eq!(h.pixdim.to_vec(), unhex(&o["pixdim"]), "{name}: pixdim");
        assert_eq!(
            h.datatype as i64,
            o["datatype"].as_i64().unwrap(),
            "{name}: datatype"
        );
        assert_eq!(
            h.bitpix as i64,
            o["bitpix"].as_i64().unwrap(),
            "{name}: bitpix"
        );
        assert_eq!(
            [h.space_unit().label(), h.time_unit().label()],
            [
                o["xyzt"][0].as_str().unwrap(),
                o["xyzt"][1].as_str().unwrap()
            ],
            "{name}: xyzt_units"
        );
        assert_eq!(
            h.qform_code as i64,
            o["qform_code"].as_i64().unwrap(),
            "{name}: qform_code"
        );
        assert_eq!(
            h.sform_code as i64,
            o["sform_code"].as_i64().unwrap(),
            "{name}: sform_code"
        );
        assert_eq!(
            h.intent_code as i64,
            o["intent"].as_i64().unwrap(),
            "{name}: intent"
        );
        assert_eq!(
            h.vox_offset,
            o["vox_offset"].as_f64().unwrap(),
            "{name}: vox_offset"
        );
        assert_eq!(h.descrip, o["descrip"].as_str().unwrap(), "{name}: descrip");
        let same_or_nan = |a: f64, b: &Value| (a.is_nan() && b.is_null()) || b.as_f64() == Some(a);
        assert!(
            same_or_nan(h.scl_slope, &o["slope"]) && same_or_nan(h.scl_inter, &o["inter"]),
            "{name}: scl"
        );
        assert_eq!(flat(&h.sform_affine()), unhex(&o["sform"]), "{name}: sform");
        match (h.qform_affine(), o["qform"].is_null()) {
            (Ok(q), false) => worst_affine = worst_affine.max(max_abs_diff(&flat(&q), &o["qform"])),
            (Err(_), true) => {}
            (q, _) => panic!("{name}: qform {q:?} vs nibabel {}", o["qform"]),
        }
        match (h.affine(), o["affine"].is_null()) {
            (Ok(a), false) => {
                worst_affine = worst_affine.max(max_abs_diff(&flat(&a), &o["affine"]))
            }
            (Err(_), true) => {}
            (a, _) => panic!("{name}: affine {a:?} vs nibabel {}", o["affine"]),
        }
        ok += 1;
    }
    eprintln!(
        "headers: {ok} compared, {refused} refused by both; max |affine diff| = {worst_affine:e}"
    );
    assert!(
        worst_affine <= 1e-9,
        "affine differs from nibabel by {worst_affine}"
    );
    assert!(ok >= 160 && refused >= 300, "{ok} {refused}");
}

#[test]
fn header_only_and_special_files() {
    let synth = common::fixture(
        "data/bids-examples/synthetic/sub-01/ses-01/func/sub-01_ses-01_task-nback_run-01_bold.nii",
    );
    assert_eq!(std::fs::metadata(&synth).unwrap().len(), 352);
    let h = read_nifti_header(&synth).unwrap();
    assert_eq!(h.shape(), [64, 64, 64, 64]);
    assert_eq!(h.repetition_time_s(), Some(2.5));
    // the data is missing from these files: reading it is a clear error
    let e = read_nifti_volume(&synth).unwrap_err();
    assert!(
        matches!(e, Error::Nifti { .. }) && e.to_string().contains("truncated"),
        "{e}"
    );

    let t = |n: &str| common::fixture(&format!("data/formats/nibabel-5.4.2/tests_data/{n}"));
    let h = read_nifti_header(&t("example_nifti2.nii.gz")).unwrap();
    assert_eq!(
        (h.version, h.shape()),
        (NiftiVersion::Two, vec![32, 20, 12, 2])
    );
    let h = read_nifti_header(&t("anatomical.nii")).unwrap();
    assert!(h.big_endian);
    let h = read_nifti_header(&t("nifti2.hdr")).unwrap();
    assert!(!h.single_file && h.version == NiftiVersion::Two);
    let e = read_nifti_header(&t("analyze.hdr")).unwrap_err();
    assert!(e.to_string().contains("Analyze 7.5"), "{e}");
    let e = read_nifti_header(&t("test.mgz")).unwrap_err();
    assert!(matches!(e, Error::Nifti { .. }), "{e}");
    let h = read_nifti_header(&t("row_major.dconn.nii")).unwrap();
    assert_eq!(h.intent_code, 3001);
    assert!(matches!(
        read_nifti_header(Path::new("/nonexistent/x.nii.gz")),
        Err(Error::Io { .. })
    ));
}

const VOLUME_ORACLE: &str = r#"
import sys, json, base64, numpy as np, nibabel as nib
out = []
for f in sys.argv[1:]:
    a = np.asanyarray(nib.load(f).get_fdata()).ravel(order='F')
    out.append(dict(file=f, n=int(a.size), values=base64.b64encode(a.astype('<f8').tobytes()).decode()))
print(json.dumps(out))
"#;

#[test]
fn whole_images_match_nibabel() {
    let t = |n: &str| common::fixture(&format!("data/formats/nibabel-5.4.2/tests_data/{n}"));
    let mut files: Vec<PathBuf> = [
        "anatomical.nii",
        "example4d.nii.gz",
        "example_nifti2.nii.gz",
        "functional.nii",
        "reoriented_anat_moved.nii",
        "resampled_anat_moved.nii",
        "standard.nii.gz",
    ]
    .iter()
    .map(|n| t(n))
    .collect();
    files.push(common::fixture(
        "data/bids-validator-tests/valid_headers/sub-01/func/sub-01_task-rhymejudgment_bold.nii.gz",
    ));
    let dumps = oracle(VOLUME_ORACLE, &files);
    for (f, o) in files.iter().zip(&dumps) {
        let vol = read_nifti_volume(f).unwrap_or_else(|e| panic!("{e}"));
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(o["values"].as_str().unwrap())
            .unwrap();
        let want: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vol.data.len(), want.len(), "{}", f.display());
        let nan_ours = vol.data.iter().filter(|x| x.is_nan()).count();
        assert_eq!(
            nan_ours,
            want.iter().filter(|x| x.is_nan()).count(),
            "{}: NaN count",
            f.display()
        );
        let scale = want
            .iter()
            .filter(|x| x.is_finite())
            .fold(1.0f64, |m, x| m.max(x.abs()));
        let worst = vol
            .data
            .iter()
            .zip(&want)
            .filter(|(a, b)| !(a.is_nan() && b.is_nan()))
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{}: {} voxels, max |diff| {worst:e} (max |x| {scale})",
            f.display(),
            want.len()
        );
        // float32 output: exact for unscaled integer/float32 data, within f32 rounding when scaled
        assert!(
            worst <= scale * 2.0 * f32::EPSILON as f64,
            "{}: {worst}",
            f.display()
        );
        if vol.header.scl_slope == 0.0
            || (vol.header.scl_slope == 1.0 && vol.header.scl_inter == 0.0)
        {
            assert_eq!(worst, 0.0, "{}", f.display());
        }
    }
}

fn nifti_tool(path: &Path) -> String {
    let run = |args: &[&str]| {
        let out = Command::new("nifti_tool")
            .args(args)
            .arg("-infiles")
            .arg(path)
            .output();
        let out = out.expect("nifti_tool (Debian package nifti-bin) must be installed");
        assert!(
            out.status.success(),
            "nifti_tool {args:?} failed on {}",
            path.display()
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let check = run(&["-check_hdr"]);
    // nifti_tool exits 0 even on "header FAILURE": the text is what counts
    assert!(
        check.contains("header IS GOOD"),
        "nifti_tool -check_hdr: {check}"
    );
    run(&[
        "-disp_hdr",
        "-field",
        "dim",
        "-field",
        "pixdim",
        "-field",
        "xyzt_units",
        "-field",
        "qform_code",
        "-field",
        "sform_code",
    ])
}

const WRITTEN_ORACLE: &str = r#"
import sys, json, hashlib, gzip, numpy as np, nibabel as nib
from nibabel.openers import ImageOpener
out = []
for f in sys.argv[1:]:
    img = nib.load(f); h = img.header
    with ImageOpener(f) as fo:
        raw = nib.Nifti1Header(fo.read(348), check=False)
    q, qc = h.get_qform(coded=True); s, sc = h.get_sform(coded=True)
    a = np.asanyarray(img.dataobj)
    out.append(dict(shape=list(img.shape), zooms=[float(z) for z in h.get_zooms()], xyzt=list(h.get_xyzt_units()),
        qform=q.ravel().tolist(), qcode=int(qc), sform=s.ravel().tolist(), scode=int(sc),
        slope=float(raw['scl_slope']), inter=float(raw['scl_inter']), intent=int(raw['intent_code']),
        dtype=a.dtype.str, descrip=raw['descrip'].item().decode(),
        sha=hashlib.sha256(a.astype('<f4').ravel(order='F').tobytes()).hexdigest()))
print(json.dumps(out))
"#;

#[test]
fn written_images_read_back_in_nibabel_and_nifti_tool() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    // the FSL MNI152 2 mm grid (91x109x91), as the subcortical output uses
    let mni = VolumeGeometry {
        dims: [91, 109, 91],
        affine: [
            [-2.0, 0.0, 0.0, 90.0],
            [0.0, 2.0, 0.0, -126.0],
            [0.0, 0.0, 2.0, -72.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        xform_code: 4,
    };
    let (s, c) = (0.2f64.sin(), 0.2f64.cos());
    let oblique = VolumeGeometry {
        dims: [7, 6, 5],
        affine: [
            [c * 3.0, -s * 3.0, 0.0, 10.0],
            [s * 3.0, c * 3.0, 0.0, -20.0],
            [0.0, 0.0, 3.5, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        xform_code: 2,
    };
    let n4 = 91 * 109 * 91 * 3;
    let d4: Vec<f32> = (0..n4)
        .map(|i| ((i % 9973) as f32 * 0.013).sin() * 50.0)
        .collect();
    let d3: Vec<f32> = (0..7 * 6 * 5).map(|i| i as f32 - 100.5).collect();
    let p4 = dir
        .path()
        .join("sub-01_task-x_space-MNI152NLin2009cAsym_res-2_desc-predicted_bold.nii.gz");
    // (a name with inner dots: the nifti crate would rewrite it if it saw it)
    let p3 = dir.path().join("stat-z.v1_statmap.nii");
    write_nifti_4d(&p4, &mni, 1.49, &d4, &NiftiWriteOptions::default()).unwrap();
    let z = NiftiWriteOptions {
        intent: Intent::ZSCORE,
        description: "z map".into(),
    };
    write_nifti_3d(&p3, &oblique, &d3, &z).unwrap();

    let o = oracle(WRITTEN_ORACLE, &[p4.clone(), p3.clone()]);
    let sha = |v: &[f32]| {
        hex::encode(Sha256::digest(
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        ))
    };
    for (o, geom, data, n) in [(&o[0], &mni, &d4, 4), (&o[1], &oblique, &d3, 3)] {
        let mut shape: Vec<usize> = geom.dims.to_vec();
        if n == 4 {
            shape.push(3);
        }
        assert_eq!(o["shape"], serde_json::json!(shape));
        assert_eq!(o["xyzt"], serde_json::json!(["mm", "sec"]));
        assert_eq!(o["dtype"], "<f4");
        assert_eq!(o["sha"], sha(data), "nibabel reads different voxel values");
        assert_eq!(
            (o["slope"].as_f64(), o["inter"].as_f64()),
            (Some(1.0), Some(0.0)),
            "scl_slope/scl_inter"
        );
        assert_eq!(o["qcode"].as_i64(), Some(geom.xform_code as i64));
        assert_eq!(o["scode"].as_i64(), Some(geom.xform_code as i64));
        let want = flat(&geom.affine);
        let dq = max_abs_diff(&want, &o["qform"]);
        let ds = max_abs_diff(&want, &o["sform"]);
        eprintln!("max |qform - affine| {dq:e}, |sform - affine| {ds:e}");
        // stored as float32
        assert!(dq < 1e-5 && ds < 1e-5, "{dq} {ds}");
        let zooms: Vec<f64> = o["zooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let expect: Vec<f64> = if n == 4 {
            vec![2.0, 2.0, 2.0, 1.49f32 as f64]
        } else {
            vec![3.0, 3.0, 3.5]
        };
        assert!(
            zooms.iter().zip(&expect).all(|(a, b)| (a - b).abs() < 1e-6),
            "{zooms:?}"
        );
    }
    assert_eq!(o[1]["intent"], 5);
    assert_eq!(o[1]["descrip"], "z map");

    // our own header reader agrees, and the standard tool accepts both
    let h = read_nifti_header(&p4).unwrap();
    assert_eq!(h.shape(), [91, 109, 91, 3]);
    assert_eq!(h.repetition_time_s(), Some(1.49f32 as f64));
    let text = nifti_tool(&p4);
    assert!(text.contains("4 91 109 91 3 1 1 1"), "{text}");
    assert!(text.contains("10"), "xyzt_units mm+sec: {text}");
    let text = nifti_tool(&p3);
    assert!(text.contains("3 7 6 5 1 1 1 1"), "{text}");
    let out = Command::new("wb_command")
        .arg("-file-information")
        .arg(&p4)
        .output();
    let out = out.expect("wb_command (Debian package connectome-workbench) must be installed");
    let wb = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wb_command: {wb}");
    for needle in [
        "Dimensions:               91, 109, 91, 3",
        "Map Interval Step:        1.490",
        "NIFTI_TYPE_FLOAT32",
        "IJK = (0,0,0):            XYZ = (90, -126, -72)",
    ] {
        assert!(
            wb.contains(needle),
            "wb_command output lacks '{needle}':\n{wb}"
        );
    }
    let back = read_nifti_volume(&p4).unwrap();
    assert_eq!(back.data, d4);
}

#[test]
fn writers_refuse_bad_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let g = VolumeGeometry {
        dims: [2, 2, 2],
        affine: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        xform_code: 4,
    };
    let p = dir.path().join("x.nii.gz");
    assert!(
        write_nifti_3d(&p, &g, &[0.0; 7], &NiftiWriteOptions::default())
            .unwrap_err()
            .to_string()
            .contains("need 8 values")
    );
    assert!(write_nifti_4d(&p, &g, 0.0, &[0.0; 16], &NiftiWriteOptions::default()).is_err());
    assert!(write_nifti_4d(&p, &g, 1.0, &[0.0; 12], &NiftiWriteOptions::default()).is_err());
    let mut flat = g.clone();
    flat.affine[2][2] = 0.0;
    assert!(write_nifti_3d(&p, &flat, &[0.0; 8], &NiftiWriteOptions::default()).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn truncated_files_give_nifti_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(common::fixture(
        "data/formats/nibabel-5.4.2/tests_data/example4d.nii.gz",
    ))
    .unwrap();
    let half = dir.path().join("half.nii.gz");
    std::fs::write(&half, &src[..src.len() / 2]).unwrap();
    // the header is intact: header-only reading works, whole-image reading fails cleanly
    assert_eq!(read_nifti_header(&half).unwrap().shape(), [128, 96, 24, 2]);
    let e = read_nifti_volume(&half).unwrap_err();
    assert!(
        matches!(&e, Error::Nifti { path, .. } if *path == half),
        "{e}"
    );
    let stub = dir.path().join("stub.nii.gz");
    std::fs::write(&stub, &src[..40]).unwrap();
    let e = read_nifti_header(&stub).unwrap_err();
    assert!(
        matches!(&e, Error::Nifti { path, .. } if *path == stub),
        "{e}"
    );
    let raw = std::fs::read(common::fixture(
        "data/formats/nibabel-5.4.2/tests_data/functional.nii",
    ))
    .unwrap();
    let cut = dir.path().join("cut.nii");
    std::fs::write(&cut, &raw[..raw.len() - 100]).unwrap();
    let e = read_nifti_volume(&cut).unwrap_err();
    assert!(
        e.to_string().contains("truncated") && e.to_string().contains("cut.nii"),
        "{e}"
    );
    let n2 = std::fs::read(common::fixture(
        "data/formats/nibabel-5.4.2/tests_data/example_nifti2.nii.gz",
    ))
    .unwrap();
    let cut2 = dir.path().join("cut2.nii.gz");
    std::fs::write(&cut2, &n2[..n2.len() * 3 / 4]).unwrap();
    assert!(matches!(read_nifti_volume(&cut2), Err(Error::Nifti { .. })));
    let e = parse_nifti_header(&[0u8; 10], Path::new("m.nii")).unwrap_err();
    assert!(e.to_string().contains("not a NIfTI file"), "{e}");
}
