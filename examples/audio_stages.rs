//! Dump every stage of our audio path for one media file, to compare with a Python run of the
//! reference (decode, 16 kHz resampling, mono z-score, filterbank, hidden states, 2 Hz groups).
//!
//! `cargo run --example audio_stages -- MEDIA MODEL_DIR OUT.safetensors`

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use tribe_bids::features::audio::{AudioExtractor, GroupAccumulator, nearest_indices};
use tribe_bids::features::resample::ResampleFrac;
use tribe_bids::stimulus::audio::decode_auto;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: audio_stages MEDIA MODEL_DIR OUT.safetensors".into());
    }
    let (media, model, out) = (
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
    );
    let cpu = Device::Cpu;
    let ex = AudioExtractor::load(&model, &cpu)?;
    let audio = decode_auto::<f32>(&media, 0.0, None)?;
    let (c, n) = (audio.n_channels(), audio.n_samples());
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let flat: Vec<f32> = audio.channels.iter().flatten().copied().collect();
    t.insert("wav_native".into(), Tensor::from_vec(flat, (c, n), &cpu)?);
    let r = ResampleFrac::new(audio.sample_rate, 16000);
    let w16: Vec<Vec<f32>> = audio.channels.iter().map(|ch| r.apply(ch)).collect();
    let n16 = w16[0].len();
    t.insert(
        "wav16".into(),
        Tensor::from_vec(
            w16.into_iter().flatten().collect::<Vec<_>>(),
            (c, n16),
            &cpu,
        )?,
    );
    let norm = ex.preprocess(&audio.channels, audio.sample_rate)?;
    t.insert(
        "norm".into(),
        Tensor::from_vec(norm.clone(), norm.len(), &cpu)?,
    );
    let f = ex.input_features(&norm)?;
    let x = Tensor::from_vec(f.data, (f.n_frames, f.dim), &cpu)?;
    t.insert("input_features".into(), x.clone());
    let hs = ex.model().forward_hidden_states(&x)?;
    t.insert("hidden".into(), Tensor::stack(&hs, 0)?);
    let n_bins = (2.0 * audio.duration_s()).round() as usize;
    let mut acc = GroupAccumulator::new(
        ex.layer_groups(),
        nearest_indices(f.n_frames, n_bins),
        ex.dim(),
        &cpu,
    )?;
    for (i, h) in hs.iter().enumerate() {
        acc.add(i, h)?;
    }
    let g = acc.finish()?;
    t.insert(
        "g".into(),
        Tensor::from_vec(g.data, (g.n_layers, g.dim, g.n_bins), &cpu)?,
    );
    candle_core::safetensors::save(&t, &out)?;
    println!(
        "{}: {} Hz, {c} ch, {n} samples -> {n16} at 16 kHz, {} fbank rows, {n_bins} bins",
        media.display(),
        audio.sample_rate,
        f.n_frames
    );
    Ok(())
}
