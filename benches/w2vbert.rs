//! Audio feature benchmarks (run with bench/compare_w2vbert.sh, which also runs PyTorch):
//!
//! 1. Wav2Vec2-BERT at the full w2v-bert-2.0 shape (hidden 1024, 16 heads, FFN 4096, kernel 31),
//!    random weights, `W2VBERT_LAYERS` layers (default 2) on 60 s of input (2999 frames), timed by
//!    hand (a run takes seconds, too long for criterion's 10 samples): wall and CPU seconds per
//!    layer, the real-time factor of the 24-layer model, peak RSS, and max |diff| against the
//!    PyTorch output when bench/w2vbert_torch.py wrote the same model to `W2VBERT_BENCH_DIR`.
//! 2. criterion: SeamlessM4T filterbank and julius resampling on 60 s of audio.
//! 3. Decoding 60 s of speech from flac, mp3 and m4a in-process versus the ffmpeg CLI.
//!
//! Prints one JSON line per measurement (prefixed `RESULT`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, black_box};
use tribe_bids::features::fbank::{Fbank, FbankConfig};
use tribe_bids::features::resample::ResampleFrac;
use tribe_bids::features::w2vbert::W2vBert;
use tribe_bids::stimulus::audio::{ReadMode, decode};

/// This process's user + system CPU seconds (Linux /proc).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the ')' field: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// A full-size model folder with random weights, for when the PyTorch script has not made one.
fn random_model(dir: &Path, layers: usize) -> PathBuf {
    let out = dir.join("w2vbert-random");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = serde_json::json!({"model_type": "wav2vec2-bert", "hidden_size": 1024, "num_hidden_layers": layers,
        "num_attention_heads": 16, "intermediate_size": 4096, "feature_projection_input_dim": 160,
        "conv_depthwise_kernel_size": 31, "position_embeddings_type": "relative_key",
        "left_max_position_embeddings": 64, "right_max_position_embeddings": 8, "hidden_act": "swish", "layer_norm_eps": 1e-5});
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(out.join("preprocessor_config.json"), r#"{"feature_extractor_type":"SeamlessM4TFeatureExtractor","num_mel_bins":80,"padding_value":1,"sampling_rate":16000,"stride":2}"#).unwrap();
    let dev = Device::Cpu;
    let mut t = std::collections::HashMap::new();
    let mut put = |name: String, shape: &[usize], ones: bool| {
        let v = if ones {
            Tensor::ones(shape, DType::F32, &dev).unwrap()
        } else {
            (Tensor::randn(0f32, 1.0, shape, &dev).unwrap() * 0.02).unwrap()
        };
        t.insert(name, v);
    };
    put("feature_projection.layer_norm.weight".into(), &[160], true);
    put("feature_projection.layer_norm.bias".into(), &[160], false);
    put(
        "feature_projection.projection.weight".into(),
        &[1024, 160],
        false,
    );
    put("feature_projection.projection.bias".into(), &[1024], false);
    for l in 0..layers {
        let p = format!("encoder.layers.{l}");
        for ln in [
            "ffn1_layer_norm",
            "self_attn_layer_norm",
            "conv_module.layer_norm",
            "conv_module.depthwise_layer_norm",
            "ffn2_layer_norm",
            "final_layer_norm",
        ] {
            put(format!("{p}.{ln}.weight"), &[1024], true);
            put(format!("{p}.{ln}.bias"), &[1024], false);
        }
        for f in ["ffn1", "ffn2"] {
            put(
                format!("{p}.{f}.intermediate_dense.weight"),
                &[4096, 1024],
                false,
            );
            put(format!("{p}.{f}.intermediate_dense.bias"), &[4096], false);
            put(format!("{p}.{f}.output_dense.weight"), &[1024, 4096], false);
            put(format!("{p}.{f}.output_dense.bias"), &[1024], false);
        }
        for q in ["linear_q", "linear_k", "linear_v", "linear_out"] {
            put(format!("{p}.self_attn.{q}.weight"), &[1024, 1024], false);
            put(format!("{p}.self_attn.{q}.bias"), &[1024], false);
        }
        put(
            format!("{p}.self_attn.distance_embedding.weight"),
            &[73, 64],
            false,
        );
        put(
            format!("{p}.conv_module.pointwise_conv1.weight"),
            &[2048, 1024, 1],
            false,
        );
        put(
            format!("{p}.conv_module.depthwise_conv.weight"),
            &[1024, 1, 31],
            false,
        );
        put(
            format!("{p}.conv_module.pointwise_conv2.weight"),
            &[1024, 1024, 1],
            false,
        );
    }
    candle_core::safetensors::save(&t, out.join("model.safetensors")).unwrap();
    out
}

fn bench_model() {
    let layers: usize = std::env::var("W2VBERT_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runs: usize = std::env::var("W2VBERT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let shared = PathBuf::from(
        std::env::var("W2VBERT_BENCH_DIR").unwrap_or_else(|_| "/tmp/w2vbert_bench".into()),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (dir, input) =
        if shared.join("model.safetensors").exists() && shared.join("input.safetensors").exists() {
            (
                shared.clone(),
                Some(
                    candle_core::safetensors::load(shared.join("input.safetensors"), &Device::Cpu)
                        .unwrap(),
                ),
            )
        } else {
            (random_model(tmp.path(), layers), None)
        };
    let model = W2vBert::load(&dir, &Device::Cpu).unwrap();
    let n_layers = model.config().num_hidden_layers;
    let x = match &input {
        Some(m) => m["input_features"].clone(),
        None => Tensor::randn(0f32, 1.0, (2999, 160), &Device::Cpu).unwrap(),
    };
    let frames = x.dim(0).unwrap();
    let audio_s = (frames + 1) as f64 / 50.0;
    let mut last = None;
    model.forward_each(&x, |_, _| Ok(())).unwrap(); // warm-up
    let (mut best_wall, mut best_cpu) = (f64::MAX, f64::MAX);
    for _ in 0..runs {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let hs = model.forward_hidden_states(&x).unwrap();
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        best_wall = best_wall.min(wall);
        best_cpu = best_cpu.min(cpu);
        last = hs.last().cloned();
    }
    let parity = match (&input, &last) {
        (Some(m), Some(h)) => {
            let want: Vec<f32> = m["last_hidden_state"]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = h.flatten_all().unwrap().to_vec1().unwrap();
            let d = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            let m = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            format!("{d:.3e} (max |torch| {m:.3})")
        }
        _ => "n/a (random weights made here)".into(),
    };
    let per_layer = best_wall / n_layers as f64;
    println!(
        "RESULT {{\"bench\":\"w2vbert_forward\",\"impl\":\"candle 0.11.1 + fused attention; products: {}\",\"threads\":{},\"layers_run\":{n_layers},\"frames\":{frames},\"audio_seconds\":{audio_s},\"forward_seconds\":{best_wall:.3},\"forward_cpu_seconds\":{best_cpu:.3},\"per_layer_seconds\":{per_layer:.3},\"full_model_seconds_est\":{:.2},\"realtime_factor_full_model\":{:.4},\"peak_rss_mb\":{:.0},\"max_abs_diff_vs_torch_last_hidden\":\"{parity}\"}}",
        tribe_bids::features::blas::describe().replace('"', "'"),
        rayon::current_num_threads(),
        per_layer * 24.0,
        audio_s / (per_layer * 24.0),
        peak_rss_mb()
    );
}

fn speech_60s(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/stimuli/whisper-jfk/jfk.flac");
    let out = dir.join("speech60.flac");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "6", "-i"])
        .arg(&src)
        .args(["-t", "60", "-c:a", "flac"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(ok.success());
    out
}

fn bench_front_end(c: &mut Criterion, dir: &Path) {
    let flac = speech_60s(dir);
    let audio = decode::<f32>(&flac, ReadMode::Native, 0.0, None).unwrap();
    let r = ResampleFrac::new(44100, 16000);
    c.bench_function("julius_resample_60s_44k1_stereo", |b| {
        b.iter(|| {
            audio
                .channels
                .iter()
                .map(|ch| r.apply(black_box(ch)))
                .collect::<Vec<_>>()
        })
    });
    let wav16: Vec<f32> = r.apply(&audio.channels[0]);
    let fb = Fbank::new(FbankConfig::default());
    c.bench_function("seamless_fbank_60s", |b| {
        b.iter(|| fb.features(black_box(&wav16)).unwrap())
    });
}

fn bench_decode(dir: &Path) {
    let flac = speech_60s(dir);
    let mut files = vec![("flac", flac.clone())];
    for (name, ext, args) in [
        ("mp3", "mp3", vec!["-c:a", "libmp3lame", "-b:a", "192k"]),
        ("m4a/aac", "m4a", vec!["-c:a", "aac", "-b:a", "192k"]),
    ] {
        let out = dir.join(format!("speech60.{ext}"));
        assert!(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-i"])
                .arg(&flac)
                .args(&args)
                .arg(&out)
                .status()
                .unwrap()
                .success()
        );
        files.push((name, out));
    }
    for (name, path) in files {
        let time = |f: &mut dyn FnMut()| -> f64 {
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        };
        let ours = time(&mut || {
            black_box(decode::<f32>(&path, ReadMode::Native, 0.0, None).unwrap());
        });
        let cli = time(&mut || {
            let o = Command::new("ffmpeg")
                .args(["-v", "error", "-threads", "1", "-i"])
                .arg(&path)
                .args(["-f", "f32le", "-"])
                .output()
                .unwrap();
            black_box(o.stdout.len());
        });
        println!(
            "RESULT {{\"bench\":\"decode_60s\",\"format\":\"{name}\",\"in_process_seconds\":{ours:.4},\"ffmpeg_cli_seconds\":{cli:.4},\"in_process_x_realtime\":{:.0},\"cli_x_realtime\":{:.0}}}",
            60.0 / ours,
            60.0 / cli
        );
    }
}

fn main() {
    let only = std::env::var("W2VBERT_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "model" {
        bench_model();
    }
    let tmp = tempfile::tempdir().unwrap();
    if only.is_empty() || only == "front" {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        bench_front_end(&mut c, tmp.path());
        c.final_summary();
    }
    if only.is_empty() || only == "decode" {
        bench_decode(tmp.path());
    }
}
