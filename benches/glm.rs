//! GLM benchmark: 20,484 vertices x 3,600 volumes x 10 regressors (7 conditions, polynomial
//! drift of order 2, constant), OLS and AR(1), plus one contrast. Compare with
//! `bench/glm_nilearn.py` on the same machine (same sizes, same data recipe).
//!
//! Run: `cargo bench --bench glm` (add `-- --small` for a quick 1/8-size check).

use std::time::Instant;
use tribe_bids::analysis::contrast::ContrastSpec;
use tribe_bids::analysis::design::{
    DesignOptions, DriftModel, Event, frame_times, make_first_level_design_matrix,
};
use tribe_bids::analysis::glm::{GlmOptions, NoiseModel, fit};

/// Process CPU seconds (user + system, all threads) from /proc/self/stat: under a shared,
/// overloaded machine this is steadier than wall time.
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
}

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    let (nt, nv) = if small { (450, 2560) } else { (3600, 20484) };
    let tr = 1.0;
    let conds = ["a", "b", "c", "d", "e", "f", "g"];
    let mut rng = Rng(1);
    let mut events = Vec::new();
    let mut t = 2.0;
    let mut i = 0;
    while t < nt as f64 * tr - 10.0 {
        events.push(Event::new(
            t,
            2.0 + 2.0 * rng.uniform(),
            conds[i % conds.len()],
        ));
        t += 6.0 + 4.0 * rng.uniform();
        i += 1;
    }
    let ft = frame_times(nt, tr, 0.0);
    let t0 = Instant::now();
    let opts = DesignOptions {
        drift: DriftModel::Polynomial { order: 2 },
        ..DesignOptions::default()
    };
    let design = make_first_level_design_matrix(&ft, &events, &opts).unwrap();
    let t_design = t0.elapsed().as_secs_f64();
    assert_eq!(design.n_cols(), 10);
    // data: AR(1) noise with vertex-dependent coefficient (0..0.6) + task signal, float32
    let mut y = vec![0.0f32; nt * nv];
    let mut e = vec![0.0f64; nv];
    for ti in 0..nt {
        for v in 0..nv {
            let phi = 0.6 * v as f64 / nv as f64;
            e[v] = phi * e[v] + rng.normal();
            let s = design.get(ti, v % 7) * (1.0 + (v % 3) as f64);
            y[ti * nv + v] = (s + e[v]) as f32;
        }
    }
    println!(
        "GLM benchmark: {nt} volumes x {nv} vertices x {} regressors, {} threads",
        design.n_cols(),
        rayon::current_num_threads()
    );
    println!(
        "  design matrix: {:.3} s ({} events)",
        t_design,
        events.len()
    );
    // cost of the exact t -> z conversion (nilearn's p-value route), per value
    let ts: Vec<f64> = (0..100_000)
        .map(|i| -12.0 + 24.0 * i as f64 / 100_000.0)
        .collect();
    let dof = (nt - design.n_cols()) as f64;
    let t0 = Instant::now();
    let zs: f64 = ts
        .iter()
        .map(|&t| tribe_bids::analysis::stats::z_from_t(t, dof))
        .sum();
    std::hint::black_box(zs);
    println!(
        "  t -> z: {:.2} us per value (1 thread)",
        t0.elapsed().as_secs_f64() * 1e6 / ts.len() as f64
    );
    let spec = ContrastSpec::parse_cli("a-b", &design.columns).unwrap();
    for (noise, name) in [(NoiseModel::Ols, "ols"), (NoiseModel::Ar1, "ar1")] {
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        let mut best_con = f64::INFINITY;
        let mut bins = 0;
        for _ in 0..3 {
            let t0 = Instant::now();
            let c0 = cpu_seconds();
            let f = fit(
                &y,
                nv,
                &design,
                &GlmOptions {
                    noise_model: noise,
                    bins: 100,
                },
            )
            .unwrap();
            let t_fit = t0.elapsed().as_secs_f64();
            best_cpu = best_cpu.min(cpu_seconds() - c0);
            let t0 = Instant::now();
            let c = f.contrast_spec(&spec).unwrap();
            let t_con = t0.elapsed().as_secs_f64();
            std::hint::black_box(&c.z);
            best = best.min(t_fit);
            best_con = best_con.min(t_con);
            bins = f.n_bins();
        }
        println!(
            "  {name}: fit {best:.3} s wall ({best_cpu:.2} CPU s), contrast (effect/variance/t/z) {best_con:.3} s, AR bins {bins}"
        );
    }
}
