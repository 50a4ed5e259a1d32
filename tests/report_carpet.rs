//! Carpet plot of a synthetic prediction: an event every 20 volumes drives half of the
//! vertices, so those columns stand out (bright) against the rest; shape errors are typed.
//! Set TRIBE_FIGURE_DIR to keep the PNG.

use tribe_bids::report::carpet::{CarpetOptions, render_carpet};
use tribe_bids::report::figure::save_png;

#[test]
fn carpet_shows_events_as_columns() {
    let (nt, nv, nl) = (300usize, 20484usize, 10242usize);
    let mut y = vec![0.0f32; nt * nv];
    for t in 0..nt {
        let drive = if t % 20 < 3 { 1.0 } else { 0.0 };
        for v in 0..nv {
            let noise = (((t * 7919 + v * 104729) % 1000) as f32 / 1000.0 - 0.5) * 0.6;
            let gain = if v % 2 == 0 { 1.0 } else { 0.2 };
            y[t * nv + v] = 5.0 + gain * drive + noise + 0.001 * v as f32;
        }
    }
    let opts = CarpetOptions {
        tr: Some(1.0),
        title: Some("sub-01 task-movie: predicted BOLD".into()),
        ..CarpetOptions::default()
    };
    let img = render_carpet(&y, nt, nv, nl, &opts).unwrap();
    assert_eq!(img.dimensions(), (opts.width, opts.height));
    if let Ok(d) = std::env::var("TRIBE_FIGURE_DIR") {
        save_png(&img, &std::path::Path::new(&d).join("carpet.png")).unwrap();
    }
    // carpet area: columns at event volumes are brighter than between events
    let (left_m, carpet_w) = (44u32, opts.width - 44 - 12);
    let col = |t: usize| left_m + ((t as f64 + 0.5) * carpet_w as f64 / nt as f64) as u32;
    let mean_col = |x: u32| {
        (200..300)
            .map(|y| img.get_pixel(x, y).0[0] as f64)
            .sum::<f64>()
            / 100.0
    };
    let on = mean_col(col(101));
    let off = mean_col(col(110));
    assert!(on > off + 60.0, "event column {on} vs baseline {off}");
    assert!(render_carpet(&y[..100], nt, nv, nl, &opts).is_err());
}
