//! Long audio is cut into independent chunks (SPEC §5.0: 60 s, keeping a cut only if both sides
//! are >= 30 s) and each chunk's 2 Hz features land at its offset on the timeline (SPEC §5.1).
//! Runs a one-layer cut of the tiny Wav2Vec2-BERT (to keep the test fast) on 80, 100, 130 and
//! 150 s of real speech (LibriVox clips repeated).

mod common;

use candle_core::Device;
use common::fixture;
use tribe_bids::features::audio::{AudioExtractor, window};
use tribe_bids::stimulus::audio::{AudioBuffer, ReadMode, decode};

fn speech(seconds: f64) -> AudioBuffer<f32> {
    let dir = fixture("data/stimuli/pocketsphinx-librivox");
    let mut clip = Vec::new();
    for id in ["0870", "0880", "0890", "0920", "0930"] {
        let a = decode::<f32>(
            &dir.join(format!("sense_and_sensibility_01_austen_64kb-{id}.wav")),
            ReadMode::Native,
            0.0,
            None,
        )
        .unwrap();
        assert_eq!(a.sample_rate, 16000);
        clip.extend_from_slice(&a.channels[0]);
    }
    let n = (seconds * 16000.0) as usize;
    let samples: Vec<f32> = clip.iter().cycle().take(n).copied().collect();
    AudioBuffer {
        sample_rate: 16000,
        channels: vec![samples],
    }
}

/// The tiny model with only its first conformer layer, written to `dir`.
fn one_layer_model(dir: &std::path::Path) -> std::path::PathBuf {
    let src = fixture("models-tiny/w2v-bert-2.0");
    let out = dir.join("w2v-bert-1layer");
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        src.join("preprocessor_config.json"),
        out.join("preprocessor_config.json"),
    )
    .unwrap();
    let w = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let kept: std::collections::HashMap<String, candle_core::Tensor> = w
        .into_iter()
        .filter(|(k, _)| !k.starts_with("encoder.layers.") || k.starts_with("encoder.layers.0."))
        .collect();
    candle_core::safetensors::save(&kept, out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn chunks_are_independent_and_placed_at_their_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let ex = AudioExtractor::load(&one_layer_model(tmp.path()), &Device::Cpu).unwrap();
    assert_eq!(ex.layer_groups(), &[vec![0, 1]]);
    let cases: [(f64, &[(f64, f64)]); 4] = [
        (80.0, &[(0.0, 80.0)]),
        (100.0, &[(0.0, 60.0), (60.0, 40.0)]),
        (130.0, &[(0.0, 60.0), (60.0, 70.0)]),
        (150.0, &[(0.0, 60.0), (60.0, 60.0), (120.0, 30.0)]),
    ];
    let (l, d) = (ex.n_layers(), ex.dim());
    for (total, expected) in cases {
        let audio = speech(total);
        let start = 10.0; // the event starts 10 s into the run
        let chunks = ex.event_features(&audio, start).unwrap();
        let got: Vec<(f64, usize)> = chunks.iter().map(|c| (c.start, c.n_bins)).collect();
        let want: Vec<(f64, usize)> = expected
            .iter()
            .map(|(o, du)| (start + o, (2.0 * du) as usize))
            .collect();
        assert_eq!(got, want, "{total} s: chunk starts and bin counts");

        // The run's window covers the event plus 5 s of silence on each side.
        let w = window(&chunks, l, d, start - 5.0, total + 10.0);
        assert_eq!(w.n_bins, (2.0 * (total + 10.0)) as usize);
        let bin = |layer: usize, dim: usize, k: usize| w.data[(layer * d + dim) * w.n_bins + k];
        // Before and after the event: zeros.
        for k in (0..10).chain(w.n_bins - 10..w.n_bins) {
            assert!(
                (0..l).all(|g| (0..d).all(|j| bin(g, j, k) == 0.0)),
                "{total} s: bin {k} outside the event"
            );
        }
        println!(
            "{total} s: chunks {got:?} placed in a {} bin window",
            w.n_bins
        );
        // Each chunk, computed on its own from its own samples, sits at bins 10 + 2·offset
        // (checked on the two multi-chunk cases with different last-chunk lengths).
        if total != 100.0 && total != 150.0 {
            continue;
        }
        for (c, (offset, dur)) in chunks.iter().zip(expected.iter()) {
            let own = ex
                .chunk_features(
                    &audio.slice_seconds(*offset, Some(*dur)).channels,
                    16000,
                    *dur,
                )
                .unwrap();
            assert_eq!(own.n_bins, c.n_bins);
            let first = 10 + (2.0 * offset) as usize;
            let mut worst = 0f32;
            for g in 0..l {
                for j in 0..d {
                    for k in 0..own.n_bins {
                        worst = worst.max(
                            (bin(g, j, first + k) - own.data[(g * d + j) * own.n_bins + k]).abs(),
                        );
                    }
                }
            }
            assert_eq!(
                worst, 0.0,
                "{total} s: chunk at {offset} s misplaced or not independent"
            );
        }
        // Independence is real: the last chunk differs from the same seconds cut out of a
        // single pass over the whole audio (its own normalisation and attention context).
        if total == 100.0 {
            let whole = ex.chunk_features(&audio.channels, 16000, total).unwrap();
            let last = chunks.last().unwrap();
            let k0 = (2.0 * (last.start - start)) as usize;
            let differs =
                (0..last.n_bins).any(|k| (last.data[k] - whole.data[k0 + k]).abs() > 1e-4);
            assert!(differs, "{total} s: chunking had no effect");
        }
    }
}
