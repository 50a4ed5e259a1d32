#!/usr/bin/env bash
# Frame preparation for the video extractor vs the ffmpeg CLI, on a 1080p H.264 clip made here.
#
# usage: bench/video_prep.sh [REPS=3] [BIN]
# env:   THREADS (default 2), SECONDS_1080P (default 20), FPS_1080P (default 30).
# BIN:   a prebuilt benches/video_prep binary (e.g. an older build, for before/after figures);
#        by default the bench is built here.
# Each measurement runs REPS times and the best wall time is reported: on a machine shared with
# other work the best run is the one least disturbed. x realtime = clip seconds / wall seconds.
# CPU seconds (user + system, all threads) are steadier under load; clip seconds x THREADS /
# CPU seconds is the x realtime the same work would reach on THREADS otherwise idle cores if
# it kept them all busy.
#   ffmpeg_decode: `ffmpeg -threads THREADS -i clip -f null -` (decode only, frames discarded)
#   ours_decode:   our decoder alone (every frame out of libavcodec, nothing converted)
#   ours_prep:     probe + plan + decode + RGB + resize/crop + normalized 64-frame clips for
#                  every 0.5 s bin, i.e. frames ready for V-JEPA2
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-3}
THREADS=${THREADS:-2}
SECS=${SECONDS_1080P:-20}
FPS=${FPS_1080P:-30}
export RAYON_NUM_THREADS=$THREADS
TARGET=${CARGO_TARGET_DIR:-target}
WORK=$TARGET/bench-video-prep
mkdir -p "$WORK"

if [ -n "${2:-}" ]; then
    BIN=$2
else
    cargo bench --bench video_prep --no-run 2>&1 | tail -1
    BIN=$(ls -t "$TARGET"/release/deps/video_prep-* | grep -v '\.d$' | head -1)
fi

CLIP=$WORK/h264_1080p${FPS}_${SECS}s.mp4
[ -f "$CLIP" ] || ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=$FPS:duration=$SECS" \
    -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p "$CLIP"

echo "# machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# clip: 1920x1080 H.264 yuv420p, ${FPS} fps, ${SECS} s; threads: $THREADS; best of $REPS"

best() { # best NAME CMD...: runs CMD REPS times; best wall and CPU seconds, x realtime
    local name=$1; shift
    local bw= bc=
    for _ in $(seq "$REPS"); do
        /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "$@" > "$WORK/$name.txt"
        read -r w u s < "$WORK/time.txt"
        local c; c=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
        if [ -z "$bw" ] || awk -v a="$w" -v b="$bw" 'BEGIN{exit !(a<b)}'; then bw=$w; fi
        if [ -z "$bc" ] || awk -v a="$c" -v b="$bc" 'BEGIN{exit !(a<b)}'; then bc=$c; fi
    done
    awk -v n="$name" -v w="$bw" -v c="$bc" -v d="$SECS" -v f="$FPS" -v t="$THREADS" \
        'BEGIN{printf "%s_wall_s=%.2f %s_cpu_s=%.2f %s_fps=%.1f %s_x_realtime=%.2f (if its CPU time were spread over %d free cores: %.1fx)\n", n, w, n, c, n, d*f/w, n, d/w, t, d*t/c}'
}

best ffmpeg_decode ffmpeg -v error -threads "$THREADS" -i "$CLIP" -f null -
best ours_decode "$BIN" decode "$CLIP"
best ours_prep "$BIN" prep "$CLIP"
grep -h 'frames_\|clips=' "$WORK/ours_prep.txt"
echo "## where the CPU time goes (conversion from decoder runs; resize and normalize: one frame 100 times)"
"$BIN" stages "$CLIP"
