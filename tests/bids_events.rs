//! The events.tsv reader: pandas as an oracle on every vendored events file, property tests
//! (never panics; well-formed tables round-trip exactly), and the inputs the fuzzer found.

mod common;

use proptest::prelude::*;
use std::path::Path;
use tribe_bids::Error;
use tribe_bids::bids::Events;

fn parse(bytes: &[u8]) -> tribe_bids::Result<Events> {
    Events::parse(bytes, Path::new("fuzz_events.tsv"))
}

/// Row count, onset sum and duration sum (n/a skipped) of every events.tsv under the fixtures,
/// against pandas `read_csv(sep='\t')`.
#[test]
fn matches_pandas_on_every_vendored_events_file() {
    let root = common::fixture("data");
    let mut files: Vec<_> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_events.tsv"))
        .map(|e| e.path().to_path_buf())
        .collect();
    files.sort();
    assert!(files.len() > 100, "{}", files.len());
    let list = files
        .iter()
        .map(|p| p.to_string_lossy().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let list_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list_file.path(), list).unwrap();
    let out = common::run_python(
        r#"
import sys, pandas as pd
for f in open(sys.argv[1]).read().split('\n'):
    d = pd.read_csv(f, sep='\t', na_values=['n/a'], keep_default_na=False, skip_blank_lines=True)
    d = d.loc[:, [c for c in d.columns if not str(c).startswith('Unnamed')]]
    print(len(d), repr(float(pd.to_numeric(d['onset']).sum())), repr(float(pd.to_numeric(d['duration']).sum())), len(d.columns))
"#,
        &[list_file.path().to_str().unwrap()],
    );
    let mut max_diff = 0f64;
    for (path, line) in files.iter().zip(out.lines()) {
        let ev = Events::read(path).unwrap_or_else(|e| panic!("{e}"));
        let f: Vec<&str> = line.split(' ').collect();
        let n: usize = f[0].parse().unwrap();
        let onset: f64 = f[1].parse().unwrap();
        let duration: f64 = f[2].parse().unwrap();
        let ncol: usize = f[3].parse().unwrap();
        assert_eq!(ev.rows.len(), n, "{}", path.display());
        assert_eq!(ev.columns.len(), ncol, "{}", path.display());
        let so: f64 = ev.rows.iter().filter_map(|r| r.onset).sum();
        let sd: f64 = ev.rows.iter().filter_map(|r| r.duration).sum();
        max_diff = max_diff.max((so - onset).abs()).max((sd - duration).abs());
        assert!(
            (so - onset).abs() <= 1e-9 * onset.abs().max(1.0),
            "{}: onset sum {so} vs pandas {onset}",
            path.display()
        );
        assert!(
            (sd - duration).abs() <= 1e-9 * duration.abs().max(1.0),
            "{}: duration sum {sd} vs pandas {duration}",
            path.display()
        );
    }
    eprintln!(
        "{} events files, max |diff| of onset/duration sums vs pandas: {max_diff:e}",
        files.len()
    );
}

/// Edge inputs for the parser's corners (NEL control character, overflowing and NaN numbers, a
/// bare BOM, empty header cells). The first 10-minute `cargo fuzz run events_tsv` (6.44 M inputs)
/// found no crash; any crash input it finds later belongs in this list. Each must parse or give a
/// clean `Error::Tsv`, never panic.
#[test]
fn fuzz_regressions() {
    let cases: &[&[u8]] = &[
        b"onset\tduration\n\t\t\t\t\n",
        b"onset\tduration\n1\t\xc2\x85\n",
        b"onset\tduration\n1e999\t1\n",
        b"onset\tduration\nNaN\t1\n",
        b"\xEF\xBB\xBF",
        b"\r\n",
        b"onset\tduration\t\t\t\n1\t2\n",
        b"onset\t\tduration\n1\t2\t3\n",
    ];
    for c in cases {
        match parse(c) {
            Ok(_) | Err(Error::Tsv { .. }) => {}
            Err(e) => panic!(
                "{}: unexpected error kind {e:?}",
                String::from_utf8_lossy(c)
            ),
        }
    }
}

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("n/a".to_string()),
        "[a-zA-Z0-9_./ +-]{0,12}".prop_map(|s| s.trim().to_string())
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes: a value or a Tsv error, never a panic.
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        match parse(&bytes) {
            Ok(_) | Err(Error::Tsv { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }

    /// Near-valid text (the header plus tab-separated junk): still never panics.
    #[test]
    fn never_panics_on_near_valid_text(rows in proptest::collection::vec(proptest::collection::vec("[0-9.eE+\\-na/\t ]{0,6}", 0..5), 0..8), crlf in any::<bool>()) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut s = format!("onset\tduration\tx{nl}");
        for r in rows { s += &r.join("\t"); s += nl; }
        match parse(s.as_bytes()) {
            Ok(_) | Err(Error::Tsv { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
        }
    }

    /// Well-formed tables round-trip: every value and line number comes back exactly.
    #[test]
    fn well_formed_tables_round_trip(
        rows in proptest::collection::vec((proptest::option::of(-1e6f64..1e6), proptest::option::of(0f64..1e4), cell(), cell()), 0..20),
        crlf in any::<bool>(), bom in any::<bool>(), trailing_tab in any::<bool>(), blank_every in 0usize..4,
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut s = String::new();
        if bom { s.push('\u{feff}'); }
        s += &format!("onset\tduration\ttrial_type\tword{}{nl}", if trailing_tab { "\t" } else { "" });
        let mut lines = Vec::new();
        let mut line = 1;
        for (i, (o, d, t, w)) in rows.iter().enumerate() {
            if blank_every > 0 && i % blank_every == 0 { s += nl; line += 1; }
            let num = |x: &Option<f64>| x.map(|v| format!("{v}")).unwrap_or_else(|| "n/a".into());
            s += &format!("{}\t{}\t{t}\t{w}{}{nl}", num(o), num(d), if trailing_tab { "\t" } else { "" });
            line += 1;
            lines.push(line);
        }
        let ev = parse(s.as_bytes()).unwrap();
        prop_assert_eq!(ev.columns.len(), 4);
        prop_assert_eq!(ev.rows.len(), rows.len());
        for ((r, (o, d, t, w)), l) in ev.rows.iter().zip(&rows).zip(&lines) {
            prop_assert_eq!(r.onset, *o);
            prop_assert_eq!(r.duration, *d);
            prop_assert_eq!(r.line, *l);
            let expect = |c: &String| (!c.is_empty() && c != "n/a").then(|| c.clone());
            prop_assert_eq!(&r.trial_type, &expect(t));
            prop_assert_eq!(&r.word, &expect(w));
        }
    }
}
