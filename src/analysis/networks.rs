//! Naming ICA components with in-silico probes, and the BEP012/tedana-style outputs
//! (`desc-ICA_mixing.tsv`, `desc-ICA_decomposition.json`).
//!
//! The paper (SPEC §11) reports five networks: primary auditory, language, motion (MT+),
//! visual and default mode. A component is named by how well its map correlates (Pearson, over
//! vertices) with probe contrast maps that the model predicts for stimuli known to drive each
//! network (e.g. tones vs silence for auditory, sentences vs word lists for language). The
//! default-mode network is the one such task probes *deactivate*, so its score is the mean of
//! the negated correlations with all task probes (plus any probe tagged default mode, e.g.
//! rest > task). Names are assigned one-to-one so two components never share a label. When
//! the winning score is low, or not clearly above the runner-up (another network for this
//! component, or another component for this network), the label is kept but flagged
//! `weak_evidence`, because a confident wrong label is worse than an honest doubtful one.

use super::ica::{IcaOptions, IcaResult};
use crate::{Error, Result};
use serde_json::{Map, Value, json};

/// The networks the paper's ICA recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    PrimaryAuditory,
    Language,
    Motion,
    Visual,
    DefaultMode,
}

impl Network {
    pub const ALL: [Network; 5] = [
        Network::PrimaryAuditory,
        Network::Language,
        Network::Motion,
        Network::Visual,
        Network::DefaultMode,
    ];

    /// Human-readable name (used in the report and the JSON).
    pub fn name(self) -> &'static str {
        match self {
            Network::PrimaryAuditory => "primary auditory",
            Network::Language => "language",
            Network::Motion => "motion",
            Network::Visual => "visual",
            Network::DefaultMode => "default mode",
        }
    }

    /// Accepts the names above and short forms (auditory, mt, dmn, ...).
    pub fn parse(s: &str) -> Result<Self> {
        let k = s.trim().to_ascii_lowercase().replace(['_', '-'], " ");
        Ok(match k.as_str() {
            "primary auditory" | "auditory" | "a1" => Network::PrimaryAuditory,
            "language" | "lang" => Network::Language,
            "motion" | "mt" | "mt+" | "visual motion" => Network::Motion,
            "visual" | "vision" | "v1" => Network::Visual,
            "default mode" | "default" | "dmn" => Network::DefaultMode,
            _ => {
                return Err(Error::Usage(format!(
                    "unknown network '{s}': use one of primary auditory, language, motion, visual, default mode"
                )));
            }
        })
    }
}

/// One probe contrast: a map over the same vertices as the components.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub network: Network,
    pub map: Vec<f64>,
}

/// When a label counts as weak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelThresholds {
    /// Minimum network score (a correlation) for a confident label.
    pub min_score: f64,
    /// Minimum lead over the runner-up.
    pub min_margin: f64,
    /// Minimum spatial autocorrelation of a component map on the cortical mesh (Moran's I
    /// over mesh edges, see [`morans_i`]). Brain networks are smooth on the cortex; a map with
    /// no spatial structure (a random, untrained readout gives Moran's I ≈ 0) is not a network,
    /// whatever probe it happens to correlate with.
    pub min_spatial_autocorrelation: f64,
}

impl Default for LabelThresholds {
    fn default() -> Self {
        LabelThresholds {
            min_score: 0.3,
            min_margin: 0.1,
            min_spatial_autocorrelation: 0.2,
        }
    }
}

/// The verdict for one component.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentLabel {
    pub component: usize,
    /// None when there are more components than networks with probes.
    pub label: Option<Network>,
    pub score: f64,
    pub weak_evidence: bool,
    /// Why the evidence is weak (empty when it is not).
    pub reason: String,
    /// Network score for every network with evidence, in [`Network::ALL`] order.
    pub network_scores: Vec<(Network, f64)>,
    /// Pearson r with every probe, in input order.
    pub probe_scores: Vec<(String, f64)>,
}

/// Pearson correlation; 0 for a constant vector.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Moran's I of `map` with binary weights on the undirected `edges` of a mesh: about 0 for a
/// spatially white map (exactly `-1/(n-1)` in expectation), near 1 for a smooth one.
pub fn morans_i(map: &[f64], edges: &[(usize, usize)]) -> f64 {
    let n = map.len() as f64;
    if map.len() < 2 || edges.is_empty() {
        return 0.0;
    }
    let mean = map.iter().sum::<f64>() / n;
    let ss: f64 = map.iter().map(|v| (v - mean).powi(2)).sum();
    if ss <= 0.0 {
        return 0.0;
    }
    let cross: f64 = edges
        .iter()
        .filter(|(a, b)| *a < map.len() && *b < map.len())
        .map(|&(a, b)| (map[a] - mean) * (map[b] - mean))
        .sum();
    // I = (n / W) * sum_ij w_ij z_i z_j / sum z^2, with W = 2 |edges| (each edge both ways)
    (n / (2.0 * edges.len() as f64)) * (2.0 * cross) / ss
}

/// Demote labels of components whose maps have no spatial structure (see
/// [`LabelThresholds::min_spatial_autocorrelation`]). `autocorrelation[k]` is component k's
/// Moran's I.
pub fn flag_unstructured(labels: &mut [ComponentLabel], autocorrelation: &[f64], min: f64) {
    for l in labels.iter_mut() {
        let Some(&i) = autocorrelation.get(l.component) else {
            continue;
        };
        if i < min {
            l.weak_evidence = true;
            let why = format!(
                "the map has no spatial structure on the cortex (Moran's I {i:.2} < {min:.2}): not a brain network, as with an untrained or random readout"
            );
            l.reason = if l.reason.is_empty() {
                why
            } else {
                format!("{}; {why}", l.reason)
            };
        }
    }
}

/// Score every component against every probe and name the components (see the module docs).
/// `maps` is `n_components x n_vertices` row-major (e.g. [`IcaResult::maps`]).
pub fn label_components(
    maps: &[f64],
    n_components: usize,
    probes: &[Probe],
    thresholds: LabelThresholds,
) -> Result<Vec<ComponentLabel>> {
    if n_components == 0 || !maps.len().is_multiple_of(n_components) {
        return Err(Error::AnalysisInput {
            what: "ICA labelling".into(),
            message: format!(
                "{} map values cannot be split into {n_components} components",
                maps.len()
            ),
            fix: "pass IcaResult::maps and IcaResult::n_components".into(),
        });
    }
    let nv = maps.len() / n_components;
    for p in probes {
        if p.map.len() != nv {
            return Err(Error::ShapeMismatch {
                name: format!("probe '{}'", p.name),
                expected: vec![nv],
                found: vec![p.map.len()],
                path: None,
            });
        }
    }
    let comp = |k: usize| &maps[k * nv..(k + 1) * nv];
    let r: Vec<Vec<f64>> = (0..n_components)
        .map(|k| probes.iter().map(|p| pearson(comp(k), &p.map)).collect())
        .collect();

    // network scores
    let networks: Vec<Network> = Network::ALL
        .into_iter()
        .filter(|n| {
            if *n == Network::DefaultMode {
                !probes.is_empty()
            } else {
                probes.iter().any(|p| p.network == *n)
            }
        })
        .collect();
    let score = |k: usize, n: Network| -> f64 {
        let vals: Vec<f64> = if n == Network::DefaultMode {
            (0..probes.len())
                .map(|i| {
                    if probes[i].network == Network::DefaultMode {
                        r[k][i]
                    } else {
                        -r[k][i]
                    }
                })
                .collect()
        } else {
            (0..probes.len())
                .filter(|&i| probes[i].network == n)
                .map(|i| r[k][i])
                .collect()
        };
        if vals.is_empty() {
            f64::NEG_INFINITY
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        }
    };
    let s: Vec<Vec<f64>> = (0..n_components)
        .map(|k| networks.iter().map(|&n| score(k, n)).collect())
        .collect();

    // one-to-one assignment maximising the total score
    let assignment = assign(&s, n_components, networks.len());
    let mut out = Vec::with_capacity(n_components);
    for k in 0..n_components {
        let label_idx = assignment.iter().position(|&c| c == Some(k));
        let (label, sc, weak, reason) = match label_idx {
            None => (
                None,
                f64::NAN,
                true,
                "no network left for this component".to_string(),
            ),
            Some(ni) => {
                let sc = s[k][ni];
                let other_net = (0..networks.len())
                    .filter(|&j| j != ni)
                    .map(|j| s[k][j])
                    .fold(f64::NEG_INFINITY, f64::max);
                let other_comp = (0..n_components)
                    .filter(|&c| c != k)
                    .map(|c| s[c][ni])
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut reasons = Vec::new();
                if sc < thresholds.min_score {
                    reasons.push(format!("score {sc:.2} < {:.2}", thresholds.min_score));
                }
                if sc - other_net < thresholds.min_margin {
                    reasons.push(format!("only {:.2} above the next network", sc - other_net));
                }
                if sc - other_comp < thresholds.min_margin {
                    reasons.push(format!(
                        "only {:.2} above another component for this network",
                        sc - other_comp
                    ));
                }
                (
                    Some(networks[ni]),
                    sc,
                    !reasons.is_empty(),
                    reasons.join("; "),
                )
            }
        };
        out.push(ComponentLabel {
            component: k,
            label,
            score: sc,
            weak_evidence: weak,
            reason,
            network_scores: networks.iter().zip(&s[k]).map(|(n, v)| (*n, *v)).collect(),
            probe_scores: probes
                .iter()
                .zip(&r[k])
                .map(|(p, v)| (p.name.clone(), *v))
                .collect(),
        });
    }
    Ok(out)
}

/// For each network (column of `s`), the component it goes to, maximising the sum of scores.
/// Exhaustive for the usual sizes, greedy beyond.
fn assign(s: &[Vec<f64>], n_comp: usize, n_net: usize) -> Vec<Option<usize>> {
    fn rec(
        s: &[Vec<f64>],
        net: usize,
        used: &mut Vec<bool>,
        cur: &mut Vec<Option<usize>>,
        best: &mut (f64, Vec<Option<usize>>),
        total: f64,
    ) {
        if net == cur.len() {
            if total > best.0 {
                *best = (total, cur.clone());
            }
            return;
        }
        let mut any = false;
        for c in 0..used.len() {
            if !used[c] {
                any = true;
                used[c] = true;
                cur[net] = Some(c);
                rec(s, net + 1, used, cur, best, total + s[c][net]);
                used[c] = false;
                cur[net] = None;
            }
        }
        if !any {
            rec(s, net + 1, used, cur, best, total);
        }
    }
    let perms: f64 = (0..n_net.min(n_comp))
        .map(|i| (n_comp - i) as f64)
        .product();
    if perms <= 2e5 {
        let mut best = (f64::NEG_INFINITY, vec![None; n_net]);
        rec(
            s,
            0,
            &mut vec![false; n_comp],
            &mut vec![None; n_net],
            &mut best,
            0.0,
        );
        return best.1;
    }
    let mut out = vec![None; n_net];
    let mut used = vec![false; n_comp];
    for _ in 0..n_net.min(n_comp) {
        let mut bestp = (f64::NEG_INFINITY, 0, 0);
        for (c, row) in s.iter().enumerate() {
            for (n, &v) in row.iter().enumerate() {
                if !used[c] && out[n].is_none() && v > bestp.0 {
                    bestp = (v, c, n);
                }
            }
        }
        used[bestp.1] = true;
        out[bestp.2] = Some(bestp.1);
    }
    out
}

/// Column names of the decomposition (BEP012: `<decomposition>_<index>`, 0-based, 2 digits).
pub fn component_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ICA_{i:02}")).collect()
}

/// `…_desc-ICA_mixing.tsv`: one row per sample (latent dim or volume), one column per component.
pub fn mixing_tsv(result: &IcaResult) -> String {
    let k = result.n_components;
    let mut out = component_names(k).join("\t");
    out.push('\n');
    for s in 0..result.n_samples {
        let row: Vec<String> = (0..k)
            .map(|c| format!("{}", result.sources[s * k + c]))
            .collect();
        out.push_str(&row.join("\t"));
        out.push('\n');
    }
    out
}

/// `…_desc-ICA_decomposition.json` content (BEP012 requires `Method`; the rest documents how
/// to reproduce it and what each component was named, with the evidence).
pub fn decomposition_json(
    result: &IcaResult,
    opts: &IcaOptions,
    input: &str,
    labels: Option<&[ComponentLabel]>,
) -> Value {
    let names = component_names(result.n_components);
    let mut comps = Map::new();
    for (i, name) in names.iter().enumerate() {
        let mut c = Map::new();
        c.insert(
            "ExplainedVariance".into(),
            json!(result.explained_variance[i]),
        );
        if let Some(l) = labels.and_then(|ls| ls.iter().find(|l| l.component == i)) {
            c.insert(
                "Label".into(),
                l.label.map(|n| json!(n.name())).unwrap_or(Value::Null),
            );
            c.insert(
                "Score".into(),
                if l.score.is_finite() {
                    json!(l.score)
                } else {
                    Value::Null
                },
            );
            c.insert("WeakEvidence".into(), json!(l.weak_evidence));
            if !l.reason.is_empty() {
                c.insert("WeakEvidenceReason".into(), json!(l.reason));
            }
            let ns: Map<String, Value> = l
                .network_scores
                .iter()
                .map(|(n, v)| (n.name().to_string(), json!(v)))
                .collect();
            c.insert("NetworkScores".into(), Value::Object(ns));
            let ps: Map<String, Value> = l
                .probe_scores
                .iter()
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect();
            c.insert("ProbeScores".into(), Value::Object(ps));
        }
        comps.insert(name.clone(), Value::Object(c));
    }
    json!({
        "Method": "FastICA",
        "Description": "Independent components of the model's cortical readout; each component's map is a column of scikit-learn's mixing_ (vertices as features), its course over the samples is in the _mixing.tsv.",
        "Input": input,
        "Software": {"Name": "tribe-bids", "Version": crate::VERSION},
        "Algorithm": {
            "Reference": "scikit-learn FastICA",
            "algorithm": "parallel",
            "fun": "logcosh",
            "whiten": "unit-variance",
            "whiten_solver": "svd",
            "max_iter": opts.max_iter,
            "tol": opts.tol,
            "random_state": opts.seed,
        },
        "NumberOfComponents": result.n_components,
        "NumberOfSamples": result.n_samples,
        "NumberOfFeatures": result.n_features,
        "Iterations": result.n_iter,
        "Converged": result.converged,
        "SignConvention": "each component map's largest-magnitude value is positive",
        "Order": "descending explained variance",
        "Components": Value::Object(comps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(nv: usize, centre: usize, width: f64) -> Vec<f64> {
        (0..nv)
            .map(|v| (-0.5 * ((v as f64 - centre as f64) / width).powi(2)).exp())
            .collect()
    }

    #[test]
    fn labels_planted_networks_and_finds_the_deactivated_one() {
        let nv = 1000;
        // components: auditory blob, language blob, visual blob, a "default mode" map
        // anti-correlated with the task probes, and a noise-like component
        let aud = blob(nv, 100, 30.0);
        let lang = blob(nv, 300, 40.0);
        let vis = blob(nv, 600, 30.0);
        let dmn: Vec<f64> = (0..nv)
            .map(|v| 1.0 - aud[v] - lang[v] - vis[v] + 0.8 * blob(nv, 850, 50.0)[v])
            .collect();
        let noise: Vec<f64> = (0..nv).map(|v| ((v * 7919) % 101) as f64 / 101.0).collect();
        let maps: Vec<f64> = [&noise, &vis, &dmn, &lang, &aud]
            .iter()
            .flat_map(|m| m.iter().cloned())
            .collect();
        let probes = vec![
            Probe {
                name: "tones".into(),
                network: Network::PrimaryAuditory,
                map: blob(nv, 105, 35.0),
            },
            Probe {
                name: "sentences".into(),
                network: Network::Language,
                map: blob(nv, 290, 45.0),
            },
            Probe {
                name: "checkerboard".into(),
                network: Network::Visual,
                map: blob(nv, 610, 25.0),
            },
        ];
        let labels = label_components(&maps, 5, &probes, LabelThresholds::default()).unwrap();
        assert_eq!(labels[4].label, Some(Network::PrimaryAuditory));
        assert_eq!(labels[3].label, Some(Network::Language));
        assert_eq!(labels[1].label, Some(Network::Visual));
        assert_eq!(labels[2].label, Some(Network::DefaultMode));
        assert!(
            !labels[4].weak_evidence && !labels[1].weak_evidence,
            "{labels:?}"
        );
        assert_eq!(labels[0].label, None);
        assert!(labels[0].weak_evidence);
    }

    #[test]
    fn morans_i_separates_smooth_from_white() {
        // a ring graph: a smooth map has I near 1, an alternating one near -1
        let n = 200;
        let edges: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
        let smooth: Vec<f64> = (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * i as f64 / n as f64).sin())
            .collect();
        let alt: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!(morans_i(&smooth, &edges) > 0.99);
        assert!(morans_i(&alt, &edges) < -0.99);
        let mut labels = vec![ComponentLabel {
            component: 0,
            label: Some(Network::Visual),
            score: 0.9,
            weak_evidence: false,
            reason: String::new(),
            network_scores: vec![],
            probe_scores: vec![],
        }];
        flag_unstructured(&mut labels, &[0.01], 0.2);
        assert!(labels[0].weak_evidence && labels[0].reason.contains("Moran"));
    }

    #[test]
    fn ambiguous_evidence_is_flagged() {
        let nv = 500;
        let a = blob(nv, 200, 40.0);
        let b = blob(nv, 215, 40.0); // almost the same map
        let maps: Vec<f64> = a.iter().chain(b.iter()).cloned().collect();
        let probes = vec![Probe {
            name: "tones".into(),
            network: Network::PrimaryAuditory,
            map: blob(nv, 207, 40.0),
        }];
        let labels = label_components(&maps, 2, &probes, LabelThresholds::default()).unwrap();
        let aud = labels
            .iter()
            .find(|l| l.label == Some(Network::PrimaryAuditory))
            .unwrap();
        assert!(
            aud.weak_evidence && aud.reason.contains("another component"),
            "{aud:?}"
        );
    }

    #[test]
    fn output_builders() {
        let (ns, nf) = (64, 40);
        let x: Vec<f64> = (0..ns * nf)
            .map(|i| {
                let (s, f) = (i / nf, i % nf);
                ((s * 37 % 11) as f64 - 5.0) * (f as f64 / nf as f64)
                    + ((s * 13 % 7) as f64).powi(2) * ((f % 5) as f64)
                    + 0.01 * ((i * 7919 % 97) as f64)
            })
            .collect();
        let opts = IcaOptions {
            n_components: 2,
            ..IcaOptions::default()
        };
        let r = crate::analysis::ica::fast_ica(&x, ns, nf, &opts).unwrap();
        let tsv = mixing_tsv(&r);
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines[0], "ICA_00\tICA_01");
        assert_eq!(lines.len(), ns + 1);
        assert!(lines[1].split('\t').all(|v| v.parse::<f64>().is_ok()));
        let probes = vec![Probe {
            name: "p".into(),
            network: Network::Visual,
            map: r.map(1).to_vec(),
        }];
        let labels = label_components(&r.maps, 2, &probes, LabelThresholds::default()).unwrap();
        let j = decomposition_json(&r, &opts, "sub-01 predictor readout", Some(&labels));
        assert_eq!(j["Method"], "FastICA");
        assert_eq!(j["NumberOfComponents"], 2);
        assert_eq!(j["Components"]["ICA_01"]["Label"], "visual");
        assert!(
            (j["Components"]["ICA_01"]["ProbeScores"]["p"]
                .as_f64()
                .unwrap()
                - 1.0)
                .abs()
                < 1e-12
        );
    }
}
