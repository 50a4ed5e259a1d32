//! Run length against time and memory: the full-size brain model (random weights) on synthetic
//! features of a 10-minute and a 1-hour run, streamed through the same path as the BIDS-App
//! (features read from the feature cache one 100 s window at a time → brain model → volume
//! alignment → GIFTI L/R writers), with the writers either inline or on
//! their own thread ([`tribe_bids::predict::overlap`]).
//!
//! Each case runs in a fresh child process so that its peak RSS (VmHWM) is its own. Reported:
//! seconds of compute per hour of stimulus, wall time inline vs overlapped, and peak RSS, next to
//! the two things that must scale with run length (the features held in memory) and the ones
//! that must not (weights, one window, the output being written).
//!
//! Run: `cargo bench --bench run_length` (env: BENCH_MINUTES="10,60", RAYON_NUM_THREADS).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use tribe_bids::features::cache::{CacheKey, FeatureArray, FeatureCache, FeatureFile};
use tribe_bids::formats::{GiftiTimeSeriesWriter, Hemisphere, TimeSeriesOptions};
use tribe_bids::model::{ModelOptions, TribeModel};
use tribe_bids::predict::overlap::overlapped;
use tribe_bids::predict::run::{RunSchedule, predict_volumes};

mod common;
use common::full_model::*;

const TR: f64 = 1.0;
const HEMI: usize = 10242;

fn features(bins: usize) -> HashMap<String, FeatureArray> {
    let mut rng = Rng(0x5EED);
    FEATURES
        .iter()
        .map(|(m, l, d)| {
            let data: Vec<f32> = (0..l * d * bins).map(|_| rng.normal()).collect();
            (m.to_string(), FeatureArray::new(vec![*l, *d, bins], data))
        })
        .collect()
}

/// Write a run's synthetic features into a feature cache under `dir` (as the extraction pass
/// does), in the parent process so that the children's peak RSS is their own.
fn write_features(dir: &Path, bins: usize) -> f64 {
    let cache = FeatureCache::new(dir).unwrap();
    let mut bytes = 0usize;
    for (m, a) in features(bins) {
        bytes += a.data.len() * 4;
        cache.get_or_compute(&key(&m), &m, || Ok(a)).unwrap();
    }
    bytes as f64 / 1048576.0
}

fn key(modality: &str) -> CacheKey {
    let mut k = CacheKey::new(modality);
    k.add_str("bench", "run_length");
    k
}

/// One case in this process: prints wall s, CPU s and peak RSS as JSON.
fn child(minutes: f64, weights: &Path, out: &Path, cache_dir: &Path, overlap: bool) {
    let model = TribeModel::load(weights, &Device::Cpu, ModelOptions::default()).unwrap();
    let after_load = rss_mib("VmHWM:");
    let secs = minutes * 60.0;
    // The app's path: cache entries read one window at a time.
    let cache = FeatureCache::new(cache_dir).unwrap();
    let feats: HashMap<String, FeatureFile> = FEATURES
        .iter()
        .map(|(m, _, _)| (m.to_string(), cache.open(&key(m), m).unwrap().unwrap()))
        .collect();
    let n_vol = (secs / TR).round() as usize;
    let sched = RunSchedule {
        start: 0.0,
        stop: secs,
        volume_times: (0..n_vol).map(|k| k as f64 * TR).collect(),
    };
    let opts = TimeSeriesOptions::new(TR);
    let mut wl = GiftiTimeSeriesWriter::create(
        &out.join("hemi-L.func.gii"),
        Hemisphere::Left,
        HEMI,
        n_vol,
        &opts,
    )
    .unwrap();
    let mut wr = GiftiTimeSeriesWriter::create(
        &out.join("hemi-R.func.gii"),
        Hemisphere::Right,
        HEMI,
        n_vol,
        &opts,
    )
    .unwrap();
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut write = |v: Vec<f32>| {
        wl.push_volumes(&v[..HEMI])?;
        wr.push_volumes(&v[HEMI..])
    };
    if overlap {
        overlapped(
            256, // the app's queue (OUTPUT_QUEUE_VOLUMES in cli/participant.rs)
            |v: Vec<f32>| write(v),
            |send| predict_volumes(&model, feats, &sched, |_, v| send(v)),
        )
        .unwrap();
    } else {
        predict_volumes(&model, feats, &sched, |_, v| write(v)).unwrap();
    }
    wl.finish().unwrap();
    wr.finish().unwrap();
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    println!(
        "{{\"minutes\": {minutes}, \"overlap\": {overlap}, \"wall_s\": {wall:.2}, \"cpu_s\": {cpu:.2}, \
         \"peak_rss_mib\": {:.0}, \"rss_after_load_mib\": {after_load:.0}}}",
        rss_mib("VmHWM:")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let minutes: f64 = args[i + 1].parse().unwrap();
        let overlap = args[i + 5] == "overlap";
        child(
            minutes,
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
            Path::new(&args[i + 4]),
            overlap,
        );
        return;
    }
    let minutes: Vec<f64> = std::env::var("BENCH_MINUTES")
        .unwrap_or_else(|_| "10,60".into())
        .split(',')
        .map(|m| m.trim().parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("tribev2");
    std::fs::create_dir_all(&weights).unwrap();
    let bytes = write_weights(&weights);
    write_config(&weights);
    println!(
        "full-size brain model, random weights: {:.0} MiB; threads {}",
        bytes as f64 / 1048576.0,
        rayon::current_num_threads()
    );
    let exe = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    for &m in &minutes {
        let cache_dir = dir.path().join(format!("work-{m}"));
        let feat_mib = write_features(&cache_dir, (m * 60.0 * 2.0).round() as usize);
        for mode in ["inline", "overlap"] {
            let out = dir.path().join(format!("out-{m}-{mode}"));
            std::fs::create_dir_all(&out).unwrap();
            let o = std::process::Command::new(&exe)
                .arg("--child")
                .arg(m.to_string())
                .arg(&weights)
                .arg(&out)
                .arg(&cache_dir)
                .arg(mode)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
            let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
            let gii: u64 = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .map(|e| e.metadata().unwrap().len())
                .sum();
            println!(
                "{m:>4} min {mode:<8} wall {:>7.1} s ({:>6.1} s per hour of stimulus), cpu {:>7.1} s, \
                 peak RSS {:>5} MiB (after load {:>5}, features {:>4} MiB), GIFTI {:.0} MiB",
                v["wall_s"].as_f64().unwrap(),
                v["wall_s"].as_f64().unwrap() * 60.0 / m,
                v["cpu_s"].as_f64().unwrap(),
                v["peak_rss_mib"],
                v["rss_after_load_mib"],
                feat_mib.round(),
                gii as f64 / 1048576.0
            );
            std::fs::remove_dir_all(&out).unwrap();
            rows.push(v);
        }
    }
    println!("{}", serde_json::to_string(&rows).unwrap());
}
