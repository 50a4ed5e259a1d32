#!/usr/bin/env bash
# Wav2Vec2-BERT at the w2v-bert-2.0 shape on CPU: PyTorch (transformers) against our candle port,
# same random weights and input, same machine, back to back; then the front-end benchmarks.
#
#   bench/compare_w2vbert.sh [LAYERS=2] [THREADS=2]
#
# Needs a Python with torch + transformers (TRIBE_BENCH_PYTHON, default /work/venv/bin/python).
# The Rust side is built with the bench profile (release: what users run). An earlier version
# used the dev profile at opt-level 3 to reuse the test build; its debug assertions and
# overflow checks made the GEMMs about 3.8x slower and the figure meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
layers=${1:-2}
threads=${2:-2}
py=${TRIBE_BENCH_PYTHON:-/work/venv/bin/python}
dir=${W2VBERT_BENCH_DIR:-/tmp/w2vbert_bench}
export W2VBERT_BENCH_DIR=$dir RAYON_NUM_THREADS=$threads

echo "== machine: $(nproc) cores visible, load: $(cut -d' ' -f1-3 /proc/loadavg), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
rm -rf "$dir"
echo "== PyTorch ($layers layers, $threads threads)"
"$py" bench/w2vbert_torch.py --out "$dir" --layers "$layers" --threads "$threads" | tee /tmp/w2vbert_torch.json

echo "== candle"
cargo bench --bench w2vbert --no-run -q
bin=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/w2vbert-* | grep -v '\.d$' | head -1)
W2VBERT_BENCH_ONLY=model "$bin" | grep RESULT | sed 's/^RESULT //' | tee /tmp/w2vbert_candle.json

"$py" - <<'PY'
import json
t = json.load(open("/tmp/w2vbert_torch.json"))
c = json.load(open("/tmp/w2vbert_candle.json"))
print(f"== per layer, 60 s of audio: torch {t['per_layer_seconds']:.2f} s wall / {t['forward_cpu_seconds']/t['layers_run']:.2f} s CPU; "
      f"candle {c['per_layer_seconds']:.2f} s wall / {c['forward_cpu_seconds']/c['layers_run']:.2f} s CPU")
print(f"== speed vs torch (>1 = faster): wall {t['per_layer_seconds']/c['per_layer_seconds']:.2f}x, "
      f"CPU time {t['forward_cpu_seconds']/c['forward_cpu_seconds']:.2f}x")
print(f"== full 24-layer model, real-time factor (audio s / compute s): torch {t['realtime_factor_full_model']:.3f}, candle {c['realtime_factor_full_model']:.3f}")
print(f"== peak RSS ({t['layers_run']} layers): torch {t['peak_rss_mb']:.0f} MB, candle {c['peak_rss_mb']:.0f} MB; candle vs torch last hidden state: {c['max_abs_diff_vs_torch_last_hidden']}")
PY

echo "== front end (filterbank, resampler: criterion) and decoding vs the ffmpeg CLI"
W2VBERT_BENCH_ONLY=front "$bin" --bench 2>&1 | grep -E "time:|^[a-z_0-9]+ " || true
W2VBERT_BENCH_ONLY=decode "$bin" | grep RESULT | sed 's/^RESULT //'
