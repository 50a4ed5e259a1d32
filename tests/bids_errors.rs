//! Bad inputs, each in its own temporary dataset: the exact error variant, what it names, and the
//! exit code the BIDS-App returns for it.

use std::io::Write;
use std::path::PathBuf;
use tribe_bids::Error;
use tribe_bids::bids::{Filters, Layout};
use tribe_bids::error::exit;

/// A minimal valid dataset: one run with a TR and an events file.
struct Ds {
    dir: tempfile::TempDir,
}

impl Ds {
    fn new() -> Ds {
        let ds = Ds {
            dir: tempfile::tempdir().unwrap(),
        };
        ds.write(
            "dataset_description.json",
            br#"{"Name": "t", "BIDSVersion": "1.10.0"}"#,
        );
        ds.write(
            "task-movie_bold.json",
            br#"{"TaskName": "movie", "RepetitionTime": 1.5}"#,
        );
        ds.write("sub-01/func/sub-01_task-movie_bold.nii", b"");
        ds.write(
            "sub-01/func/sub-01_task-movie_events.tsv",
            b"onset\tduration\tstim_file\n0\t10\tmovie/a.mp4\n",
        );
        ds.write("stimuli/movie/a.mp4", b"x");
        ds
    }
    /// The dataset is a folder inside the temp dir, so "outside the dataset" files can live
    /// next to it and vanish with it.
    fn root(&self) -> PathBuf {
        self.dir.path().join("ds")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    fn events(&self, bytes: &[u8]) {
        self.write("sub-01/func/sub-01_task-movie_events.tsv", bytes);
    }
    fn read(&self) -> tribe_bids::Result<Vec<tribe_bids::bids::Run>> {
        Layout::open(&self.root())?.runs(&Filters::all())
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn nifti1_header(dims: [i16; 8]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[92..96].copy_from_slice(&1.5f32.to_le_bytes());
    h[123] = 2 | 8;
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

#[test]
fn the_baseline_dataset_is_valid() {
    let ds = Ds::new();
    let runs = ds.read().unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].stimuli[0].found);
}

/// (name, setup, check of the error, expected exit code)
#[test]
fn bad_input_table() {
    type Setup = fn(&Ds);
    type Check = fn(&Ds, &Error) -> bool;
    fn tsv(ds: &Ds, e: &Error, line: usize, col: Option<&str>) -> bool {
        matches!(e, Error::Tsv { path, line: l, column, message, fix }
            if path == &ds.path("sub-01/func/sub-01_task-movie_events.tsv") && *l == line && column.as_deref() == col && !message.is_empty() && !fix.is_empty())
    }
    let cases: Vec<(&str, Setup, Check, i32)> = vec![
        (
            "missing onset",
            |d| d.events(b"duration\ttrial_type\n1\ta\n"),
            |d, e| tsv(d, e, 1, Some("onset")),
            exit::DATA_ERROR,
        ),
        (
            "misplaced onset",
            |d| d.events(b"duration\tonset\n1\t2\n"),
            |d, e| tsv(d, e, 1, Some("onset")),
            65,
        ),
        (
            "missing duration",
            |d| d.events(b"onset\ttrial_type\n1\ta\n"),
            |d, e| tsv(d, e, 1, Some("duration")),
            65,
        ),
        (
            "non-numeric onset",
            |d| d.events(b"onset\tduration\n0\t1\nten\t1\n"),
            |d, e| tsv(d, e, 3, Some("onset")),
            65,
        ),
        (
            "non-numeric duration",
            |d| d.events(b"onset\tduration\n0\t1s\n"),
            |d, e| tsv(d, e, 2, Some("duration")),
            65,
        ),
        (
            "negative duration",
            |d| d.events(b"onset\tduration\n-2\t1\n0\t-1\n"),
            |d, e| tsv(d, e, 3, Some("duration")),
            65,
        ),
        (
            "ragged row, too many cells",
            |d| d.events(b"onset\tduration\n0\t1\tx\n"),
            |d, e| tsv(d, e, 2, None),
            65,
        ),
        (
            "ragged row, too few cells",
            |d| d.events(b"onset\tduration\ttrial_type\n0\t1\ta\n\n0\t1\n"),
            |d, e| tsv(d, e, 4, None),
            65,
        ),
        (
            "binary junk",
            |d| d.events(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
            |d, e| tsv(d, e, 1, None),
            65,
        ),
        (
            "binary after a good line",
            |d| d.events(b"onset\tduration\n0\t1\n\x00\x01\x02"),
            |d, e| tsv(d, e, 3, None),
            65,
        ),
        (
            "missing dataset_description.json",
            |d| std::fs::remove_file(d.path("dataset_description.json")).unwrap(),
            |d, e| matches!(e, Error::DatasetInvalid { path, fix, .. } if path == &d.path("dataset_description.json") && fix.contains("BIDSVersion")),
            exit::DATASET_INVALID,
        ),
        (
            "invalid JSON in dataset_description.json",
            |d| d.write("dataset_description.json", b"{\"Name\": \"t\",}"),
            |d, e| matches!(e, Error::DatasetInvalid { path, reason, .. } if path == &d.path("dataset_description.json") && reason.contains("JSON")),
            16,
        ),
        (
            "dataset_description.json without BIDSVersion",
            |d| d.write("dataset_description.json", br#"{"Name": "t"}"#),
            |_, e| matches!(e, Error::DatasetInvalid { reason, .. } if reason.contains("BIDSVersion")),
            16,
        ),
        (
            "invalid JSON sidecar",
            |d| d.write("task-movie_bold.json", b"{\"RepetitionTime\": 1.5"),
            |d, e| matches!(e, Error::Json { path, .. } if path == &d.path("task-movie_bold.json")),
            65,
        ),
        (
            "no RepetitionTime anywhere",
            |d| d.write("task-movie_bold.json", br#"{"TaskName": "movie"}"#),
            |d, e| matches!(e, Error::MissingTiming { path, fix, .. } if path == &d.path("sub-01/func/sub-01_task-movie_bold.nii") && fix.contains("RepetitionTime")),
            exit::DATASET_INVALID,
        ),
        (
            "RepetitionTime and VolumeTiming together",
            |d| {
                d.write(
                    "sub-01/func/sub-01_task-movie_bold.json",
                    br#"{"VolumeTiming": [0, 1], "FrameAcquisitionDuration": 1}"#,
                )
            },
            |_, e| matches!(e, Error::DatasetInvalid { reason, .. } if reason.contains("mutually exclusive")),
            16,
        ),
        (
            "RepetitionTime as a string",
            |d| {
                d.write(
                    "sub-01/func/sub-01_task-movie_bold.json",
                    br#"{"RepetitionTime": "1.5"}"#,
                )
            },
            |d, e| matches!(e, Error::Json { path, .. } if path == &d.path("sub-01/func/sub-01_task-movie_bold.json")),
            65,
        ),
        (
            "truncated .nii.gz (cut mid-header)",
            |d| {
                std::fs::remove_file(d.path("sub-01/func/sub-01_task-movie_bold.nii")).unwrap();
                let full = gz(&nifti1_header([4, 2, 2, 2, 10, 1, 1, 1]));
                d.write(
                    "sub-01/func/sub-01_task-movie_bold.nii.gz",
                    &full[..full.len() / 2],
                );
            },
            |d, e| matches!(e, Error::Nifti { path, .. } if path == &d.path("sub-01/func/sub-01_task-movie_bold.nii.gz")),
            exit::DATA_ERROR,
        ),
        (
            "uncompressed header cut short",
            |d| {
                d.write(
                    "sub-01/func/sub-01_task-movie_bold.nii",
                    &nifti1_header([4, 2, 2, 2, 10, 1, 1, 1])[..200],
                )
            },
            |_, e| matches!(e, Error::Nifti { message, .. } if message.contains("200 bytes")),
            65,
        ),
        (
            "not a NIfTI file",
            |d| d.write("sub-01/func/sub-01_task-movie_bold.nii", &[b'x'; 400]),
            |_, e| matches!(e, Error::Nifti { message, .. } if message.contains("sizeof_hdr")),
            65,
        ),
        (
            "stim_file with ..",
            |d| d.events(b"onset\tduration\tstim_file\n0\t1\tmovie/a.mp4\n1\t1\t../x\n"),
            |d, e| matches!(e, Error::PathEscapes { events, line: 3, stim_file, .. } if events == &d.path("sub-01/func/sub-01_task-movie_events.tsv") && stim_file == "../x"),
            exit::PATH_ESCAPE,
        ),
        (
            "stim_file nested ..",
            |d| {
                d.events(
                    b"onset\tduration\tstim_file\n0\t1\tmovie/../../dataset_description.json\n",
                )
            },
            |_, e| matches!(e, Error::PathEscapes { line: 2, .. }),
            77,
        ),
        (
            "stim_file absolute",
            |d| d.events(b"onset\tduration\tstim_file\n0\t1\t/etc/passwd\n"),
            |_, e| matches!(e, Error::PathEscapes { line: 2, reason, .. } if reason.contains("absolute")),
            77,
        ),
        (
            "stim_file symlink out",
            |d| {
                let outside = d.dir.path().join("outside-secret.txt");
                std::fs::write(&outside, b"secret").unwrap();
                std::os::unix::fs::symlink(&outside, d.path("stimuli/movie/link.mp4")).unwrap();
                d.events(b"onset\tduration\tstim_file\n0\t1\tmovie/link.mp4\n");
            },
            |_, e| matches!(e, Error::PathEscapes { line: 2, reason, .. } if reason.contains("outside")),
            77,
        ),
        (
            "stim_file under a symlinked folder that points out",
            |d| {
                std::os::unix::fs::symlink("/tmp", d.path("stimuli/ext")).unwrap();
                d.events(b"onset\tduration\tstim_file\n0\t1\text/none-such.mp4\n");
            },
            |_, e| matches!(e, Error::PathEscapes { .. }),
            77,
        ),
        (
            "stim_file dangling symlink pointing out",
            |d| {
                std::os::unix::fs::symlink(
                    "/nonexistent/clip.mp4",
                    d.path("stimuli/movie/gone.mp4"),
                )
                .unwrap();
                d.events(b"onset\tduration\tstim_file\n0\t1\tmovie/gone.mp4\n");
            },
            |_, e| matches!(e, Error::PathEscapes { .. }),
            77,
        ),
        (
            "derivatives dataset as input",
            |d| {
                d.write(
                    "dataset_description.json",
                    br#"{"Name": "t", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}"#,
                )
            },
            |_, e| matches!(e, Error::DatasetInvalid { .. }),
            16,
        ),
        (
            "no bold runs at all",
            |d| std::fs::remove_file(d.path("sub-01/func/sub-01_task-movie_bold.nii")).unwrap(),
            |_, e| matches!(e, Error::NoDataMatched { fix, .. } if fix.contains("no BOLD runs")),
            exit::NO_DATA,
        ),
        (
            "two events files tie at one level",
            |d| {
                std::fs::remove_file(d.path("sub-01/func/sub-01_task-movie_events.tsv")).unwrap();
                // Both apply to sub-01_task-movie, both have one entity, both at the root.
                d.write("task-movie_events.tsv", b"onset\tduration\n");
                d.write("sub-01_events.tsv", b"onset\tduration\n");
            },
            |_, e| matches!(e, Error::DatasetInvalid { reason, .. } if reason.contains("apply equally")),
            16,
        ),
    ];
    for (name, setup, check, code) in cases {
        let ds = Ds::new();
        setup(&ds);
        let err = match ds.read() {
            Ok(runs) => panic!("{name}: expected an error, got {} runs", runs.len()),
            Err(e) => e,
        };
        assert!(check(&ds, &err), "{name}: unexpected error: {err:?}");
        assert_eq!(err.exit_code(), code, "{name}: {err}");
        // Every message names a file and tells how to fix it (or what it refused).
        let msg = err.to_string();
        assert!(
            msg.contains(ds.root().to_str().unwrap()) || matches!(err, Error::NoDataMatched { .. }),
            "{name}: {msg}"
        );
    }
}

#[test]
fn missing_stimulus_is_recorded_not_an_error() {
    let ds = Ds::new();
    ds.events(b"onset\tduration\tstim_file\n0\t1\tmovie/a.mp4\n5\t1\tmovie/missing.mp4\n6\t1\tmovie/a.mp4\n");
    let runs = ds.read().unwrap();
    let s = &runs[0].stimuli;
    assert_eq!(s.len(), 2);
    assert!(s[0].found && !s[1].found);
    assert_eq!(
        (s[1].stim_file.as_str(), s[1].line),
        ("movie/missing.mp4", 3)
    );
    // A symlink that stays inside the dataset is fine.
    std::os::unix::fs::symlink(
        ds.path("stimuli/movie/a.mp4"),
        ds.path("stimuli/movie/alias.mp4"),
    )
    .unwrap();
    ds.events(b"onset\tduration\tstim_file\n0\t1\tmovie/alias.mp4\n");
    assert!(ds.read().unwrap()[0].stimuli[0].found);
}

#[test]
fn nifti2_and_big_endian_headers_from_nibabel() {
    use tribe_bids::bids::read_bold_header;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data/formats/nibabel-5.4.2/tests_data");
    // nibabel 5.4.2: example_nifti2 dim [4 32 20 12 2]; example4d [4 128 96 24 2]; functional
    // [4 17 21 3 20]; anatomical is big-endian 3-D [3 33 41 25].
    let cases: &[(&str, u8, &[u64], u64)] = &[
        ("example_nifti2.nii.gz", 2, &[32, 20, 12, 2], 2),
        ("example4d.nii.gz", 1, &[128, 96, 24, 2], 2),
        ("functional.nii", 1, &[17, 21, 3, 20], 20),
        ("anatomical.nii", 1, &[33, 41, 25], 1),
    ];
    for (file, version, shape, n) in cases {
        let h = read_bold_header(&dir.join(file)).unwrap().unwrap();
        assert_eq!(
            (h.nifti_version, h.shape.as_slice(), h.n_volumes),
            (*version, *shape, *n),
            "{file}"
        );
    }
    // functional.nii: pixdim[4] 2.0 with xyzt_units 10 (mm, s). (example4d says 2000 "s": a known
    // quirk of that test file, which we report as written.)
    assert_eq!(
        read_bold_header(&dir.join("functional.nii"))
            .unwrap()
            .unwrap()
            .tr_seconds,
        Some(2.0)
    );
}

#[test]
fn filter_file_errors() {
    let ds = Ds::new();
    let f = ds.path("filter.json");
    for (content, needle) in [
        (&b"{\"bold\": {\"session\": \"01\""[..], "not valid JSON"),
        (
            br#"{"bold": {"subjekt": "01"}}"#,
            "unknown entity 'subjekt'",
        ),
        (br#"{"bold": {"run": {"a": 1}}}"#, "not a string or number"),
    ] {
        std::fs::write(&f, content).unwrap();
        let err = Filters::all().with_filter_file(&f).unwrap_err();
        assert!(
            matches!(&err, Error::Json { path, message, .. } if path == &f && message.contains(needle)),
            "{err}"
        );
        assert_eq!(err.exit_code(), 65);
    }
    let err = Filters::all()
        .with_filter_file(&ds.path("nope.json"))
        .unwrap_err();
    assert_eq!(err.exit_code(), exit::INPUT_MISSING);
}
