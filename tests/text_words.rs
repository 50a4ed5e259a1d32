//! Broken words TSVs (written to a temp dir) give errors naming the file, line and column,
//! through the library reader and through `tribe features text`.

mod common;

use common::fixture;
use tribe_bids::cli::toolbox::FeaturesArgs;
use tribe_bids::error::exit;
use tribe_bids::stimulus::words::read_words_tsv;

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn broken_files_name_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str, &str); 5] = [
        (
            "no_word.tsv",
            b"onset\tduration\ttext\n0\t1\thello\n",
            ":1",
            "no 'word' column",
        ),
        (
            "empty_word.tsv",
            b"onset\tduration\tword\n0\t0.5\tHello\n0.5\t0.5\t\n",
            ":3",
            "the word is empty",
        ),
        (
            "negative.tsv",
            b"onset\tduration\tword\n0\t0.5\tHello\n0.5\t-0.2\tworld\n",
            ":3",
            "negative duration",
        ),
        (
            "latin1.tsv",
            b"onset\tduration\tword\n0\t0.5\tcaf\xe9\n",
            ":2",
            "not valid UTF-8",
        ),
        (
            "short_row.tsv",
            b"onset\tduration\tword\n0\t0.5\n",
            ":2",
            "fields",
        ),
    ];
    for (name, bytes, line, what) in cases {
        let p = write(tmp.path(), name, bytes);
        let err = read_words_tsv(&p).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{name}{line}")) && msg.contains(what),
            "{name}: {msg}"
        );
        assert_eq!(err.exit_code(), exit::DATA_ERROR, "{name}");
    }
    let missing = read_words_tsv(&tmp.path().join("nope.tsv")).unwrap_err();
    assert_eq!(missing.exit_code(), exit::INPUT_MISSING);
}

#[test]
fn cli_reports_the_broken_tsv() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "words.tsv",
        b"onset\tduration\tword\n0\t0.5\tHello\n0.5\t-1\tworld\n",
    );
    let args = FeaturesArgs {
        model: fixture("models-tiny/Llama-3.2-3B"),
        input: p,
        start: 0.0,
        duration: None,
        out: tmp.path().join("out.safetensors"),
        device: "cpu".into(),
        text_context: "exact".into(),
        dtype: "auto".into(),
    };
    let err = tribe_bids::features::text::features_cli(&args).unwrap_err();
    assert!(
        err.to_string().contains("words.tsv:3 (column 'duration')"),
        "{err}"
    );
    assert!(!tmp.path().join("out.safetensors").exists());
}
