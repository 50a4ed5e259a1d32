//! Brain-model benchmark at the released size (hidden 1152, 8 layers, 8 heads, low-rank 2048,
//! 20,484 outputs, T = 200 = one 100 s window), random weights, f32, on the CPU.
//!
//! It writes a random full-size `model.safetensors` + `config.yaml` (streamed, so writing does not
//! inflate the peak RSS), loads it through the real loader, and reports:
//! - this machine's f32 GEMM peak (a big candle matmul, and faer's GEMM that our CPU path uses);
//! - ms per window, achieved GFLOP/s, for the exact head and the SPEC §1.2 shortcuts, with the
//!   portable candle-only kernels for comparison;
//! - each shortcut's max deviation from the exact head, against the parity bound;
//! - peak RSS after loading and after the runs, next to the weights' size.
//!
//! With `BENCH_DIR` set it also leaves the weights, one window of features and the exact
//! prediction there, for `bench/torch_reference.py` (same shapes in PyTorch, same threads).
//!
//! Run: `cargo bench --bench brain_model` (env: BENCH_REPS, BENCH_DIR, RAYON_NUM_THREADS).
//!
//! Device mode (`BENCH_DEVICE=cuda`, a `--features cuda` build; scripts/gpu-check.sh runs it;
//! `BENCH_DEVICE=cpu` runs the same measurements on the CPU, to test the mode without a GPU):
//! the same model on the GPU in each of `BENCH_DTYPES` (default `f32,bf16`): ms per window
//! (median and min over BENCH_REPS timed forwards after warm-up, each ended by a device
//! synchronize), the GPU f32 prediction against the CPU f32 one (parity bound), and bf16's
//! deviation from f32. It leaves `window.safetensors` (inputs, `prediction` = GPU f32,
//! `prediction_bf16`) and `gpu_summary.json` in BENCH_DIR for `bench/torch_reference.py --device cuda`.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use tribe_bids::model::{HeadOptions, Kernels, ModelOptions, TribeModel};

mod common;
use common::full_model::*;

const T: usize = 200;

/// FLOPs of one forward (multiply-adds count 2) for the head variant.
fn flops(t: usize, pool_first: bool, fold: bool) -> f64 {
    let (h, r, n, ff) = (
        HIDDEN as f64,
        LOW_RANK as f64,
        N_OUT as f64,
        4.0 * HIDDEN as f64,
    );
    let tf = t as f64;
    let proj: f64 = FEATURES
        .iter()
        .map(|(_, l, d)| 2.0 * tf * (l * d) as f64 * h / 3.0)
        .sum();
    let layer = 4.0 * 2.0 * tf * h * h + 2.0 * 2.0 * tf * tf * h + 2.0 * 2.0 * tf * h * ff;
    let rows = if pool_first { N_STEPS as f64 } else { tf };
    let head = if fold {
        2.0 * rows * h * n
    } else {
        2.0 * rows * h * r + 2.0 * rows * r * n
    };
    proj + DEPTH as f64 * layer + head
}

fn inputs(seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed);
    FEATURES
        .iter()
        .map(|(m, l, d)| {
            let v: Vec<f32> = (0..l * d * T).map(|_| rng.normal()).collect();
            (
                m.to_string(),
                Tensor::from_vec(v, (1, *l, *d, T), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

/// Best wall time and best CPU time per forward over `reps` runs (after one warm-up). The
/// minimum is the least disturbed run on a shared machine.
fn time_forward(m: &TribeModel, x: &HashMap<String, Tensor>, reps: usize) -> (f64, f64, Tensor) {
    let y = m.forward(x).unwrap(); // warm-up
    let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let _ = m.forward(x).unwrap();
        best = best.min(t0.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu_seconds() - c0);
    }
    (best, best_cpu, y)
}

/// f32 GEMM throughput (1024x2048x4096), best wall time and CPU time, for candle's matmul and
/// for faer's GEMM (our CPU path): (candle wall, candle per-CPU-s, faer wall, faer per-CPU-s).
fn gemm_peak() -> (f64, f64, f64, f64) {
    let (m, k, n) = (1024, 2048, 4096);
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
    let fl = 2.0 * (m * k * n) as f64;
    let measure = |f: &dyn Fn() -> Tensor| {
        let _ = f();
        let mut best = f64::INFINITY;
        let c0 = cpu_seconds();
        for _ in 0..4 {
            let t0 = Instant::now();
            let _ = f();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        (fl / best / 1e9, fl / ((cpu_seconds() - c0) / 4.0) / 1e9)
    };
    let (cw, cc) = measure(&|| a.matmul(&b).unwrap());
    let (fw, fc) =
        measure(&|| tribe_bids::model::ops::matmul(&a, &b, None, Kernels::Auto).unwrap());
    (cw, cc, fw, fc)
}

/// CPU time of each kind of operation of the exact forward, at its real shape, times how often
/// it runs, to show where a window's time goes (the rest is norms, residuals, copies).
fn breakdown(total_cpu: f64) {
    use tribe_bids::model::ops;
    let d = Device::Cpu;
    let k = Kernels::Auto;
    let time = |f: &dyn Fn()| {
        f();
        let (mut best, mut best_wall) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            f();
            best = best.min(cpu_seconds() - c0);
            best_wall = best_wall.min(t0.elapsed().as_secs_f64());
        }
        (best, best_wall)
    };
    let x = |r: usize, c: usize| Tensor::randn(0f32, 1.0, (1, r, c), &d).unwrap();
    let w = |r: usize, c: usize| Tensor::randn(0f32, 0.03, (r, c), &d).unwrap();
    let h = HIDDEN;
    let mut rows: Vec<(&str, f64, (f64, f64))> = Vec::new();
    for (name, kin) in [
        ("projector text", 6144),
        ("projector audio", 2048),
        ("projector video", 2816),
    ] {
        let (a, b) = (x(T, kin), w(h / 3, kin));
        rows.push((
            name,
            1.0,
            time(&|| drop(ops::linear(&a, &b, None, k).unwrap())),
        ));
    }
    let (a, b, bqkv) = (x(T, h), w(h, h), w(3 * h, h));
    rows.push((
        "fused q/k/v projection",
        DEPTH as f64,
        time(&|| drop(ops::linear(&a, &bqkv, None, k).unwrap())),
    ));
    rows.push((
        "out projection",
        DEPTH as f64,
        time(&|| drop(ops::linear(&a, &b, None, k).unwrap())),
    ));
    let inv: Vec<f32> = (0..36)
        .map(|j| 1.0 / 10000f32.powf(2.0 * j as f32 / 72.0))
        .collect();
    let freqs = ops::rotary_freqs(&Tensor::from_vec(inv, 36, &d).unwrap(), T).unwrap();
    let qkv = x(T, 3 * h);
    rows.push((
        "attention core (rotary, softmax)",
        DEPTH as f64,
        time(&|| drop(ops::attention(&qkv, HEADS, &freqs, false, k).unwrap())),
    ));
    let (b1, bias1) = (
        w(4 * h, h),
        Tensor::zeros(4 * h, candle_core::DType::F32, &d).unwrap(),
    );
    rows.push((
        "ff in + GELU",
        DEPTH as f64,
        time(&|| drop(ops::linear_gelu(&a, &b1, Some(&bias1), k).unwrap())),
    ));
    let (a2, b2) = (x(T, 4 * h), w(h, 4 * h));
    rows.push((
        "ff out",
        DEPTH as f64,
        time(&|| drop(ops::linear(&a2, &b2, None, k).unwrap())),
    ));
    let g = Tensor::ones(1, candle_core::DType::F32, &d).unwrap();
    rows.push((
        "ScaleNorm",
        2.0 * DEPTH as f64 + 1.0,
        time(&|| drop(ops::scale_norm(&a, &g, 1e-12).unwrap())),
    ));
    let rs = Tensor::ones(h, candle_core::DType::F32, &d).unwrap();
    rows.push((
        "residual (x*scale + branch)",
        2.0 * DEPTH as f64,
        time(&|| drop((&a + a.broadcast_mul(&rs).unwrap()).unwrap())),
    ));
    let lr = w(LOW_RANK, h);
    rows.push((
        "low-rank head",
        1.0,
        time(&|| drop(ops::linear(&a, &lr, None, k).unwrap())),
    ));
    let (z, pw, pb) = (
        x(T, LOW_RANK),
        w(LOW_RANK, N_OUT),
        Tensor::zeros(N_OUT, candle_core::DType::F32, &d).unwrap(),
    );
    rows.push((
        "predictor (T rows)",
        1.0,
        time(&|| drop(ops::matmul(&z, &pw, Some(&pb), k).unwrap())),
    ));
    let y = x(T, N_OUT);
    rows.push((
        "pool + transpose output",
        1.0,
        time(&|| drop(ops::pool_time_transposed(&y, N_STEPS, k).unwrap())),
    ));
    println!(
        "\nwhere the exact forward's time goes (each op timed alone at its shape, best of 5):"
    );
    println!(
        "  {:<34} {:>4}   {:>9} {:>9}   {:>9} {:>9}",
        "op", "runs", "CPU-ms", "wall-ms", "CPU tot", "wall tot"
    );
    let (mut sum, mut sum_wall) = (0.0, 0.0);
    for (name, n, (c, w)) in &rows {
        sum += n * c;
        sum_wall += n * w;
        println!(
            "  {name:<34} {:>4} x {:>9.2} {:>9.2}   {:>9.1} {:>9.1}",
            n,
            c * 1e3,
            w * 1e3,
            n * c * 1e3,
            n * w * 1e3
        );
    }
    println!(
        "  {:<34} {:>28.1} {:>9.1}   (measured forward: {:.1} CPU-ms)",
        "sum",
        sum * 1e3,
        sum_wall * 1e3,
        total_cpu * 1e3
    );
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Weights and config in `dir` (reused when a previous run left them): bytes of f32 weights.
fn ensure_weights(dir: &std::path::Path) -> (u64, bool) {
    let expected_bytes: u64 = tensors()
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>() as u64 * 4)
        .sum();
    let reuse = std::fs::metadata(dir.join("model.safetensors"))
        .is_ok_and(|m| m.len() > expected_bytes)
        && dir.join("config.yaml").is_file();
    if reuse {
        (expected_bytes, true)
    } else {
        let b = write_weights(dir);
        write_config(dir);
        (b, false)
    }
}

/// Median and min of `reps` synchronized forwards after `warm` untimed ones, in seconds.
fn time_on_device(
    m: &TribeModel,
    x: &HashMap<String, Tensor>,
    warm: usize,
    reps: usize,
) -> (f64, f64, Tensor) {
    let dev = m.device().clone();
    let mut y = m.forward(x).unwrap();
    for _ in 1..warm {
        y = m.forward(x).unwrap();
    }
    dev.synchronize().unwrap();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            let _ = m.forward(x).unwrap();
            dev.synchronize().unwrap();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], y)
}

/// The GPU mode (see the module doc).
fn gpu_main(spec: &str) {
    use tribe_bids::model::ComputeDtype;
    let device = tribe_bids::model::parse_device(spec).unwrap();
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dtypes = std::env::var("BENCH_DTYPES").unwrap_or_else(|_| "f32,bf16".into());
    let keep = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "brain_model bench on {device:?}: hidden {HIDDEN}, depth {DEPTH}, heads {HEADS}, low-rank {LOW_RANK}, \
         outputs {N_OUT}, T {T}; median of {reps} synchronized forwards after 3 warm-up"
    );
    let t0 = Instant::now();
    let (bytes, reused) = ensure_weights(&dir);
    println!(
        "{} random weights: {:.1} MiB in {:.1} s",
        if reused { "reused" } else { "wrote" },
        bytes as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    let x_cpu = inputs(7);
    let x: HashMap<String, Tensor> = x_cpu
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(&device).unwrap()))
        .collect();
    // CPU f32 reference prediction (fast kernels) for the GPU parity check.
    let t0 = Instant::now();
    let cpu_pred = TribeModel::load(&dir, &Device::Cpu, ModelOptions::default())
        .unwrap()
        .forward(&x_cpu)
        .unwrap();
    println!(
        "CPU f32 reference: {:.2} s (load + one forward)",
        t0.elapsed().as_secs_f64()
    );
    let ymax = max_abs(&cpu_pred);
    let bound = 1e-5 * ymax + 1e-6;
    let fl = flops(T, false, false);
    let mut rows = Vec::new();
    let mut preds: Vec<(String, Tensor)> = Vec::new();
    for name in dtypes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dtype = match name {
            "f32" => ComputeDtype::F32,
            "bf16" => ComputeDtype::Bf16,
            other => panic!("BENCH_DTYPES: unknown dtype {other} (f32, bf16)"),
        };
        let t0 = Instant::now();
        let m = TribeModel::load(
            &dir,
            &device,
            ModelOptions {
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        device.synchronize().unwrap();
        let load_s = t0.elapsed().as_secs_f64();
        let (med, min, y) = time_on_device(&m, &x, 3, reps);
        let y = y.to_device(&Device::Cpu).unwrap();
        let d = max_abs(&(&y - &cpu_pred).unwrap());
        let verdict = if dtype == ComputeDtype::F32 {
            if d <= bound {
                "within f32 bound"
            } else {
                "OUTSIDE f32 bound"
            }
        } else if d <= 2e-2 * ymax {
            "within bf16 bound 2e-2*max"
        } else {
            "OUTSIDE bf16 bound 2e-2*max"
        };
        println!(
            "{name:<5} load {load_s:.2} s; {:.2} ms/window median ({:.2} min), {:.0} GFLOP/s; \
             max|gpu - cpu f32| = {d:.3e} ({:.2e} of max|y| {ymax:.3e}; {verdict})",
            med * 1e3,
            min * 1e3,
            fl / med / 1e9,
            d / ymax
        );
        rows.push(serde_json::json!({
            "dtype": name, "load_s": load_s, "ms_median": med * 1e3, "ms_min": min * 1e3,
            "gflops": fl / med / 1e9, "max_abs_diff_vs_cpu_f32": d, "rel_diff": d / ymax,
            "verdict": verdict,
        }));
        preds.push((name.to_string(), y));
        drop(m);
    }
    if let Some(dir) = keep {
        let mut all: Vec<(String, &Tensor)> = x_cpu.iter().map(|(k, v)| (k.clone(), v)).collect();
        for (name, y) in &preds {
            let key = if name == "f32" {
                "prediction".to_string()
            } else {
                format!("prediction_{name}")
            };
            all.push((key, y));
        }
        if !preds.iter().any(|(n, _)| n == "f32") {
            all.push(("prediction".to_string(), &cpu_pred));
        }
        let refs: Vec<(&str, &Tensor)> = all.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        tribe_bids::model::write_safetensors_f32(&dir.join("window.safetensors"), &refs).unwrap();
        let summary = serde_json::json!({
            "device": format!("{device:?}"), "reps": reps, "gflop": fl / 1e9,
            "parity_bound_f32": bound, "max_abs_expected": ymax, "runs": rows,
        });
        std::fs::write(
            dir.join("gpu_summary.json"),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .unwrap();
        println!(
            "left weights, window.safetensors and gpu_summary.json in {}",
            dir.display()
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var("BENCH_DEVICE") {
        return gpu_main(&spec);
    }
    // cargo bench passes --bench; ignore arguments.
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let threads = candle_core::utils::get_num_threads();
    println!(
        "brain_model bench: hidden {HIDDEN}, depth {DEPTH}, heads {HEADS}, low-rank {LOW_RANK}, outputs {N_OUT}, T {T}"
    );
    println!("threads: {threads} (RAYON_NUM_THREADS to change); reps: {reps} (best of)");
    let keep = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = Instant::now();
    let (weight_bytes, reuse) = ensure_weights(&dir);
    println!(
        "{} random weights: {:.1} MiB in {:.1} s",
        if reuse { "reused" } else { "wrote" },
        weight_bytes as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );

    let x = inputs(7);
    // BENCH_PROFILE=N: only run N exact forwards (for `perf record`), then stop.
    if let Some(n) = std::env::var("BENCH_PROFILE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        let head = HeadOptions {
            pool_before_head: std::env::var_os("BENCH_POOL_FIRST").is_some(),
            fold_low_rank: std::env::var_os("BENCH_FOLD").is_some(),
        };
        let m = TribeModel::load(
            &dir,
            &Device::Cpu,
            ModelOptions {
                head,
                ..Default::default()
            },
        )
        .unwrap();
        let c0 = cpu_seconds();
        for _ in 0..n {
            let _ = m.forward(&x).unwrap();
        }
        println!(
            "{n} forwards ({head:?}): {:.0} CPU-ms each",
            (cpu_seconds() - c0) / n as f64 * 1e3
        );
        return;
    }
    let (candle_peak, candle_cpu, faer_peak, faer_cpu) = gemm_peak();
    println!(
        "f32 GEMM peak (1024x2048x4096): candle matmul {candle_peak:.1} GFLOP/s ({candle_cpu:.1} per CPU-s), \
         faer (our CPU path) {faer_peak:.1} GFLOP/s ({faer_cpu:.1} per CPU-s)"
    );

    reset_peak_rss();
    let base_rss = rss_mib("VmRSS:");
    let t0 = Instant::now();
    let exact = TribeModel::load(&dir, &Device::Cpu, ModelOptions::default()).unwrap();
    let load_s = t0.elapsed().as_secs_f64();
    let after_load = rss_mib("VmHWM:");
    println!(
        "load: {:.2} s; RSS before {:.0} MiB, peak after load {:.0} MiB (weights {:.0} MiB -> {:.2}x)",
        load_s,
        base_rss,
        after_load,
        weight_bytes as f64 / 1048576.0,
        after_load / (weight_bytes as f64 / 1048576.0)
    );

    let flops_exact = flops(T, false, false);
    let (s_exact, c_exact, y_exact) = time_forward(&exact, &x, reps);
    let peak_fwd = rss_mib("VmHWM:");
    println!(
        "peak RSS after forward passes: {:.0} MiB ({:.2}x the weights)",
        peak_fwd,
        peak_fwd / (weight_bytes as f64 / 1048576.0)
    );
    let ymax = max_abs(&y_exact);
    let bound = 1e-5 * ymax + 1e-6;
    println!(
        "\nvariant                         ms/window  CPU-ms  GFLOP  GFLOP/s  GFLOP/CPU-s  speed-up(CPU)  max|d| vs exact (bound {bound:.2e})"
    );
    let row = |name: &str, s: f64, c: f64, fl: f64, d: Option<f32>| {
        println!(
            "{name:<32}{:>8.1}  {:>7.0}  {:>5.1}  {:>7.1}  {:>10.1}  {:>11.2}x  {}",
            s * 1e3,
            c * 1e3,
            fl / 1e9,
            fl / s / 1e9,
            fl / c / 1e9,
            c_exact / c,
            d.map(|d| format!(
                "{d:.2e} {}",
                if d <= bound { "(within)" } else { "(OUTSIDE)" }
            ))
            .unwrap_or("-".into())
        );
    };
    row("exact (default)", s_exact, c_exact, flops_exact, None);
    drop(exact);
    let variants = [
        (
            "exact, portable candle kernels",
            HeadOptions::default(),
            Kernels::Portable,
            flops_exact,
        ),
        (
            "pool before head",
            HeadOptions {
                pool_before_head: true,
                fold_low_rank: false,
            },
            Kernels::Auto,
            flops(T, true, false),
        ),
        (
            "fold low-rank into predictor",
            HeadOptions {
                pool_before_head: false,
                fold_low_rank: true,
            },
            Kernels::Auto,
            flops(T, false, true),
        ),
        (
            "fold + pool before head",
            HeadOptions {
                pool_before_head: true,
                fold_low_rank: true,
            },
            Kernels::Auto,
            flops(T, true, true),
        ),
    ];
    let mut results = Vec::new();
    for (name, head, kernels, fl) in variants {
        let m = TribeModel::load(
            &dir,
            &Device::Cpu,
            ModelOptions {
                head,
                kernels,
                ..Default::default()
            },
        )
        .unwrap();
        let r = if kernels == Kernels::Portable {
            1.max(reps / 3)
        } else {
            reps
        };
        let (s, c, y) = time_forward(&m, &x, r);
        let d = max_abs(&(&y - &y_exact).unwrap());
        row(name, s, c, fl, Some(d));
        results.push((name, s, c, d));
    }
    breakdown(c_exact);
    if let Some(dir) = keep {
        let pred = y_exact.clone();
        let mut all: Vec<(&str, &Tensor)> = x.iter().map(|(k, v)| (k.as_str(), v)).collect();
        all.push(("prediction", &pred));
        tribe_bids::model::write_safetensors_f32(&dir.join("window.safetensors"), &all).unwrap();
        let summary = serde_json::json!({
            "threads": threads,
            "ms_per_window_exact": s_exact * 1e3,
            "cpu_ms_per_window_exact": c_exact * 1e3,
            "gflop_exact": flops_exact / 1e9,
            "gemm_peak_candle_gflops": candle_peak,
            "gemm_peak_faer_gflops": faer_peak,
            "gemm_candle_gflops_per_cpu_s": candle_cpu,
            "gemm_faer_gflops_per_cpu_s": faer_cpu,
            "peak_rss_mib": peak_fwd,
            "weights_mib": weight_bytes as f64 / 1048576.0,
            "variants": results.iter().map(|(n, s, c, d)| serde_json::json!({"name": n, "ms": s * 1e3, "cpu_ms": c * 1e3, "max_abs_dev": d})).collect::<Vec<_>>(),
        });
        std::fs::write(
            dir.join("candle_summary.json"),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .unwrap();
        println!(
            "\nleft weights, window.safetensors and candle_summary.json in {}",
            dir.display()
        );
    }
}
