#!/usr/bin/env bash
# Side by side on this machine, in one run: our LLaMA forward (benches/llama.rs: Intel MKL where installed, else candle's gemm
# (TRIBE_BLAS, src/features/blas.rs), with a fused attention kernel,
# f32, CPU) against PyTorch (bench/llama_torch.py: transformers' LlamaModel when importable),
# the same full-width Llama-3.2-3B layers, token counts and thread count. Prints both JSON
# lines and the ratio (ours / PyTorch tokens per second; > 1 means faster than PyTorch), by wall
# time and by CPU time (the fairer figure on a machine shared with other jobs).
#
# ROUNDS alternations (ours, torch, ours, torch, ...) are run and the best of each kept, so that
# a burst of load from other jobs hits both sides alike.
#
# Environment: LAYERS (4), TOKENS ("512,1400"), REPS (2), ROUNDS (2), THREADS (nproc),
# PYTHON (python3), PROFILE (bench; "dev" skips the release build of every dependency: the
# dev profile already optimizes dependencies, and this script raises our crate to opt-level 3
# too, since the attention kernel lives in it; only LTO differs from the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-4}
TOKENS=${TOKENS:-512,1400}
REPS=${REPS:-2}
THREADS=${THREADS:-$(nproc)}
PYTHON=${PYTHON:-python3}
PROFILE=${PROFILE:-bench}
CFG=()
[ "$PROFILE" = dev ] && CFG=(--config 'profile.dev.package.tribe-bids.opt-level=3')

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# CPU matrix library: TRIBE_BLAS=${TRIBE_BLAS:-auto} (auto: Intel MKL when libmkl_rt.so is installed, else gemm)"
cargo bench --profile "$PROFILE" "${CFG[@]}" --bench llama --no-run >/dev/null 2>&1 ||
  cargo bench --profile "$PROFILE" "${CFG[@]}" --bench llama --no-run
ROUNDS=${ROUNDS:-2}
rust_all=()
torch_all=()
for round in $(seq "$ROUNDS"); do
  rust_all+=("$(TRIBE_BENCH_FORWARD_ONLY=1 TRIBE_BENCH_LAYERS=$LAYERS TRIBE_BENCH_T=$TOKENS TRIBE_BENCH_REPS=$REPS \
    RAYON_NUM_THREADS=$THREADS cargo bench --profile "$PROFILE" "${CFG[@]}" --bench llama 2>/dev/null | tee >(cat >&2) | tail -1)")
  echo "# round $round, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  torch_all+=("$("$PYTHON" bench/llama_torch.py --layers "$LAYERS" --tokens "$TOKENS" --reps "$REPS" --threads "$THREADS" \
    | tee >(cat >&2) | tail -1)")
  echo "# round $round, load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
rust_json=$(printf '%s\n' "${rust_all[@]}")
torch_json=$(printf '%s\n' "${torch_all[@]}")
RUST_JSON="$rust_json" TORCH_JSON="$torch_json" "$PYTHON" - <<'PY'
import json, os
def best(lines):
    """Per token count: the fastest run by wall time, and the least CPU time of any run."""
    runs = [json.loads(l) for l in lines.splitlines() if l.strip()]
    out = dict(runs[0])
    out["full_width"] = []
    for i in range(len(runs[0]["full_width"])):
        rows = [run["full_width"][i] for run in runs]
        row = dict(min(rows, key=lambda x: x["seconds"]))
        row["cpu_seconds"] = min(x["cpu_seconds"] for x in rows)
        out["full_width"].append(row)
    out["peak_rss_kb"] = max(run["peak_rss_kb"] for run in runs)
    return out

r, t = best(os.environ["RUST_JSON"]), best(os.environ["TORCH_JSON"])
print(f"best of {len(os.environ['RUST_JSON'].splitlines())} rounds each")
for a, b in zip(r["full_width"], t["full_width"]):
    wall = b["seconds"] / a["seconds"]
    cpu = b["cpu_seconds"] / a["cpu_seconds"] if a.get("cpu_seconds") else float("nan")
    print(f"T={a['tokens']}: ours {a['tokens_per_s']:.0f} tok/s, torch ({t['impl']}) {b['tokens_per_s']:.0f} tok/s "
          f"({r['layers_timed']} layers; 28-layer model: {a['tokens_per_s_28_layers']:.1f} vs {b['tokens_per_s_28_layers']:.1f}) "
          f"-> ratio {wall:.2f}x by wall time, {cpu:.2f}x by CPU time")
print(f"peak RSS: ours {r['peak_rss_kb']/1e6:.2f} GB, torch {t['peak_rss_kb']/1e6:.2f} GB")
PY
