//! ICA network maps as app outputs (src/cli/networks.rs) on the tiny models:
//! - the group-level decomposition of the predictor readout: files nibabel reads, components
//!   that match scikit-learn's FastICA on the same matrix (|r| > 0.99, up to sign and order),
//!   probe labels that are honest, byte-identical reruns;
//! - the per-run decomposition (`--run-ica`) of a synthetic predicted time series with planted
//!   networks;
//! - both inside a derivative dataset that passes tests/tools/validate-derivatives.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use common::fixture;
use serde_json::Value;
use tribe_bids::bids::derivatives::{self, DerivName, Provenance};
use tribe_bids::cli::bids_app::{RawArgs, RunConfig};
use tribe_bids::cli::networks::{read_readout, write_group_ica_files, write_run_ica};
use tribe_bids::formats::{Hemisphere, TimeSeriesOptions, write_gifti_time_series};

const N_HEMI: usize = 10242;

/// A raw dataset whose stimuli hold one real speech recording with its transcript (what the
/// speech probe looks for).
fn raw_dataset(root: &Path) -> PathBuf {
    let bids = root.join("ds");
    let stim = bids.join("stimuli/story");
    std::fs::create_dir_all(&stim).unwrap();
    std::fs::write(
        bids.join("dataset_description.json"),
        r#"{"Name": "networks test", "BIDSVersion": "1.11.1"}"#,
    )
    .unwrap();
    std::fs::copy(
        fixture("data/stimuli/pocketsphinx-librivox/sense_and_sensibility_01_austen_64kb-0870.wav"),
        stim.join("librivox_0870.wav"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/bids/stimuli/story/librivox_0870_words.tsv"),
        stim.join("librivox_0870_words.tsv"),
    )
    .unwrap();
    bids
}

fn config(bids: &Path, out: &Path, work: &Path) -> RunConfig {
    let args: Vec<String> = [
        "tribe-bids",
        bids.to_str().unwrap(),
        out.to_str().unwrap(),
        "group",
        "--models-dir",
        fixture("models-tiny").to_str().unwrap(),
        "-w",
        work.to_str().unwrap(),
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    RunConfig::from_raw(RawArgs::try_parse_from(&args).unwrap(), args).unwrap()
}

fn read_all(files: &[PathBuf]) -> BTreeMap<PathBuf, Vec<u8>> {
    files
        .iter()
        .map(|f| (f.clone(), std::fs::read(f).unwrap()))
        .collect()
}

const ORACLE: &str = r#"
import sys, json, warnings
import numpy as np
import nibabel as nb
from sklearn.decomposition import FastICA
warnings.simplefilter("ignore")
x_path, nl, nv, k, gl, gr, out = sys.argv[1:8]
nl, nv, k = int(nl), int(nv), int(k)
X = np.fromfile(x_path, dtype="<f4").reshape(nl, nv).astype(np.float64)  # we compute in f64
ica = FastICA(n_components=k, random_state=0)
ica.fit(X)
maps = []
for g in (gl, gr):
    img = nb.load(g)
    assert len(img.darrays) == k, len(img.darrays)
    maps.append(np.stack([d.data for d in img.darrays]))
    names = [d.meta["Name"] for d in img.darrays]
    assert names == [f"ICA_{i:02d}" for i in range(k)], names
    assert img.meta["AnatomicalStructurePrimary"] in ("CortexLeft", "CortexRight")
    assert all(d.data.shape == (10242,) and d.data.dtype == np.float32 for d in img.darrays)
ours = np.concatenate(maps, axis=1).astype(np.float64)
theirs = ica.mixing_.T
r = np.corrcoef(np.vstack([ours, theirs]))[:k, k:]
json.dump({"r": r.tolist(), "n_iter": int(ica.n_iter_)}, open(out, "w"))
"#;

#[test]
fn group_and_run_ica_outputs() {
    let d = tempfile::tempdir().unwrap();
    let bids = raw_dataset(d.path());
    let out = d.path().join("out");
    let work = d.path().join("work");
    let cfg = config(&bids, &out, &work);
    derivatives::init_output_dataset(
        &out,
        &bids,
        &serde_json::json!({"Name": "networks test", "BIDSVersion": "1.11.1"}),
        &Provenance::current(cfg.command_line.clone()),
    )
    .unwrap();

    // ---- group level
    let t0 = std::time::Instant::now();
    let files = write_group_ica_files(&cfg, &out).unwrap();
    eprintln!("write_group_ica: {:.2} s", t0.elapsed().as_secs_f64());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            "group/hemi-L_space-fsaverage5_desc-ICA_components.func.gii",
            "group/hemi-L_space-fsaverage5_desc-ICA_components.json",
            "group/hemi-R_space-fsaverage5_desc-ICA_components.func.gii",
            "group/hemi-R_space-fsaverage5_desc-ICA_components.json",
            "group/desc-ICA_mixing.tsv",
            "group/desc-ICA_decomposition.json",
        ]
    );
    let first = read_all(&files);

    // scikit-learn on the same matrix, against the maps as nibabel reads them
    let readout = read_readout(&fixture("models-tiny/tribev2"), None).unwrap();
    assert_eq!((readout.n_latent, readout.n_vertices), (32, 2 * N_HEMI));
    let xin = d.path().join("readout.f32");
    let bytes: Vec<u8> = readout
        .values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&xin, bytes).unwrap();
    let oracle = d.path().join("oracle.json");
    common::run_python(
        ORACLE,
        &[
            xin.to_str().unwrap(),
            "32",
            &(2 * N_HEMI).to_string(),
            "5",
            files[0].to_str().unwrap(),
            files[2].to_str().unwrap(),
            oracle.to_str().unwrap(),
        ],
    );
    let o: Value = serde_json::from_slice(&std::fs::read(&oracle).unwrap()).unwrap();
    let r: Vec<Vec<f64>> = o["r"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    // one-to-one matching by the best |r| of each of ours (greedy is exact when |r| ~ 1)
    let mut used = [false; 5];
    let mut min_abs_r = f64::INFINITY;
    for row in &r {
        let (j, best) = row
            .iter()
            .enumerate()
            .filter(|(j, _)| !used[*j])
            .map(|(j, v)| (j, v.abs()))
            .fold((0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
        used[j] = true;
        min_abs_r = min_abs_r.min(best);
    }
    eprintln!(
        "group ICA vs scikit-learn FastICA ({} iterations): min |r| = {min_abs_r:.12}",
        o["n_iter"]
    );
    assert!(min_abs_r > 0.99, "min |r| = {min_abs_r}");

    // the decomposition JSON: method, probes, honest labels
    let dj: Value = serde_json::from_slice(&first[&files[5]]).unwrap();
    assert_eq!(dj["Method"], "FastICA");
    assert_eq!(dj["NumberOfComponents"], 5);
    assert_eq!(dj["Algorithm"]["random_state"], 0);
    assert_eq!(dj["Model"]["ReadoutShape"], serde_json::json!([32, 20484]));
    let probes = &dj["Probes"];
    let formed: Vec<&str> = probes["Contrasts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["Formed"] == true)
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    eprintln!(
        "probe contrasts formed: {formed:?}; notes {}",
        probes["Notes"]
    );
    assert_eq!(
        formed.len(),
        8,
        "every probe runs with the tiny models and a speech file"
    );
    assert_eq!(
        probes["Stimuli"]["Speech"],
        "bids:raw:stimuli/story/librivox_0870.wav"
    );
    for (name, c) in dj["Components"].as_object().unwrap() {
        let ev = c["Evidence"].as_str().unwrap();
        let label = c["Label"].as_str().unwrap();
        eprintln!(
            "{name}: label {label}, evidence {ev}, candidate {}, score {}, reason {}",
            c["CandidateLabel"], c["Score"], c["WeakEvidenceReason"]
        );
        assert_eq!(c["ProbeScores"].as_object().unwrap().len(), 8);
        // the tiny model's readout is random: its maps are spatially white on the cortex, so
        // no component may be named, however well it happens to correlate with a probe
        let moran = c["SpatialAutocorrelation"].as_f64().unwrap();
        assert!(moran.abs() < 0.1, "{name}: Moran's I {moran}");
        assert_ne!(
            ev, "strong",
            "{name}: a random readout must not give a confident label"
        );
        match ev {
            "strong" => {
                assert_eq!(label, c["CandidateLabel"].as_str().unwrap());
                assert!(c["Score"].as_f64().unwrap() >= 0.3);
            }
            "weak" | "none" => assert_eq!(label, "unlabelled"),
            other => panic!("evidence '{other}'"),
        }
    }
    let mixing = String::from_utf8(first[&files[4]].clone()).unwrap();
    assert_eq!(
        mixing.lines().count(),
        33,
        "header + one row per latent dim"
    );
    assert!(mixing.starts_with("ICA_00\tICA_01\tICA_02\tICA_03\tICA_04\n"));

    // rerun: same bytes (the feature cache now serves the probes)
    let again = write_group_ica_files(&cfg, &out).unwrap();
    assert_eq!(again, files);
    for (f, b) in read_all(&again) {
        assert!(first[&f] == b, "{} changed on rerun", f.display());
    }

    // ---- run level, next to a (synthetic) predicted BOLD run
    let (bold, planted) = synthetic_run(200);
    let name = DerivName::new(
        [("sub", "01"), ("task", "movie"), ("run", "1")],
        "bold",
        ".func.gii",
    )
    .with("space", "fsaverage5")
    .with("desc", "predicted");
    for (hemi, h, range) in [
        ("L", Hemisphere::Left, 0..N_HEMI),
        ("R", Hemisphere::Right, N_HEMI..2 * N_HEMI),
    ] {
        let n = name.clone().with("hemi", hemi);
        let rows: Vec<f32> = bold
            .chunks_exact(2 * N_HEMI)
            .flat_map(|r| r[range.clone()].to_vec())
            .collect();
        let dir = out.join(n.folder("func"));
        write_gifti_time_series(
            &dir.join(n.file_name()),
            h,
            N_HEMI,
            &rows,
            &TimeSeriesOptions::new(1.0),
        )
        .unwrap();
        let side = serde_json::json!({"RepetitionTime": 1.0, "TaskName": "movie",
            "SpatialReference": derivatives::fsaverage5_spatial_reference(hemi),
            "Description": "synthetic stand-in for predicted BOLD"});
        std::fs::write(dir.join(n.sidecar_name()), derivatives::json_bytes(&side)).unwrap();
    }
    let run_files =
        write_run_ica(&out, &name.clone().with("hemi", "L"), &bold, 200, 3, None).unwrap();
    let run_names: Vec<String> = run_files
        .iter()
        .map(|f| f.strip_prefix(&out).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        run_names,
        vec![
            "sub-01/func/sub-01_task-movie_run-1_hemi-L_space-fsaverage5_desc-ICA_components.func.gii",
            "sub-01/func/sub-01_task-movie_run-1_hemi-L_space-fsaverage5_desc-ICA_components.json",
            "sub-01/func/sub-01_task-movie_run-1_hemi-R_space-fsaverage5_desc-ICA_components.func.gii",
            "sub-01/func/sub-01_task-movie_run-1_hemi-R_space-fsaverage5_desc-ICA_components.json",
            "sub-01/func/sub-01_task-movie_run-1_desc-ICA_mixing.tsv",
            "sub-01/func/sub-01_task-movie_run-1_desc-ICA_decomposition.json",
        ]
    );
    // planted networks come back (read through our GIFTI reader)
    let l = tribe_bids::formats::read_gifti(&run_files[0]).unwrap();
    let rr = tribe_bids::formats::read_gifti(&run_files[2]).unwrap();
    assert_eq!(l.arrays.len(), 3);
    let mut worst = 1.0f64;
    for p in &planted {
        let best = (0..3)
            .map(|k| {
                let m: Vec<f64> = l.arrays[k]
                    .data
                    .to_f64_vec()
                    .into_iter()
                    .chain(rr.arrays[k].data.to_f64_vec())
                    .collect();
                tribe_bids::analysis::networks::pearson(&m, p).abs()
            })
            .fold(0.0, f64::max);
        worst = worst.min(best);
    }
    eprintln!("run ICA: planted maps recovered with min |r| = {worst:.6}");
    assert!(worst > 0.95, "{worst}");
    let tsv = std::fs::read_to_string(&run_files[4]).unwrap();
    assert_eq!(tsv.lines().count(), 201);
    let rj: Value = serde_json::from_slice(&std::fs::read(&run_files[5]).unwrap()).unwrap();
    assert_eq!(rj["NumberOfSamples"], 200);
    for k in 0..3 {
        let m = rj["Components"][format!("ICA_{k:02}")]["SpatialAutocorrelation"]
            .as_f64()
            .unwrap();
        assert!(
            m > 0.9,
            "planted blobs are smooth on the mesh: Moran's I {m}"
        );
    }
    assert_eq!(rj["Components"]["ICA_00"]["Label"], "unlabelled");
    assert_eq!(rj["Components"]["ICA_00"]["Evidence"], "none");

    // ---- the whole output folder is a valid derivative dataset
    let venv = common::python()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let v = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/validate-derivatives"),
    )
    .arg(&out)
    .env("TRIBE_VALIDATE_VENV", &venv)
    .output()
    .unwrap();
    assert!(
        v.status.success(),
        "validate-derivatives:\n{}\n{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

/// `n` volumes of 20,484 vertices: three planted networks (smooth blobs, in both hemispheres)
/// with non-Gaussian time courses, plus a little noise.
fn synthetic_run(n: usize) -> (Vec<f32>, Vec<Vec<f64>>) {
    let nv = 2 * N_HEMI;
    // blobs on the fsaverage5 sphere (geodesically smooth, so they are smooth on the mesh)
    let coords: Vec<Vec<f32>> = ["left", "right"]
        .iter()
        .map(|h| {
            let g = tribe_bids::formats::read_gifti(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(format!("assets/fsaverage5/sphere_{h}.gii.gz")),
            )
            .unwrap();
            g.arrays_with_intent(tribe_bids::formats::Intent::POINTSET)
                .next()
                .unwrap()
                .data
                .as_f32()
                .unwrap()
                .to_vec()
        })
        .collect();
    let maps: Vec<Vec<f64>> = (0..3)
        .map(|c| {
            let centre = 1500 + 3000 * c;
            (0..nv)
                .map(|v| {
                    let (h, i) = (v / N_HEMI, v % N_HEMI);
                    let xyz = &coords[h];
                    let d2: f64 = (0..3)
                        .map(|a| (xyz[3 * i + a] as f64 - xyz[3 * centre + a] as f64).powi(2))
                        .sum();
                    (-0.5 * d2 / (35.0f64 * 35.0)).exp() * if h == 0 { 1.0 } else { 0.7 }
                })
                .collect()
        })
        .collect();
    let mut state = 12345u64;
    let mut unit = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut bold = vec![0f32; n * nv];
    let courses: Vec<Vec<f64>> = (0..3)
        .map(|c| {
            (0..n)
                .map(|t| match c {
                    0 => {
                        if (t / 6) % 2 == 0 {
                            1.0
                        } else {
                            -1.0
                        }
                    }
                    1 => -unit().ln() - 1.0,
                    _ => (t as f64 * 0.37).sin().powi(3) * 2.0,
                })
                .collect()
        })
        .collect();
    for t in 0..n {
        for v in 0..nv {
            let s: f64 = (0..3).map(|c| courses[c][t] * maps[c][v]).sum();
            bold[t * nv + v] = (s + 0.01 * (unit() - 0.5)) as f32;
        }
    }
    (bold, maps)
}
