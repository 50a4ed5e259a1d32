"""scikit-learn counterpart of benches/ica.rs: FastICA(n_components=5, random_state=0) on a
2,048 x 20,484 matrix (five Laplace sources x Gaussian maps + Gaussian noise).

Run: /work/venv/bin/python bench/ica_sklearn.py [--small] [--float32]
"""
import sys
import time
import warnings

import numpy as np
import sklearn
from sklearn.decomposition import FastICA

warnings.simplefilter("ignore")
small = "--small" in sys.argv
ns, nf, k = (512, 5121, 5) if small else (2048, 20484, 5)
rng = np.random.default_rng(3)
S = rng.laplace(size=(ns, k))
A = rng.standard_normal((nf, k))
X = S @ A.T + 0.5 * rng.standard_normal((ns, nf))
# The readout is float32 in the checkpoint; scikit-learn keeps float32 input in float32.
X = X.astype(np.float32 if "--float32" in sys.argv else np.float64)
print(f"scikit-learn {sklearn.__version__} FastICA benchmark: {ns} x {nf} ({X.dtype}), {k} components")
best = np.inf
for _ in range(2):
    t0, c0 = time.perf_counter(), time.process_time()
    ica = FastICA(n_components=k, random_state=0)
    ica.fit(X)
    dt = time.perf_counter() - t0
    best = min(best, dt)
    print(f"  run: {dt:.3f} s wall, {time.process_time() - c0:.2f} CPU s ({ica.n_iter_} iterations)")
print(f"  best: {best:.3f} s")
