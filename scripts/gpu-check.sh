#!/usr/bin/env bash
# The GPU check, run on a lent NVIDIA machine that has no Rust toolchain (H100/H200, driver 580,
# PyTorch cu130 in its python3), from the repository root, with the binaries that
# scripts/build-cuda.sh left in .gpu/. It never downloads anything. Writes its logs and JSON to
# $OUT and prints a summary; about 2-3 minutes on an H100.
#
# 1. environment: the GPU, the CUDA library folders of the image's PyTorch wheels, `ldd` of the
#    binaries (a missing library shows here, not as a crash later);
# 2. brain-model parity on CUDA, f32: `tribe encode --device cuda` on every golden case of
#    tests/fixtures/fmri_encoder, from best.ckpt and model.safetensors, against `expected`, bound
#    1e-5 * max|expected| + 1e-6 (the CPU tests' bound); the same on this machine's CPU;
# 3. the same in bf16 (bound 2e-2 * max|expected|, as tests/model_bf16.rs);
# 4. speed at the released size (random weights): the brain_model bench in GPU mode, f32 and
#    bf16, next to bench/torch_reference.py on the same GPU and the same weights;
# 5. the e2e window (tests/fixtures/e2e/features.safetensors) through the tiny TRIBE v2
#    checkpoint (tests/fixtures/models-tiny/tribev2) on CUDA vs CPU, when those are present.
#    The full BIDS-App cannot run there: it decodes media with FFmpeg, which that image lacks
#    (the binaries carry FFmpeg link stubs only; see build-cuda.sh).
#
# Env: OUT (default: a temporary folder), PY (default python3), BIN (default .gpu),
#      REPS (timed forwards per bench, default 20), DEV (default cuda; DEV=cpu is a local smoke
#      test of this script on a machine without a GPU: no nvidia-smi, no PyTorch timing).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python3}
BIN=${BIN:-.gpu}
REPS=${REPS:-20}
DEV=${DEV:-cuda}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
fail=0
step() { echo; echo "== $* ($(date -u +%T))"; }

main() {

step "1. environment"
if [ "$DEV" != cpu ]; then
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
fi
# Binaries may travel xz-compressed (to fit a device call's 64 MiB).
for z in "$BIN"/*.xz; do
  [ -e "$z" ] || continue
  b="$WORK/$(basename "${z%.xz}")"
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$z" "$b"
  chmod +x "$b"
done
tribe=$( [ -x "$BIN/tribe" ] && echo "$BIN/tribe" || echo "$WORK/tribe")
bench=$( [ -x "$BIN/brain_model" ] && echo "$BIN/brain_model" || echo "$WORK/brain_model")
# The CUDA 13 libraries of the image's PyTorch wheels (nvidia/cu13/lib, or nvidia/*/lib).
libs=$("$PY" - <<'PY'
import glob, os
import nvidia
dirs = []
for root in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        if glob.glob(os.path.join(d, "lib*.so*")):
            dirs.append(d)
print(":".join(dirs))
PY
)
echo "CUDA library folders: $libs"
drv=""
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [ -d "$d" ] && drv="$drv:$d"; done
export LD_LIBRARY_PATH="$libs:$PWD/$BIN/stubs$drv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for b in "$tribe" "$bench"; do
  echo "-- ldd $b"
  ldd "$b" | tee -a "$OUT/ldd.txt"
  if ldd "$b" | grep -q "not found"; then
    echo "MISSING LIBRARY for $b: $(ldd "$b" | grep 'not found' | tr -s ' \t' ' ')"
    fail=1
  fi
done
[ "$fail" = 0 ] || { echo "stopping: fix the library path first"; return 1; }
"$tribe" --version

step "2+3. brain-model parity on the golden cases (f32 and bf16, CUDA; f32 CPU)"
TINY=tests/fixtures/fmri_encoder/tribe-tiny
for f in tests/fixtures/fmri_encoder/cases/*.safetensors; do
  name=$(basename "$f" .safetensors)
  case $name in *intermediates*) continue ;; esac
  for w in best.ckpt model.safetensors; do
    for run in $DEV:f32 $DEV:bf16 cpu:f32; do
      dev=${run%%:*}; dt=${run##*:}
      o="$WORK/pred.$name.$w.$dev.$dt.safetensors"
      if ! timeout 120 "$tribe" encode --device "$dev" --dtype "$dt" --checkpoint "$TINY/$w" \
          --features "$f" --out "$o" 2> "$WORK/err.txt"; then
        echo "FAILED: tribe encode --device $dev --dtype $dt on $name ($w):"; cat "$WORK/err.txt"; fail=1
      fi
    done
  done
done
"$PY" - "$WORK" "$OUT/parity.json" <<'PY' || fail=1
import glob, json, os, sys
import numpy as np
from safetensors.numpy import load_file
work, out = sys.argv[1], sys.argv[2]
rows, bad = [], 0
for p in sorted(glob.glob(f"{work}/pred.*.safetensors")):
    _, name, w1, w2, dev, dt, _ = os.path.basename(p).split(".")
    dev = "cpu" if dev == "cpu" else "cuda"  # DEV=cpu smoke test: both runs land on "cpu"
    weights = f"{w1}.{w2}"
    exp = load_file(f"tests/fixtures/fmri_encoder/cases/{name}.safetensors")["expected"]
    got = load_file(p)["prediction"]
    m = float(np.abs(exp).max())
    d = float(np.abs(got.astype(np.float64) - exp).max()) if got.shape == exp.shape else float("inf")
    bound = 1e-5 * m + 1e-6 if dt == "f32" else 2e-2 * m
    ok = d <= bound
    bad += not ok
    rows.append(dict(case=name, weights=weights, device=dev, dtype=dt, max_abs_diff=d,
                     rel=d / m, bound=bound, ok=ok))
    print(f"{name:<12} {weights:<18} {dev:<4} {dt:<4} max|d| {d:.3e} ({d / m:.2e} rel) "
          f"bound {bound:.2e} {'ok' if ok else 'OUTSIDE'}")
json.dump(rows, open(out, "w"), indent=1)
n = len(rows)
print(f"{n - bad}/{n} within bound")
sys.exit(1 if bad or n == 0 else 0)
PY

step "4. speed at the released size (hidden 1152, 8 layers, low-rank 2048, 20,484 outputs, T=200)"
mkdir -p "$WORK/bench"
if BENCH_DEVICE=$DEV BENCH_DIR="$WORK/bench" BENCH_REPS=$REPS timeout 300 "$bench"; then
  cp "$WORK/bench/gpu_summary.json" "$OUT/"
  [ "$DEV" = cpu ] || for dt in f32 bf16; do
    timeout 120 "$PY" bench/torch_reference.py "$WORK/bench" --device cuda --dtype "$dt" --reps "$REPS" \
      | tee "$WORK/torch_$dt.txt" || fail=1
    tail -1 "$WORK/torch_$dt.txt" > "$OUT/torch_$dt.json"
  done
else
  echo "FAILED: the brain_model bench on CUDA"; fail=1
fi

step "5. e2e window through the tiny TRIBE v2 checkpoint, CUDA vs CPU"
E2E=tests/fixtures/e2e/features.safetensors
TRIBEV2=tests/fixtures/models-tiny/tribev2
if [ -f "$E2E" ] && [ -f "$TRIBEV2/best.ckpt" ]; then
  for run in $DEV:f32 cpu:f32 $DEV:bf16; do
    dev=${run%%:*}; dt=${run##*:}
    timeout 120 "$tribe" encode --device "$dev" --dtype "$dt" --checkpoint "$TRIBEV2" --features "$E2E" \
      --out "$WORK/e2e.${run/:/.}.safetensors" 2> "$WORK/err.txt" || { cat "$WORK/err.txt"; fail=1; }
  done
  "$PY" - "$WORK" "$OUT/e2e.json" "$DEV" <<'PY' || fail=1
import json, sys
import numpy as np
from safetensors.numpy import load_file
w = sys.argv[1]
cpu = load_file(f"{w}/e2e.cpu.f32.safetensors")["prediction"]
m = float(np.abs(cpu).max())
res = {"shape": list(cpu.shape), "max_abs_cpu": m}
for dt, bound in (("f32", 1e-5 * m + 1e-6), ("bf16", 2e-2 * m)):
    g = load_file(f"{w}/e2e.{sys.argv[3]}.{dt}.safetensors")["prediction"]
    d = float(np.abs(g.astype(np.float64) - cpu).max())
    res[dt] = {"max_abs_diff_vs_cpu_f32": d, "rel": d / m, "bound": bound, "ok": d <= bound}
    print(f"e2e window {tuple(cpu.shape)} cuda {dt}: max|cuda - cpu f32| = {d:.3e} ({d / m:.2e} rel), "
          f"bound {bound:.2e} {'ok' if d <= bound else 'OUTSIDE'}")
json.dump(res, open(sys.argv[2], "w"), indent=1)
sys.exit(0 if res["f32"]["ok"] and res["bf16"]["ok"] else 1)
PY
else
  echo "skipped: $E2E or $TRIBEV2/best.ckpt is not here"
fi

step "summary"
"$PY" - "$OUT" <<'PY'
import glob, json, os, sys
o = sys.argv[1]
def load(n):
    p = os.path.join(o, n)
    return json.load(open(p)) if os.path.exists(p) else None
par = load("parity.json") or []
for dev, dt in (("cuda", "f32"), ("cuda", "bf16"), ("cpu", "f32")):
    r = [x for x in par if x["device"] == dev and x["dtype"] == dt]
    if r:
        print(f"parity {dev} {dt}: {sum(x['ok'] for x in r)}/{len(r)} ok, worst max|d| "
              f"{max(x['max_abs_diff'] for x in r):.3e} (worst rel {max(x['rel'] for x in r):.2e})")
g = load("gpu_summary.json")
if g:
    print(f"bench on {g['device']}, {g['gflop']:.1f} GFLOP per window, median of {g['reps']}:")
    for r in g["runs"]:
        t = load(f"torch_{r['dtype']}.json")
        tt = f"; PyTorch {t['ms_median']:.2f} ms (candle/torch time {r['ms_median'] / t['ms_median']:.2f}x)" if t else ""
        print(f"  {r['dtype']:<5} candle {r['ms_median']:.2f} ms/window ({r['gflops']:.0f} GFLOP/s){tt}; "
              f"vs CPU f32 {r['max_abs_diff_vs_cpu_f32']:.2e} ({r['verdict']})")
e = load("e2e.json")
if e:
    print(f"e2e window cuda f32 {e['f32']['max_abs_diff_vs_cpu_f32']:.2e} ({'ok' if e['f32']['ok'] else 'OUTSIDE'}), "
          f"bf16 {e['bf16']['max_abs_diff_vs_cpu_f32']:.2e} ({'ok' if e['bf16']['ok'] else 'OUTSIDE'})")
PY
echo "result: $([ "$fail" = 0 ] && echo PASS || echo FAIL)"
return "$fail"
}

# Everything also goes to $OUT/gpu-check.log (comes back even if the call is cut short).
main 2>&1 | tee "$OUT/gpu-check.log"
exit "${PIPESTATUS[0]}"
