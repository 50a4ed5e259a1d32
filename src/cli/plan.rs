//! The run plan: which runs will be processed, with what timing and which stimuli, and which
//! features they need. `--dry-run` prints it and writes nothing; the pipeline executes it.

use std::path::Path;

use crate::bids::{Filters, Layout, Run};
use crate::cli::bids_app::{Modality, RunConfig};
use crate::error::Result;
use crate::stimulus::timeline::{MediaKind, media_kind};

/// Open the dataset and select the runs the configuration asks for.
pub fn select_runs(cfg: &RunConfig) -> Result<(Layout, Vec<Run>)> {
    let layout = Layout::open(&cfg.bids_dir)?;
    let mut filters = Filters::from_labels(&cfg.participants, &cfg.sessions, &cfg.tasks, &cfg.runs);
    if let Some(f) = &cfg.bids_filter_file {
        filters = filters.with_filter_file(f)?;
    }
    let runs = layout.runs(&filters)?;
    Ok((layout, runs))
}

/// The modalities a run's events call for, before `--modalities` is applied.
pub fn modalities_needed(run: &Run) -> Vec<Modality> {
    let mut m = Vec::new();
    let mut add = |x| {
        if !m.contains(&x) {
            m.push(x)
        }
    };
    if run
        .events
        .as_ref()
        .is_some_and(|e| e.rows.iter().any(|r| r.word.is_some()))
    {
        add(Modality::Text);
    }
    for s in &run.stimuli {
        match media_kind(Path::new(&s.stim_file)) {
            Some(MediaKind::Video) => {
                add(Modality::Video);
                add(Modality::Audio);
            }
            Some(MediaKind::Audio) => add(Modality::Audio),
            Some(MediaKind::Image) => add(Modality::Video),
            Some(MediaKind::Transcript) => add(Modality::Text),
            None => {}
        }
        if has_sidecar_transcript(&s.path) {
            add(Modality::Text);
        }
    }
    m.sort();
    m
}

fn has_sidecar_transcript(media: &Path) -> bool {
    match (media.file_stem(), media.parent()) {
        (Some(stem), Some(dir)) => dir
            .join(format!("{}_words.tsv", stem.to_string_lossy()))
            .is_file(),
        _ => false,
    }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The plan as a table (what `--dry-run` prints).
pub fn plan_table(cfg: &RunConfig, runs: &[Run]) -> String {
    let header = [
        "subject",
        "session",
        "task",
        "run",
        "TR (s)",
        "volumes",
        "stimuli found",
        "missing",
        "features",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in runs {
        let tr = match (r.timing.repetition_time, &r.timing.volume_timing) {
            (Some(tr), _) => format!("{tr}"),
            (None, Some(_)) => "VolumeTiming".into(),
            _ => "-".into(),
        };
        let found = r.stimuli.iter().filter(|s| s.found).count();
        let missing: Vec<&str> = r
            .stimuli
            .iter()
            .filter(|s| !s.found)
            .map(|s| s.stim_file.as_str())
            .collect();
        let features: Vec<&str> = modalities_needed(r)
            .into_iter()
            .filter(|m| cfg.modalities.contains(m))
            .map(|m| m.name())
            .collect();
        rows.push(vec![
            r.subject().to_string(),
            fmt_opt(r.session()),
            r.task().to_string(),
            fmt_opt(r.entities.run()),
            tr,
            r.n_volumes
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown (empty image)".into()),
            format!("{found}/{}", r.stimuli.len()),
            if missing.is_empty() {
                "-".into()
            } else {
                missing.join(", ")
            },
            if features.is_empty() {
                "none".into()
            } else {
                features.join("+")
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    let subjects: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.subject()).collect();
    out.push_str(&format!(
        "\n{} run(s) of {} participant(s). Output: {} (nothing written: --dry-run)\n",
        runs.len(),
        subjects.len(),
        cfg.output_dir.display()
    ));
    out
}
