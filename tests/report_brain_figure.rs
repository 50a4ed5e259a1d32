//! Brain figures on the real fsaverage5 mesh (assets/fsaverage5, decoded by the nibabel oracle
//! because the GIFTI reader lives in another module) and on a synthetic sphere.
//!
//! The checks are about what a reader must see: a blob planted on the left superior temporal
//! gyrus shows up in warm colours in the lower middle of the left lateral view and nowhere in
//! the right hemisphere; a negative blob at the right occipital pole shows in cool colours at
//! the posterior end of the right views; the sulcal background has both gyral and sulcal grey.
//! Set TRIBE_FIGURE_DIR to keep the PNGs for viewing.

mod common;

use image::RgbImage;
use std::path::{Path, PathBuf};
use tribe_bids::report::figure::{FigureOptions, render_surface_figure, save_png};
use tribe_bids::report::mesh::{HemiSurface, Mesh};
use tribe_bids::report::render::MapStyle;

const DUMP: &str = r#"
import sys, gzip, numpy as np, nibabel as nib
src, dst = sys.argv[1], sys.argv[2]
for h in ["left", "right"]:
    for kind in ["pial", "infl", "sulc"]:
        img = nib.GiftiImage.from_bytes(gzip.open(f"{src}/{kind}_{h}.gii.gz").read())
        if kind == "sulc":
            img.darrays[0].data.astype("<f4").tofile(f"{dst}/{kind}_{h}.f32")
        else:
            img.darrays[0].data.astype("<f4").tofile(f"{dst}/{kind}_{h}.xyz")
            img.darrays[1].data.astype("<u4").tofile(f"{dst}/{kind}_{h}.tri")
"#;

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn read_u32(p: &Path) -> Vec<u32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// (half-inflated surface, pial mesh) per hemisphere.
fn load_fsaverage5(dir: &Path) -> [(HemiSurface, Mesh); 2] {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fsaverage5");
    common::run_python(DUMP, &[assets.to_str().unwrap(), dir.to_str().unwrap()]);
    ["left", "right"].map(|h| {
        let pial = Mesh::from_arrays(
            &read_f32(&dir.join(format!("pial_{h}.xyz"))),
            &read_u32(&dir.join(format!("pial_{h}.tri"))),
        )
        .unwrap();
        let infl = Mesh::from_arrays(
            &read_f32(&dir.join(format!("infl_{h}.xyz"))),
            &read_u32(&dir.join(format!("infl_{h}.tri"))),
        )
        .unwrap();
        let sulc = read_f32(&dir.join(format!("sulc_{h}.f32")));
        assert_eq!(pial.vertices.len(), 10242);
        assert_eq!(pial.triangles.len(), 20480);
        (
            HemiSurface {
                mesh: pial.blend(&infl, 0.5).unwrap(),
                sulc,
            },
            pial,
        )
    })
}

/// Gaussian blob (sigma in mm, on the pial surface) around the vertex nearest to `at`.
fn blob(pial: &Mesh, at: [f32; 3], sigma: f32, amp: f32) -> Vec<f32> {
    let d2 = |p: &[f32; 3], q: &[f32; 3]| {
        (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)
    };
    let c = pial
        .vertices
        .iter()
        .min_by(|a, b| d2(a, &at).partial_cmp(&d2(b, &at)).unwrap())
        .unwrap();
    pial.vertices
        .iter()
        .map(|p| amp * (-d2(p, c) / (2.0 * sigma * sigma)).exp())
        .collect()
}

fn out_dir(tmp: &Path) -> PathBuf {
    std::env::var("TRIBE_FIGURE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.to_path_buf())
}

fn is_warm(p: [u8; 3]) -> bool {
    p[0] > 150 && p[2] < 120 && p[0] as i32 - p[2] as i32 > 80
}

fn is_cool(p: [u8; 3]) -> bool {
    p[2] > 150 && p[0] < 120 && p[2] as i32 - p[0] as i32 > 80
}

/// Centroid (x, y) in panel-relative fractions and count of pixels matching `f` in panel `i`.
fn panel_stats(
    img: &RgbImage,
    i: u32,
    pw: u32,
    y0: u32,
    ph: u32,
    f: fn([u8; 3]) -> bool,
) -> (f32, f32, usize) {
    let (mut sx, mut sy, mut n) = (0.0f32, 0.0f32, 0usize);
    for y in y0..y0 + ph {
        for x in i * pw..(i + 1) * pw {
            if f(img.get_pixel(x, y).0) {
                sx += (x - i * pw) as f32 / pw as f32;
                sy += (y - y0) as f32 / ph as f32;
                n += 1;
            }
        }
    }
    if n == 0 {
        (f32::NAN, f32::NAN, 0)
    } else {
        (sx / n as f32, sy / n as f32, n)
    }
}

#[test]
fn fsaverage5_figure_shows_blobs_where_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let [(left, lpial), (right, rpial)] = load_fsaverage5(tmp.path());
    // left superior temporal gyrus (+), right occipital pole (-)
    let mut data = blob(&lpial, [-62.0, -20.0, 4.0], 9.0, 6.0);
    data.extend(blob(&rpial, [18.0, -100.0, 2.0], 9.0, -5.0));
    let style = MapStyle::signed(&data, Some(1.5), "z");
    let opts = FigureOptions {
        title: Some("blob test".into()),
        ..FigureOptions::default()
    };
    let img = render_surface_figure(&left, &right, &data, &style, &opts).unwrap();
    let out = out_dir(tmp.path());
    let path = out.join("figure_blobs.png");
    save_png(&img, &path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), img.dimensions());

    let (pw, ph, y0) = (opts.panel_width, opts.panel_height, 30);
    // panel 0 = L lateral: warm blob in the middle-lower part (temporal lobe), none cool
    let (cx, cy, n) = panel_stats(&img, 0, pw, y0, ph, is_warm);
    eprintln!("L lateral warm: n={n} centroid=({cx:.2},{cy:.2})");
    assert!(n > 300, "blob not visible in L lateral");
    assert!(
        (0.3..0.7).contains(&cx) && (0.45..0.8).contains(&cy),
        "blob at ({cx},{cy})"
    );
    assert_eq!(panel_stats(&img, 0, pw, y0, ph, is_cool).2, 0);
    // right hemisphere panels: no warm; cool blob posterior (left side of R medial, which
    // shows anterior on the left... see View docs: R lateral has anterior on the right)
    for i in [2, 3] {
        assert_eq!(
            panel_stats(&img, i, pw, y0, ph, is_warm).2,
            0,
            "warm pixels in panel {i}"
        );
    }
    let (cx, _, n) = panel_stats(&img, 2, pw, y0, ph, is_cool);
    eprintln!("R lateral cool: n={n} cx={cx:.2}");
    assert!(
        n > 30 && cx < 0.3,
        "occipital blob should be at the left (posterior) end of R lateral"
    );
    let (cx, _, n) = panel_stats(&img, 3, pw, y0, ph, is_cool);
    eprintln!("R medial cool: n={n} cx={cx:.2}");
    assert!(
        n > 100 && cx > 0.7,
        "occipital blob should be at the right (posterior) end of R medial"
    );
    // sulcal background: light and dark greys both present in the L medial panel
    let greys: Vec<u8> = (0..ph)
        .flat_map(|y| (pw..2 * pw).map(move |x| (x, y)))
        .map(|(x, y)| img.get_pixel(x, y0 + y).0)
        .filter(|p| p[0] == p[1] && p[1] == p[2] && p[0] < 250)
        .map(|p| p[0])
        .collect();
    let light = greys.iter().filter(|g| **g > 150).count();
    let dark = greys.iter().filter(|g| **g < 110).count();
    assert!(light > 2000 && dark > 2000, "light {light} dark {dark}");

    // a positive map ('hot'): magnitude of both blobs, values below 1 hidden
    let pos: Vec<f32> = data.iter().map(|v| v.abs()).collect();
    let pstyle = MapStyle::positive(&pos, Some(1.0), "|z|");
    let img =
        render_surface_figure(&left, &right, &pos, &pstyle, &FigureOptions::default()).unwrap();
    save_png(&img, &out.join("figure_positive.png")).unwrap();
    assert!(
        panel_stats(&img, 3, pw, 6, ph, is_warm).2 > 100,
        "positive blob missing in R medial"
    );

    // the sulcal map itself, as a positive map, and an all-NaN map (background only)
    let sulc: Vec<f32> = left.sulc.iter().chain(&right.sulc).cloned().collect();
    let img = render_surface_figure(
        &left,
        &right,
        &sulc,
        &MapStyle::signed(&sulc, None, "sulc"),
        &FigureOptions::default(),
    )
    .unwrap();
    save_png(&img, &out.join("figure_sulc.png")).unwrap();
    let nan = vec![f32::NAN; sulc.len()];
    let opts = FigureOptions {
        colorbar: false,
        ..FigureOptions::default()
    };
    let img = render_surface_figure(
        &left,
        &right,
        &nan,
        &MapStyle::signed(&nan, None, ""),
        &opts,
    )
    .unwrap();
    save_png(&img, &out.join("figure_background.png")).unwrap();
    // wrong length is a typed error
    assert!(render_surface_figure(&left, &right, &sulc[..100], &style, &opts).is_err());
}

/// A UV sphere, no oracle needed: the upper half (z > 0.2) is coloured, the rest grey, and
/// the shading is brighter facing the light than at the rim.
#[test]
fn sphere_threshold_and_shading() {
    let (nlat, nlon) = (40usize, 80usize);
    let mut xyz = Vec::new();
    for i in 0..=nlat {
        let th = std::f32::consts::PI * i as f32 / nlat as f32;
        for j in 0..nlon {
            let ph = 2.0 * std::f32::consts::PI * j as f32 / nlon as f32;
            xyz.extend([
                50.0 * th.sin() * ph.cos(),
                50.0 * th.sin() * ph.sin(),
                50.0 * th.cos(),
            ]);
        }
    }
    let mut tri = Vec::new();
    for i in 0..nlat as u32 {
        for j in 0..nlon as u32 {
            let a = i * nlon as u32 + j;
            let b = i * nlon as u32 + (j + 1) % nlon as u32;
            tri.extend([a, a + nlon as u32, b, b, a + nlon as u32, b + nlon as u32]);
        }
    }
    let mesh = Mesh::from_arrays(&xyz, &tri).unwrap();
    let n = mesh.vertices.len();
    let z: Vec<f32> = mesh.vertices.iter().map(|v| v[2] / 50.0).collect();
    let hemi = HemiSurface {
        mesh,
        sulc: vec![0.0; n],
    };
    let data: Vec<f32> = z.iter().chain(&z).cloned().collect();
    let style = MapStyle::positive(&data, Some(0.2), "z");
    let opts = FigureOptions {
        view_labels: false,
        ..FigureOptions::default()
    };
    let img = render_surface_figure(&hemi, &hemi, &data, &style, &opts).unwrap();
    let (pw, ph, y0) = (opts.panel_width, opts.panel_height, 6);
    let top = img.get_pixel(pw / 2, y0 + ph / 4).0;
    let bottom = img.get_pixel(pw / 2, y0 + ph * 3 / 4).0;
    assert!(top[0] > top[2] + 60, "top should be coloured: {top:?}");
    assert!(
        bottom[0] == bottom[1] && bottom[1] == bottom[2],
        "bottom should be grey: {bottom:?}"
    );
    // centre of the disc (facing the viewer) brighter than near the rim
    let centre = img.get_pixel(pw / 2, y0 + ph * 3 / 5).0[0];
    let rim = img
        .get_pixel(pw / 2 - (ph as f32 * 0.45) as u32, y0 + ph * 3 / 5)
        .0[0];
    assert!(centre > rim + 30, "centre {centre} rim {rim}");
    // background stays white
    assert_eq!(img.get_pixel(2, y0 + 2).0, [255, 255, 255]);
}
