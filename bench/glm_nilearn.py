"""nilearn counterpart of benches/glm.rs: run_glm + compute_contrast on 3,600 volumes x 20,484
vertices x 10 regressors (7 conditions, polynomial drift order 2, constant), OLS and AR(1).

Run: /work/venv/bin/python bench/glm_nilearn.py [--small]
"""
import sys
import time
import warnings

import numpy as np
import pandas as pd

warnings.simplefilter("ignore")
import nilearn  # noqa: E402
from nilearn.glm.contrasts import compute_contrast  # noqa: E402
from nilearn.glm.first_level import make_first_level_design_matrix, run_glm  # noqa: E402

small = "--small" in sys.argv
nt, nv = (450, 2560) if small else (3600, 20484)
tr = 1.0
rng = np.random.default_rng(1)
conds = list("abcdefg")
rows, t, i = [], 2.0, 0
while t < nt * tr - 10:
    rows.append((t, 2 + 2 * rng.random(), conds[i % 7]))
    t += 6 + 4 * rng.random()
    i += 1
events = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
ft = np.arange(nt) * tr
t0 = time.perf_counter()
dm = make_first_level_design_matrix(ft, events, drift_model="polynomial", drift_order=2)
t_design = time.perf_counter() - t0
X = dm.values
assert X.shape[1] == 10
phi = 0.6 * np.arange(nv) / nv
Y = np.empty((nt, nv), dtype=np.float32)
e = np.zeros(nv)
for ti in range(nt):
    e = phi * e + rng.standard_normal(nv)
    Y[ti] = X[ti, np.arange(nv) % 7] * (1 + np.arange(nv) % 3) + e
Y = Y.astype(np.float64)  # nilearn's maskers hand run_glm float64 data
con = np.zeros(10)
con[0], con[1] = 1, -1
print(f"nilearn {nilearn.__version__} GLM benchmark: {nt} volumes x {nv} vertices x 10 regressors")
print(f"  design matrix: {t_design:.3f} s ({len(events)} events)")
for noise in ["ols", "ar1"]:
    best, best_cpu, best_con = np.inf, np.inf, np.inf
    for _ in range(3 if noise == "ols" else 1):
        t0, c0 = time.perf_counter(), time.process_time()
        labels, results = run_glm(Y, X, noise_model=noise)
        t_fit = time.perf_counter() - t0
        best_cpu = min(best_cpu, time.process_time() - c0)
        t0 = time.perf_counter()
        c = compute_contrast(labels, results, con)
        z = c.z_score()
        t_con = time.perf_counter() - t0
        best, best_con = min(best, t_fit), min(best_con, t_con)
    print(f"  {noise}: fit {best:.3f} s wall ({best_cpu:.2f} CPU s), contrast (effect/variance/t/z) {best_con:.3f} s, AR bins {len(results)}")
