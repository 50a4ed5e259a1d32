//! CIFTI-2 dtseries: what we write must load in nibabel (`Cifti2Image`: SeriesAxis with
//! step = TR, BrainModelAxis with our structures, identical values) and in Connectome Workbench
//! (`wb_command -file-information`, whose per-map statistics also check the on-disk order).

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tribe_bids::Error;
use tribe_bids::formats::nifti::NiftiVersion;
use tribe_bids::formats::{
    BrainModel, CiftiDtseries, Hemisphere, VolumeSpace, read_nifti_header, write_cifti_dtseries,
};

const MNI_2MM: [[f64; 4]; 4] = [
    [-2.0, 0.0, 0.0, 90.0],
    [0.0, 2.0, 0.0, -126.0],
    [0.0, 0.0, 2.0, -72.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn layout() -> CiftiDtseries {
    let mut l = CiftiDtseries::cortex_only(10242, 1.49);
    l.series_start = 0.5;
    // the right hemisphere without a "medial wall": not every vertex carries data
    l.brain_models[1] = BrainModel::Surface {
        structure: Hemisphere::Right.cifti_structure().into(),
        n_vertices: 10242,
        vertices: (0..10242).filter(|v| v % 10 != 3).collect(),
    };
    l.volume = Some(VolumeSpace {
        dims: [91, 109, 91],
        affine: MNI_2MM,
    });
    l.brain_models.push(BrainModel::Voxels {
        structure: "CIFTI_STRUCTURE_THALAMUS_LEFT".into(),
        voxels: (0..30).map(|i| [50 + i % 5, 60 + i / 5, 40]).collect(),
    });
    l.brain_models.push(BrainModel::Voxels {
        structure: "CIFTI_STRUCTURE_PUTAMEN_RIGHT".into(),
        voxels: vec![[30, 70, 36], [31, 70, 36], [30, 71, 37]],
    });
    l
}

const ORACLE: &str = r#"
import sys, json, hashlib, numpy as np, nibabel as nib
img = nib.load(sys.argv[1])
a = np.asarray(img.get_fdata(dtype=np.float32))
s, b = img.header.get_axis(0), img.header.get_axis(1)
structs = [[str(name), int(sl.start or 0), int(sl.stop if sl.stop is not None else len(b))] for name, sl, _ in b.iter_structures()]
print(json.dumps(dict(
    shape=list(a.shape), sha=hashlib.sha256(np.ascontiguousarray(a).astype('<f4').tobytes()).hexdigest(),
    series=[type(s).__name__, float(s.start), float(s.step), int(s.size), s.unit],
    axis1=type(b).__name__, structs=structs, nvertices={k: int(v) for k, v in b.nvertices.items()},
    vertex=b.vertex.tolist(), voxel=b.voxel.tolist(), volume_shape=list(b.volume_shape),
    affine=np.asarray(b.affine).ravel().tolist(), intent=img.nifti_header.get_intent()[0])))
"#;

#[test]
fn dtseries_reads_back_in_nibabel_and_workbench() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let n = l.n_grayordinates();
    assert_eq!(n, 10242 + 9218 + 33);
    let t = 4;
    let data: Vec<f32> = (0..n * t)
        .map(|i| ((i * 7919) % 100_003) as f32 * 0.01 - 300.0)
        .collect();
    let path = dir.path().join(format!(
        "sub-01_task-x_space-fsaverage5_den-{}_desc-predicted_bold.dtseries.nii",
        l.density_label()
    ));
    write_cifti_dtseries(&path, &l, &data).unwrap();

    let o: Value =
        serde_json::from_str(&common::run_python(ORACLE, &[path.to_str().unwrap()])).unwrap();
    assert_eq!(o["shape"], serde_json::json!([t, n]));
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(
        o["sha"],
        hex::encode(Sha256::digest(&bytes)),
        "nibabel reads different values"
    );
    assert_eq!(
        o["series"],
        serde_json::json!(["SeriesAxis", 0.5, 1.49, t, "SECOND"])
    );
    assert_eq!(o["axis1"], "BrainModelAxis");
    assert_eq!(o["intent"], "ConnDenseSeries");
    assert_eq!(
        o["structs"],
        serde_json::json!([
            ["CIFTI_STRUCTURE_CORTEX_LEFT", 0, 10242],
            ["CIFTI_STRUCTURE_CORTEX_RIGHT", 10242, 19460],
            ["CIFTI_STRUCTURE_THALAMUS_LEFT", 19460, 19490],
            ["CIFTI_STRUCTURE_PUTAMEN_RIGHT", 19490, 19493]
        ])
    );
    assert_eq!(
        o["nvertices"],
        serde_json::json!({"CIFTI_STRUCTURE_CORTEX_LEFT": 10242, "CIFTI_STRUCTURE_CORTEX_RIGHT": 10242})
    );
    let vertex: Vec<i64> = o["vertex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let voxel: Vec<Vec<i64>> = o["voxel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let mut g = 0;
    for m in &l.brain_models {
        match m {
            BrainModel::Surface { vertices, .. } => {
                for &v in vertices {
                    assert_eq!(vertex[g], v as i64);
                    g += 1;
                }
            }
            BrainModel::Voxels { voxels, .. } => {
                for v in voxels {
                    assert_eq!(voxel[g], v.iter().map(|&x| x as i64).collect::<Vec<_>>());
                    g += 1;
                }
            }
        }
    }
    assert_eq!(g, n);
    assert_eq!(o["volume_shape"], serde_json::json!([91, 109, 91]));
    assert_eq!(
        o["affine"],
        serde_json::json!(MNI_2MM.iter().flatten().collect::<Vec<_>>())
    );

    // our header reader sees the NIfTI-2 container
    let h = read_nifti_header(&path).unwrap();
    assert_eq!(h.version, NiftiVersion::Two);
    assert_eq!(
        (h.intent_code, h.intent_name.as_str()),
        (3002, "ConnDenseSeries")
    );
    assert_eq!(h.dim, [6, 1, 1, 1, 1, t as i64, n as i64, 1]);
    assert_eq!(h.vox_offset as u64 % 16, 0);

    // Workbench: structures, series and, per map (time point), statistics of the right values
    let out = Command::new("wb_command")
        .arg("-file-information")
        .arg(&path)
        .output()
        .expect("wb_command (Debian package connectome-workbench) must be installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wb_command failed: {text}");
    for needle in [
        "CIFTI - Dense Data Series".to_string(),
        format!("Number of Rows:           {n}"),
        format!("Number of Columns:        {t}"),
        "CortexLeft:           10242 out of 10242 vertices".into(),
        "CortexRight:          9218 out of 10242 vertices".into(),
        "ThalamusLeft:         30 voxels".into(),
        "PutamenRight:         3 voxels".into(),
        "Volume Dims:          91,109,91".into(),
        "Map Interval Step:        1.490".into(),
        "Map Interval Start:       0.500".into(),
    ] {
        assert!(
            text.contains(&needle),
            "wb_command output lacks '{needle}':\n{text}"
        );
    }
    let table: Vec<Vec<f64>> = text
        .lines()
        .skip_while(|l| !l.starts_with("Map "))
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .take(4)
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 4).then_some(v)
        })
        .collect();
    assert_eq!(table.len(), t, "{text}");
    for (ti, row) in table.iter().enumerate() {
        let vol = &data[ti * n..(ti + 1) * n];
        let min = vol.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let max = vol.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mean = vol.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert_eq!(row[0] as usize, ti + 1);
        for (got, want) in [(row[1], min), (row[2], max), (row[3], mean)] {
            assert!(
                (got - want).abs() <= 1e-3,
                "wb_command map {}: {got} vs {want}\n{text}",
                ti + 1
            );
        }
    }
}

#[test]
fn cortex_only_layout_and_density_label() {
    let dir = tempfile::tempdir().unwrap();
    let l = CiftiDtseries::cortex_only(10242, 2.0);
    assert_eq!(l.density_label(), "20k");
    let data = vec![1.0f32; 20484 * 2];
    let p = dir.path().join("c.dtseries.nii");
    write_cifti_dtseries(&p, &l, &data).unwrap();
    let out = Command::new("wb_command")
        .arg("-file-information")
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Maps to Volume:           false"));
}

#[test]
fn bad_layouts_and_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.dtseries.nii");
    let l = layout();
    let e = write_cifti_dtseries(&p, &l, &vec![0.0; l.n_grayordinates() + 1]).unwrap_err();
    assert!(
        matches!(e, Error::Cifti { .. }) && e.to_string().contains("whole number"),
        "{e}"
    );
    let mut no_vol = layout();
    no_vol.volume = None;
    assert!(
        write_cifti_dtseries(&p, &no_vol, &vec![0.0; no_vol.n_grayordinates()])
            .unwrap_err()
            .to_string()
            .contains("no volume space")
    );
    let mut out_of_grid = layout();
    out_of_grid.volume.as_mut().unwrap().dims = [40, 40, 40];
    assert!(
        write_cifti_dtseries(&p, &out_of_grid, &vec![0.0; out_of_grid.n_grayordinates()]).is_err()
    );
    let mut dup = CiftiDtseries::cortex_only(4, 1.0);
    dup.brain_models[1] = BrainModel::cortex(Hemisphere::Left, 4);
    assert!(
        write_cifti_dtseries(&p, &dup, &[0.0; 8])
            .unwrap_err()
            .to_string()
            .contains("appears twice")
    );
    let mut bad_vertex = CiftiDtseries::cortex_only(4, 1.0);
    bad_vertex.brain_models[0] = BrainModel::Surface {
        structure: "CIFTI_STRUCTURE_CORTEX_LEFT".into(),
        n_vertices: 4,
        vertices: vec![4],
    };
    assert!(
        write_cifti_dtseries(&p, &bad_vertex, &[0.0; 5])
            .unwrap_err()
            .to_string()
            .contains("outside")
    );
    assert!(!Path::new(&p).exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
