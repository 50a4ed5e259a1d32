//! BIDS Stats Models (`models/model-<label>_smdl.json`, BIDSModelVersion 1.0) as FitLins reads
//! them, reduced to what this app runs: the run-level GLM (conditions, HRF, high-pass) and its
//! t contrasts, plus whether a subject-level node asks for a fixed-effects combination.
//!
//! Why a reader at all: users who already have a FitLins model should not have to rewrite their
//! contrasts as CLI strings. The result is the same [`ContrastSpec`] the CLI form produces, so
//! both routes give identical maps. Condition names follow pybids' Factor naming
//! (`trial_type.faces`), which we map to the design column `faces`; the intercept `1` maps to
//! `constant`.

use super::contrast::ContrastSpec;
use super::hrf::HrfModel;
use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Analysis level of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Run,
    Session,
    Subject,
    Dataset,
}

/// One node of the model, with what we use from it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsNode {
    pub level: Level,
    pub name: String,
    /// Model.X mapped to design column names (`trial_type.faces` -> `faces`, 1 -> `constant`).
    pub x: Vec<String>,
    /// Model.HRF.Model when given.
    pub hrf: Option<HrfModel>,
    /// Model.Options.HighPassFilterCutoffHz when given.
    pub high_pass_hz: Option<f64>,
    /// Explicit t contrasts, then DummyContrasts (one per condition), in file order.
    pub contrasts: Vec<ContrastSpec>,
}

/// A parsed model.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsModel {
    pub name: String,
    pub nodes: Vec<StatsNode>,
}

impl StatsModel {
    /// The first run-level node (the GLM on each run's predicted BOLD).
    pub fn run_node(&self) -> Option<&StatsNode> {
        self.nodes.iter().find(|n| n.level == Level::Run)
    }

    /// The run-level t contrasts.
    pub fn run_contrasts(&self) -> Vec<ContrastSpec> {
        self.run_node()
            .map(|n| n.contrasts.clone())
            .unwrap_or_default()
    }

    /// Whether a subject (or session) node combines runs (we do it by fixed effects, as FitLins).
    pub fn combines_runs(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| matches!(n.level, Level::Subject | Level::Session))
    }
}

/// Read and check `…_smdl.json`.
pub fn read_stats_model(path: &Path) -> Result<StatsModel> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_stats_model(&text, path)
}

fn schema_err(path: &Path, message: String) -> Error {
    Error::Json {
        path: PathBuf::from(path),
        message,
        fix: "follow BIDS Stats Models 1.0 (https://bids-standard.github.io/stats-models/): Nodes[] with Level, Name, Model.X and Contrasts[] {Name, ConditionList, Weights, Test}".into(),
    }
}

/// Parse model JSON text; `path` is only used in error messages.
pub fn parse_stats_model(text: &str, path: &Path) -> Result<StatsModel> {
    let root: Value = serde_json::from_str(text).map_err(|e| Error::Json {
        path: path.into(),
        message: format!("not valid JSON: {e}"),
        fix: "fix the JSON syntax at the given line and column".into(),
    })?;
    let obj = root
        .as_object()
        .ok_or_else(|| schema_err(path, "the top level must be an object".into()))?;
    let name = obj
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    let nodes_v = obj.get("Nodes").ok_or_else(|| {
        schema_err(
            path,
            "missing 'Nodes' (older 'Steps' models are BIDS Stats Models 0.x, not supported)"
                .into(),
        )
    })?;
    let nodes_a = nodes_v
        .as_array()
        .ok_or_else(|| schema_err(path, "'Nodes' must be a list".into()))?;
    if nodes_a.is_empty() {
        return Err(schema_err(path, "'Nodes' is empty".into()));
    }
    let mut nodes = Vec::new();
    for (i, n) in nodes_a.iter().enumerate() {
        nodes.push(parse_node(n, i, path)?);
    }
    if !nodes.iter().any(|n| n.level == Level::Run) {
        return Err(schema_err(
            path,
            "no node has Level 'Run': this app fits run-level GLMs on predicted BOLD".into(),
        ));
    }
    Ok(StatsModel { name, nodes })
}

/// `trial_type.faces` -> `faces`, `1`/`intercept` -> `constant`.
fn condition_name(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) if n.as_f64() == Some(1.0) => Some("constant".into()),
        Value::String(s) => {
            let s = s.trim();
            if s == "1" || s.eq_ignore_ascii_case("intercept") {
                return Some("constant".into());
            }
            Some(s.strip_prefix("trial_type.").unwrap_or(s).to_string())
        }
        _ => None,
    }
}

fn parse_node(n: &Value, i: usize, path: &Path) -> Result<StatsNode> {
    let where_ = |field: &str| format!("Nodes[{i}].{field}");
    let obj = n
        .as_object()
        .ok_or_else(|| schema_err(path, format!("Nodes[{i}] must be an object")))?;
    let level_s = obj.get("Level").and_then(Value::as_str).ok_or_else(|| {
        schema_err(
            path,
            format!("{} is missing or not a string", where_("Level")),
        )
    })?;
    let level = match level_s.to_ascii_lowercase().as_str() {
        "run" => Level::Run,
        "session" => Level::Session,
        "subject" => Level::Subject,
        "dataset" => Level::Dataset,
        other => {
            return Err(schema_err(
                path,
                format!(
                    "{} is '{other}': use Run, Session, Subject or Dataset",
                    where_("Level")
                ),
            ));
        }
    };
    let name = obj
        .get("Name")
        .and_then(Value::as_str)
        .ok_or_else(|| schema_err(path, format!("{} is missing", where_("Name"))))?
        .to_string();
    let model = obj.get("Model");
    let mut x = Vec::new();
    let mut hrf = None;
    let mut high_pass_hz = None;
    if let Some(model) = model {
        let mobj = model
            .as_object()
            .ok_or_else(|| schema_err(path, format!("{} must be an object", where_("Model"))))?;
        if let Some(xv) = mobj.get("X") {
            let xa = xv
                .as_array()
                .ok_or_else(|| schema_err(path, format!("{} must be a list", where_("Model.X"))))?;
            for (k, c) in xa.iter().enumerate() {
                x.push(condition_name(c).ok_or_else(|| {
                    schema_err(
                        path,
                        format!("{}[{k}] must be a condition name or 1", where_("Model.X")),
                    )
                })?);
            }
        } else if level == Level::Run {
            return Err(schema_err(
                path,
                format!(
                    "{} is missing: list the conditions (e.g. \"trial_type.faces\") and 1",
                    where_("Model.X")
                ),
            ));
        }
        if let Some(h) = mobj
            .get("HRF")
            .and_then(|h| h.get("Model"))
            .and_then(Value::as_str)
        {
            hrf = Some(HrfModel::parse(h).map_err(|_| {
                schema_err(
                    path,
                    format!(
                        "{} is '{h}': this app supports 'glover' and 'spm'",
                        where_("Model.HRF.Model")
                    ),
                )
            })?);
        }
        if let Some(hp) = mobj
            .get("Options")
            .and_then(|o| o.get("HighPassFilterCutoffHz"))
        {
            high_pass_hz = Some(hp.as_f64().filter(|v| *v >= 0.0).ok_or_else(|| {
                schema_err(
                    path,
                    format!(
                        "{} must be a non-negative number",
                        where_("Model.Options.HighPassFilterCutoffHz")
                    ),
                )
            })?);
        }
    } else if level == Level::Run {
        return Err(schema_err(path, format!("{} is missing", where_("Model"))));
    }

    let mut contrasts = Vec::new();
    if let Some(cv) = obj.get("Contrasts") {
        let ca = cv
            .as_array()
            .ok_or_else(|| schema_err(path, format!("{} must be a list", where_("Contrasts"))))?;
        for (k, c) in ca.iter().enumerate() {
            if let Some(spec) =
                parse_contrast(c, &format!("{}[{k}]", where_("Contrasts")), &x, level, path)?
            {
                contrasts.push(spec);
            }
        }
    }
    if let Some(dc) = obj.get("DummyContrasts") {
        let enabled = match dc {
            Value::Bool(b) => *b,
            Value::Object(o) => {
                if let Some(t) = o.get("Test").and_then(Value::as_str)
                    && !t.eq_ignore_ascii_case("t")
                    && !t.eq_ignore_ascii_case("pass")
                {
                    return Err(schema_err(
                        path,
                        format!(
                            "{} is '{t}': only 't' is supported",
                            where_("DummyContrasts.Test")
                        ),
                    ));
                }
                true
            }
            _ => {
                return Err(schema_err(
                    path,
                    format!(
                        "{} must be an object or a boolean",
                        where_("DummyContrasts")
                    ),
                ));
            }
        };
        if enabled && level == Level::Run {
            let names: Vec<String> = match dc.get("Contrasts").and_then(Value::as_array) {
                Some(list) => list.iter().filter_map(condition_name).collect(),
                None => x
                    .iter()
                    .filter(|c| c.as_str() != "constant")
                    .cloned()
                    .collect(),
            };
            for c in names {
                if !x.is_empty() && !x.contains(&c) {
                    return Err(schema_err(
                        path,
                        format!(
                            "{} names '{c}', which is not in Model.X",
                            where_("DummyContrasts.Contrasts")
                        ),
                    ));
                }
                if !contrasts.iter().any(|s: &ContrastSpec| s.name == c) {
                    contrasts.push(ContrastSpec {
                        name: c.clone(),
                        weights: vec![(c, 1.0)],
                    });
                }
            }
        }
    }
    Ok(StatsNode {
        level,
        name,
        x,
        hrf,
        high_pass_hz,
        contrasts,
    })
}

fn parse_contrast(
    c: &Value,
    at: &str,
    x: &[String],
    level: Level,
    path: &Path,
) -> Result<Option<ContrastSpec>> {
    let obj = c
        .as_object()
        .ok_or_else(|| schema_err(path, format!("{at} must be an object")))?;
    let name = obj
        .get("Name")
        .and_then(Value::as_str)
        .ok_or_else(|| schema_err(path, format!("{at}.Name is missing")))?
        .to_string();
    let test = obj.get("Test").and_then(Value::as_str).unwrap_or("t");
    match test.to_ascii_lowercase().as_str() {
        "t" => {}
        "skip" | "pass" => return Ok(None),
        "f" => {
            return Err(schema_err(
                path,
                format!(
                    "{at} ('{name}') is an F test: only t contrasts are supported; split it into t contrasts"
                ),
            ));
        }
        other => return Err(schema_err(path, format!("{at}.Test is '{other}': use 't'"))),
    }
    let conds = obj
        .get("ConditionList")
        .and_then(Value::as_array)
        .ok_or_else(|| schema_err(path, format!("{at}.ConditionList is missing or not a list")))?;
    let weights = obj
        .get("Weights")
        .and_then(Value::as_array)
        .ok_or_else(|| schema_err(path, format!("{at}.Weights is missing or not a list")))?;
    if conds.len() != weights.len() {
        return Err(schema_err(
            path,
            format!(
                "{at} ('{name}'): {} conditions but {} weights",
                conds.len(),
                weights.len()
            ),
        ));
    }
    let mut pairs = Vec::new();
    for (k, (c, w)) in conds.iter().zip(weights).enumerate() {
        let cn = condition_name(c)
            .ok_or_else(|| schema_err(path, format!("{at}.ConditionList[{k}] must be a string")))?;
        let wv = w.as_f64().ok_or_else(|| {
            schema_err(path, format!("{at}.Weights[{k}] must be a number (nested lists are F contrasts, not supported)"))
        })?;
        if level == Level::Run && !x.is_empty() && !x.contains(&cn) {
            return Err(schema_err(
                path,
                format!(
                    "{at} ('{name}') uses '{cn}', which is not in Model.X ({})",
                    x.join(", ")
                ),
            ));
        }
        pairs.push((cn, wv));
    }
    if pairs.iter().all(|(_, w)| *w == 0.0) {
        return Err(schema_err(
            path,
            format!("{at} ('{name}'): all weights are zero"),
        ));
    }
    Ok(Some(ContrastSpec {
        name,
        weights: pairs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"{
      "Name": "faces", "BIDSModelVersion": "1.0.0",
      "Input": {"task": ["localizer"]},
      "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
         "Model": {"Type": "glm", "X": ["trial_type.faces", "trial_type.places", "trial_type.objects", 1],
                   "HRF": {"Variables": ["trial_type.faces"], "Model": "spm"},
                   "Options": {"HighPassFilterCutoffHz": 0.008}},
         "Contrasts": [
           {"Name": "faces_vs_places", "ConditionList": ["trial_type.faces", "trial_type.places"], "Weights": [1, -1], "Test": "t"},
           {"Name": "mix", "ConditionList": ["trial_type.faces", "trial_type.places", "trial_type.objects"], "Weights": [0.5, 0.5, -1], "Test": "t"}
         ],
         "DummyContrasts": {"Test": "t"}},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"], "Model": {"Type": "meta", "X": [1]},
         "DummyContrasts": {"Test": "t"}}
      ]
    }"#;

    #[test]
    fn reads_a_fitlins_model() {
        let m = parse_stats_model(MODEL, Path::new("model-faces_smdl.json")).unwrap();
        let run = m.run_node().unwrap();
        assert_eq!(run.x, vec!["faces", "places", "objects", "constant"]);
        assert_eq!(run.hrf, Some(HrfModel::Spm));
        assert_eq!(run.high_pass_hz, Some(0.008));
        let names: Vec<&str> = run.contrasts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["faces_vs_places", "mix", "faces", "places", "objects"]
        );
        assert!(m.combines_runs());
    }

    #[test]
    fn schema_errors_are_clear() {
        let p = Path::new("m_smdl.json");
        let bad = [
            (r#"{"Name": "x"}"#, "missing 'Nodes'"),
            (
                r#"{"Nodes": [{"Level": "Trial", "Name": "a"}]}"#,
                "Nodes[0].Level is 'trial'",
            ),
            (
                r#"{"Nodes": [{"Level": "Run", "Name": "a", "Model": {"X": ["a", "b"]}, "Contrasts": [{"Name": "c", "ConditionList": ["a", "b"], "Weights": [1]}]}]}"#,
                "2 conditions but 1 weights",
            ),
            (
                r#"{"Nodes": [{"Level": "Run", "Name": "a", "Model": {"X": ["a", "b"]}, "Contrasts": [{"Name": "c", "ConditionList": ["a", "zz"], "Weights": [1, -1]}]}]}"#,
                "uses 'zz'",
            ),
            (
                r#"{"Nodes": [{"Level": "Run", "Name": "a", "Model": {"X": ["a"]}, "Contrasts": [{"Name": "c", "ConditionList": ["a"], "Weights": [[1]], "Test": "F"}]}]}"#,
                "F test",
            ),
            (
                r#"{"Nodes": [{"Level": "Subject", "Name": "s"}]}"#,
                "no node has Level 'Run'",
            ),
            ("{\"Nodes\": [", "not valid JSON"),
        ];
        for (text, want) in bad {
            let e = parse_stats_model(text, p).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, Error::Json { .. })
                    && msg.contains(want)
                    && msg.contains("m_smdl.json"),
                "{text}: {msg}"
            );
        }
    }
}
