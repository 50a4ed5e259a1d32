//! A small software rasteriser for cortical surfaces: orthographic camera, z-buffer,
//! per-pixel interpolation of the data, sulcal depth and normals, Lambert + ambient +
//! a little specular light (TRIBE's pyvista plots use ambient 0.3 and smooth shading),
//! and supersampling for anti-aliasing.
//!
//! Interpolating the *data* per pixel (rather than colouring faces as nilearn's matplotlib
//! backend does) gives smooth maps and crisp threshold borders at fsaverage5's coarse
//! resolution, which is what makes "where does this contrast land" readable at a glance.

use super::colormap::Colormap;
use super::mesh::{HemiSurface, cross, dot};
use crate::{Error, Result};

/// The four standard views (SPEC §12: nilearn (elev, azim) left (0,180), right (0,0),
/// medial_left (0,0), medial_right (0,180)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    LeftLateral,
    LeftMedial,
    RightLateral,
    RightMedial,
}

impl View {
    pub const ALL: [View; 4] = [
        View::LeftLateral,
        View::LeftMedial,
        View::RightLateral,
        View::RightMedial,
    ];

    pub fn is_left(self) -> bool {
        matches!(self, View::LeftLateral | View::LeftMedial)
    }

    pub fn label(self) -> &'static str {
        match self {
            View::LeftLateral => "L lateral",
            View::LeftMedial => "L medial",
            View::RightLateral => "R lateral",
            View::RightMedial => "R medial",
        }
    }

    /// Camera basis (forward into the scene, right, up) in RAS coordinates.
    fn basis(self) -> ([f32; 3], [f32; 3], [f32; 3]) {
        let up = [0.0, 0.0, 1.0];
        // Looking along +x shows a left hemisphere's lateral side (and a right one's medial).
        let forward = match self {
            View::LeftLateral | View::RightMedial => [1.0, 0.0, 0.0],
            View::LeftMedial | View::RightLateral => [-1.0, 0.0, 0.0],
        };
        (forward, cross(forward, up), up)
    }
}

/// How data values become colours.
#[derive(Debug, Clone, PartialEq)]
pub struct MapStyle {
    pub cmap: Colormap,
    pub vmin: f32,
    pub vmax: f32,
    /// Values with |v| below this show the sulcal background.
    pub threshold: Option<f32>,
    /// Caption of the colour bar (e.g. "z", "predicted BOLD").
    pub label: String,
    /// Signed maps hide |v| < threshold; one-sided maps hide v < threshold.
    pub two_sided: bool,
    /// Opacity ramp for unthresholded maps: colour is blended over the sulcal background with
    /// opacity |v| / fade (capped at 1), so weak values let the folding pattern show through
    /// instead of painting the whole cortex (TRIBE's `alpha_cmap`, SPEC §12). None = opaque.
    pub fade: Option<f32>,
}

impl MapStyle {
    /// Signed maps (contrasts): `cold_hot`, limits ±max|v|.
    pub fn signed(data: &[f32], threshold: Option<f32>, label: &str) -> Self {
        let m = data
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f32, |a, v| a.max(v.abs()));
        let m = if m > 0.0 { m } else { 1.0 };
        MapStyle {
            cmap: Colormap::ColdHot,
            vmin: -m,
            vmax: m,
            threshold,
            label: label.into(),
            two_sided: true,
            fade: None,
        }
    }

    /// Positive maps (mean prediction, ICA loadings): `hot` from 0 (or the threshold) to max.
    pub fn positive(data: &[f32], threshold: Option<f32>, label: &str) -> Self {
        let m = data
            .iter()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let lo = threshold.unwrap_or(0.0).max(0.0);
        let m = if m > lo { m } else { lo + 1.0 };
        MapStyle {
            cmap: Colormap::Hot,
            vmin: lo,
            vmax: m,
            threshold,
            label: label.into(),
            two_sided: false,
            fade: None,
        }
    }

    /// Opacity of a value's colour over the background (1 without a fade ramp).
    pub fn opacity(&self, v: f32) -> f32 {
        match self.fade {
            Some(f) if f > 0.0 => {
                let a = if self.two_sided {
                    v.abs()
                } else {
                    v - self.vmin
                };
                (a / f).clamp(0.0, 1.0)
            }
            _ => 1.0,
        }
    }

    /// Colour of a value blended with opacity over `background`, or None where the background
    /// alone should show.
    pub fn blended(&self, v: f32, background: [f32; 3]) -> Option<[f32; 3]> {
        let c = self.color(v)?;
        let a = self.opacity(v);
        Some([
            a * c[0] + (1.0 - a) * background[0],
            a * c[1] + (1.0 - a) * background[1],
            a * c[2] + (1.0 - a) * background[2],
        ])
    }

    /// Colour of a value, or None where the background should show.
    pub fn color(&self, v: f32) -> Option<[f32; 3]> {
        if !v.is_finite() {
            return None;
        }
        if let Some(t) = self.threshold {
            let shown = if self.two_sided { v.abs() >= t } else { v >= t };
            if !shown {
                return None;
            }
        }
        let span = self.vmax - self.vmin;
        let x = if span > 0.0 {
            (v - self.vmin) / span
        } else {
            0.5
        };
        Some(self.cmap.rgb(x))
    }
}

/// Grey level of the sulcal background: light on gyri (sulc < 0), dark in sulci (sulc > 0),
/// with a soft but narrow transition so the folding pattern reads as two tones, as in
/// nilearn's and pyvista's sulcal backgrounds.
fn sulc_grey(s: f32, lo: f32, hi: f32) -> f32 {
    let mid = if lo < 0.0 && hi > 0.0 {
        0.0
    } else {
        0.5 * (lo + hi)
    };
    let w = 0.3 * (hi - lo).max(1e-6);
    let t = ((s - mid) / w * 0.5 + 0.5).clamp(0.0, 1.0);
    let t = t * t * (3.0 - 2.0 * t);
    0.84 - 0.38 * t
}

/// Robust sulc range (5th and 95th percentiles), so a few extreme vertices do not wash out
/// the contrast between gyri and sulci.
pub(crate) fn sulc_range(sulc: &[f32]) -> (f32, f32) {
    let mut v: Vec<f32> = sulc.iter().cloned().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (-1.0, 1.0);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f32| v[((v.len() - 1) as f32 * p).round() as usize];
    (q(0.05), q(0.95))
}

/// Where a hemisphere lands on screen for a view, at a given scale.
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Pixels per mm.
    pub scale: f32,
    /// Screen-space centre of the projected bounding box (mm, in camera right/up axes).
    pub center: [f32; 2],
}

/// Projected extent (width, height in mm) and centre of a mesh for a view.
pub fn projected_extent(hemi: &HemiSurface, view: View) -> ([f32; 2], [f32; 2]) {
    let (_, right, up) = view.basis();
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in &hemi.mesh.vertices {
        let x = dot(*p, right);
        let y = dot(*p, up);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    ([x1 - x0, y1 - y0], [(x0 + x1) / 2.0, (y0 + y1) / 2.0])
}

/// Render one view at `width x height` (already supersampled by the caller) into linear RGB,
/// with `background` where nothing is drawn. `data` is one value per vertex (NaN = none).
#[allow(clippy::too_many_arguments)]
pub fn render_view(
    hemi: &HemiSurface,
    data: &[f32],
    style: &MapStyle,
    view: View,
    width: usize,
    height: usize,
    framing: Framing,
    background: [f32; 3],
) -> Result<Vec<[f32; 3]>> {
    let nv = hemi.mesh.vertices.len();
    if data.len() != nv || hemi.sulc.len() != nv {
        return Err(Error::ShapeMismatch {
            name: "surface map (data, sulc) for one hemisphere".into(),
            expected: vec![nv, nv],
            found: vec![data.len(), hemi.sulc.len()],
            path: None,
        });
    }
    let (forward, right, up) = view.basis();
    let normals = hemi.mesh.vertex_normals();
    let (slo, shi) = sulc_range(&hemi.sulc);
    // Light from the viewer's side, slightly above and in front.
    let to_light = normalize([
        -forward[0] + 0.35 * up[0] + 0.25 * right[0],
        -forward[1] + 0.35 * up[1] + 0.25 * right[1],
        -forward[2] + 0.35 * up[2] + 0.25 * right[2],
    ]);
    let to_eye = [-forward[0], -forward[1], -forward[2]];
    let half = normalize([
        to_light[0] + to_eye[0],
        to_light[1] + to_eye[1],
        to_light[2] + to_eye[2],
    ]);
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let proj: Vec<[f32; 3]> = hemi
        .mesh
        .vertices
        .iter()
        .map(|p| {
            [
                cx + framing.scale * (dot(*p, right) - framing.center[0]),
                cy - framing.scale * (dot(*p, up) - framing.center[1]),
                dot(*p, forward),
            ]
        })
        .collect();
    let mut depth = vec![f32::INFINITY; width * height];
    // For each pixel: triangle index and barycentric weights of the nearest surface.
    let mut hit: Vec<(u32, f32, f32)> = vec![(u32::MAX, 0.0, 0.0); width * height];
    for (ti, tri) in hemi.mesh.triangles.iter().enumerate() {
        let [a, b, c] = tri.map(|i| proj[i as usize]);
        let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if area.abs() < 1e-12 {
            continue;
        }
        let xmin = a[0].min(b[0]).min(c[0]).floor().max(0.0) as usize;
        let xmax = (a[0].max(b[0]).max(c[0]).ceil() as isize).min(width as isize - 1);
        let ymin = a[1].min(b[1]).min(c[1]).floor().max(0.0) as usize;
        let ymax = (a[1].max(b[1]).max(c[1]).ceil() as isize).min(height as isize - 1);
        if xmax < 0 || ymax < 0 {
            continue;
        }
        for py in ymin..=ymax as usize {
            let y = py as f32 + 0.5;
            for px in xmin..=xmax as usize {
                let x = px as f32 + 0.5;
                let w0 = ((b[0] - x) * (c[1] - y) - (b[1] - y) * (c[0] - x)) / area;
                let w1 = ((c[0] - x) * (a[1] - y) - (c[1] - y) * (a[0] - x)) / area;
                let w2 = 1.0 - w0 - w1;
                if w0 < -1e-6 || w1 < -1e-6 || w2 < -1e-6 {
                    continue;
                }
                let z = w0 * a[2] + w1 * b[2] + w2 * c[2];
                let idx = py * width + px;
                if z < depth[idx] {
                    depth[idx] = z;
                    hit[idx] = (ti as u32, w0, w1);
                }
            }
        }
    }
    let mut out = vec![background; width * height];
    for (idx, &(ti, w0, w1)) in hit.iter().enumerate() {
        if ti == u32::MAX {
            continue;
        }
        let tri = hemi.mesh.triangles[ti as usize];
        let w = [w0, w1, 1.0 - w0 - w1];
        let mut n = [0.0f32; 3];
        let mut s = 0.0;
        let mut v = 0.0;
        let mut v_nan = false;
        for k in 0..3 {
            let vi = tri[k] as usize;
            for d in 0..3 {
                n[d] += w[k] * normals[vi][d];
            }
            s += w[k] * hemi.sulc[vi];
            let dv = data[vi];
            if dv.is_finite() {
                v += w[k] * dv;
            } else {
                v_nan = true;
            }
        }
        let n = normalize(n);
        let diffuse = dot(n, to_light).max(0.0);
        let spec = dot(n, half).max(0.0).powi(24);
        let g = sulc_grey(s, slo, shi);
        let base = if v_nan {
            None
        } else {
            style.blended(v, [g, g, g])
        };
        let base = base.unwrap_or([g, g, g]);
        let shade = 0.42 + 0.58 * diffuse;
        out[idx] = [
            (base[0] * shade + 0.12 * spec).min(1.0),
            (base[1] * shade + 0.12 * spec).min(1.0),
            (base[2] * shade + 0.12 * spec).min(1.0),
        ];
    }
    Ok(out)
}

fn normalize(v: [f32; 3]) -> [f32; 3] {
    let l = dot(v, v).sqrt();
    if l > 0.0 {
        [v[0] / l, v[1] / l, v[2] / l]
    } else {
        v
    }
}

/// Average `factor x factor` blocks (supersampling -> anti-aliasing) into 8-bit RGB.
pub fn downsample(src: &[[f32; 3]], width: usize, height: usize, factor: usize) -> Vec<[u8; 3]> {
    let f = factor.max(1);
    let (w, h) = (width / f, height / f);
    let mut out = vec![[0u8; 3]; w * h];
    let norm = 1.0 / (f * f) as f32;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0.0f32; 3];
            for dy in 0..f {
                for dx in 0..f {
                    let p = src[(y * f + dy) * width + x * f + dx];
                    acc[0] += p[0];
                    acc[1] += p[1];
                    acc[2] += p[2];
                }
            }
            out[y * w + x] = acc.map(|c| (c * norm * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    out
}
