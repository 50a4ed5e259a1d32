//! `tribe predict` (DESIGN.md §2) against the reference pipeline: `TribeModel.predict` on the e2e
//! movie (its transcript `movie_words.tsv` sits beside it and is picked up, DESIGN.md §4) gave
//! `e2e/predictions.safetensors`, one row per second. `tribe predict` writes the same rows, row j
//! for stimulus second j, so every row is compared, not only the ones a BOLD run would keep.

mod common;

use assert_cmd::Command;
use common::fixture;

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn predict_matches_the_reference_pipeline_row_for_row() {
    let d = tempfile::tempdir().unwrap();
    let prefix = d.path().join("movie");
    let o = Command::cargo_bin("tribe")
        .unwrap()
        .arg("predict")
        .arg("--video")
        .arg(fixture("e2e/bids/stimuli/movie.mp4"))
        .arg("--models-dir")
        .arg(fixture("models-tiny"))
        .arg("--out")
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let st = std::fs::read(fixture("e2e/predictions.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st).unwrap();
    let reference = f32s(st.tensor("prediction").unwrap().data());
    let n = 20484;
    let rows = reference.len() / n;
    assert_eq!(rows, 30);

    let mut max_diff = 0f32;
    let mut max_ref = 0f32;
    for (h, offset) in [("L", 0), ("R", 10242)] {
        let img =
            tribe_bids::formats::read_gifti(&d.path().join(format!("movie_hemi-{h}.func.gii")))
                .unwrap();
        assert_eq!(
            img.arrays.len(),
            rows,
            "one DataArray per second of the 30 s movie"
        );
        for (j, a) in img.arrays.iter().enumerate() {
            let ours = a.data.as_f32().unwrap();
            assert_eq!(ours.len(), 10242);
            let row = &reference[j * n + offset..j * n + offset + 10242];
            for (x, y) in ours.iter().zip(row) {
                max_diff = max_diff.max((x - y).abs());
                max_ref = max_ref.max(y.abs());
            }
        }
    }
    eprintln!(
        "tribe predict: max |ours - reference| = {max_diff:.3e} (max |reference| = {max_ref:.3})"
    );
    // The fixture's tolerance, as for the BIDS-App (tests/pipeline_example.rs).
    assert!(max_diff <= 1e-3, "{max_diff:.3e} > 1e-3");
}

#[test]
fn predict_needs_exactly_one_stimulus() {
    let o = Command::cargo_bin("tribe")
        .unwrap()
        .args(["predict", "--out", "/tmp/never-written"])
        .arg("--models-dir")
        .arg(fixture("models-tiny"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exactly one of --video, --audio, --words")
    );
}
