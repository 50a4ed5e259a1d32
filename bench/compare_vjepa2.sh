#!/usr/bin/env bash
# V-JEPA2 benchmarks in one run, on this machine: candle vs PyTorch on full-width ViT-g layers
# (random weights, one 64-frame 256x256 clip = 8,192 tokens), and frame preparation (decode +
# RGB + resize/crop + clip assembly) vs the ffmpeg CLI on a 1080p H.264 clip.
#
# usage: bench/compare_vjepa2.sh [N_LAYERS=2] [REPS=1]
# env:   PYTHON (default /work/venv/bin/python, needs torch), THREADS (default 2),
#        SECONDS_1080P (default 20): length of the generated 1080p test clip.
# Wall and CPU seconds and peak RSS come from /usr/bin/time. On a shared machine the wall
# times move with the other load; the CPU seconds move less.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}
REPS=${2:-1}
PY=${PYTHON:-/work/venv/bin/python}
THREADS=${THREADS:-2}
SECS=${SECONDS_1080P:-20}
export RAYON_NUM_THREADS=$THREADS
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$TARGET/bench-vjepa2
mkdir -p "$WORK"

echo "# machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), threads used: $THREADS"
echo "# CPU matrix library: TRIBE_BLAS=${TRIBE_BLAS:-auto} (auto: Intel MKL when libmkl_rt.so is installed, else gemm)"
cargo bench --bench vjepa2 --no-run 2>&1 | tail -1
BIN=$(ls -t "$TARGET"/release/deps/vjepa2-* | grep -v '\.d$' | head -1)

timed() { # timed NAME CMD...: runs CMD, prints its key=value lines and NAME_{wall,cpu,rss}
    local name=$1; shift
    /usr/bin/time -f "${name}_wall_s=%e ${name}_cpu_s=%U+%S ${name}_maxrss_kb=%M" "$@" 2>"$WORK/time.txt" | tee "$WORK/$name.txt"
    tail -1 "$WORK/time.txt"
}

echo "## ViT-g layers (hidden 1408, 16 heads, MLP 6144, 8192 tokens), $N layer(s) x $REPS rep(s), f32"
timed torch "$PY" bench/vjepa2_torch.py "$N" "$REPS" "$THREADS"
timed candle "$BIN" layers "$N" "$REPS"
tl=$(grep -o 'torch_layer_s=[0-9.]*' "$WORK/torch.txt" | cut -d= -f2)
cl=$(grep -o 'candle_layer_s=[0-9.]*' "$WORK/candle.txt" | cut -d= -f2)
echo "speed_vs_torch=$(awk -v t="$tl" -v c="$cl" 'BEGIN{printf "%.2fx", t/c}')  (torch layer s / candle layer s; >1 = candle faster)"

echo "## frame preparation, 1080p H.264, ${SECS} s at 24 fps"
CLIP=$WORK/h264_1080p_${SECS}s.mp4
[ -f "$CLIP" ] || ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=24:duration=$SECS" \
    -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p "$CLIP"
timed ffmpeg_decode ffmpeg -v error -threads "$THREADS" -i "$CLIP" -f null -
timed ffmpeg_rgb_pipe sh -c "ffmpeg -v error -threads $THREADS -i '$CLIP' -f image2pipe -vf scale=1920:1080 -sws_flags bicubic -pix_fmt rgb24 -vcodec rawvideo - > /dev/null"
timed ours "$BIN" frames "$CLIP"
for k in ffmpeg_decode ffmpeg_rgb_pipe ours; do
    w=$(grep -o "${k}_wall_s=[0-9.]*" "$WORK/time.txt" "$WORK"/*.txt 2>/dev/null | head -1 | cut -d= -f2)
done
echo "(x realtime = ${SECS} s / wall s; ours includes probing and planning)"
