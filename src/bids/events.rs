//! `events.tsv`: what happened during a run, and when.
//!
//! Hand-written rather than a CSV crate because the errors are the product: every problem names
//! the file, the line and the column and says how to fix it, and the tolerances are exactly the
//! ones real datasets need (BIDS.md §2.1, bids-examples): a UTF-8 BOM, CRLF line ends, blank lines,
//! a trailing tab after the last column (`eyetracking_fmri`: `onset\tduration\t`), `n/a` cells.
//! Anything else malformed is refused, never guessed at. Each row keeps its line number so later
//! stages (stimulus decoding, word timing) can point back at the exact line.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Cell text that BIDS uses for "no value".
pub const NA: &str = "n/a";

/// One row of an events file.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// 1-based line in the file (the header is line 1).
    pub line: usize,
    /// Seconds from the first stored volume; may be negative; `None` for `n/a`.
    pub onset: Option<f64>,
    /// Seconds, >= 0 (0 = impulse); `None` for `n/a`.
    pub duration: Option<f64>,
    pub trial_type: Option<String>,
    /// Path relative to `BIDS_DIR/stimuli`, as written.
    pub stim_file: Option<String>,
    /// The word this row presents: the `word` column when it has a value, else for rows with
    /// `trial_type` `word` the `text` or `value` column (DESIGN.md §4).
    pub word: Option<String>,
    /// Every column other than onset/duration/trial_type/stim_file, by name; `None` for `n/a`
    /// or an empty cell. (`word`, `text`, `value` are kept here too, as written.)
    pub other: BTreeMap<String, Option<String>>,
}

impl EventRow {
    /// A cell of any column by name (`None` for `n/a`, empty, or no such column).
    pub fn get(&self, column: &str) -> Option<&str> {
        match column {
            "trial_type" => self.trial_type.as_deref(),
            "stim_file" => self.stim_file.as_deref(),
            _ => self.other.get(column).and_then(|v| v.as_deref()),
        }
    }
}

/// A parsed events file.
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    pub path: PathBuf,
    /// Header names in file order (a trailing empty name from a trailing tab is dropped).
    pub columns: Vec<String>,
    pub rows: Vec<EventRow>,
}

impl Events {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Events> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses file content; `path` is recorded and used in error messages. Never panics, whatever
    /// the bytes (fuzzed: `fuzz/fuzz_targets/events_tsv.rs`).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Events> {
        let err = |line: usize, column: Option<&str>, message: String, fix: &str| Error::Tsv {
            path: path.to_path_buf(),
            line,
            column: column.map(str::to_string),
            message,
            fix: fix.to_string(),
        };
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
                return Err(err(
                    line,
                    None,
                    format!(
                        "byte {at} is not UTF-8 text: this looks like a binary file, or text in another encoding"
                    ),
                    "save the file as UTF-8 tab-separated text (events.tsv is plain text)",
                ));
            }
        };
        if let Some(at) = text
            .find(|c: char| c == '\0' || (c.is_control() && c != '\t' && c != '\n' && c != '\r'))
        {
            let line = 1 + text[..at].matches('\n').count();
            return Err(err(
                line,
                None,
                format!(
                    "control character U+{:04X} at byte {at}: this looks like a binary file",
                    text[at..].chars().next().map(|c| c as u32).unwrap_or(0)
                ),
                "save the file as plain UTF-8 tab-separated text",
            ));
        }

        let mut lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
        let header_line = lines.next().map(|(_, l)| l).unwrap_or("");
        if header_line.contains('\r') {
            return Err(err(
                1,
                None,
                "lines end in a bare carriage return (classic Mac line endings)".into(),
                "save the file with LF (or CRLF) line endings",
            ));
        }
        if header_line.trim().is_empty() {
            return Err(err(
                1,
                None,
                "the header line is empty".into(),
                "the first line must name the columns, starting with onset<TAB>duration",
            ));
        }
        let mut columns: Vec<String> = header_line
            .split('\t')
            .map(|c| c.trim().to_string())
            .collect();
        while columns.len() > 1 && columns.last().is_some_and(|c| c.is_empty()) {
            columns.pop();
        }
        if columns.len() == 1 && (columns[0].contains(' ') || columns[0].contains(',')) {
            return Err(err(
                1,
                None,
                format!("the header '{}' has no tab characters", columns[0]),
                "separate columns with tabs, not spaces or commas (events.tsv is tab-separated)",
            ));
        }
        for (i, c) in columns.iter().enumerate() {
            if c.is_empty() {
                return Err(err(
                    1,
                    None,
                    format!("column {} has an empty name", i + 1),
                    "give every column a name, or remove the extra tab",
                ));
            }
            if columns[..i].contains(c) {
                return Err(err(
                    1,
                    Some(c),
                    "this column name appears twice".into(),
                    "give each column a unique name",
                ));
            }
        }
        for (want, pos) in [("onset", 0usize), ("duration", 1)] {
            if columns.get(pos).map(String::as_str) != Some(want) {
                let found = columns.iter().position(|c| c == want);
                let case_twin = columns
                    .iter()
                    .find(|c| c.eq_ignore_ascii_case(want) && *c != want);
                let message = match (found, case_twin) {
                    (Some(i), _) => format!(
                        "'{want}' is column {} but BIDS requires it to be column {}",
                        i + 1,
                        pos + 1
                    ),
                    (None, Some(t)) => format!(
                        "the required column '{want}' is missing ('{t}' is there, but names are case-sensitive)"
                    ),
                    (None, None) => format!(
                        "the required column '{want}' is missing (header: {})",
                        columns.join(", ")
                    ),
                };
                return Err(err(
                    1,
                    Some(want),
                    message,
                    "the first two columns must be onset and duration, in that order (seconds; n/a for unknown)",
                ));
            }
        }

        let mut rows = Vec::new();
        for (line, raw) in lines {
            if raw.trim().is_empty() {
                continue;
            }
            let mut cells: Vec<&str> = raw.split('\t').collect();
            if cells.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            // Tolerate trailing tabs (empty cells past the header), nothing else.
            while cells.len() > columns.len() && cells.last().is_some_and(|c| c.trim().is_empty()) {
                cells.pop();
            }
            if cells.len() != columns.len() {
                let more = cells.len() > columns.len();
                return Err(err(
                    line,
                    None,
                    format!(
                        "this row has {} cells but the header has {} columns",
                        cells.len(),
                        columns.len()
                    ),
                    if more {
                        "remove the extra cells or add their column names to the header (a cell containing a tab splits in two)"
                    } else {
                        "fill the missing cells (write n/a for unknown values); every row needs one cell per column"
                    },
                ));
            }
            let value = |c: &str| -> Option<String> {
                let t = c.trim();
                (!t.is_empty() && t != NA).then(|| t.to_string())
            };
            let number = |col: &str, c: &str| -> Result<Option<f64>> {
                let t = c.trim();
                if t.is_empty() || t == NA {
                    return Ok(None);
                }
                match t.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(Some(v)),
                    _ => Err(err(
                        line,
                        Some(col),
                        format!("'{t}' is not a number"),
                        "write the time in seconds as a decimal number (e.g. 12.5), or n/a if unknown",
                    )),
                }
            };
            let onset = number("onset", cells[0])?;
            let duration = number("duration", cells[1])?;
            if let Some(d) = duration
                && d < 0.0
            {
                return Err(err(
                    line,
                    Some("duration"),
                    format!("duration {d} is negative"),
                    "durations are >= 0 seconds (0 for an impulse); use n/a if unknown",
                ));
            }
            let mut row = EventRow {
                line,
                onset,
                duration,
                trial_type: None,
                stim_file: None,
                word: None,
                other: BTreeMap::new(),
            };
            for (name, cell) in columns.iter().zip(&cells).skip(2) {
                match name.as_str() {
                    "trial_type" => row.trial_type = value(cell),
                    "stim_file" => row.stim_file = value(cell),
                    _ => {
                        row.other.insert(name.clone(), value(cell));
                    }
                }
            }
            row.word = word_of(&row);
            rows.push(row);
        }
        Ok(Events {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    /// True when the file has a column of this name.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c == name)
    }

    /// The rows that present a word (see [`EventRow::word`]).
    pub fn words(&self) -> impl Iterator<Item = &EventRow> {
        self.rows.iter().filter(|r| r.word.is_some())
    }
}

fn word_of(row: &EventRow) -> Option<String> {
    if let Some(Some(w)) = row.other.get("word") {
        return Some(w.clone());
    }
    if row
        .trial_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("word"))
    {
        for col in ["text", "value"] {
            if let Some(Some(w)) = row.other.get(col) {
                return Some(w.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Events> {
        Events::parse(s, Path::new("x_events.tsv"))
    }

    #[test]
    fn tolerances() {
        let e = parse(b"\xEF\xBB\xBFonset\tduration\ttrial_type\tstim_file\r\n.5\t1\tmovie\tmovie/a.mp4\r\n\r\n-1\tn/a\tn/a\tn/a\t\n\n").unwrap();
        assert_eq!(e.columns, ["onset", "duration", "trial_type", "stim_file"]);
        assert_eq!(e.rows.len(), 2);
        assert_eq!(e.rows[0].onset, Some(0.5));
        assert_eq!(e.rows[0].stim_file.as_deref(), Some("movie/a.mp4"));
        assert_eq!(e.rows[1].line, 4);
        assert_eq!(e.rows[1].onset, Some(-1.0));
        assert_eq!(e.rows[1].duration, None);
        assert_eq!(e.rows[1].trial_type, None);
        let h = parse(b"onset\tduration\t\n\n").unwrap();
        assert_eq!(h.columns, ["onset", "duration"]);
        assert!(h.rows.is_empty());
    }

    #[test]
    fn words() {
        let e = parse(b"onset\tduration\ttrial_type\tword\ttext\n0\t0.2\tword\thello\tn/a\n1\t0.2\tword\tn/a\tworld\n2\t5\tmovie\tn/a\tignored\n").unwrap();
        let w: Vec<_> = e.words().map(|r| r.word.clone().unwrap()).collect();
        assert_eq!(w, ["hello", "world"]);
        assert_eq!(e.rows[2].get("text"), Some("ignored"));
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&[u8], usize, Option<&str>)] = &[
            (b"duration\tonset\n1\t2\n", 1, Some("onset")),
            (b"onset\ttrial_type\n1\ta\n", 1, Some("duration")),
            (b"onset\tduration\n1\t2\nx\t1\n", 3, Some("onset")),
            (b"onset\tduration\n1\t-2\n", 2, Some("duration")),
            (b"onset\tduration\n1\tinf\n", 2, Some("duration")),
            (b"onset\tduration\n1\t2\t3\n", 2, None),
            (b"onset\tduration\tx\n1\t2\n", 2, None),
            (b"onset\tduration\n1\t2\n\xff\xfe", 3, None),
            (b"onset duration\n1 2\n", 1, None),
            (b"onset\tduration\r1\t2\r", 1, None),
            (b"", 1, None),
        ];
        for (bytes, line, col) in cases {
            match parse(bytes) {
                Err(Error::Tsv {
                    line: l, column, ..
                }) => {
                    assert_eq!(
                        (l, column.as_deref()),
                        (*line, *col),
                        "{}",
                        String::from_utf8_lossy(bytes)
                    );
                }
                other => panic!(
                    "{}: expected a Tsv error, got {other:?}",
                    String::from_utf8_lossy(bytes)
                ),
            }
        }
    }
}
