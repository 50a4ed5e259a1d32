//! FastICA benchmark on a 2,048 x 20,484 matrix (the predictor readout's shape, SPEC §11) with
//! five planted non-Gaussian sources plus Gaussian noise, 5 components. Compare with
//! `bench/ica_sklearn.py` (same shape and recipe) on the same machine.
//!
//! Run: `cargo bench --bench ica` (add `-- --small` for a 1/4-size check).

use std::time::Instant;
use tribe_bids::analysis::ica::{IcaOptions, fast_ica};

/// Process CPU seconds (user + system, all threads) from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
    fn laplace(&mut self) -> f64 {
        let u = self.uniform() - 0.5;
        -u.signum() * (1.0 - 2.0 * u.abs()).ln()
    }
}

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    let (ns, nf, k) = if small {
        (512, 5121, 5)
    } else {
        (2048, 20484, 5)
    };
    let mut rng = Rng(3);
    let s: Vec<f64> = (0..ns * k).map(|_| rng.laplace()).collect();
    let a: Vec<f64> = (0..nf * k).map(|_| rng.normal()).collect();
    let x: Vec<f32> = (0..ns * nf)
        .map(|i| {
            let (r, f) = (i / nf, i % nf);
            let v: f64 = (0..k).map(|c| s[r * k + c] * a[f * k + c]).sum();
            (v + 0.5 * rng.normal()) as f32
        })
        .collect();
    println!(
        "FastICA benchmark: {ns} x {nf}, {k} components, {} threads",
        rayon::current_num_threads()
    );
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t0 = Instant::now();
        let c0 = cpu_seconds();
        let r = fast_ica(&x, ns, nf, &IcaOptions::default()).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        best = best.min(dt);
        println!(
            "  run: {dt:.3} s wall, {:.2} CPU s ({} iterations, converged {})",
            cpu_seconds() - c0,
            r.n_iter,
            r.converged
        );
    }
    println!("  best: {best:.3} s");
}
