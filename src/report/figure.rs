//! One brain figure: four views (left lateral, left medial, right lateral, right medial) in a
//! row and a colour bar with tick labels, written as PNG.
//!
//! All four views share one scale (mm to pixels) so the hemispheres are comparable; the views
//! are rendered in parallel at `supersample` times the final size and averaged down.

use super::font::{draw_text, draw_text_centered, text_height, text_width};
use super::mesh::HemiSurface;
use super::render::{Framing, MapStyle, View, downsample, projected_extent, render_view};
use crate::{Error, Result};
use image::{Rgb, RgbImage};
use rayon::prelude::*;
use std::path::Path;

/// Layout options.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureOptions {
    /// Size of one view panel in the final image.
    pub panel_width: u32,
    pub panel_height: u32,
    /// Render at this many times the final size, then average (2 = 4 samples per pixel).
    pub supersample: u32,
    pub title: Option<String>,
    pub colorbar: bool,
    /// Write "L lateral" etc. under each view.
    pub view_labels: bool,
    pub views: Vec<View>,
}

impl Default for FigureOptions {
    fn default() -> Self {
        FigureOptions {
            panel_width: 340,
            panel_height: 260,
            supersample: 2,
            title: None,
            colorbar: true,
            view_labels: true,
            views: View::ALL.to_vec(),
        }
    }
}

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [40, 40, 40];

/// Render the figure for a whole-cortex map (`data`: left vertices then right, fsaverage order).
pub fn render_surface_figure(
    left: &HemiSurface,
    right: &HemiSurface,
    data: &[f32],
    style: &MapStyle,
    opts: &FigureOptions,
) -> Result<RgbImage> {
    let (nl, nr) = (left.mesh.vertices.len(), right.mesh.vertices.len());
    if data.len() != nl + nr {
        return Err(Error::ShapeMismatch {
            name: "surface map (left + right vertices)".into(),
            expected: vec![nl + nr],
            found: vec![data.len()],
            path: None,
        });
    }
    let ss = opts.supersample.max(1) as usize;
    let (pw, ph) = (opts.panel_width as usize, opts.panel_height as usize);
    let (rw, rh) = (pw * ss, ph * ss);
    // One scale for all views: the largest that fits every view with a small margin.
    let scale = opts
        .views
        .iter()
        .map(|&v| {
            let (ext, _) = projected_extent(if v.is_left() { left } else { right }, v);
            ((rw as f32 * 0.96) / ext[0].max(1e-3)).min((rh as f32 * 0.96) / ext[1].max(1e-3))
        })
        .fold(f32::INFINITY, f32::min);
    let panels: Vec<Vec<[u8; 3]>> = opts
        .views
        .par_iter()
        .map(|&v| {
            let (hemi, d) = if v.is_left() {
                (left, &data[..nl])
            } else {
                (right, &data[nl..])
            };
            let (_, center) = projected_extent(hemi, v);
            let img = render_view(
                hemi,
                d,
                style,
                v,
                rw,
                rh,
                Framing { scale, center },
                [1.0, 1.0, 1.0],
            )?;
            Ok(downsample(&img, rw, rh, ss))
        })
        .collect::<Result<Vec<_>>>()?;

    let title_h = if opts.title.is_some() { 30 } else { 6 };
    let label_h = if opts.view_labels { 22 } else { 0 };
    let bar_w = if opts.colorbar { 120 } else { 0 };
    let width = pw as u32 * opts.views.len() as u32 + bar_w;
    let height = title_h + ph as u32 + label_h;
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));
    if let Some(t) = &opts.title {
        draw_text(&mut img, 10, 8, t, 2, INK);
    }
    for (i, (panel, v)) in panels.iter().zip(&opts.views).enumerate() {
        let x0 = i as u32 * pw as u32;
        for y in 0..ph {
            for x in 0..pw {
                img.put_pixel(x0 + x as u32, title_h + y as u32, Rgb(panel[y * pw + x]));
            }
        }
        if opts.view_labels {
            draw_text_centered(
                &mut img,
                (x0 + pw as u32 / 2) as i32,
                (title_h + ph as u32 + 4) as i32,
                v.label(),
                2,
                [90, 90, 90],
            );
        }
    }
    if opts.colorbar {
        draw_colorbar(
            &mut img,
            pw as u32 * opts.views.len() as u32 + 14,
            title_h + ph as u32 / 8,
            ph as u32 * 3 / 4,
            style,
        );
    }
    Ok(img)
}

/// Short tick text: 3 significant digits, scientific outside [1e-2, 1e4).
pub fn format_tick(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    let s = if !(1e-2..1e4).contains(&a) {
        let e = a.log10().floor() as i32;
        format!("{:.1}e{}", v / 10f32.powi(e), e)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    // trim trailing zeros after a decimal point ("2.50" -> "2.5", "3.00" -> "3")
    if s.contains('.') && !s.contains('e') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        t.to_string()
    } else {
        s
    }
}

/// Vertical colour bar at (x, y), `h` pixels tall, vmax at the top. Values hidden by the
/// threshold are drawn in the background grey, as nilearn does.
fn draw_colorbar(img: &mut RgbImage, x: u32, y: u32, h: u32, style: &MapStyle) {
    let bw = 20u32;
    let h = h.max(20);
    let val_at = |row: u32| style.vmax - (style.vmax - style.vmin) * (row as f32 + 0.5) / h as f32;
    for r in 0..h {
        let v = val_at(r);
        // blended over the same mid grey as the brain's background, so a faded map's bar
        // matches what the surface shows
        let c = style
            .blended(v, [0.78, 0.78, 0.78])
            .map(|c| c.map(|x| (x * 255.0).round() as u8))
            .unwrap_or([200, 200, 200]);
        for dx in 0..bw {
            if x + dx < img.width() && y + r < img.height() {
                img.put_pixel(x + dx, y + r, Rgb(c));
            }
        }
    }
    // frame
    for r in 0..h {
        for &dx in &[0, bw - 1] {
            if x + dx < img.width() && y + r < img.height() {
                img.put_pixel(x + dx, y + r, Rgb(INK));
            }
        }
    }
    for dx in 0..bw {
        for &r in &[0, h - 1] {
            if x + dx < img.width() && y + r < img.height() {
                img.put_pixel(x + dx, y + r, Rgb(INK));
            }
        }
    }
    // ticks: limits, threshold(s), zero
    let mut ticks = vec![style.vmax, style.vmin];
    if let Some(t) = style.threshold
        && t > 0.0
    {
        if t < style.vmax {
            ticks.push(t);
        }
        if -t > style.vmin {
            ticks.push(-t);
        }
    } else if style.vmin < 0.0 && style.vmax > 0.0 {
        ticks.push(0.0);
    }
    let scale = 2;
    let mut placed: Vec<i32> = Vec::new();
    for v in ticks {
        let row =
            ((style.vmax - v) / (style.vmax - style.vmin).max(1e-30) * h as f32).round() as i32;
        let ty = y as i32 + row.clamp(0, h as i32 - 1);
        if placed
            .iter()
            .any(|p| (p - ty).abs() < text_height(scale) as i32 + 2)
        {
            continue;
        }
        placed.push(ty);
        for dx in 0..5 {
            let px = x + bw + dx;
            if px < img.width() && (ty as u32) < img.height() {
                img.put_pixel(px, ty as u32, Rgb(INK));
            }
        }
        draw_text(
            img,
            (x + bw + 7) as i32,
            ty - text_height(scale) as i32 / 2,
            &format_tick(v),
            scale,
            INK,
        );
    }
    if !style.label.is_empty() {
        // centred on the bar when short ("z"), else left-aligned with it; clear of the top tick
        let tw = text_width(&style.label, scale) as i32;
        let lx = if tw <= bw as i32 + 8 {
            x as i32 + (bw as i32 - tw) / 2
        } else {
            x as i32
        };
        draw_text(
            img,
            lx,
            y as i32 - text_height(scale) as i32 - 12,
            &style.label,
            scale,
            INK,
        );
    }
}

/// Write an image as PNG, atomically (temp file then rename: a killed job never leaves a
/// truncated figure), with the path in any error.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    crate::util::write_atomic(path, &png_bytes(img, path)?)
}

/// PNG encoding with the best compression: figures are mostly flat white and grey, so this
/// roughly halves the files for a few milliseconds more per figure.
pub fn png_bytes(img: &RgbImage, path: &Path) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut buf = Vec::new();
    PngEncoder::new_with_quality(&mut buf, CompressionType::Best, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::OutputNotWritable {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_format() {
        assert_eq!(format_tick(3.0), "3");
        assert_eq!(format_tick(-2.5), "-2.5");
        assert_eq!(format_tick(12.345), "12.3");
        assert_eq!(format_tick(0.123), "0.123");
        assert_eq!(format_tick(0.001234), "1.2e-3");
        assert_eq!(format_tick(250.0), "250");
    }
}
