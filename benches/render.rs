//! Figure rendering benchmark: one 4-view brain figure (340 x 260 per view, 2x supersampling)
//! plus PNG encoding, on the real fsaverage5 half-inflated mesh.
//! The surfaces are the ones the app embeds (`report::fsaverage`).
//! Run: `cargo bench --bench render`.

use std::time::Instant;
use tribe_bids::report::figure::{FigureOptions, png_bytes, render_surface_figure};
use tribe_bids::report::fsaverage;
use tribe_bids::report::render::MapStyle;

/// Process CPU seconds (user + system, all threads) from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let t0 = Instant::now();
    let (left, right) = fsaverage::load(fsaverage::DEFAULT_INFLATION).unwrap();
    println!(
        "fsaverage5 (embedded, decoded and half-inflated): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let data: Vec<f32> = left
        .mesh
        .vertices
        .iter()
        .chain(&right.mesh.vertices)
        .map(|p| 4.0 * (p[1] / 40.0).sin() * (p[2] / 30.0).cos())
        .collect();
    let style = MapStyle::signed(&data, Some(1.0), "z");
    let opts = FigureOptions::default();
    println!(
        "render benchmark: 4 views of {}x{} at {}x supersampling, {} threads",
        opts.panel_width,
        opts.panel_height,
        opts.supersample,
        rayon::current_num_threads()
    );
    let mut times = Vec::new();
    let mut png_times = Vec::new();
    let c0 = cpu_seconds();
    for _ in 0..6 {
        let t0 = Instant::now();
        let img = render_surface_figure(&left, &right, &data, &style, &opts).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let png = png_bytes(&img, std::path::Path::new("bench.png")).unwrap();
        std::hint::black_box(png);
        png_times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (cpu_seconds() - c0) * 1e3 / 6.0;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    png_times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  figure: min {:.1} ms, median {:.1} ms wall; PNG encode: median {:.1} ms; CPU per figure incl. PNG: {cpu_ms:.0} ms",
        times[0], times[3], png_times[3]
    );

    // carpet plot of a 600-volume run (20,484 vertices)
    let (nt, nv) = (600usize, 20484usize);
    let y: Vec<f32> = (0..nt * nv)
        .map(|i| ((i % 7919) as f32 * 0.37).sin())
        .collect();
    let mut ct = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let img = tribe_bids::report::carpet::render_carpet(
            &y,
            nt,
            nv,
            nv / 2,
            &tribe_bids::report::carpet::CarpetOptions::default(),
        )
        .unwrap();
        std::hint::black_box(img);
        ct.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ct.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("  carpet (600 volumes): median {:.1} ms wall", ct[1]);
}
