//! The per-subject HTML page (fMRIPrep style, BIDS.md §6): `OUT/sub-<s>.html` with figures in
//! `OUT/sub-<s>/figures/`, linked by relative paths so the folder can be moved or zipped.
//!
//! The page is rendered from a plain summary struct, so the caller decides what exists and this
//! module only decides how it reads: Summary, Runs (stimuli, timing, carpet and mean-prediction
//! figures), Contrasts, ICA networks, About (provenance, methods, errors). Everything user-
//! provided is HTML-escaped. [`missing_links`] lets tests and the app check that every local
//! link and image resolves before the report is declared done.

use std::path::Path;

/// A figure file (relative to the HTML file) with a caption.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureRef {
    pub path: String,
    pub caption: String,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunSummary {
    /// Display name, e.g. "task-movie run-1".
    pub name: String,
    pub n_volumes: usize,
    pub tr: f64,
    /// Stimulus files or descriptions.
    pub stimuli: Vec<String>,
    /// Stage timings or other facts as (label, value).
    pub facts: Vec<(String, String)>,
    pub figures: Vec<FigureRef>,
    /// Output files of this run (relative links).
    pub outputs: Vec<String>,
}

/// One contrast.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContrastSummary {
    pub name: String,
    pub expression: String,
    pub figure: Option<FigureRef>,
    pub outputs: Vec<String>,
}

/// One ICA component.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkSummary {
    pub component: String,
    pub label: Option<String>,
    pub score: Option<f64>,
    pub weak_evidence: bool,
    pub explained_variance: Option<f64>,
    pub figure: Option<FigureRef>,
}

/// Reproducibility and provenance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provenance {
    pub version: String,
    pub command: String,
    pub date: String,
    /// (label, version) of models and libraries.
    pub software: Vec<(String, String)>,
    /// (file, sha256)
    pub checksums: Vec<(String, String)>,
    /// Boilerplate users can paste into a paper.
    pub methods: String,
    /// Full references for the works the methods text cites.
    pub references: Vec<String>,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportSummary {
    pub subject: String,
    /// (label, value) rows of the summary box.
    pub summary: Vec<(String, String)>,
    /// One row per run for the overview table at the top of the Runs section: run, status,
    /// volumes, repetition time, duration, number of stimuli.
    pub overview: Vec<Vec<String>>,
    pub runs: Vec<RunSummary>,
    pub contrasts: Vec<ContrastSummary>,
    pub networks: Vec<NetworkSummary>,
    pub network_figure: Option<FigureRef>,
    pub provenance: Provenance,
    pub errors: Vec<String>,
}

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Percent-encode what a relative URL must not contain raw (spaces, quotes, '#', '?', '%').
fn url(path: &str) -> String {
    let mut o = String::new();
    for b in path.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'/'
            | b'~'
            | b'+'
            | b'=' => o.push(b as char),
            _ => o.push_str(&format!("%{b:02X}")),
        }
    }
    o
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table>\n");
    for (k, v) in rows {
        s.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>\n",
            escape(k),
            escape(v)
        ));
    }
    s.push_str("</table>\n");
    s
}

fn figure(f: &FigureRef) -> String {
    format!(
        "<figure><a href=\"{u}\"><img src=\"{u}\" alt=\"{c}\" loading=\"lazy\"></a><figcaption>{c}</figcaption></figure>\n",
        u = url(&f.path),
        c = escape(&f.caption)
    )
}

fn file_list(files: &[String]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let items: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "<li><a href=\"{}\"><code>{}</code></a></li>",
                url(f),
                escape(f)
            )
        })
        .collect();
    format!("<ul class=\"files\">{}</ul>\n", items.join(""))
}

const STYLE: &str = "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222}\
nav{position:sticky;top:0;background:#2b3e50;padding:.5em 1em}nav a{color:#fff;margin-right:1.2em;text-decoration:none}\
main{max-width:1600px;margin:auto;padding:1em 2em}h1{margin-top:.3em}h2{border-bottom:2px solid #2b3e50;padding-bottom:.2em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}\
figure{margin:.6em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9em}\
.weak{color:#a15c00}.error{color:#b00020}code{background:#f3f3f3;padding:0 .2em}ul.files{font-size:.9em}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}";

/// Render the page.
pub fn render_html(r: &ReportSummary) -> String {
    let sub = escape(&r.subject);
    let mut h = String::new();
    h.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>tribe-bids: sub-{sub}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    ));
    h.push_str("<nav><a href=\"#summary\">Summary</a><a href=\"#runs\">Runs</a><a href=\"#contrasts\">Contrasts</a><a href=\"#networks\">ICA networks</a><a href=\"#about\">About</a></nav>\n<main>\n");
    h.push_str(&format!("<h1>Predicted brain responses: sub-{sub}</h1>\n"));

    h.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n");
    h.push_str(&table(&r.summary));
    h.push_str("</section>\n");

    h.push_str("<section id=\"runs\">\n<h2>Runs</h2>\n");
    if r.runs.is_empty() {
        h.push_str("<p>No runs with predicted BOLD.</p>\n");
    }
    if !r.overview.is_empty() {
        h.push_str("<table>\n<tr><th>Run</th><th>Status</th><th>Volumes</th><th>Repetition time</th><th>Duration</th><th>Stimuli</th></tr>\n");
        for row in &r.overview {
            h.push_str("<tr>");
            for (i, c) in row.iter().enumerate() {
                // link the run name to its section when it has one
                match r.runs.iter().position(|x| i == 0 && &x.name == c) {
                    Some(k) => {
                        h.push_str(&format!("<td><a href=\"#run-{k}\">{}</a></td>", escape(c)))
                    }
                    None => h.push_str(&format!("<td>{}</td>", escape(c))),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    for (i, run) in r.runs.iter().enumerate() {
        h.push_str(&format!(
            "<section id=\"run-{i}\">\n<h3>{}</h3>\n",
            escape(&run.name)
        ));
        let mut rows = vec![
            ("Volumes".to_string(), run.n_volumes.to_string()),
            ("Repetition time".to_string(), format!("{} s", run.tr)),
            (
                "Duration".to_string(),
                format!("{:.1} s", run.n_volumes as f64 * run.tr),
            ),
        ];
        if !run.stimuli.is_empty() {
            rows.push(("Stimuli".to_string(), run.stimuli.join(", ")));
        }
        rows.extend(run.facts.iter().cloned());
        h.push_str(&table(&rows));
        for f in &run.figures {
            h.push_str(&figure(f));
        }
        h.push_str(&file_list(&run.outputs));
        h.push_str("</section>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<section id=\"contrasts\">\n<h2>Contrasts</h2>\n");
    if r.contrasts.is_empty() {
        h.push_str("<p>No contrasts were requested.</p>\n");
    }
    for c in &r.contrasts {
        h.push_str(&format!(
            "<h3>{}</h3>\n<p>Contrast <code>{}</code></p>\n",
            escape(&c.name),
            escape(&c.expression)
        ));
        if let Some(f) = &c.figure {
            h.push_str(&figure(f));
        }
        h.push_str(&file_list(&c.outputs));
    }
    h.push_str("</section>\n");

    h.push_str("<section id=\"networks\">\n<h2>ICA networks</h2>\n");
    if r.networks.is_empty() {
        h.push_str("<p>No decomposition was run.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>Component</th><th>Label</th><th>Score</th><th>Explained variance</th></tr>\n");
        for n in &r.networks {
            let label = match (&n.label, n.weak_evidence) {
                (Some(l), true) => {
                    format!("<span class=\"weak\">{} (weak evidence)</span>", escape(l))
                }
                (Some(l), false) => escape(l),
                (None, _) => "<span class=\"weak\">unlabelled</span>".into(),
            };
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&n.component),
                label,
                n.score
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "n/a".into()),
                n.explained_variance
                    .map(|v| format!("{:.1} %", 100.0 * v))
                    .unwrap_or_else(|| "n/a".into())
            ));
        }
        h.push_str("</table>\n");
        if let Some(f) = &r.network_figure {
            h.push_str(&figure(f));
        }
        for n in &r.networks {
            if let Some(f) = &n.figure {
                h.push_str(&figure(f));
            }
        }
    }
    h.push_str("</section>\n");

    let p = &r.provenance;
    h.push_str("<section id=\"about\">\n<h2>About</h2>\n<h3>Methods</h3>\n");
    h.push_str(&format!("<p>{}</p>\n", escape(&p.methods)));
    if !p.references.is_empty() {
        h.push_str("<h4>References</h4>\n<ol class=\"refs\">\n");
        for r in &p.references {
            h.push_str(&format!("<li>{}</li>\n", escape(r)));
        }
        h.push_str("</ol>\n");
    }
    h.push_str("<h3>Reproducibility and provenance</h3>\n");
    let mut rows = vec![
        ("tribe-bids version".to_string(), p.version.clone()),
        ("Date processed".to_string(), p.date.clone()),
    ];
    rows.extend(p.software.iter().cloned());
    h.push_str(&table(&rows));
    h.push_str(&format!(
        "<p>Command:</p>\n<pre>{}</pre>\n",
        escape(&p.command)
    ));
    if !p.checksums.is_empty() {
        h.push_str("<table>\n<tr><th>File</th><th>SHA-256</th></tr>\n");
        for (f, c) in &p.checksums {
            h.push_str(&format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>\n",
                escape(f),
                escape(c)
            ));
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h3>Errors</h3>\n");
    if r.errors.is_empty() {
        h.push_str("<p>No errors to report.</p>\n");
    } else {
        h.push_str("<ul>\n");
        for e in &r.errors {
            h.push_str(&format!(
                "<li class=\"error\"><pre>{}</pre></li>\n",
                escape(e)
            ));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n</main>\n</body>\n</html>\n");
    h
}

/// Values of every `href="…"` and `src="…"` attribute, in order.
pub fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            // only real attributes (preceded by whitespace)
            let before = rest[..i].chars().last();
            rest = &rest[i + attr.len()..];
            if let Some(end) = rest.find('"')
                && matches!(before, Some(c) if c.is_whitespace())
            {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            )
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Local links that do not resolve: relative files missing under `base_dir` (the folder of the
/// HTML file), absolute paths (which break when the output folder moves) and `#anchors` with
/// no matching `id`. External `http(s):`/`mailto:` links are not checked.
pub fn missing_links(html: &str, base_dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for l in links(html) {
        if l.starts_with("http://") || l.starts_with("https://") || l.starts_with("mailto:") {
            continue;
        }
        if let Some(anchor) = l.strip_prefix('#') {
            if !html.contains(&format!("id=\"{anchor}\"")) {
                bad.push(l);
            }
            continue;
        }
        let path = percent_decode(l.split('#').next().unwrap_or(""));
        if path.starts_with('/') || path.contains(":\\") || !base_dir.join(&path).is_file() {
            bad.push(l);
        }
    }
    bad
}

/// The methods boilerplate for the analysis part, from the settings actually used.
pub fn analysis_methods(
    hrf: &str,
    high_pass_hz: f64,
    noise_model: &str,
    n_components: Option<usize>,
    seed: u32,
) -> String {
    let mut s = format!(
        "Contrasts were computed on the predicted BOLD with a first-level general linear model equivalent to nilearn's \
         FirstLevelModel: events convolved with the {hrf} haemodynamic response function (oversampling 50), a cosine drift basis \
         (high-pass {high_pass_hz} Hz) and a constant, {} noise model; z maps were derived from the t statistics.",
        if noise_model == "ar1" {
            "an AR(1) (coefficients binned to 0.01, refit per bin)"
        } else {
            "an ordinary least squares"
        }
    );
    if let Some(k) = n_components {
        s.push_str(&format!(
            " Cortical networks were estimated by FastICA ({k} components, parallel algorithm, logcosh contrast, unit-variance \
             whitening, random seed {seed}; equivalent to scikit-learn) on the model's cortical readout, with vertices as features; \
             each component map was sign-flipped so that its peak is positive and components were ordered by explained variance."
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_finds_links() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        let l = links("<a href=\"x y.png\"> <img src=\"a.png\"> data-src=\"no\"");
        assert_eq!(l, vec!["x y.png", "a.png"]);
        assert_eq!(
            url("sub-01/figures/a b#c.png"),
            "sub-01/figures/a%20b%23c.png"
        );
        assert_eq!(percent_decode("a%20b%23c.png"), "a b#c.png");
    }
}
