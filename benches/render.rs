//! Figure rendering benchmark: one 4-view brain figure (340 x 260 per view, 2x supersampling)
//! plus PNG encoding, on the real fsaverage5 half-inflated mesh.
//!
//! The meshes come from raw dumps (the GIFTI reader is not a dependency of the renderer):
//!   /work/venv/bin/python -c "see tests/report_brain_figure.rs DUMP" or set TRIBE_FS5_DIR to a
//!   folder with {pial,infl}_{left,right}.xyz (f32 LE), .tri (u32 LE) and sulc_{left,right}.f32.
//! Run: `cargo bench --bench render`.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tribe_bids::report::figure::{FigureOptions, render_surface_figure};
use tribe_bids::report::mesh::{HemiSurface, Mesh};
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

fn f32s(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn u32s(p: &Path) -> Vec<u32> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn main() {
    let dir = PathBuf::from(std::env::var("TRIBE_FS5_DIR").unwrap_or_else(|_| "/tmp/fs5".into()));
    let hemi = |h: &str| {
        let pial = Mesh::from_arrays(
            &f32s(&dir.join(format!("pial_{h}.xyz"))),
            &u32s(&dir.join(format!("pial_{h}.tri"))),
        )
        .unwrap();
        let infl = Mesh::from_arrays(
            &f32s(&dir.join(format!("infl_{h}.xyz"))),
            &u32s(&dir.join(format!("infl_{h}.tri"))),
        )
        .unwrap();
        HemiSurface {
            mesh: pial.blend(&infl, 0.5).unwrap(),
            sulc: f32s(&dir.join(format!("sulc_{h}.f32"))),
        }
    };
    let (left, right) = (hemi("left"), hemi("right"));
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
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        png_times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (cpu_seconds() - c0) * 1e3 / 6.0;
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    png_times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  figure: min {:.1} ms, median {:.1} ms wall; PNG encode: median {:.1} ms; CPU per figure incl. PNG: {cpu_ms:.0} ms",
        times[0], times[3], png_times[3]
    );
}
