//! Checkpoint loading: the release format, the strict checks against the config, and files that
//! must be refused (each with the error a user can act on).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use tribe_bids::Error;
use tribe_bids::model::checkpoint::Checkpoint;
use tribe_bids::model::{ModelFiles, ModelOptions, TribeModel};

fn tiny(file: &str) -> PathBuf {
    common::fixture("fmri_encoder/tribe-tiny").join(file)
}

/// A model folder in a temp dir: the fixture config plus `weights` bytes as best.ckpt (or
/// model.safetensors when `name` says so).
fn folder(name: &str, weights: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(tiny("config.yaml"), d.path().join("config.yaml")).unwrap();
    std::fs::write(d.path().join(name), weights).unwrap();
    d
}

fn load(dir: &Path) -> tribe_bids::Result<TribeModel> {
    TribeModel::load(dir, &Device::Cpu, ModelOptions::default())
}

/// Rebuild the fixture best.ckpt with its data.pkl replaced by `f(data.pkl)`.
fn ckpt_with_pickle(f: impl Fn(Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut src = zip::ZipArchive::new(std::fs::File::open(tiny("best.ckpt")).unwrap()).unwrap();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..src.len() {
            let mut e = src.by_index(i).unwrap();
            let name = e.name().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name.ends_with("data.pkl") {
                data = f(data);
            }
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn replace_once(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let pos = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = hay[..pos].to_vec();
    out.extend_from_slice(to);
    out.extend_from_slice(&hay[pos + from.len()..]);
    out
}

/// Write a safetensors file from (name, tensor) pairs (F32 or F16).
fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, t) in tensors {
        let start = data.len();
        let dtype = match t.dtype() {
            DType::F32 => {
                for x in t.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
                    data.extend_from_slice(&x.to_le_bytes());
                }
                "F32"
            }
            DType::F16 => {
                for x in t.flatten_all().unwrap().to_vec1::<half::f16>().unwrap() {
                    data.extend_from_slice(&x.to_le_bytes());
                }
                "F16"
            }
            other => panic!("{other:?}"),
        };
        header.insert(name.clone(), serde_json::json!({"dtype": dtype, "shape": t.dims(), "data_offsets": [start, data.len()]}));
    }
    let h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn fixture_tensors() -> Vec<(String, Tensor)> {
    let m: HashMap<String, Tensor> =
        candle_core::safetensors::load(tiny("model.safetensors"), &Device::Cpu).unwrap();
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn release_format_reads_state_dict_and_build_args() {
    let ck = Checkpoint::open(&tiny("best.ckpt")).unwrap();
    assert_eq!(ck.tensors.len(), 36);
    assert_eq!(
        ck.tensors[0].name, "time_pos_embed",
        "the 'model.' prefix is stripped"
    );
    let a = ck.build_args.as_ref().unwrap();
    let dims: Vec<_> = a
        .feature_dims
        .iter()
        .map(|f| (f.name.as_str(), f.layers, f.dim))
        .collect();
    assert_eq!(
        dims,
        vec![("text", 2, 48), ("audio", 2, 16), ("video", 2, 24)]
    );
    assert_eq!((a.n_outputs, a.n_output_timesteps), (1284, 10));
    assert!(
        ck.extras
            .iter()
            .any(|(k, v)| k == "global_step" && v == "123")
    );
    // The same numbers as the safetensors copy, tensor by tensor.
    let mut ck = ck;
    let st = fixture_tensors();
    for (name, want) in &st {
        let got = ck.read_f32(name, &Device::Cpu).unwrap();
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name}");
    }
}

#[test]
fn models_tiny_tribev2_loads() {
    let m = load(&common::fixture("models-tiny/tribev2")).unwrap();
    assert_eq!(m.n_outputs(), 20484);
    assert_eq!(m.n_output_timesteps(), 100);
    let dims: Vec<_> = m
        .feature_dims()
        .iter()
        .map(|f| (f.name.as_str(), f.layers, f.dim))
        .collect();
    assert_eq!(
        dims,
        vec![("text", 2, 64), ("audio", 2, 32), ("video", 1, 32)]
    );
    assert_eq!(m.timing().window_bins(), 200);
    // One window of audio only runs and has the contract's shape.
    let x = Tensor::randn(0f32, 1.0, (1, 2, 32, 200), &Device::Cpu).unwrap();
    let y = m
        .forward(&HashMap::from([("audio".to_string(), x)]))
        .unwrap();
    assert_eq!(y.dims(), &[1, 20484, 100]);
}

#[test]
fn truncated_zip_is_refused() {
    let bytes = std::fs::read(tiny("best.ckpt")).unwrap();
    let d = folder("best.ckpt", &bytes[..bytes.len() / 2]);
    let e = load(d.path()).unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn truncated_storage_entry_is_refused() {
    // A zip whose central directory is intact but one tensor's bytes are cut short.
    let mut src = zip::ZipArchive::new(std::fs::File::open(tiny("best.ckpt")).unwrap()).unwrap();
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..src.len() {
            let mut e = src.by_index(i).unwrap();
            let name = e.name().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if name.ends_with("/data/0") {
                data.truncate(100);
            }
            w.start_file(name, opts).unwrap();
            w.write_all(&data).unwrap();
        }
        w.finish().unwrap();
    }
    let d = folder("best.ckpt", &buf.into_inner());
    let e = load(d.path()).unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(
        e.to_string().contains("time_pos_embed"),
        "names the tensor: {e}"
    );
}

#[test]
fn pickle_importing_a_callable_is_refused_not_run() {
    let marker = tempfile::tempdir().unwrap();
    let target = marker.path().join("pwned");
    let cmd = format!("touch {}", target.display());
    // What pickle.dumps(obj) writes for an object whose __reduce__ is (posix.system, (cmd,)):
    // GLOBAL 'posix system', the argument tuple, REDUCE, STOP (protocol 2).
    let mut evil = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    evil.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    evil.extend_from_slice(cmd.as_bytes());
    evil.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    // The same call hidden as a value inside an otherwise plain dict: {'state_dict': system(cmd)}.
    let mut nested = b"\x80\x02}q\x00(X\x0a\x00\x00\x00state_dict".to_vec();
    nested.extend_from_slice(&evil[2..evil.len() - 1]);
    nested.extend_from_slice(b"u.");
    for pkl in [evil, nested] {
        let bytes = ckpt_with_pickle(|_| pkl.clone());
        let d = folder("best.ckpt", &bytes);
        let e = load(d.path()).unwrap_err();
        assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
        assert!(
            e.to_string().contains("posix.system"),
            "names the refused global: {e}"
        );
    }
    // Also a builtins.eval via the protocol-4 STACK_GLOBAL opcode.
    let sg = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x041+1\x85R.".to_vec();
    let d = folder("best.ckpt", &ckpt_with_pickle(|_| sg.clone()));
    let e = load(d.path()).unwrap_err();
    assert!(e.to_string().contains("builtins.eval"), "{e}");
    assert!(!target.exists(), "nothing was executed");
}

#[test]
fn wrong_shape_names_tensor_expected_and_found() {
    // projectors.text.bias is stored as (64,): BINPERSID, offset 0, size (64,) -> make it (63,).
    let bytes = ckpt_with_pickle(|p| {
        let at = p
            .windows(26)
            .position(|w| w == b"model.projectors.text.bias")
            .unwrap();
        let mut tail = replace_once(&p[at..], b"QK\x00K\x40\x85", b"QK\x00K\x3f\x85");
        let mut out = p[..at].to_vec();
        out.append(&mut tail);
        out
    });
    let d = folder("best.ckpt", &bytes);
    match load(d.path()).unwrap_err() {
        Error::ShapeMismatch {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "projectors.text.bias");
            assert_eq!((expected, found), (vec![64], vec![63]));
        }
        e => panic!("expected ShapeMismatch, got {e}"),
    }
    // The same through safetensors.
    let mut t = fixture_tensors();
    for (n, v) in t.iter_mut() {
        if n == "low_rank_head.weight" {
            *v = v.narrow(0, 0, 31).unwrap();
        }
    }
    let d = folder("model.safetensors", &safetensors_bytes(&t));
    let e = load(d.path()).unwrap_err();
    assert!(
        matches!(&e, Error::ShapeMismatch { name, .. } if name == "low_rank_head.weight"),
        "{e}"
    );
    assert!(
        e.to_string().contains("[32, 192]") && e.to_string().contains("[31, 192]"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let bytes = ckpt_with_pickle(|p| {
        replace_once(
            &p,
            b"model.encoder.final_norm.g",
            b"model.encoder.final_norm.G",
        )
    });
    let d = folder("best.ckpt", &bytes);
    let e = load(d.path()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "encoder.final_norm.g"),
        "{e}"
    );
    let t: Vec<_> = fixture_tensors()
        .into_iter()
        .filter(|(n, _)| n != "encoder.layers.1.1.ff.2.bias")
        .collect();
    let d = folder("model.safetensors", &safetensors_bytes(&t));
    let e = load(d.path()).unwrap_err();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "encoder.layers.1.1.ff.2.bias"),
        "{e}"
    );
}

#[test]
fn unexpected_tensor_is_refused() {
    let mut t = fixture_tensors();
    t.push((
        "encoder.layers.4.0.0.g".into(),
        Tensor::ones(1, DType::F32, &Device::Cpu).unwrap(),
    ));
    let d = folder("model.safetensors", &safetensors_bytes(&t));
    let e = load(d.path()).unwrap_err();
    assert!(
        matches!(&e, Error::UnexpectedTensor { name, .. } if name == "encoder.layers.4.0.0.g"),
        "{e}"
    );
}

#[test]
fn wrong_dtype_is_refused() {
    let mut t = fixture_tensors();
    for (n, v) in t.iter_mut() {
        if n == "encoder.final_norm.g" {
            *v = v.to_dtype(DType::F16).unwrap();
        }
    }
    let d = folder("model.safetensors", &safetensors_bytes(&t));
    match load(d.path()).unwrap_err() {
        Error::DtypeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(
                (name.as_str(), expected.as_str(), found.as_str()),
                ("encoder.final_norm.g", "F32", "F16")
            )
        }
        e => panic!("expected DtypeMismatch, got {e}"),
    }
}

#[test]
fn config_without_brain_model_config_is_refused() {
    let d = folder("best.ckpt", &std::fs::read(tiny("best.ckpt")).unwrap());
    let text = std::fs::read_to_string(tiny("config.yaml")).unwrap();
    let cut: String = {
        // Drop the brain_model_config block (up to the next top-level key).
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with("brain_model_config:") {
                skipping = true;
                continue;
            }
            if skipping && !line.starts_with(' ') {
                skipping = false;
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    };
    std::fs::write(d.path().join("config.yaml"), cut).unwrap();
    let e = load(d.path()).unwrap_err();
    assert!(matches!(e, Error::Model { .. }), "{e}");
    assert!(e.to_string().contains("brain_model_config"), "{e}");
}

#[test]
fn not_a_checkpoint_is_refused() {
    let d = folder("best.ckpt", b"this is a text file, not a checkpoint\n");
    let e = load(d.path()).unwrap_err();
    assert!(matches!(e, Error::Checkpoint { .. }), "{e}");
    assert!(e.to_string().contains("not a checkpoint"), "{e}");
    // A legacy (non-zip) torch.save pickle.
    let d = folder("best.ckpt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.");
    let e = load(d.path()).unwrap_err();
    assert!(e.to_string().contains("legacy"), "{e}");
    // A folder with a config but no weights.
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(tiny("config.yaml"), d.path().join("config.yaml")).unwrap();
    assert!(matches!(load(d.path()).unwrap_err(), Error::Model { .. }));
}

#[test]
fn features_with_wrong_d_or_l_are_refused() {
    let m = load(&common::fixture("fmri_encoder/tribe-tiny")).unwrap();
    let run = |name: &str, shape: (usize, usize, usize, usize)| {
        let x = Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap();
        m.forward(&HashMap::from([(name.to_string(), x)]))
            .unwrap_err()
    };
    for (name, shape) in [
        ("text", (1, 2, 47, 20)),
        ("audio", (1, 3, 16, 20)),
        ("video", (1, 1, 48, 20)),
    ] {
        match run(name, shape) {
            Error::FeatureShape { modality, message } => {
                assert_eq!(modality, name);
                assert!(message.contains("expected (B, L="), "{message}");
            }
            e => panic!("{e}"),
        }
    }
    // T beyond the position table, disagreeing T between modalities, nothing present.
    assert!(matches!(
        run("text", (1, 2, 48, 1025)),
        Error::FeatureShape { .. }
    ));
    let a = Tensor::zeros((1, 2, 48, 20), DType::F32, &Device::Cpu).unwrap();
    let b = Tensor::zeros((1, 2, 16, 21), DType::F32, &Device::Cpu).unwrap();
    let e = m
        .forward(&HashMap::from([
            ("text".to_string(), a),
            ("audio".to_string(), b),
        ]))
        .unwrap_err();
    assert!(matches!(e, Error::FeatureShape { .. }), "{e}");
    assert!(matches!(
        m.forward(&HashMap::new()).unwrap_err(),
        Error::FeatureShape { .. }
    ));
}

#[test]
fn subject_index_out_of_range_is_a_usage_error() {
    let files = ModelFiles::locate(&common::fixture("fmri_encoder/tribe-tiny")).unwrap();
    let e = TribeModel::load_files(
        &files,
        &Device::Cpu,
        ModelOptions {
            subject_index: Some(1),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e}");
    let m = TribeModel::load_files(
        &files,
        &Device::Cpu,
        ModelOptions {
            subject_index: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.subject_row(), 0);
}

/// A multi-subject head: a 3-row predictor (2 subjects + the unseen row). Each row gives the
/// prediction of a single-row model built from that row.
#[test]
fn multi_subject_rows_are_selectable() {
    let t = fixture_tensors();
    let w = &t.iter().find(|(n, _)| n == "predictor.weights").unwrap().1;
    let b = &t.iter().find(|(n, _)| n == "predictor.bias").unwrap().1;
    let w3 = Tensor::cat(&[&(w * 0.5).unwrap(), &(w * -1.0).unwrap(), w], 0).unwrap();
    let b3 = Tensor::cat(&[&(b + 0.1).unwrap(), &(b - 0.2).unwrap(), b], 0).unwrap();
    let multi: Vec<_> = t
        .iter()
        .map(|(n, v)| match n.as_str() {
            "predictor.weights" => (n.clone(), w3.clone()),
            "predictor.bias" => (n.clone(), b3.clone()),
            _ => (n.clone(), v.clone()),
        })
        .collect();
    let d = folder("model.safetensors", &safetensors_bytes(&multi));
    let cfg = std::fs::read_to_string(tiny("config.yaml"))
        .unwrap()
        .replace("        n_subjects: 0\n", "        n_subjects: 2\n");
    std::fs::write(d.path().join("config.yaml"), cfg).unwrap();
    let inputs = candle_core::safetensors::load(
        common::fixture("fmri_encoder/cases/all_b2.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let opts = |i| ModelOptions {
        subject_index: i,
        ..Default::default()
    };
    let default = TribeModel::load(d.path(), &Device::Cpu, opts(None)).unwrap();
    assert_eq!(
        default.subject_row(),
        2,
        "the unseen-subject row is n_subjects"
    );
    let y_default = default.forward(&inputs).unwrap();
    let y_unseen = load(&common::fixture("fmri_encoder/tribe-tiny"))
        .unwrap()
        .forward(&inputs)
        .unwrap();
    let maxdiff = |a: &Tensor, b: &Tensor| {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(maxdiff(&y_default, &y_unseen), 0.0);
    let y0 = TribeModel::load(d.path(), &Device::Cpu, opts(Some(0)))
        .unwrap()
        .forward(&inputs)
        .unwrap();
    let y1 = TribeModel::load(d.path(), &Device::Cpu, opts(Some(1)))
        .unwrap()
        .forward(&inputs)
        .unwrap();
    // Row 0 = 0.5*W, bias+0.1: y0 - 0.1 = 0.5*(y - b) + b ... checked through the affine relation
    // y0 - b0 = 0.5 (y - b) per output, with b the unseen bias broadcast over time.
    let bb = b
        .squeeze(0)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let lhs = y0.broadcast_sub(&(&bb + 0.1).unwrap()).unwrap();
    let rhs = (y_unseen.broadcast_sub(&bb).unwrap() * 0.5).unwrap();
    assert!(maxdiff(&lhs, &rhs) < 1e-5);
    let lhs1 = y1.broadcast_sub(&(&bb - 0.2).unwrap()).unwrap();
    let rhs1 = (y_unseen.broadcast_sub(&bb).unwrap() * -1.0).unwrap();
    assert!(maxdiff(&lhs1, &rhs1) < 1e-5);
}
