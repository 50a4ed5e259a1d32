//! Carpet plot of predicted BOLD (fMRIPrep's "BOLD Summary" reportlet, for a prediction):
//! the mean predicted signal on top, then one row per (sampled) vertex and one column per
//! time bin, each vertex z-scored over time and the grey scale clipped at the 2nd/98th
//! percentiles, left hemisphere rows above right hemisphere rows.
//!
//! Why z-score per vertex: predicted amplitudes differ a lot between vertices; without it the
//! picture shows only where the model predicts large values, not when the whole cortex moves
//! together (stimulus onsets, scene cuts), which is what a carpet plot is for.

use super::font::{draw_text, draw_text_centered, text_height, text_width};
use crate::{Error, Result};
use image::{Rgb, RgbImage};

/// Layout of the carpet figure.
#[derive(Debug, Clone, PartialEq)]
pub struct CarpetOptions {
    pub width: u32,
    pub height: u32,
    /// Seconds per volume, for the time axis (None: label volumes).
    pub tr: Option<f64>,
    pub title: Option<String>,
}

impl Default for CarpetOptions {
    fn default() -> Self {
        CarpetOptions {
            width: 900,
            height: 460,
            tr: None,
            title: None,
        }
    }
}

const INK: [u8; 3] = [40, 40, 40];

/// A "nice" step (1, 2 or 5 x 10^k) giving at most `max_ticks` ticks over `span`.
fn nice_step(span: f64, max_ticks: usize) -> f64 {
    let raw = span / max_ticks.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Render `y` (`n_volumes x n_vertices`, row-major; the first `n_left` vertices are the left
/// hemisphere).
pub fn render_carpet(
    y: &[f32],
    n_volumes: usize,
    n_vertices: usize,
    n_left: usize,
    opts: &CarpetOptions,
) -> Result<RgbImage> {
    if y.len() != n_volumes * n_vertices || n_volumes < 2 || n_vertices == 0 {
        return Err(Error::ShapeMismatch {
            name: "carpet data (volumes x vertices)".into(),
            expected: vec![n_volumes.max(2), n_vertices.max(1)],
            found: vec![y.len() / n_vertices.max(1), n_vertices],
            path: None,
        });
    }
    let (w, h) = (opts.width.max(200), opts.height.max(160));
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let title_h = if opts.title.is_some() { 26 } else { 4 };
    let (left_m, right_m) = (44u32, 12u32);
    let trace_h = 70u32;
    let axis_h = 48u32;
    let carpet_top = title_h + trace_h + 8;
    let carpet_h = h.saturating_sub(carpet_top + axis_h).max(20);
    let carpet_w = w - left_m - right_m;
    if let Some(t) = &opts.title {
        draw_text(&mut img, 8, 6, t, 2, INK);
    }

    // rows: evenly spaced vertices, at most one per pixel row
    let n_rows = (carpet_h as usize).min(n_vertices);
    let rows: Vec<usize> = (0..n_rows)
        .map(|r| ((r as f64 + 0.5) * n_vertices as f64 / n_rows as f64) as usize)
        .collect();
    // time bins: one per pixel column (averaging volumes when there are more volumes than pixels)
    let n_cols = carpet_w as usize;
    let bin = |c: usize| -> (usize, usize) {
        let a = c * n_volumes / n_cols;
        let b = ((c + 1) * n_volumes / n_cols).max(a + 1).min(n_volumes);
        (a, b)
    };
    // per-row z-scored values per column
    let mut zimg = vec![0.0f32; n_rows * n_cols];
    for (r, &v) in rows.iter().enumerate() {
        let series: Vec<f64> = (0..n_volumes)
            .map(|t| y[t * n_vertices + v] as f64)
            .collect();
        let mean = series.iter().sum::<f64>() / n_volumes as f64;
        let sd = (series.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n_volumes as f64).sqrt();
        for c in 0..n_cols {
            let (a, b) = bin(c);
            let m = series[a..b].iter().sum::<f64>() / (b - a) as f64;
            zimg[r * n_cols + c] = if sd > 0.0 && sd.is_finite() {
                ((m - mean) / sd) as f32
            } else {
                0.0
            };
        }
    }
    let mut sorted: Vec<f32> = zimg.iter().cloned().filter(|v| v.is_finite()).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
            .cloned()
            .unwrap_or(0.0)
    };
    let (lo, hi) = (q(0.02), q(0.98));
    let span = if hi > lo { hi - lo } else { 1.0 };
    for py in 0..carpet_h {
        let r = (py as usize * n_rows / carpet_h as usize).min(n_rows - 1);
        for px in 0..carpet_w {
            let c = px as usize;
            let v = zimg[r * n_cols + c];
            let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
            img.put_pixel(left_m + px, carpet_top + py, Rgb([g, g, g]));
        }
    }
    // hemisphere separator and labels
    if n_left > 0 && n_left < n_vertices {
        let sep_row = rows.iter().position(|&v| v >= n_left).unwrap_or(n_rows);
        let sep_y = carpet_top + (sep_row as u32 * carpet_h / n_rows as u32).min(carpet_h - 1);
        for px in left_m.saturating_sub(8)..left_m + carpet_w {
            img.put_pixel(px, sep_y, Rgb([220, 60, 40]));
        }
        let th = text_height(2) as i32;
        draw_text(
            &mut img,
            10,
            ((carpet_top + sep_y) / 2) as i32 - th / 2,
            "L",
            2,
            INK,
        );
        draw_text(
            &mut img,
            10,
            ((sep_y + carpet_top + carpet_h) / 2) as i32 - th / 2,
            "R",
            2,
            INK,
        );
    }

    // mean trace over all vertices
    let mean: Vec<f64> = (0..n_volumes)
        .map(|t| {
            y[t * n_vertices..(t + 1) * n_vertices]
                .iter()
                .map(|v| *v as f64)
                .sum::<f64>()
                / n_vertices as f64
        })
        .collect();
    let (mlo, mhi) = mean
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let mspan = if mhi > mlo { mhi - mlo } else { 1.0 };
    let ty = |v: f64| title_h as f64 + 6.0 + (1.0 - (v - mlo) / mspan) * (trace_h as f64 - 12.0);
    let tx = |t: usize| left_m as f64 + (t as f64 + 0.5) * carpet_w as f64 / n_volumes as f64;
    for t in 1..n_volumes {
        draw_line(
            &mut img,
            tx(t - 1),
            ty(mean[t - 1]),
            tx(t),
            ty(mean[t]),
            [200, 80, 30],
        );
    }
    // same size as the other labels (legible when the page scales the figure down)
    draw_text(
        &mut img,
        0,
        (title_h + trace_h / 2) as i32 - text_height(2) as i32 / 2,
        "mean",
        2,
        [90, 90, 90],
    );

    // time axis
    let axis_y = carpet_top + carpet_h + 2;
    let (unit, total) = match opts.tr {
        Some(tr) => ("s", n_volumes as f64 * tr),
        None => ("volume", n_volumes as f64),
    };
    let step = nice_step(total, 8);
    let mut t = 0.0;
    while t <= total + 1e-9 {
        let px = left_m as f64 + t / total * carpet_w as f64;
        let px = (px.round() as u32).min(left_m + carpet_w - 1);
        for dy in 0..5 {
            img.put_pixel(px, axis_y + dy, Rgb(INK));
        }
        let label = if step >= 1.0 {
            format!("{t:.0}")
        } else {
            format!("{t}")
        };
        // keep the label inside the image
        let half = text_width(&label, 2) as i32 / 2;
        let cx = (px as i32).clamp(half + 1, w as i32 - half - 1);
        draw_text_centered(&mut img, cx, (axis_y + 7) as i32, &label, 2, INK);
        t += step;
    }
    let ul = format!("time ({unit})");
    draw_text_centered(
        &mut img,
        (left_m + carpet_w / 2) as i32,
        (axis_y + 7 + text_height(2) + 6) as i32,
        &ul,
        2,
        [90, 90, 90],
    );
    Ok(img)
}

/// Anti-aliasing-free line (DDA), good enough for a 1-px trace.
fn draw_line(img: &mut RgbImage, x0: f64, y0: f64, x1: f64, y1: f64, color: [u8; 3]) {
    let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=n {
        let f = i as f64 / n as f64;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        for dy in 0..2 {
            let (px, py) = (x.round() as i64, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, Rgb(color));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        assert_eq!(nice_step(600.0, 8), 100.0);
        assert_eq!(nice_step(90.0, 8), 20.0);
        assert_eq!(nice_step(7.0, 8), 1.0);
    }
}
