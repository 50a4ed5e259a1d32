//! The per-subject HTML report as the real binary writes it, checked the way a user meets it:
//!
//! * every `<img src>` and `<a href>` in `sub-01.html` (found by parsing the tags here, not with
//!   the library's own link finder) is relative and resolves, also after the output folder is
//!   moved; every figure is a decodable PNG in `sub-01/figures/` with a BIDS-like name; the output
//!   still passes `tests/tools/validate-derivatives`;
//! * headless Chromium (Debian `chromium`) loads every image of the page (naturalWidth > 0,
//!   checked by a script in a copy of the page that also holds one deliberately broken image, so
//!   the check is shown to fail when it should) and its screenshot shows the coloured maps;
//! * one figure, rendered from fixed data, matches `tests/fixtures/report/contrast_figure.png`
//!   within a stated per-pixel tolerance.
//!
//! The contrast and ICA sections are exercised by planting a z statmap and group ICA maps in the
//! output folder before the run (the report reads them from disk, whoever wrote them).
//! Chromium missing is a failure with the install command, never a skip.

mod common;

use assert_cmd::Command;
use image::RgbImage;
use std::path::{Path, PathBuf};
use tribe_bids::formats::gifti::{DataArray, GiftiImage, Hemisphere};
use tribe_bids::formats::{Intent, write_gifti};
use tribe_bids::report::fsaverage;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A smooth fixed map on fsaverage5: Gaussian blobs (sigma 12 mm on the half-inflated surface)
/// centred on the vertices nearest to a left lateral temporal, a left medial occipital and a
/// right lateral frontal site; the last is negative. Deterministic: depends only on the bundled
/// mesh.
fn fixture_map() -> Vec<f32> {
    let (l, r) = fsaverage::load(fsaverage::DEFAULT_INFLATION).unwrap();
    let d2 = |p: &[f32; 3], c: &[f32; 3]| {
        (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)
    };
    let blobs = |h: &tribe_bids::report::mesh::HemiSurface, spots: &[([f32; 3], f32)]| {
        let centres: Vec<([f32; 3], f32)> = spots
            .iter()
            .map(|(at, amp)| {
                let c = h
                    .mesh
                    .vertices
                    .iter()
                    .min_by(|a, b| d2(a, at).total_cmp(&d2(b, at)))
                    .unwrap();
                (*c, *amp)
            })
            .collect();
        h.mesh
            .vertices
            .iter()
            .map(|p| {
                centres
                    .iter()
                    .map(|(c, amp)| amp * (-d2(p, c) / (2.0 * 12.0f32.powi(2))).exp())
                    .sum::<f32>()
            })
            .collect::<Vec<f32>>()
    };
    let mut z = blobs(&l, &[([-60.0, -25.0, 0.0], 8.0), ([-8.0, -85.0, 5.0], 5.0)]);
    z.extend(blobs(&r, &[([45.0, 30.0, 20.0], -6.0)]));
    z
}

fn write_map(path: &Path, hemi: Hemisphere, maps: &[&[f32]], intent: Intent) {
    let mut img = GiftiImage::for_hemisphere(hemi);
    for m in maps {
        img.arrays.push(DataArray::vertex_map(intent, m.to_vec()));
    }
    write_gifti(path, &img).unwrap();
}

/// Plant a contrast z map (as the first-level step names it) and group ICA maps in `out`.
fn plant_analysis_outputs(out: &Path) {
    let z = fixture_map();
    let n = fsaverage::N_VERTICES;
    let func = out.join("sub-01/func");
    std::fs::create_dir_all(&func).unwrap();
    for (h, hemi, part) in [
        ("L", Hemisphere::Left, &z[..n]),
        ("R", Hemisphere::Right, &z[n..]),
    ] {
        write_map(
            &func.join(format!(
                "sub-01_task-localizer_hemi-{h}_space-fsaverage5_contrast-facesVsPlaces_stat-z_statmap.func.gii"
            )),
            hemi,
            &[part],
            Intent::ZSCORE,
        );
    }
    let group = out.join("group");
    std::fs::create_dir_all(&group).unwrap();
    let c1: Vec<f32> = z.iter().map(|v| v.abs()).collect();
    let c2: Vec<f32> = (0..2 * n).map(|i| ((i % 97) as f32 / 97.0) - 0.2).collect();
    for (h, hemi, a, b) in [
        ("L", Hemisphere::Left, &c1[..n], &c2[..n]),
        ("R", Hemisphere::Right, &c1[n..], &c2[n..]),
    ] {
        write_map(
            &group.join(format!(
                "hemi-{h}_space-fsaverage5_desc-ICA_components.func.gii"
            )),
            hemi,
            &[a, b],
            Intent::ESTIMATE,
        );
    }
    std::fs::write(
        group.join("space-fsaverage5_desc-ICA_decomposition.json"),
        r#"{"Method": "FastICA", "Components": {
            "ICA_00": {"Label": "language", "Score": 0.8, "WeakEvidence": false, "ExplainedVariance": 0.3},
            "ICA_01": {"Label": null, "Score": null, "WeakEvidence": true, "ExplainedVariance": 0.1}}}"#,
    )
    .unwrap();
}

/// `(tag, attribute, value)` of every `src`/`href` attribute of `<img>` and `<a>` tags.
fn tag_links(html: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name == "img" || name == "a" {
            for attr in ["src", "href"] {
                let pat = format!(" {attr}=\"");
                if let Some(j) = tag.find(&pat) {
                    let v = &tag[j + pat.len()..];
                    let v = &v[..v.find('"').expect("closing quote")];
                    out.push((name.clone(), attr.to_string(), v.to_string()));
                }
            }
        }
        rest = &rest[end..];
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut o = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap();
            o.push(h);
            i += 3;
        } else {
            o.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(o).unwrap()
}

/// Every local link of the page at `out/sub-01.html` resolves; returns the image paths.
fn check_links(out: &Path, html: &str) -> Vec<String> {
    let links = tag_links(html);
    let mut images = Vec::new();
    for (tag, _, v) in &links {
        if v.starts_with("https://") || v.starts_with("http://") {
            continue;
        }
        if let Some(anchor) = v.strip_prefix('#') {
            assert!(
                html.contains(&format!("id=\"{anchor}\"")),
                "anchor {v} has no target"
            );
            continue;
        }
        assert!(
            !v.starts_with('/') && !v.starts_with("file:") && !v.contains(".."),
            "{v}: links must be relative and stay inside OUT"
        );
        let p = out.join(percent_decode(v));
        assert!(p.is_file(), "<{tag}> links to a missing file: {v}");
        if tag == "img" {
            images.push(v.clone());
        }
    }
    images
}

fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("TRIBE_CHROMIUM") {
        assert!(
            Path::new(&p).is_file(),
            "TRIBE_CHROMIUM={p} does not exist.\n  fix: sudo apt-get install -y chromium, or point TRIBE_CHROMIUM at a Chromium binary"
        );
        return PathBuf::from(p);
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {c}"))
            .output()
            && o.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is missing, so the report cannot be checked in a browser.\n  fix: sudo apt-get install -y chromium \
         (scripts/install-system-deps.sh installs it), or set TRIBE_CHROMIUM to a Chromium/Chrome binary"
    );
}

fn run_chromium(profile: &Path, args: &[&str]) -> std::process::Output {
    let o = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Load every image of the page in Chromium; returns (src, naturalWidth) per image.
fn chromium_image_widths(out: &Path, html: &str, profile: &Path) -> Vec<(String, u64)> {
    // A copy of the page beside it (same relative paths) with a script that loads each image
    // afresh (independent of lazy loading) and writes the natural widths into the DOM, plus a
    // broken image as the negative control.
    let script = r#"<img src="sub-01/figures/no-such-figure.png" alt="control">
<script>
window.addEventListener('load', async () => {
  const res = await Promise.all(Array.from(document.images).map(im => new Promise(ok => {
    const probe = new Image();
    probe.onload = () => ok([im.getAttribute('src'), probe.naturalWidth]);
    probe.onerror = () => ok([im.getAttribute('src'), 0]);
    probe.src = im.src;
  })));
  const pre = document.createElement('pre');
  pre.id = 'tribe-image-check';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>
</body>"#;
    let probe = out.join("sub-01-imagecheck.html");
    std::fs::write(&probe, html.replace("</body>", script)).unwrap();
    let url = format!("file://{}", probe.display());
    let o = run_chromium(profile, &["--dump-dom", &url]);
    std::fs::remove_file(&probe).unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let start = dom
        .find("<pre id=\"tribe-image-check\">")
        .unwrap_or_else(|| panic!("the check script did not run; DOM:\n{dom}"));
    let body = &dom[start + "<pre id=\"tribe-image-check\">".len()..];
    let json = body[..body.find("</pre>").unwrap()]
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let v: Vec<(String, u64)> = serde_json::from_str(&json).unwrap();
    v
}

fn colourful_pixels(img: &RgbImage) -> usize {
    img.pixels()
        .filter(|p| {
            let [r, g, b] = p.0;
            let (mx, mn) = (r.max(g).max(b) as i32, r.min(g).min(b) as i32);
            mx - mn > 80
        })
        .count()
}

#[test]
fn app_report_links_resolve_and_render_in_chromium() {
    common::ensure_example();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    plant_analysis_outputs(&out);
    let o = Command::cargo_bin("tribe-bids")
        .unwrap()
        .arg(root().join("examples/bids"))
        .arg(&out)
        .arg("participant")
        .args([
            "--participant-label",
            "01",
            "--task-label",
            "localizer",
            "movie",
        ])
        .arg("--models-dir")
        .arg(root().join("examples/models"))
        .arg("-w")
        .arg(d.path().join("work"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    assert!(log.contains("2 done, 0 skipped, 0 failed"), "{log}");

    // (a) links, figures and names
    let page = out.join("sub-01.html");
    let html = std::fs::read_to_string(&page).expect("sub-01.html written at the output root");
    let images = check_links(&out, &html);
    // 2 runs x (carpet + mean); the planted facesVsPlaces and the first level's own default
    // contrasts (face, object, place for the localizer, movie for the movie); 2 planted ICA maps
    assert_eq!(images.len(), 11, "{images:?}");
    for i in &images {
        assert!(i.starts_with("sub-01/figures/sub-01_"), "{i}");
        let name = i.rsplit('/').next().unwrap();
        let parsed = tribe_bids::bids::entities::BidsName::parse(name)
            .unwrap_or_else(|| panic!("{name} is not a BIDS-like name"));
        assert_eq!(parsed.extension, ".png");
        let img = image::open(out.join(i)).unwrap().to_rgb8();
        assert!(img.width() > 300 && img.height() > 200, "{i}");
    }
    for want in [
        "sub-01_task-localizer_desc-carpet_bold.png",
        "sub-01_task-localizer_space-fsaverage5_desc-mean_bold.png",
        "sub-01_task-movie_desc-carpet_bold.png",
        "sub-01_task-localizer_space-fsaverage5_contrast-facesVsPlaces_stat-z_statmap.png",
        "sub-01_task-localizer_space-fsaverage5_contrast-face_stat-z_statmap.png",
        "sub-01_task-movie_space-fsaverage5_contrast-movie_stat-z_statmap.png",
        "sub-01_space-fsaverage5_desc-ICA00_components.png",
    ] {
        assert!(
            images.iter().any(|i| i.ends_with(want)),
            "{want} missing from {images:?}"
        );
    }
    for text in [
        "facesVsPlaces",
        "language",
        "|z| ≥ 3.1",
        "d&#39;Ascoli et al., 2026",
        "fsaverage5",
        "FirstLevelModel",
        "--participant-label 01",
        "sha256 ",
    ] {
        assert!(html.contains(text), "the page should mention {text}");
    }
    // the output, figures included, is still valid BIDS-Derivatives
    let venv = common::python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let v = std::process::Command::new(root().join("tests/tools/validate-derivatives"))
        .arg(&out)
        .arg(root().join("examples/bids"))
        .env("TRIBE_VALIDATE_VENV", &venv)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "validate-derivatives:\n{}\n{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // moved elsewhere, the page still resolves everything (relative links only)
    let moved = d.path().join("moved/derivatives/tribe-bids");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&out, &moved).unwrap();
    assert_eq!(check_links(&moved, &html).len(), images.len());

    // (b) Chromium: every image decodes; the negative control does not
    let profile = d.path().join("chromium-profile");
    let widths = chromium_image_widths(&moved, &html, &profile);
    assert_eq!(widths.len(), images.len() + 1, "{widths:?}");
    for (src, w) in &widths {
        if src.contains("no-such-figure") {
            assert_eq!(*w, 0, "the broken control image must be detected");
        } else {
            assert!(*w > 0, "Chromium could not load {src}");
        }
    }
    let shot = d.path().join("shot.png");
    run_chromium(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,3000",
            &format!("file://{}", moved.join("sub-01.html").display()),
        ],
    );
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (1200, 3000));
    let n = colourful_pixels(&img);
    assert!(
        n > 20_000,
        "the screenshot shows only {n} coloured pixels: are the figures displayed?"
    );
}

/// The contrast figure of [`fixture_map`] against the stored PNG.
///
/// Tolerance: a pixel "differs" when any channel is off by more than 24 (of 255); at most 0.5 %
/// of pixels may differ and the mean absolute difference must stay under 1.0. Rendering is
/// deterministic on one machine; the slack absorbs float differences at triangle edges between
/// CPUs or compilers, while a moved view, a changed colour map, lighting or label still fails.
/// Regenerate after an intended change with
/// `TRIBE_UPDATE_REPORT_FIXTURES=1 cargo test --test report_app figure_matches_stored_png`
/// and look at the new PNG before committing it.
#[test]
fn figure_matches_stored_png() {
    let (l, r) = fsaverage::load(fsaverage::DEFAULT_INFLATION).unwrap();
    let z = fixture_map();
    let (img, _) = tribe_bids::cli::report::render_contrast_figure(
        &l,
        &r,
        &z,
        "sub-01 task-localizer contrast facesVsPlaces: z",
    )
    .unwrap();
    let stored = common::fixture("report/contrast_figure.png");
    if std::env::var("TRIBE_UPDATE_REPORT_FIXTURES").is_ok() {
        tribe_bids::report::figure::save_png(&img, &stored).unwrap();
    }
    let want = image::open(&stored)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n  fix: TRIBE_UPDATE_REPORT_FIXTURES=1 cargo test --test report_app figure_matches_stored_png",
                stored.display()
            )
        })
        .to_rgb8();
    assert_eq!(img.dimensions(), want.dimensions());
    let (mut differ, mut sum, mut max) = (0usize, 0u64, 0u8);
    for (a, b) in img.pixels().zip(want.pixels()) {
        let d = (0..3).map(|c| a.0[c].abs_diff(b.0[c])).max().unwrap();
        max = max.max(d);
        sum += (0..3).map(|c| a.0[c].abs_diff(b.0[c]) as u64).sum::<u64>();
        if d > 24 {
            differ += 1;
        }
    }
    let n = (img.width() * img.height()) as usize;
    let frac = differ as f64 / n as f64;
    let mean = sum as f64 / (3 * n) as f64;
    eprintln!(
        "figure vs stored: {differ} pixels differ by > 24 ({:.3} %), mean |diff| {mean:.3}, max {max}",
        frac * 100.0
    );
    if let Ok(dir) = std::env::var("TRIBE_FIGURE_DIR") {
        img.save(Path::new(&dir).join("contrast_figure.png"))
            .unwrap();
    }
    assert!(
        frac <= 0.005 && mean < 1.0,
        "the figure changed: {:.3} % of pixels differ, mean |diff| {mean:.3} (see the test doc to regenerate)",
        frac * 100.0
    );
    // sanity: the map is visible where it was put (warm in L lateral, cool in R lateral)
    assert!(colourful_pixels(&img) > 3000);
}

/// A corrupt map costs its own section, not the page: the report is still written, lists the
/// problem under Errors, and the call returns an error naming the file (so the job fails).
#[test]
fn broken_map_is_reported_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path();
    let func = out.join("sub-07/func");
    std::fs::create_dir_all(&func).unwrap();
    for h in ["L", "R"] {
        std::fs::write(
            func.join(format!(
                "sub-07_task-x_hemi-{h}_space-fsaverage5_contrast-a_stat-z_statmap.func.gii"
            )),
            b"not a gifti",
        )
        .unwrap();
    }
    let ctx = tribe_bids::cli::report::ReportContext {
        command_line: vec![
            "tribe-bids".into(),
            "in".into(),
            "out".into(),
            "participant".into(),
        ],
        ..Default::default()
    };
    let e = tribe_bids::cli::report::write_subject_report(out, "sub-07", &ctx).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("sub-07_task-x_hemi-L_space-fsaverage5_contrast-a_stat-z_statmap.func.gii"),
        "{msg}"
    );
    let html = std::fs::read_to_string(out.join("sub-07.html")).unwrap();
    assert!(html.contains("No runs with predicted BOLD"));
    assert!(
        html.contains("class=\"error\"") && html.contains("contrast map"),
        "{html}"
    );
    check_links(out, &html);
}
