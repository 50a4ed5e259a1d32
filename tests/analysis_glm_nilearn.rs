//! Parity of the design matrix and the first-level GLM with nilearn (the Python oracle).
//!
//! A small synthetic run: 3 conditions (one with zero-duration events), 60 volumes, TR 2 s,
//! 50 "vertices" of AR(1) noise (coefficients 0..0.6, so many AR bins are used) plus planted
//! task signal. nilearn gets the same numbers as a 50x1x1 NIfTI with an all-ones mask.
//! Tolerances: design 1e-9 absolute (values are O(1)); effect and variance 1e-9 relative;
//! t and z 1e-6 absolute. Fixed effects over two runs: same tolerances (measured: about 1e-12).

mod common;

use serde_json::{Value, json};
use tribe_bids::analysis::contrast::ContrastSpec;
use tribe_bids::analysis::design::{
    DesignOptions, DriftModel, Event, frame_times, make_first_level_design_matrix,
};
use tribe_bids::analysis::glm::{
    FixedEffectsWeighting, GlmOptions, NoiseModel, fit, fixed_effects,
};
use tribe_bids::analysis::hrf::HrfModel;

const ORACLE: &str = r#"
import sys, json, warnings
import numpy as np, pandas as pd, nibabel as nib
warnings.simplefilter("ignore")
import nilearn
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
inp = json.load(open(sys.argv[1]))
n, v, tr = inp["n"], inp["v"], inp["tr"]
Y = np.array(inp["y"], dtype=np.float64).reshape(n, v)
ev = pd.DataFrame(inp["events"])
out = {"nilearn": nilearn.__version__}
ft = np.arange(n) * tr
for drift in ["cosine", "polynomial"]:
    for hrf in ["glover", "spm"]:
        kw = dict(high_pass=0.01) if drift == "cosine" else dict(drift_order=3)
        dm = make_first_level_design_matrix(ft, ev, hrf_model=hrf, drift_model=drift, **kw)
        out[f"design_{drift}_{hrf}"] = {"columns": list(dm.columns), "values": dm.values.ravel().tolist()}
img = nib.Nifti1Image(Y.T.reshape(v, 1, 1, n), np.eye(4))
mask = nib.Nifti1Image(np.ones((v, 1, 1), dtype=np.int8), np.eye(4))
for noise in ["ols", "ar1"]:
    m = FirstLevelModel(t_r=tr, noise_model=noise, signal_scaling=False, mask_img=mask,
                        hrf_model="glover", drift_model="cosine", high_pass=0.01)
    m.fit(img, events=ev)
    out[f"fl_design_{noise}"] = m.design_matrices_[0].values.ravel().tolist()
    for con in inp["contrasts"]:
        r = m.compute_contrast(con, output_type="all")
        out[f"{noise}|{con}"] = {k: np.asarray(r[k].get_fdata()).ravel().tolist()
                                 for k in ["effect_size", "effect_variance", "stat", "z_score"]}
# fixed effects over two runs (AR(1) fits), precision weighted, real dofs
from nilearn.glm import compute_fixed_effects
Y2 = np.array(inp["y2"], dtype=np.float64).reshape(n, v)
img2 = nib.Nifti1Image(Y2.T.reshape(v, 1, 1, n), np.eye(4))
cons, vars_ = [], []
for im in [img, img2]:
    m = FirstLevelModel(t_r=tr, noise_model="ar1", signal_scaling=False, mask_img=mask,
                        hrf_model="glover", drift_model="cosine", high_pass=0.01).fit(im, events=ev)
    r = m.compute_contrast("faces-places", output_type="all")
    cons.append(r["effect_size"]); vars_.append(r["effect_variance"])
dof = n - m.design_matrices_[0].shape[1]
fx = compute_fixed_effects(cons, vars_, mask, precision_weighted=True, dofs=[dof, dof])
out["fixed"] = {k: np.asarray(im.get_fdata()).ravel().tolist() for k, im in zip(["effect", "variance", "stat", "z"], fx)}
json.dump(out, open(sys.argv[2], "w"))
"#;

/// splitmix64 + Box-Muller: reproducible normal draws without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}

fn events() -> Vec<Event> {
    let conds = ["faces", "places", "objects"];
    let mut out = Vec::new();
    let (mut t, mut i) = (4.0, 0);
    while t < 110.0 {
        out.push(Event::new(
            t,
            if i % 4 == 0 { 0.0 } else { 3.0 },
            conds[i % 3],
        ));
        t += 7.3;
        i += 1;
    }
    out
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-12))
        .fold(0.0, f64::max)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn design_and_glm_match_nilearn() {
    let (n, nv, tr) = (60usize, 50usize, 2.0);
    let ev = events();
    let ft = frame_times(n, tr, 0.0);
    let design = make_first_level_design_matrix(&ft, &ev, &DesignOptions::default()).unwrap();
    assert_eq!(
        design.columns,
        [
            "faces", "objects", "places", "drift_1", "drift_2", "constant"
        ]
    );

    // AR(1) noise with vertex-dependent coefficient, plus planted effects.
    let mut rng = Rng(42);
    let mut y = vec![0.0f64; n * nv];
    for v in 0..nv {
        let phi = 0.6 * v as f64 / nv as f64;
        let amp = [
            3.0 * (v % 5) as f64,
            1.5 * (v % 3) as f64,
            -2.0 * (v % 2) as f64,
        ];
        let mut e = 0.0;
        for t in 0..n {
            e = phi * e + rng.normal();
            let signal: f64 = (0..3).map(|j| amp[j] * design.get(t, j)).sum();
            y[t * nv + v] = 100.0 + signal + e;
        }
    }
    let mut y2 = y.clone();
    for v in y2.iter_mut() {
        *v += 0.8 * rng.normal();
    }
    let contrasts = ["faces-places", "faces", "0.5*faces+0.5*places-objects"];
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.json");
    let outp = dir.path().join("out.json");
    let ev_json = json!({
        "onset": ev.iter().map(|e| e.onset).collect::<Vec<_>>(),
        "duration": ev.iter().map(|e| e.duration).collect::<Vec<_>>(),
        "trial_type": ev.iter().map(|e| e.trial_type.clone()).collect::<Vec<_>>(),
    });
    std::fs::write(&inp, json!({"n": n, "v": nv, "tr": tr, "y": y, "y2": y2, "events": ev_json, "contrasts": contrasts}).to_string()).unwrap();
    common::run_python(ORACLE, &[inp.to_str().unwrap(), outp.to_str().unwrap()]);
    let out: Value = serde_json::from_str(&std::fs::read_to_string(&outp).unwrap()).unwrap();
    eprintln!("nilearn {}", out["nilearn"]);

    // ---- design matrices: Glover/SPM x cosine/polynomial
    for (drift, dname) in [
        (DriftModel::Cosine { high_pass: 0.01 }, "cosine"),
        (DriftModel::Polynomial { order: 3 }, "polynomial"),
    ] {
        for (hrf, hname) in [(HrfModel::Glover, "glover"), (HrfModel::Spm, "spm")] {
            let opts = DesignOptions {
                hrf,
                drift,
                ..DesignOptions::default()
            };
            let dm = make_first_level_design_matrix(&ft, &ev, &opts).unwrap();
            let want = &out[format!("design_{dname}_{hname}")];
            let cols: Vec<String> = want["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            assert_eq!(dm.columns, cols, "{dname}/{hname}");
            let d = max_abs_diff(&dm.values, &f64s(&want["values"]));
            eprintln!("design {dname}/{hname}: max |diff| = {d:.3e}");
            assert!(d < 1e-9, "design {dname}/{hname}: {d}");
        }
    }
    let d = max_abs_diff(&design.values, &f64s(&out["fl_design_ols"]));
    assert!(d < 1e-9, "FirstLevelModel design: {d}");

    // ---- GLM contrasts, OLS and AR(1)
    for (noise, nname) in [(NoiseModel::Ols, "ols"), (NoiseModel::Ar1, "ar1")] {
        let fit = fit(
            &y,
            nv,
            &design,
            &GlmOptions {
                noise_model: noise,
                bins: 100,
            },
        )
        .unwrap();
        if noise == NoiseModel::Ar1 {
            assert!(fit.n_bins() > 10, "AR bins used: {}", fit.n_bins());
        }
        for con in contrasts {
            let spec = ContrastSpec::parse_cli(con, &fit.columns).unwrap();
            let maps = fit.contrast_spec(&spec).unwrap();
            let want = &out[format!("{nname}|{con}")];
            let de = max_rel_diff(&maps.effect, &f64s(&want["effect_size"]));
            let dv = max_rel_diff(&maps.variance, &f64s(&want["effect_variance"]));
            let dt = max_abs_diff(&maps.t, &f64s(&want["stat"]));
            let dz = max_abs_diff(&maps.z, &f64s(&want["z_score"]));
            let zmax = maps.z.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            eprintln!(
                "{nname} {con}: effect rel {de:.2e}, variance rel {dv:.2e}, t abs {dt:.2e}, z abs {dz:.2e} (max |z| {zmax:.1})"
            );
            assert!(
                de < 1e-9 && dv < 1e-9,
                "{nname} {con}: effect {de} variance {dv}"
            );
            assert!(dz < 1e-6 && dt < 1e-6, "{nname} {con}: t {dt} z {dz}");
        }
    }

    // ---- fixed effects across two runs
    let opts = GlmOptions {
        noise_model: NoiseModel::Ar1,
        bins: 100,
    };
    let spec = ContrastSpec::parse_cli("faces-places", &design.columns).unwrap();
    let r1 = fit(&y, nv, &design, &opts)
        .unwrap()
        .contrast_spec(&spec)
        .unwrap();
    let r2 = fit(&y2, nv, &design, &opts)
        .unwrap()
        .contrast_spec(&spec)
        .unwrap();
    let fx = fixed_effects(&[&r1, &r2], FixedEffectsWeighting::Precision).unwrap();
    let want = &out["fixed"];
    let de = max_rel_diff(&fx.effect, &f64s(&want["effect"]));
    let dv = max_rel_diff(&fx.variance, &f64s(&want["variance"]));
    let dt = max_abs_diff(&fx.t, &f64s(&want["stat"]));
    let dz = max_abs_diff(&fx.z, &f64s(&want["z"]));
    eprintln!(
        "fixed effects: effect rel {de:.2e}, variance rel {dv:.2e}, t abs {dt:.2e}, z abs {dz:.2e}"
    );
    assert!(
        de < 1e-9 && dv < 1e-9 && dt < 1e-6 && dz < 1e-6,
        "fixed effects differ"
    );
}
