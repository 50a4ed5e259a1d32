//! The video and audio encoders on a GPU (`scripts/gpu-check-media.sh` runs it on a lent
//! machine): the parity the CPU tests prove, checked on the device the model will run on, and
//! the ViT-g layer time there.
//!
//! `cargo bench --features cuda --bench gpu_media -- [cuda|cpu]`, from the repository root.
//!
//! - V-JEPA2 (tiny fixture model): every hidden state from the golden `pixel_values_videos`,
//!   f32 within the CPU tests' bound (1e-4 x max|expected|), bf16 reported against 3e-2.
//!   Both transformers semantics of the last hidden state.
//! - Wav2Vec-BERT 2.0 (tiny fixture model): every hidden state from the golden
//!   `input_features` of both clips, f32 within 1e-4 x max|expected|.
//! - Full-width ViT-g layers (random weights, one 64-frame clip, 8,192 tokens): seconds per
//!   layer in f32 and bf16 (on CUDA only; the CPU figures come from benches/vjepa2.rs).
//!
//! No media is decoded here: the GPU image has no FFmpeg, and the decoders are tested on CPU.
//! Prints one `key=value` line per check and `result: PASS|FAIL`; exits 1 on a failure.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use tribe_bids::features::audio::AudioExtractor;
use tribe_bids::features::video::vjepa2::{LastHiddenState, Vjepa2Config, Vjepa2Encoder};

/// max |t| of a tensor on any device and dtype.
fn max_abs(t: &Tensor) -> f32 {
    t.to_device(&Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32)?.abs()?.max_all()?.to_scalar::<f32>())
        .unwrap()
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, name: &str, got: &Tensor, want: &Tensor, rel: f32) {
        let got = got
            .to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let (d, m) = (max_abs(&(got - want).unwrap()), max_abs(want));
        let ok = d <= rel * m;
        if !ok {
            self.failed += 1;
        }
        println!(
            "{name}: max|d|={d:.3e} bound={:.3e} ({rel:e} x max|x| {m:.3}) {}",
            rel * m,
            if ok { "ok" } else { "FAIL" }
        );
    }
}

fn video(dev: &Device, c: &mut Checks) {
    let g = candle_core::safetensors::load(
        "tests/fixtures/hf/vjepa2-tiny-golden.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let dir = Path::new("tests/fixtures/models-tiny/vjepa2-vitg-fpc64-256");
    let px = g["pixel_values_videos"].squeeze(0).unwrap();
    for (dtype, rel) in [(DType::F32, 1e-4), (DType::BF16, 3e-2)] {
        let enc = Vjepa2Encoder::load(dir, dev, dtype, LastHiddenState::Raw).unwrap();
        let got = enc.hidden_states(&px).unwrap();
        let want = &g["hidden_states"];
        for i in 0..want.dim(0).unwrap() {
            c.check(
                &format!("vjepa2 {dtype:?} hidden_states[{i}]"),
                &got.get(i).unwrap(),
                &want.get(i).unwrap(),
                rel,
            );
        }
        let means = enc.token_means(&px, &[0, 1, 2]).unwrap();
        c.check(
            &format!("vjepa2 {dtype:?} token means"),
            &means,
            &g["pooled_mean_tokens"],
            rel,
        );
        let enc4 = Vjepa2Encoder::load(dir, dev, dtype, LastHiddenState::LayerNormed).unwrap();
        let last = enc4.hidden_states(&px).unwrap().get(2).unwrap();
        c.check(
            &format!("vjepa2 {dtype:?} last_hidden_state (transformers 4.x)"),
            &last,
            &g["last_hidden_state"],
            rel,
        );
    }
}

fn audio(dev: &Device, c: &mut Checks) {
    let g = candle_core::safetensors::load(
        "tests/fixtures/hf/w2vbert-tiny-golden.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let ex =
        AudioExtractor::load(Path::new("tests/fixtures/models-tiny/w2v-bert-2.0"), dev).unwrap();
    for key in ["jfk", "libri0880"] {
        let x = g[&format!("{key}.input_features")].to_device(dev).unwrap();
        let hs = ex.model().forward_hidden_states(&x).unwrap();
        let want = &g[&format!("{key}.hidden_states")];
        assert_eq!(hs.len(), want.dim(0).unwrap());
        for (i, h) in hs.iter().enumerate() {
            c.check(
                &format!("w2vbert F32 {key}.hidden_states[{i}]"),
                h,
                &want.get(i).unwrap(),
                1e-4,
            );
        }
    }
}

fn vitg_timing(dev: &Device) {
    let cfg: Vjepa2Config = serde_json::from_value(serde_json::json!({
        "model_type": "vjepa2", "hidden_size": 1408, "num_hidden_layers": 2,
        "num_attention_heads": 16, "mlp_ratio": 6144.0 / 1408.0, "patch_size": 16,
        "tubelet_size": 2, "crop_size": 256, "frames_per_clip": 64, "hidden_act": "gelu",
    }))
    .unwrap();
    let clip = Tensor::randn(0f32, 1f32, (64, 3, 256, 256), &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let enc = Vjepa2Encoder::random(cfg.clone(), dev, dtype, 7).unwrap();
        let mut layer_s = Vec::new();
        for _ in 0..4 {
            let mut marks = Vec::new();
            enc.forward_visit(&clip, |_, h| {
                // Reading one value waits for the device, so each mark ends a layer.
                h.get(0)?.get(0)?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                marks.push(Instant::now());
                Ok(())
            })
            .unwrap();
            layer_s.extend(marks.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()));
        }
        layer_s.sort_by(f64::total_cmp);
        let med = layer_s[layer_s.len() / 2];
        println!(
            "vitg {dtype:?} layer_s={med:.4} (median of {}; 40 layers = {:.2} s per clip)",
            layer_s.len(),
            40.0 * med
        );
    }
}

fn main() {
    let want = std::env::args()
        .skip(1)
        .find(|a| a == "cuda" || a == "cpu")
        .unwrap_or_else(|| "cuda".into());
    let dev = if want == "cuda" {
        Device::new_cuda(0).expect("a CUDA device (build with --features cuda)")
    } else {
        Device::Cpu
    };
    println!("device={want}");
    let mut c = Checks { failed: 0 };
    video(&dev, &mut c);
    audio(&dev, &mut c);
    if dev.is_cuda() {
        vitg_timing(&dev);
    }
    if c.failed == 0 {
        println!("result: PASS");
    } else {
        println!("result: FAIL ({} checks)", c.failed);
        std::process::exit(1);
    }
}
