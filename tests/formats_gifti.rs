//! GIFTI parity with nibabel (the oracle) on every real file we vendor, on generated files
//! covering every encoding x byte order x index order x data type, and on our own outputs
//! (nibabel and gifticlib's `gifti_tool` must read them back with identical values).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tribe_bids::Error;
use tribe_bids::formats::gifti::{ArrayData, DataArray, Encoding, GiftiImage, Hemisphere, Label};
use tribe_bids::formats::{
    DataType, GiftiTimeSeriesWriter, Intent, TimeSeriesOptions, read_gifti, write_gifti,
    write_gifti_time_series,
};

/// nibabel's view of each file: metadata, labels, and per array the intent, dtype, shape,
/// metadata, coordinate system and a sha256 of the C-order little-endian values.
const ORACLE: &str = r#"
import sys, json, hashlib, numpy as np, nibabel as nib
hx = lambda a: np.asarray(a, '<f8').tobytes().hex()  # exact floats through JSON
out = []
for f in sys.argv[1:]:
    g = nib.load(f)
    arrays = []
    for d in g.darrays:
        a = np.ascontiguousarray(d.data)
        le = a.astype(a.dtype.newbyteorder('<'))
        cs = d.coordsys
        arrays.append(dict(
            intent=int(d.intent), dtype=le.dtype.str, shape=list(a.shape),
            meta=[[k, v] for k, v in d.meta.items()],
            coordsys=None if cs is None else dict(ds=int(cs.dataspace), xs=int(cs.xformspace),
                                                  xform=hx(np.asarray(cs.xform, float).ravel())),
            sha=hashlib.sha256(le.tobytes()).hexdigest()))
    labels = [[int(l.key), l.label, None if l.red is None else hx([l.red, l.green, l.blue, l.alpha])]
              for l in g.labeltable.labels]
    out.append(dict(file=f, meta=[[k, v] for k, v in g.meta.items()], labels=labels, arrays=arrays))
print(json.dumps(out))
"#;

fn oracle(files: &[PathBuf]) -> Vec<Value> {
    let args: Vec<String> = files
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::run_python(ORACLE, &args);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn numpy_dtype(dt: DataType) -> &'static str {
    match dt {
        DataType::Uint8 => "|u1",
        DataType::Int8 => "|i1",
        DataType::Int16 => "<i2",
        DataType::Uint16 => "<u2",
        DataType::Int32 => "<i4",
        DataType::Uint32 => "<u4",
        DataType::Int64 => "<i8",
        DataType::Uint64 => "<u8",
        DataType::Float32 => "<f4",
        DataType::Float64 => "<f8",
    }
}

fn sha(a: &ArrayData) -> String {
    hex::encode(Sha256::digest(a.to_le_bytes()))
}

/// Floats the oracle sent as little-endian f64 hex (JSON text would not be bit-exact here).
fn unhex(v: &Value) -> Vec<f64> {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Compare our reading of `img` with nibabel's dump `o`; returns the number of values compared.
fn assert_same(img: &GiftiImage, o: &Value) -> usize {
    let file = o["file"].as_str().unwrap();
    assert_eq!(img.meta.0, pairs(&o["meta"]), "{file}: file metadata");
    let labels = o["labels"].as_array().unwrap();
    assert_eq!(img.labels.len(), labels.len(), "{file}: label count");
    for (l, ol) in img.labels.iter().zip(labels) {
        assert_eq!(l.key as i64, ol[0].as_i64().unwrap(), "{file}: label key");
        assert_eq!(l.name, ol[1].as_str().unwrap(), "{file}: label name");
        match (&l.rgba, ol[2].is_null()) {
            (None, true) => {}
            (Some(c), false) => {
                let oc = unhex(&ol[2]);
                assert_eq!(
                    c.to_vec(),
                    oc.iter().map(|&y| y as f32).collect::<Vec<_>>(),
                    "{file}: label colour"
                );
            }
            (a, b) => panic!("{file}: label colour {a:?} vs {b:?}"),
        }
    }
    let arrays = o["arrays"].as_array().unwrap();
    assert_eq!(img.arrays.len(), arrays.len(), "{file}: DataArray count");
    let mut n = 0;
    for (i, (a, oa)) in img.arrays.iter().zip(arrays).enumerate() {
        assert_eq!(
            a.intent.0 as i64,
            oa["intent"].as_i64().unwrap(),
            "{file}[{i}]: intent"
        );
        assert_eq!(
            numpy_dtype(a.datatype()),
            oa["dtype"].as_str().unwrap(),
            "{file}[{i}]: dtype"
        );
        let shape: Vec<usize> = oa["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(a.dims, shape, "{file}[{i}]: shape");
        assert_eq!(a.meta.0, pairs(&oa["meta"]), "{file}[{i}]: metadata");
        let cs = &oa["coordsys"];
        match a.coord_systems.last() {
            Some(c) => {
                let (ds, xs) = c.codes();
                assert_eq!(
                    ds.map(i64::from),
                    cs["ds"].as_i64(),
                    "{file}[{i}]: DataSpace"
                );
                assert_eq!(
                    xs.map(i64::from),
                    cs["xs"].as_i64(),
                    "{file}[{i}]: TransformedSpace"
                );
                let xf = unhex(&cs["xform"]);
                assert_eq!(
                    c.matrix.iter().flatten().copied().collect::<Vec<_>>(),
                    xf,
                    "{file}[{i}]: MatrixData"
                );
            }
            None => assert!(
                cs.is_null() || (cs["ds"] == 0 && cs["xs"] == 0),
                "{file}[{i}]: coordsys {cs}"
            ),
        }
        assert_eq!(
            sha(&a.data),
            oa["sha"].as_str().unwrap(),
            "{file}[{i}]: values differ from nibabel"
        );
        n += a.data.len();
    }
    n
}

fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| keep(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

#[test]
fn every_vendored_gifti_matches_nibabel() {
    let mut files = list(
        &common::fixture("data/formats/nibabel-5.4.2/gifti_tests_data"),
        |n| n.contains(".gii"),
    );
    files.extend(list(&common::fixture("../../assets/fsaverage5"), |n| {
        n.ends_with(".gii.gz")
    }));
    assert_eq!(files.len(), 11 + 18, "fixture set changed: {files:?}");
    let dumps = oracle(&files);
    let mut values = 0;
    for (f, o) in files.iter().zip(&dumps) {
        let img = read_gifti(f).unwrap_or_else(|e| panic!("{e}"));
        values += assert_same(&img, o);
    }
    // every value of 29 files compared bit for bit
    assert_eq!(values, 1_500_279);
}

#[test]
fn fsaverage5_meshes_have_the_expected_topology() {
    for hemi in ["left", "right"] {
        let g = read_gifti(&common::fixture(&format!(
            "../../assets/fsaverage5/pial_{hemi}.gii.gz"
        )))
        .unwrap();
        let pts = g.arrays_with_intent(Intent::POINTSET).next().unwrap();
        let tri = g.arrays_with_intent(Intent::TRIANGLE).next().unwrap();
        assert_eq!(pts.dims, [10242, 3]);
        assert_eq!(tri.dims, [20480, 3]);
        let t = tri.data.as_i32().unwrap();
        assert!(t.iter().all(|&v| (0..10242).contains(&v)));
    }
}

/// Generated files: 4 encodings x 2 byte orders x 2 index orders, each with one 3x4 array of
/// each of the 10 data types (extreme values, -0.0, subnormals), base64 wrapped at 76 columns.
const GENERATE: &str = r#"
import numpy as np, base64, zlib, os, sys
out = sys.argv[1]
rng = np.random.default_rng(0)
types = [('UINT8','u1'),('INT8','i1'),('INT16','i2'),('UINT16','u2'),('INT32','i4'),('UINT32','u4'),
         ('INT64','i8'),('UINT64','u8'),('FLOAT32','f4'),('FLOAT64','f8')]
def wrap(s): return '\n'.join(s[i:i+76] for i in range(0, len(s), 76))
for enc in ['ASCII', 'Base64Binary', 'GZipBase64Binary', 'ExternalFileBinary']:
  for endian in ['LittleEndian', 'BigEndian']:
    for order in ['RowMajorOrder', 'ColumnMajorOrder']:
      name = f'{enc}_{endian}_{order}'
      ext = open(os.path.join(out, name + '.dat'), 'wb') if enc == 'ExternalFileBinary' else None
      parts = []
      for tname, code in types:
        dt = np.dtype(code)
        if dt.kind == 'f':
          a = (rng.standard_normal((3, 4)) * 1e3).astype(dt)
          a.flat[0] = -0.0; a.flat[1] = np.finfo(dt).smallest_subnormal; a.flat[2] = np.finfo(dt).max
        else:
          info = np.iinfo(dt)
          a = rng.integers(info.min, info.max, size=(3, 4), dtype=dt, endpoint=True)
          a.flat[0] = info.min; a.flat[1] = info.max
        npo = 'C' if order == 'RowMajorOrder' else 'F'
        raw = a.astype(dt.newbyteorder('<' if endian == 'LittleEndian' else '>')).tobytes(order=npo)
        extra = ''
        if enc == 'ASCII':
          data = '\n'.join(repr(x) for x in a.ravel(order=npo).tolist())
        elif enc == 'Base64Binary':
          data = wrap(base64.b64encode(raw).decode())
        elif enc == 'GZipBase64Binary':
          data = wrap(base64.b64encode(zlib.compress(raw)).decode())
        else:
          extra = f' ExternalFileName="{name}.dat" ExternalFileOffset="{ext.tell()}"'
          ext.write(raw); data = ''
        parts.append(f'<DataArray Intent="NIFTI_INTENT_NONE" DataType="NIFTI_TYPE_{tname}" '
                     f'ArrayIndexingOrder="{order}" Dimensionality="2" Dim0="3" Dim1="4" '
                     f'Encoding="{enc}" Endian="{endian}"{extra}>\n<MetaData/>\n<Data>{data}</Data>\n</DataArray>')
      if ext: ext.close()
      with open(os.path.join(out, name + '.gii'), 'w') as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<GIFTI Version="1.0" NumberOfDataArrays="10">\n'
                + '\n'.join(parts) + '\n</GIFTI>\n')
"#;

#[test]
fn every_encoding_order_and_type_matches_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    common::run_python(GENERATE, &[dir.path().to_str().unwrap()]);
    let files = list(dir.path(), |n| n.ends_with(".gii"));
    assert_eq!(files.len(), 16);
    let dumps = oracle(&files);
    for (f, o) in files.iter().zip(&dumps) {
        let img = read_gifti(f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.arrays.len(), 10);
        let types: Vec<DataType> = img.arrays.iter().map(|a| a.datatype()).collect();
        assert_eq!(types.len(), 10);
        assert_same(&img, o);
    }
}

fn gifti_tool(path: &Path) -> String {
    let out = Command::new("gifti_tool")
        .args(["-infiles"])
        .arg(path)
        .args(["-gifti_test", "-show_gifti"])
        .output();
    let out = out.expect("gifti_tool (Debian package gifti-bin) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "gifti_tool failed on {}:\n{text}",
        path.display()
    );
    assert!(text.contains("is VALID"), "gifti_tool: {text}");
    assert!(!text.contains("** "), "gifti_tool warned: {text}");
    text
}

#[test]
fn time_series_reads_back_in_nibabel_and_gifti_tool() {
    let dir = tempfile::tempdir().unwrap();
    let (nv, nt) = (642, 12);
    let mut data: Vec<f32> = (0..nv * nt)
        .map(|i| ((i as f32) * 0.37).sin() * 100.0 + (i % 7) as f32)
        .collect();
    data[0] = -0.0;
    data[1] = f32::MIN_POSITIVE / 4.0;
    data[2] = f32::MAX;
    let path = dir
        .path()
        .join("sub-01_task-x_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii");
    let mut opts = TimeSeriesOptions::new(1.49);
    opts.extra_meta
        .insert("Description", "predicted <BOLD> & more");
    // streaming, in uneven batches
    let mut w = GiftiTimeSeriesWriter::create(&path, Hemisphere::Left, nv, nt, &opts).unwrap();
    w.push_volumes(&data[..nv * 5]).unwrap();
    w.push_volumes(&data[nv * 5..nv * 6]).unwrap();
    w.push_volumes(&data[nv * 6..]).unwrap();
    w.finish().unwrap();

    let code = r#"
import sys, json, hashlib, numpy as np, nibabel as nib
g = nib.load(sys.argv[1]); a = g.agg_data()
print(json.dumps(dict(shape=list(a.shape), dtype=a.dtype.str,
  sha=hashlib.sha256(np.ascontiguousarray(a.T).astype('<f4').tobytes()).hexdigest(),
  meta=dict(g.meta), intents=sorted({int(d.intent) for d in g.darrays}),
  enc=sorted({int(d.encoding) for d in g.darrays}), step=[d.meta['TimeStep'] for d in g.darrays])))
"#;
    let o: Value =
        serde_json::from_str(&common::run_python(code, &[path.to_str().unwrap()])).unwrap();
    assert_eq!(o["shape"], serde_json::json!([nv, nt]));
    assert_eq!(o["dtype"], "<f4");
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(
        o["sha"],
        hex::encode(Sha256::digest(&bytes)),
        "nibabel reads different values"
    );
    assert_eq!(o["meta"]["AnatomicalStructurePrimary"], "CortexLeft");
    assert_eq!(o["meta"]["Description"], "predicted <BOLD> & more");
    assert_eq!(o["intents"], serde_json::json!([2001]));
    assert_eq!(o["enc"], serde_json::json!([3]), "GZipBase64Binary");
    assert!(
        o["step"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "1490.000000")
    );

    let text = gifti_tool(&path);
    assert_eq!(
        text.matches("intent   2001 = NIFTI_INTENT_TIME_SERIES")
            .count(),
        nt
    );
    assert_eq!(
        text.matches("dims          = 642, 0, 0, 0, 0, 0").count(),
        nt
    );
    assert!(text.contains("numDA      = 12"));

    // Connectome Workbench reads it as a left-cortex metric with one map per volume
    let out = Command::new("wb_command")
        .arg("-file-information")
        .arg(&path)
        .output();
    let out = out.expect("wb_command (Debian package connectome-workbench) must be installed");
    let wb = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wb_command: {wb}");
    for needle in [
        "Type:                     Metric",
        "Structure:                CortexLeft",
        "Number of Maps:           12",
        "Number of Vertices:       642",
    ] {
        assert!(
            wb.contains(needle),
            "wb_command output lacks '{needle}':\n{wb}"
        );
    }

    // the one-call path writes the same bytes
    let p2 = dir.path().join("b.func.gii");
    write_gifti_time_series(&p2, Hemisphere::Left, nv, &data, &opts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&p2).unwrap());
}

#[test]
fn maps_labels_and_meshes_round_trip_through_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    // statmaps with NONE and ZSCORE intents
    let z: Vec<f32> = (0..10242).map(|i| (i as f32 / 100.0).cos() * 3.0).collect();
    let mut stat = GiftiImage::for_hemisphere(Hemisphere::Right);
    stat.arrays
        .push(DataArray::vertex_map(Intent::ZSCORE, z.clone()).with_meta("Name", "z"));
    stat.arrays.push(DataArray::vertex_map(
        Intent::NONE,
        z.iter().map(|x| x * 2.0).collect(),
    ));
    let p_stat = dir.path().join("stat.func.gii");
    write_gifti(&p_stat, &stat).unwrap();
    // a label map with its table, ASCII-encoded
    let mut lab = GiftiImage::for_hemisphere(Hemisphere::Left);
    lab.labels = vec![
        Label {
            key: 0,
            name: "???".into(),
            rgba: Some([0.0, 0.0, 0.0, 0.0]),
        },
        Label {
            key: 7,
            name: "network <7>".into(),
            rgba: Some([0.25, 0.5, 0.75, 1.0]),
        },
    ];
    let mut la = DataArray::new(
        Intent::LABEL,
        vec![6],
        ArrayData::I32(vec![0, 7, 7, 0, 7, 0]),
    );
    la.encoding = Encoding::Ascii;
    lab.arrays.push(la);
    let p_lab = dir.path().join("x.label.gii");
    write_gifti(&p_lab, &lab).unwrap();
    // a real mesh (pointset with its coordinate system + triangles), re-encoded by us
    let mesh_in = common::fixture("../../assets/fsaverage5/white_left.gii.gz");
    let mut mesh = read_gifti(&mesh_in).unwrap();
    for a in &mut mesh.arrays {
        a.encoding = Encoding::GZipBase64Binary;
    }
    let p_mesh = dir.path().join("white.surf.gii");
    write_gifti(&p_mesh, &mesh).unwrap();

    let files = [p_stat.clone(), p_lab.clone(), p_mesh.clone(), mesh_in];
    let dumps = oracle(&files);
    for (f, o) in files.iter().zip(&dumps) {
        assert_same(&read_gifti(f).unwrap(), o);
    }
    // what nibabel sees in our files equals what nibabel sees in the originals
    assert_eq!(dumps[2]["arrays"], dumps[3]["arrays"]);
    assert_eq!(dumps[0]["arrays"][0]["intent"], 5);
    assert_eq!(
        dumps[0]["meta"][0],
        serde_json::json!(["AnatomicalStructurePrimary", "CortexRight"])
    );
    assert_eq!(dumps[1]["labels"][1][1], "network <7>");
    assert_eq!(unhex(&dumps[1]["labels"][1][2]), [0.25, 0.5, 0.75, 1.0]);

    gifti_tool(&p_stat);
    gifti_tool(&p_lab);
    let text = gifti_tool(&p_mesh);
    assert!(text.contains("dims          = 10242, 3, 0, 0, 0, 0"));
    assert!(text.contains("dims          = 20480, 3, 0, 0, 0, 0"));
    assert!(text.contains("numCS      = 1"));
}

#[test]
fn writer_refuses_inconsistent_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = GiftiImage::for_hemisphere(Hemisphere::Left);
    img.arrays.push(DataArray::new(
        Intent::SHAPE,
        vec![3, 2],
        ArrayData::F32(vec![1.0; 5]),
    ));
    let e = write_gifti(&dir.path().join("bad.shape.gii"), &img).unwrap_err();
    assert!(
        matches!(e, Error::Gifti { .. }) && e.to_string().contains("do not match its 5 values"),
        "{e}"
    );
    let mut ext = GiftiImage::default();
    let mut a = DataArray::vertex_map(Intent::NONE, vec![1.0]);
    a.encoding = Encoding::ExternalFileBinary;
    ext.arrays.push(a);
    assert!(write_gifti(&dir.path().join("e.gii"), &ext).is_err());
    let e = write_gifti_time_series(
        &dir.path().join("t.func.gii"),
        Hemisphere::Left,
        4,
        &[0.0; 6],
        &TimeSeriesOptions::new(1.0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("whole number"), "{e}");
    let e = write_gifti_time_series(
        &dir.path().join("t.func.gii"),
        Hemisphere::Left,
        2,
        &[0.0; 4],
        &TimeSeriesOptions::new(-1.0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("repetition time"), "{e}");
    // nothing half-written is left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn expect_gifti_error(bytes: &[u8], name: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    match read_gifti(&p) {
        Err(e @ Error::Gifti { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name the file: {msg}");
            assert!(msg.contains(needle), "expected '{needle}' in: {msg}");
        }
        other => panic!("{name}: expected Error::Gifti, got {other:?}"),
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let real = std::fs::read(common::fixture(
        "data/formats/nibabel-5.4.2/gifti_tests_data/task.func.gii",
    ))
    .unwrap();
    expect_gifti_error(&real[..real.len() / 2], "truncated.func.gii", "truncated");
    expect_gifti_error(&real[..real.len() - 10], "cut_end.func.gii", "truncated");
    let gz = std::fs::read(common::fixture("../../assets/fsaverage5/sulc_left.gii.gz")).unwrap();
    expect_gifti_error(
        &gz[..gz.len() / 2],
        "truncated.gii.gz",
        "does not decompress",
    );
    let text = String::from_utf8(real.clone()).unwrap();
    // corrupt the first base64 payload
    let at = text.find("<Data>").unwrap() + 6;
    let mut bad = text.clone();
    bad.replace_range(at..at + 4, "@@@@");
    expect_gifti_error(bad.as_bytes(), "bad_b64.func.gii", "bad base64");
    // valid base64 of a zlib stream that is not the one promised
    let mut inflated = text.clone();
    inflated.replace_range(at..at + 8, "AAAAAAAA");
    expect_gifti_error(inflated.as_bytes(), "bad_zlib.func.gii", "DataArray 0");
    // wrong byte count: claim more vertices than stored
    expect_gifti_error(
        text.replacen("Dim0=\"642\"", "Dim0=\"643\"", 1).as_bytes(),
        "count.func.gii",
        "wrong byte count",
    );
    expect_gifti_error(
        text.replacen("Encoding=\"GZipBase64Binary\"", "Encoding=\"Hex\"", 1)
            .as_bytes(),
        "enc.func.gii",
        "unknown Encoding 'Hex'",
    );
    expect_gifti_error(
        text.replacen("NIFTI_TYPE_FLOAT32", "NIFTI_TYPE_COMPLEX64", 1)
            .as_bytes(),
        "dt.func.gii",
        "unsupported DataType",
    );
    expect_gifti_error(
        text.replacen("NIFTI_INTENT_TIME_SERIES", "NIFTI_INTENT_NOPE", 1)
            .as_bytes(),
        "intent.func.gii",
        "unknown Intent",
    );
    expect_gifti_error(b"\x00\xff\xfe binary", "binary.gii", "not UTF-8");
    expect_gifti_error(b"<html><body/></html>", "html.gii", "expected <GIFTI>");
    expect_gifti_error(b"", "empty.gii", "no <GIFTI> element");
    // external data missing / short
    let ext = std::fs::read_to_string(common::fixture(
        "data/formats/nibabel-5.4.2/gifti_tests_data/external.gii",
    ))
    .unwrap();
    expect_gifti_error(
        ext.as_bytes(),
        "external.gii",
        "cannot open external data file",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("external.dat"), [0u8; 100]).unwrap();
    std::fs::write(dir.path().join("external.gii"), &ext).unwrap();
    let e = read_gifti(&dir.path().join("external.gii")).unwrap_err();
    assert!(e.to_string().contains("wrong byte count"), "{e}");
}
