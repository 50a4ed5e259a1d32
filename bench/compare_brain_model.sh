#!/usr/bin/env bash
# Brain model, candle vs PyTorch on the CPU: same released shapes, same random weights, same
# thread count. Runs benches/brain_model.rs (which writes the weights and one window), then
# bench/torch_reference.py on those files, and prints the speed ratio (PyTorch ms / candle ms:
# >= 1.0 means candle is at least as fast) for the exact head and each head shortcut.
#
# Env: THREADS (default: nproc), PYTHON (an interpreter with torch + safetensors; default python3),
#      BENCH_REPS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT

echo "== candle (cargo bench --bench brain_model), $THREADS threads"
RAYON_NUM_THREADS="$THREADS" BENCH_DIR="$DIR" cargo bench --bench brain_model
echo
echo "== PyTorch ($PYTHON bench/torch_reference.py), $THREADS threads"
"$PYTHON" bench/torch_reference.py "$DIR" --threads "$THREADS" --reps "${BENCH_REPS:-5}" | tee "$DIR/torch.txt"
echo
"$PYTHON" - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
c = json.load(open(f"{d}/candle_summary.json"))
t = json.loads(open(f"{d}/torch.txt").read().strip().splitlines()[-1])
tm = t["ms_per_window"]
print(f"PyTorch {t['torch']}: {tm:.1f} ms/window ({c['gflop_exact'] / tm * 1e3:.1f} GFLOP/s), GEMM peak {t['gemm_peak_gflops']:.1f} GFLOP/s")
print(f"candle GEMM peak: candle matmul {c['gemm_peak_candle_gflops']:.1f}, faer path {c['gemm_peak_faer_gflops']:.1f} GFLOP/s")
print(f"peak RSS {c['peak_rss_mib']:.0f} MiB = {c['peak_rss_mib'] / c['weights_mib']:.2f}x the weights ({c['weights_mib']:.0f} MiB)")
print(f"{'variant':<34}{'ms':>8}  ratio (PyTorch/candle)")
print(f"{'exact (default)':<34}{c['ms_per_window_exact']:>8.1f}  {tm / c['ms_per_window_exact']:.2f}")
for v in c["variants"]:
    print(f"{v['name']:<34}{v['ms']:>8.1f}  {tm / v['ms']:.2f}   (max|d| vs exact {v['max_abs_dev']:.2e})")
print(f"max|PyTorch - candle exact| = {t['max_abs_diff_vs_candle']:.2e} (parity bound {t['parity_bound']:.2e})")
PY
