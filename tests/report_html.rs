//! The HTML page links only to files that exist (relative paths), every in-page anchor has a
//! target, user text is escaped, and a missing figure is reported.

use std::path::Path;
use tribe_bids::report::html::{
    ContrastSummary, FigureRef, NetworkSummary, Provenance, ReportSummary, RunSummary,
    analysis_methods, missing_links, render_html,
};

fn summary() -> ReportSummary {
    let fig = |p: &str, c: &str| FigureRef {
        path: p.into(),
        caption: c.into(),
    };
    ReportSummary {
        subject: "01".into(),
        summary: vec![("Runs".into(), "1".into()), ("Space".into(), "fsaverage5".into())],
        overview: vec![vec!["task-movie run-1".into(), "done".into()]],
        runs: vec![RunSummary {
            name: "task-movie run-1".into(),
            n_volumes: 300,
            tr: 1.5,
            stimuli: vec!["stimuli/movie <part 1>.mp4".into()],
            facts: vec![("Prediction time".into(), "12.3 s".into())],
            figures: vec![
                fig("sub-01/figures/sub-01_task-movie_run-1_desc-carpetplot_bold.png", "Carpet plot"),
                fig("sub-01/figures/sub-01_task-movie_run-1_desc-mean_bold.png", "Mean prediction"),
            ],
            outputs: vec!["sub-01/func/sub-01_task-movie_run-1_hemi-L_space-fsaverage5_desc-predicted_bold.func.gii".into()],
        }],
        contrasts: vec![ContrastSummary {
            name: "facesVsPlaces".into(),
            expression: "faces - places".into(),
            figure: Some(fig("sub-01/figures/sub-01_task-movie_contrast-facesVsPlaces_stat-z_statmap.png", "z map")),
            outputs: vec![],
        }],
        networks: vec![NetworkSummary {
            component: "ICA_00".into(),
            label: Some("language".into()),
            score: Some(0.61),
            weak_evidence: false,
            explained_variance: Some(0.21),
            figure: Some(fig("group/figures/desc-ICA00_components.png", "ICA_00")),
        }],
        network_figure: None,
        provenance: Provenance {
            version: "0.1.0".into(),
            command: "tribe-bids /data /out participant --contrast 'faces-places'".into(),
            date: "2026-01-01".into(),
            software: vec![("TRIBE v2 checkpoint".into(), "facebook/tribev2".into())],
            checksums: vec![("best.ckpt".into(), "ab12".into())],
            methods: analysis_methods("glover", 0.01, "ar1", Some(5), 0),
            references: vec!["d'Ascoli et al. (2026) <TRIBE v2>".into()],
        },
        errors: vec![],
    }
}

#[test]
fn report_has_no_broken_links() {
    let dir = tempfile::tempdir().unwrap();
    let r = summary();
    let html = render_html(&r);
    let files: Vec<String> = r
        .runs
        .iter()
        .flat_map(|run| {
            run.figures
                .iter()
                .map(|f| f.path.clone())
                .chain(run.outputs.iter().cloned())
        })
        .chain(
            r.contrasts
                .iter()
                .filter_map(|c| c.figure.as_ref().map(|f| f.path.clone())),
        )
        .chain(
            r.networks
                .iter()
                .filter_map(|n| n.figure.as_ref().map(|f| f.path.clone())),
        )
        .collect();
    // before the files exist every local link is reported
    let missing = missing_links(&html, dir.path());
    assert_eq!(missing.len(), files.len() * 2 - 1, "{missing:?}"); // figures: href + src; outputs: href
    for f in &files {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
    }
    assert_eq!(missing_links(&html, dir.path()), Vec::<String>::new());
    std::fs::write(dir.path().join("sub-01.html"), &html).unwrap();

    // escaping and content
    assert!(html.contains("movie &lt;part 1&gt;.mp4"));
    assert!(html.contains("--contrast &#39;faces-places&#39;"));
    assert!(html.contains("FastICA (5 components"));
    for id in ["summary", "runs", "contrasts", "networks", "about"] {
        assert!(html.contains(&format!("id=\"{id}\"")));
    }
    // absolute paths and dangling anchors are flagged
    let bad = html
        .replace("href=\"#about\"", "href=\"#nowhere\"")
        .replace(
            "src=\"sub-01/figures/sub-01_task-movie_run-1_desc-mean_bold.png\"",
            "src=\"/abs/mean.png\"",
        );
    let m = missing_links(&bad, Path::new(dir.path()));
    assert_eq!(m, vec!["#nowhere".to_string(), "/abs/mean.png".to_string()]);
}
