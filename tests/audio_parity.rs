//! Audio features against the HF/neuralset goldens (tests/fixtures/hf/w2vbert-tiny-golden.*),
//! stage by stage: resampling, mono + z-score, filterbank, every hidden state, 2 Hz features and
//! the placement in a segment. Each stage is fed the golden output of the previous stage as well
//! as our own, so a failure points at one step.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::fixture;
use tribe_bids::features::audio::{AudioExtractor, GroupAccumulator, nearest_indices, window};
use tribe_bids::stimulus::audio::{ReadMode, decode};

struct Golden(HashMap<String, Tensor>);

impl Golden {
    fn load() -> Self {
        Golden(
            candle_core::safetensors::load(
                fixture("hf/w2vbert-tiny-golden.safetensors"),
                &Device::Cpu,
            )
            .unwrap(),
        )
    }
    fn get(&self, k: &str) -> Tensor {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("golden key {k}"))
            .clone()
    }
    fn vec(&self, k: &str) -> Vec<f32> {
        self.get(k).flatten_all().unwrap().to_vec1().unwrap()
    }
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Assert `max|got - exp| <= rel * max|exp|` and print the figure.
fn check_rel(stage: &str, got: &[f32], exp: &[f32], rel: f32) {
    let (d, m) = (max_diff(got, exp), max_abs(exp));
    println!(
        "{stage}: max|d| = {d:.3e} (max|expected| = {m:.3}, bound {:.3e})",
        rel * m
    );
    assert!(d <= rel * m, "{stage}: max|d| = {d:e} > {rel} * {m}");
}

fn extractor() -> AudioExtractor {
    AudioExtractor::load(&fixture("models-tiny/w2v-bert-2.0"), &Device::Cpu).unwrap()
}

struct Clip {
    key: &'static str,
    path: PathBuf,
    rate: u32,
    channels: usize,
    samples: usize,
    /// Segment used for `segment_binned`.
    seg: (f64, f64),
}

fn clips() -> Vec<Clip> {
    vec![
        Clip {
            key: "jfk",
            path: fixture("data/stimuli/whisper-jfk/jfk.flac"),
            rate: 44100,
            channels: 2,
            samples: 485_100,
            seg: (0.0, 12.0),
        },
        Clip {
            key: "libri0880",
            path: fixture(
                "data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
            ),
            rate: 16000,
            channels: 1,
            samples: 47_840,
            seg: (-0.75, 4.0),
        },
    ]
}

#[test]
fn resampled_waveform_and_normalisation() {
    let g = Golden::load();
    let ex = extractor();
    for c in clips() {
        let audio = decode::<f32>(&c.path, ReadMode::Native, 0.0, None).unwrap();
        assert_eq!(
            (audio.sample_rate, audio.n_channels(), audio.n_samples()),
            (c.rate, c.channels, c.samples),
            "{}",
            c.key
        );
        let r = tribe_bids::features::resample::ResampleFrac::new(c.rate, 16000);
        let ours: Vec<f32> = audio.channels.iter().flat_map(|ch| r.apply(ch)).collect();
        let exp = g.vec(&format!("{}.wav_16k", c.key));
        let d = max_diff(&ours, &exp);
        println!("{}.wav_16k: max|d| = {d:.3e}", c.key);
        assert!(
            d <= 1e-5,
            "{}: resampled waveform max|d| = {d:e} > 1e-5",
            c.key
        );

        let norm = ex.preprocess(&audio.channels, audio.sample_rate).unwrap();
        let exp = g.vec(&format!("{}.wav_16k_mono_norm", c.key));
        let d = max_diff(&norm, &exp);
        println!("{}.wav_16k_mono_norm: max|d| = {d:.3e}", c.key);
        assert!(
            d <= 1e-5 * max_abs(&exp).max(1.0),
            "{}: normalised waveform max|d| = {d:e}",
            c.key
        );
    }
}

#[test]
fn filterbank_features() {
    let g = Golden::load();
    let ex = extractor();
    for c in clips() {
        let exp = g.vec(&format!("{}.input_features", c.key));
        // From the golden waveform: the filterbank alone.
        let wav = g.vec(&format!("{}.wav_16k_mono_norm", c.key));
        let f = ex.input_features(&wav).unwrap();
        assert_eq!(f.data.len(), exp.len(), "{}", c.key);
        check_rel(
            &format!("{}.input_features (golden wav)", c.key),
            &f.data,
            &exp,
            1e-6,
        );
        // From our decode + resampling: the whole front end. The reference's filterbank is
        // sensitive to the last bit of its float32 resampling (near-silent frames, stopband
        // leakage in the top mel bins): torch itself moves it by 1.0e-3 (1 instead of 2 threads)
        // to 5.2e-3 (native instead of oneDNN convolution) on jfk. Our remaining difference is
        // torch's non-correctly-rounded float32 sin/cos in the resampling kernel (MKL's), so the
        // end-to-end bound is that spread (1e-3 relative; measured 3.5e-4, exactly what torch
        // gives with correctly rounded taps). The filterbank alone is bit-exact (1e-6 above).
        let audio = decode::<f32>(&c.path, ReadMode::Native, 0.0, None).unwrap();
        let f = ex
            .input_features(&ex.preprocess(&audio.channels, audio.sample_rate).unwrap())
            .unwrap();
        check_rel(
            &format!("{}.input_features (end to end)", c.key),
            &f.data,
            &exp,
            1e-3,
        );
    }
    // libri0880 has 297 frames: the odd one is padded with padding_value = 1.
    let f = g.get("libri0880.input_features");
    let last: Vec<f32> = f
        .get(148)
        .unwrap()
        .narrow(0, 80, 80)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(last.iter().all(|v| *v == 1.0));
}

#[test]
fn every_hidden_state() {
    let g = Golden::load();
    let ex = extractor();
    assert_eq!(ex.model().config().n_hidden_states(), 5);
    for c in clips() {
        let x = g.get(&format!("{}.input_features", c.key));
        let hs = ex.model().forward_hidden_states(&x).unwrap();
        let exp = g.get(&format!("{}.hidden_states", c.key));
        assert_eq!(hs.len(), exp.dim(0).unwrap());
        for (i, h) in hs.iter().enumerate() {
            let e: Vec<f32> = exp
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let o: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
            check_rel(&format!("{}.hidden_states[{i}]", c.key), &o, &e, 1e-4);
        }
    }
}

/// The device-generic kernels (what a GPU runs) agree with the fused CPU kernels.
#[test]
fn generic_kernels_match_fused() {
    let g = Golden::load();
    let mut ex = AudioExtractor::load(&fixture("models-tiny/w2v-bert-2.0"), &Device::Cpu).unwrap();
    let x = g.get("jfk.input_features");
    let fused = ex.model().forward_hidden_states(&x).unwrap();
    ex.model_mut()
        .set_kernels(tribe_bids::features::w2vbert::Kernels::Generic)
        .unwrap();
    let generic = ex.model().forward_hidden_states(&x).unwrap();
    let exp = g.get("jfk.hidden_states");
    for (i, (a, b)) in fused.iter().zip(&generic).enumerate() {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        let d = max_diff(&a, &b);
        println!("hidden state {i}: fused vs generic max|d| = {d:.3e}");
        assert!(d <= 1e-5, "hidden state {i}: {d}");
        let e: Vec<f32> = exp
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        check_rel(&format!("jfk.hidden_states[{i}] (generic)"), &b, &e, 1e-4);
    }
}

#[test]
fn features_on_the_2hz_grid() {
    let g = Golden::load();
    let ex = extractor();
    assert_eq!(ex.layer_groups(), &[vec![2], vec![3, 4]]);
    for c in clips() {
        // The nearest-neighbour picks listed in the golden json.
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("hf/w2vbert-tiny-golden.json")).unwrap(),
        )
        .unwrap();
        let clip = &json["clips"][c.key];
        let picks: Vec<usize> = clip["nearest_source_frame_per_bin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (t, n) = (
            clip["n_model_frames"].as_u64().unwrap() as usize,
            clip["n_2hz_bins"].as_u64().unwrap() as usize,
        );
        assert_eq!(nearest_indices(t, n), picks, "{}", c.key);

        let audio = decode::<f32>(&c.path, ReadMode::Native, 0.0, None).unwrap();
        let chunks = ex.event_features(&audio, 0.0).unwrap();
        assert_eq!(chunks.len(), 1);
        let exp = g.vec(&format!("{}.features_2hz_group_mean", c.key));
        check_rel(
            &format!("{}.features_2hz_group_mean", c.key),
            &chunks[0].data,
            &exp,
            1e-4,
        );

        let seg = window(&chunks, ex.n_layers(), ex.dim(), c.seg.0, c.seg.1);
        let exp = g.vec(&format!("{}.segment_binned", c.key));
        assert_eq!(
            seg.n_bins,
            g.get(&format!("{}.segment_binned", c.key)).dim(2).unwrap()
        );
        check_rel(&format!("{}.segment_binned", c.key), &seg.data, &exp, 1e-4);
    }
}

/// Step 6–7 alone: nearest pick and group means from the golden hidden states.
#[test]
fn pick_and_group_mean_from_golden_hidden_states() {
    let g = Golden::load();
    let ex = extractor();
    for c in clips() {
        let hs = g.get(&format!("{}.hidden_states", c.key));
        let exp_all = g.get(&format!("{}.features_2hz_all_layers", c.key));
        let (t, n) = (hs.dim(1).unwrap(), exp_all.dim(2).unwrap());
        let picks = nearest_indices(t, n);
        // Every layer on its own (groups of one) against features_2hz_all_layers.
        let singles: Vec<Vec<usize>> = (0..hs.dim(0).unwrap()).map(|i| vec![i]).collect();
        let mut acc =
            GroupAccumulator::new(&singles, picks.clone(), ex.dim(), &Device::Cpu).unwrap();
        for i in 0..singles.len() {
            acc.add(i, &hs.get(i).unwrap()).unwrap();
        }
        let all = acc.finish().unwrap();
        assert_eq!(
            max_diff(
                &all.data,
                &g.vec(&format!("{}.features_2hz_all_layers", c.key))
            ),
            0.0,
            "{}: nearest pick",
            c.key
        );
        let mut acc =
            GroupAccumulator::new(ex.layer_groups(), picks, ex.dim(), &Device::Cpu).unwrap();
        for i in 0..singles.len() {
            acc.add(i, &hs.get(i).unwrap()).unwrap();
        }
        let grouped = acc.finish().unwrap();
        check_rel(
            &format!("{}.features_2hz_group_mean (golden hidden states)", c.key),
            &grouped.data,
            &g.vec(&format!("{}.features_2hz_group_mean", c.key)),
            1e-6,
        );
    }
}

/// The `tribe features audio` contract: OUT holds `audio`, float32 (L, D, n_bins).
#[test]
fn cli_writes_the_contract_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("feat.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tribe"))
        .args(["features", "audio", "--model"])
        .arg(fixture("models-tiny/w2v-bert-2.0"))
        .arg("--input")
        .arg(fixture(
            "data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0880.wav",
        ))
        .args(["--start=-0.75", "--duration", "4", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let t = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let a = t.get("audio").expect("key 'audio'");
    assert_eq!(a.dtype(), candle_core::DType::F32);
    assert_eq!(a.dims(), &[2, 32, 8]);
    let got: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    check_rel(
        "cli libri0880 window",
        &got,
        &Golden::load().vec("libri0880.segment_binned"),
        1e-4,
    );
}

/// A video's sound goes through the moviepy path (44.1 kHz stereo 16-bit) end to end.
#[test]
fn cli_reads_the_audio_of_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    let wav =
        fixture("data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0880.wav");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=10",
            "-i",
        ])
        .arg(&wav)
        .args([
            "-shortest",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(ok.success());
    let ex = extractor();
    let f = ex.features_for_file(&mp4, 0.0, Some(3.0)).unwrap();
    assert_eq!((f.n_layers, f.dim, f.n_bins), (2, 32, 6));
    assert!(f.data.iter().all(|v| v.is_finite()) && f.data.iter().any(|v| *v != 0.0));
}

/// The e2e movie (30 s, speech between 3.0 and 19.27 s, digital silence elsewhere, AAC in mp4)
/// against the audio input the reference pipeline fed the brain model (`e2e/features.safetensors`
/// `audio`, one 100 s window). Silence is the hard case: a silent filterbank frame is one floor
/// value in every mel bin, so after CMVN its 160 model inputs differ only through the per-bin
/// statistics (spread ~2e-3, variance below the LayerNorm eps), and the first LayerNorm amplifies
/// ~250×. This needs numpy's pairwise CMVN order (4.9e-3 off with a running sum) and a LayerNorm
/// with properly computed moments (1.4e-2 off with candle's one-pass variance). What remains is
/// the resampler's sin/cos taps (see `features::resample`): 2.8e-5 with correctly rounded taps,
/// 1.6e-6 with torch's own (measured in Python).
#[test]
fn e2e_movie_matches_the_reference_model_input() {
    let ex = extractor();
    let movie = fixture("e2e/bids/stimuli/movie.mp4");
    let f = ex.features_for_file(&movie, 0.0, Some(100.0)).unwrap();
    assert_eq!((f.n_layers, f.dim, f.n_bins), (2, 32, 200));
    let st = std::fs::read(fixture("e2e/features.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    let exp: Vec<f32> = st
        .tensor("audio")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    check_rel("e2e movie audio features", &f.data, &exp, 3e-5);
    // Bins 60..199 lie after the movie and stay exactly zero.
    for r in 0..f.n_layers * f.dim {
        assert!(
            f.data[r * 200 + 60..(r + 1) * 200]
                .iter()
                .all(|v| *v == 0.0)
        );
    }
}
