#!/usr/bin/env bash
# The text extractor (LLaMA, tiny fixture model) on CUDA, on a lent GPU machine without Rust,
# with the binaries of scripts/build-cuda.sh in .gpu/ (see scripts/gpu-check.sh for the setup).
# `tribe features text --device cuda` on the words of tests/fixtures/hf/llama-tiny-textfeat*
# (segment A: 0.2 s + 100 s, 200 bins; segment B: 2.25 s + 7.5 s) against the neuralset golden:
# f32 (exact and fast contexts) within 1e-4 * max|expected| (the CPU tests' bound), bf16 (what
# the reference runs on a GPU) within 3e-2 * max|expected|; with timings, and the same on that
# machine's CPU. Writes text.json and the log to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/gpu-env.sh
tribe=$(gpu_unpack tribe)
gpu_library_path
# The model folder as users have it (the fixture keeps the tokenizer gzipped).
M="$WORK/Llama-3.2-3B"; mkdir -p "$M"
for f in tests/fixtures/models-tiny/Llama-3.2-3B/*; do
  case "$f" in *.gz) gunzip -c "$f" > "$M/$(basename "$f" .gz)" ;; *) cp "$f" "$M/" ;; esac
done
words=tests/fixtures/hf/llama-tiny-textfeat-words.tsv
for run in "cuda f32 exact" "cuda f32 fast" "cuda bf16 exact" "cpu f32 exact" "cpu f32 fast"; do
  set -- $run; dev=$1 dt=$2 ctx=$3
  for seg in "A 0.2 100" "B 2.25 7.5"; do
    set -- $seg
    t0=$EPOCHREALTIME
    "$tribe" features text --model "$M" --input "$words" --start "$2" --duration "$3" \
      --device "$dev" --dtype "$dt" --text-context "$ctx" --out "$WORK/$dev-$dt-$ctx-$1.safetensors" \
      > "$WORK/$dev-$dt-$ctx-$1.log" 2>&1 \
      || { echo "FAILED: $dev $dt $ctx seg$1"; tail -5 "$WORK/$dev-$dt-$ctx-$1.log"; }
    echo "$dev $dt $ctx seg$1 $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b - a}') s"
  done
done | tee "$OUT/text-times.txt"
"$PY" - "$WORK" "$OUT" <<'PY'
import json, sys, os
import numpy as np
from safetensors.numpy import load_file
work, out = sys.argv[1], sys.argv[2]
gold = load_file("tests/fixtures/hf/llama-tiny-textfeat.safetensors")
rows, ok = [], True
runs = [("cuda", "f32", "exact"), ("cuda", "f32", "fast"), ("cuda", "bf16", "exact"),
        ("cpu", "f32", "exact"), ("cpu", "f32", "fast")]
for dev, dt, ctx in runs:
    for seg in ("A", "B"):
        p = f"{work}/{dev}-{dt}-{ctx}-{seg}.safetensors"
        if not os.path.exists(p):
            rows.append({"device": dev, "dtype": dt, "context": ctx, "segment": seg, "error": "no output"}); ok = False; continue
        got = load_file(p)["text"]; want = gold[f"seg{seg}.binned"]
        d = float(np.abs(got - want).max())
        # f32: the CPU tests' bound; bf16: 3 % of the largest value (the reference's own bf16
        # features differ from its f32 ones by 1.2 %).
        bound = (1e-4 if dt == "f32" else 3e-2) * float(np.abs(want).max())
        cpu = f"{work}/cpu-f32-{ctx}-{seg}.safetensors"
        vs_cpu = float(np.abs(got - load_file(cpu)["text"]).max()) if os.path.exists(cpu) else None
        r = {"device": dev, "dtype": dt, "context": ctx, "segment": seg, "max_abs_vs_golden": d,
             "bound": bound, "within": d <= bound, "max_abs_vs_cpu_f32": vs_cpu}
        if not r["within"]: ok = False
        rows.append(r)
        print(f"{dev:4} {dt:4} {ctx:5} seg{seg}: max|d| vs golden {d:.3e} (bound {bound:.3e}, {'ok' if d <= bound else 'over'}); vs CPU f32 {vs_cpu}")
json.dump(rows, open(f"{out}/text.json", "w"), indent=1)
print("result:", "PASS" if ok else "FAIL")
PY
