//! Word transcripts: the `onset duration word` TSV that drives the text features.
//!
//! The file is a BIDS-style TSV (tab-separated, one header row, no quoting). Only the three
//! columns `onset`, `duration` and `word` are read, in any order; other columns (a BIDS
//! events.tsv's `trial_type`, an aligner's confidence) are ignored so that the same file can
//! serve other tools. Every problem names the file and the 1-based line, because transcripts
//! are often hand-edited and a silent skip would shift every later word's context.

use std::path::Path;

use crate::error::{Error, Result};

/// One spoken (or shown) word on the stimulus clock, in seconds from the stimulus start.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub onset: f64,
    pub duration: f64,
    /// The word as displayed, with any attached punctuation ("Alice,", "them."), which the
    /// reference keeps: punctuation reaches the language model's context.
    pub text: String,
}

impl Word {
    pub fn new(onset: f64, duration: f64, text: impl Into<String>) -> Self {
        Word {
            onset,
            duration,
            text: text.into(),
        }
    }
}

const REQUIRED: [&str; 3] = ["onset", "duration", "word"];

/// Read a words TSV. Rows keep the file's order; the text extractor sorts them as the
/// reference does (onset ascending, longer first on ties).
pub fn read_words_tsv(path: &Path) -> Result<Vec<Word>> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::InputMissing {
            path: path.to_path_buf(),
            what: "the words TSV".into(),
            fix: "give a tab-separated file with columns onset, duration, word".into(),
        },
        _ => Error::io(path, e),
    })?;
    parse_words_tsv(&bytes, path)
}

/// Parse words TSV bytes; `path` is only used in error messages.
pub fn parse_words_tsv(bytes: &[u8], path: &Path) -> Result<Vec<Word>> {
    let tsv_err = |line: usize, column: Option<&str>, message: String, fix: &str| Error::Tsv {
        path: path.to_path_buf(),
        line,
        column: column.map(str::to_string),
        message,
        fix: fix.to_string(),
    };
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| (i + 1, raw));

    let decode = |line: usize, raw: &[u8]| -> Result<String> {
        let raw = raw.strip_suffix(b"\r".as_slice()).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|e| {
            tsv_err(
                line,
                None,
                format!(
                    "the text is not valid UTF-8 (invalid byte at column {})",
                    e.utf8_error().valid_up_to() + 1
                ),
                "save the file as UTF-8",
            )
        })
    };

    let (header_line, header) = loop {
        match lines.next() {
            None => {
                return Err(tsv_err(
                    1,
                    None,
                    "the file is empty".into(),
                    "add a header row: onset<TAB>duration<TAB>word",
                ));
            }
            Some((n, raw)) => {
                let text = decode(n, raw)?;
                if !text.trim().is_empty() {
                    break (n, text);
                }
            }
        }
    };
    let names: Vec<&str> = header.split('\t').map(str::trim).collect();
    let mut idx = [0usize; 3];
    for (k, want) in REQUIRED.iter().enumerate() {
        idx[k] = names.iter().position(|n| n == want).ok_or_else(|| {
            tsv_err(
                header_line,
                Some(want),
                format!(
                    "the header has no '{want}' column (found: {})",
                    names.join(", ")
                ),
                "the words TSV needs tab-separated columns onset, duration and word",
            )
        })?;
    }
    let [i_onset, i_duration, i_word] = idx;

    let mut words = Vec::new();
    for (n, raw) in lines {
        let text = decode(n, raw)?;
        if text.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split('\t').collect();
        let field = |i: usize, name: &str| -> Result<&str> {
            fields.get(i).copied().ok_or_else(|| {
                tsv_err(
                    n,
                    Some(name),
                    format!(
                        "the row has {} fields but the header has {}",
                        fields.len(),
                        names.len()
                    ),
                    "give every row one tab-separated value per header column",
                )
            })
        };
        let number = |i: usize, name: &str| -> Result<f64> {
            let s = field(i, name)?.trim();
            let v: f64 = s.parse().map_err(|_| {
                tsv_err(
                    n,
                    Some(name),
                    format!("'{s}' is not a number"),
                    "write seconds as a decimal number, e.g. 3.25",
                )
            })?;
            if !v.is_finite() {
                return Err(tsv_err(
                    n,
                    Some(name),
                    format!("'{s}' is not a finite number"),
                    "write seconds as a decimal number",
                ));
            }
            Ok(v)
        };
        let onset = number(i_onset, "onset")?;
        let duration = number(i_duration, "duration")?;
        if duration < 0.0 {
            return Err(tsv_err(
                n,
                Some("duration"),
                format!("negative duration {duration}"),
                "durations are lengths in seconds and must be >= 0",
            ));
        }
        let word = field(i_word, "word")?.trim();
        if word.is_empty() || word == "n/a" {
            return Err(tsv_err(
                n,
                Some("word"),
                "the word is empty".into(),
                "remove the row, or write the word; every row must hold one word",
            ));
        }
        words.push(Word {
            onset,
            duration,
            text: word.to_string(),
        });
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Vec<Word>> {
        parse_words_tsv(s, Path::new("w.tsv"))
    }

    #[test]
    fn reads_columns_in_any_order_and_ignores_others() {
        let w = parse(
            b"word\textra\tduration\tonset\r\nHello,\tx\t0.5\t1.0\r\n\r\nworld.\ty\t0.25\t1.5\n",
        )
        .unwrap();
        assert_eq!(
            w,
            vec![
                Word::new(1.0, 0.5, "Hello,"),
                Word::new(1.5, 0.25, "world.")
            ]
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse(b"onset\tword\n1\tx\n").unwrap_err().to_string();
        assert!(e.contains("w.tsv:1") && e.contains("'duration'"), "{e}");
        let e = parse(b"onset\tduration\tword\n1\t0.2\tok\n2\t-0.1\tbad\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("w.tsv:3") && e.contains("negative duration"),
            "{e}"
        );
        let e = parse(b"onset\tduration\tword\n1\t0.2\t \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.tsv:2") && e.contains("empty"), "{e}");
        let e = parse(b"onset\tduration\tword\n1\t0.2\tcaf\xe9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.tsv:2") && e.contains("UTF-8"), "{e}");
        let e = parse(b"onset\tduration\tword\nx\t0.2\tw\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = parse(b"onset\tduration\tword\n1\t0.2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.tsv:2") && e.contains("fields"), "{e}");
    }
}
