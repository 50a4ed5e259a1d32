//! What the BIDS-App writes is what the toolbox computes: on the example's movie run, the
//! predicted BOLD equals `tribe features` (text, audio, video) plus `tribe encode` on the same
//! stimulus, volume k against prediction row max(k − 5, 0) (DESIGN.md §5; TR = 1 s, no slice
//! timing), bit for bit. Both paths are the real binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ok(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn load_f32(path: &Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(key).unwrap();
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn participant_output_equals_features_plus_encode() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let models = root().join("examples/models");
    let stim = root().join("examples/bids/stimuli/movie");
    let out = d.path().join("out");
    ok(Command::new(env!("CARGO_BIN_EXE_tribe-bids"))
        .arg(root().join("examples/bids"))
        .arg(&out)
        .args([
            "participant",
            "--participant-label",
            "01",
            "--task-label",
            "movie",
        ])
        .arg("--models-dir")
        .arg(&models)
        .arg("-w")
        .arg(d.path().join("work")));

    // The toolbox: one 100 s segment from the movie's onset (0 s), each modality on its own.
    let mut feats = Vec::new();
    for (m, model, input) in [
        ("text", "Llama-3.2-3B", "alice_testsrc2_words.tsv"),
        ("audio", "w2v-bert-2.0", "alice_testsrc2.mp4"),
        ("video", "vjepa2-vitg-fpc64-256", "alice_testsrc2.mp4"),
    ] {
        let f = d.path().join(format!("{m}.safetensors"));
        ok(Command::new(env!("CARGO_BIN_EXE_tribe"))
            .args(["features", m, "--start", "0", "--duration", "100"])
            .arg("--model")
            .arg(models.join(model))
            .arg("--input")
            .arg(stim.join(input))
            .arg("--out")
            .arg(&f));
        let (shape, data) = load_f32(&f, m);
        assert_eq!(shape.len(), 3, "{m}: (layers, dim, bins)");
        assert_eq!(shape[2], 200, "{m}: 100 s at 2 Hz");
        let mut batched = vec![1];
        batched.extend(shape);
        feats.push((m, batched, data));
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = feats
        .iter()
        .map(|(m, s, v)| {
            (
                m.to_string(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(m, s, b)| {
            (
                m.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let features = d.path().join("features.safetensors");
    std::fs::write(&features, safetensors::serialize(views, None).unwrap()).unwrap();
    let pred = d.path().join("pred.safetensors");
    ok(Command::new(env!("CARGO_BIN_EXE_tribe"))
        .arg("encode")
        .arg("--checkpoint")
        .arg(models.join("tribev2"))
        .arg("--features")
        .arg(&features)
        .arg("--out")
        .arg(&pred));
    let (shape, rows) = load_f32(&pred, "prediction");
    assert_eq!(shape, vec![1, 20484, 100]);
    let row = |r: usize, v: usize| rows[v * 100 + r];

    let func = out.join("sub-01/func");
    let mut compared = 0;
    for (h, offset) in [("L", 0usize), ("R", 10242)] {
        let img = tribe_bids::formats::read_gifti(&func.join(format!(
            "sub-01_task-movie_hemi-{h}_space-fsaverage5_desc-predicted_bold.func.gii"
        )))
        .unwrap();
        assert_eq!(img.arrays.len(), 24, "one volume per NIfTI volume");
        for (k, a) in img.arrays.iter().enumerate() {
            let r = k.saturating_sub(5);
            let vol = a.data.as_f32().expect("float32 volumes");
            let worst = vol
                .iter()
                .enumerate()
                .map(|(v, x)| (x - row(r, offset + v)).abs())
                .fold(0f32, f32::max);
            assert_eq!(worst, 0.0, "hemi-{h} volume {k} vs row {r}");
            compared += 1;
        }
    }
    assert_eq!(compared, 48);
}
