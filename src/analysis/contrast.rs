//! Contrast expressions over design columns: `faces-places`, `faces`, `0.5*faces+0.5*places-objects`,
//! `(faces + places)/2 - objects`.
//!
//! nilearn evaluates such strings with `pandas.eval` on an identity matrix. We accept the same
//! linear subset (numbers, names, `+ - * /`, parentheses, and pandas' backtick quoting for names
//! that are not identifiers) with a tiny recursive-descent parser, so a typo gives a typed error
//! naming the unknown condition and listing the valid ones instead of a Python traceback.

use crate::{Error, Result};

/// A named contrast: what the user asked for and its weights over the design columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastSpec {
    /// The user's name (BIDS Stats Models `Name`, or `name=` in the CLI form, or the expression).
    pub name: String,
    /// (column, weight) pairs; columns not listed weigh 0.
    pub weights: Vec<(String, f64)>,
}

impl ContrastSpec {
    /// The contrast vector over `columns`; errors if a weighted column is missing.
    pub fn vector(&self, columns: &[String]) -> Result<Vec<f64>> {
        let mut v = vec![0.0; columns.len()];
        for (name, w) in &self.weights {
            match columns.iter().position(|c| c == name) {
                Some(i) => v[i] += w,
                None => {
                    return Err(Error::UnknownCondition {
                        name: name.clone(),
                        expression: self.name.clone(),
                        valid: columns.to_vec(),
                    });
                }
            }
        }
        Ok(v)
    }

    /// Parse the CLI form `name=expression` or a bare `expression` (then the name is the
    /// expression itself) against the design's column names.
    pub fn parse_cli(text: &str, columns: &[String]) -> Result<Self> {
        let (name, expr) = match text.split_once('=') {
            Some((n, e)) if !n.trim().is_empty() => (n.trim().to_string(), e.trim()),
            _ => (text.trim().to_string(), text.trim()),
        };
        let v = expression_to_vector(expr, columns)?;
        let weights = columns
            .iter()
            .zip(&v)
            .filter(|(_, w)| **w != 0.0)
            .map(|(c, w)| (c.clone(), *w))
            .collect();
        Ok(ContrastSpec { name, weights })
    }

    /// A BIDS-label-safe version of the name for `contrast-<label>` (FitLins style camelCase:
    /// `faces_vs_places` -> `facesVsPlaces`, `faces-places` -> `facesMinusPlaces`).
    pub fn label(&self) -> String {
        bids_label(&self.name)
    }
}

/// Make a BIDS label (alphanumeric only) from a contrast name.
pub fn bids_label(name: &str) -> String {
    let mut out = String::new();
    let mut upper_next = false;
    let push_word = |out: &mut String, w: &str, upper: bool| {
        let mut chars = w.chars();
        if let Some(c) = chars.next() {
            if upper && !out.is_empty() {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            out.extend(chars);
        }
    };
    for ch in name.chars() {
        match ch {
            c if c.is_ascii_alphanumeric() => {
                if upper_next && !out.is_empty() {
                    out.push(c.to_ascii_uppercase());
                } else {
                    out.push(c);
                }
                upper_next = false;
            }
            '-' => {
                push_word(&mut out, "minus", true);
                upper_next = true;
            }
            '+' => {
                push_word(&mut out, "plus", true);
                upper_next = true;
            }
            '*' => {
                push_word(&mut out, "times", true);
                upper_next = true;
            }
            '/' => {
                push_word(&mut out, "over", true);
                upper_next = true;
            }
            '.' => {
                push_word(&mut out, "p", false);
            }
            _ => upper_next = true,
        }
    }
    if out.is_empty() {
        "contrast".into()
    } else {
        out
    }
}

/// nilearn `expression_to_contrast_vector(expression, design_columns)`.
pub fn expression_to_vector(expression: &str, columns: &[String]) -> Result<Vec<f64>> {
    if let Some(i) = columns.iter().position(|c| c == expression.trim()) {
        let mut v = vec![0.0; columns.len()];
        v[i] = 1.0;
        return Ok(v);
    }
    let mut p = Parser {
        src: expression,
        chars: expression.char_indices().collect(),
        pos: 0,
        columns,
    };
    let form = p.expr()?;
    p.skip_ws();
    if p.pos < p.chars.len() {
        return Err(p.err(format!("unexpected '{}'", p.chars[p.pos].1)));
    }
    if form.constant != 0.0 {
        return Err(Error::ContrastSyntax {
            expression: expression.into(),
            position: 0,
            message: format!(
                "the expression has a constant term ({}); contrasts are combinations of columns only",
                form.constant
            ),
        });
    }
    if form.coef.iter().all(|c| *c == 0.0) {
        return Err(Error::ContrastSyntax {
            expression: expression.into(),
            position: 0,
            message: "all weights cancel out (null contrast)".into(),
        });
    }
    Ok(form.coef)
}

/// A linear form: coefficients over columns plus a constant.
#[derive(Debug, Clone)]
struct Linear {
    coef: Vec<f64>,
    constant: f64,
}

impl Linear {
    fn constant(n: usize, c: f64) -> Self {
        Linear {
            coef: vec![0.0; n],
            constant: c,
        }
    }
    fn is_constant(&self) -> bool {
        self.coef.iter().all(|c| *c == 0.0)
    }
    fn scale(mut self, s: f64) -> Self {
        for c in &mut self.coef {
            *c *= s;
        }
        self.constant *= s;
        self
    }
    fn add(mut self, other: &Linear, sign: f64) -> Self {
        for (a, b) in self.coef.iter_mut().zip(&other.coef) {
            *a += sign * b;
        }
        self.constant += sign * other.constant;
        self
    }
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
    columns: &'a [String],
}

impl Parser<'_> {
    fn err(&self, message: String) -> Error {
        Error::ContrastSyntax {
            expression: self.src.into(),
            position: self.pos + 1,
            message,
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos].1.is_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.chars.get(self.pos).map(|c| c.1)
    }

    fn expr(&mut self) -> Result<Linear> {
        let mut acc = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let rhs = self.term()?;
            acc = acc.add(&rhs, if c == '+' { 1.0 } else { -1.0 });
        }
        Ok(acc)
    }

    fn term(&mut self) -> Result<Linear> {
        let mut acc = self.factor()?;
        while let Some(c @ ('*' | '/')) = self.peek() {
            let at = self.pos;
            self.pos += 1;
            let rhs = self.factor()?;
            if c == '*' {
                if rhs.is_constant() {
                    acc = acc.scale(rhs.constant);
                } else if acc.is_constant() {
                    acc = rhs.scale(acc.constant);
                } else {
                    self.pos = at;
                    return Err(self.err(
                        "two conditions multiplied together: a contrast must be linear".into(),
                    ));
                }
            } else {
                if !rhs.is_constant() || rhs.constant == 0.0 {
                    self.pos = at;
                    return Err(self.err("division by a condition or by zero".into()));
                }
                acc = acc.scale(1.0 / rhs.constant);
            }
        }
        Ok(acc)
    }

    fn factor(&mut self) -> Result<Linear> {
        let n = self.columns.len();
        match self.peek() {
            None => Err(self.err("the expression ends too early".into())),
            Some('+') => {
                self.pos += 1;
                self.factor()
            }
            Some('-') => {
                self.pos += 1;
                Ok(self.factor()?.scale(-1.0))
            }
            Some('(') => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(')') {
                    return Err(self.err("missing ')'".into()));
                }
                self.pos += 1;
                Ok(e)
            }
            Some('`') => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.chars.len() && self.chars[self.pos].1 != '`' {
                    self.pos += 1;
                }
                if self.pos >= self.chars.len() {
                    self.pos = start - 1;
                    return Err(self.err("unclosed backtick".into()));
                }
                let name: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
                self.pos += 1;
                self.name(&name)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let start = self.pos;
                while self.pos < self.chars.len() {
                    let c = self.chars[self.pos].1;
                    let prev = if self.pos > start {
                        self.chars[self.pos - 1].1
                    } else {
                        ' '
                    };
                    if c.is_ascii_digit()
                        || c == '.'
                        || c == 'e'
                        || c == 'E'
                        || ((c == '-' || c == '+') && (prev == 'e' || prev == 'E'))
                    {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                let text: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
                match text.parse::<f64>() {
                    Ok(v) => Ok(Linear::constant(n, v)),
                    Err(_) => {
                        self.pos = start;
                        Err(self.err(format!("'{text}' is not a number")))
                    }
                }
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let start = self.pos;
                while self.pos < self.chars.len()
                    && (self.chars[self.pos].1.is_alphanumeric() || self.chars[self.pos].1 == '_')
                {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().map(|c| c.1).collect();
                self.name(&name)
            }
            Some(c) => Err(self.err(format!("unexpected '{c}'"))),
        }
    }

    fn name(&self, name: &str) -> Result<Linear> {
        match self.columns.iter().position(|c| c == name) {
            Some(i) => {
                let mut l = Linear::constant(self.columns.len(), 0.0);
                l.coef[i] = 1.0;
                Ok(l)
            }
            None => Err(Error::UnknownCondition {
                name: name.into(),
                expression: self.src.into(),
                valid: self.columns.to_vec(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Vec<String> {
        ["faces", "objects", "places", "drift_1", "constant"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn parses_the_usual_forms() {
        let c = cols();
        assert_eq!(
            expression_to_vector("faces-places", &c).unwrap(),
            vec![1.0, 0.0, -1.0, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("faces - places", &c).unwrap(),
            vec![1.0, 0.0, -1.0, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("faces", &c).unwrap(),
            vec![1.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("0.5*faces+0.5*places-objects", &c).unwrap(),
            vec![0.5, -1.0, 0.5, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("(faces + places)/2 - objects", &c).unwrap(),
            vec![0.5, -1.0, 0.5, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("-faces + 2 * `places`", &c).unwrap(),
            vec![-1.0, 0.0, 2.0, 0.0, 0.0]
        );
        assert_eq!(
            expression_to_vector("faces*1e-1", &c).unwrap(),
            vec![0.1, 0.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn unknown_condition_is_named_with_the_valid_list() {
        let err = expression_to_vector("faces - houses", &cols()).unwrap_err();
        match &err {
            Error::UnknownCondition { name, valid, .. } => {
                assert_eq!(name, "houses");
                assert!(valid.contains(&"places".to_string()));
            }
            other => panic!("wrong error {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("houses") && text.contains("faces, objects, places"),
            "{text}"
        );
        assert_eq!(err.exit_code(), crate::error::exit::USAGE);
    }

    #[test]
    fn rejects_non_linear_and_garbage() {
        let c = cols();
        for bad in [
            "faces*places",
            "faces +",
            "faces - 1",
            "(faces",
            "faces - faces",
            "faces $ places",
            "faces/0",
        ] {
            let e = expression_to_vector(bad, &c);
            assert!(
                matches!(e, Err(Error::ContrastSyntax { .. })),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn cli_form_and_labels() {
        let c = cols();
        let s = ContrastSpec::parse_cli("facesVsPlaces=faces-places", &c).unwrap();
        assert_eq!(s.name, "facesVsPlaces");
        assert_eq!(s.vector(&c).unwrap(), vec![1.0, 0.0, -1.0, 0.0, 0.0]);
        let s = ContrastSpec::parse_cli("faces - places", &c).unwrap();
        assert_eq!(s.label(), "facesMinusPlaces");
        assert_eq!(bids_label("faces_vs_places"), "facesVsPlaces");
        assert_eq!(
            bids_label("0.5*faces+0.5*places-objects"),
            "0p5TimesFacesPlus0p5TimesPlacesMinusObjects"
        );
    }
}
