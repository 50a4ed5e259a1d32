#!/usr/bin/env bash
# Frame preparation for the video extractor vs the ffmpeg CLI, on a 1080p H.264 clip made here.
#
# usage: bench/video_prep.sh [REPS=3] [BIN]
# env:   THREADS (default 2), SECONDS_1080P (default 20), FPS_1080P (default 30).
# BIN:   a prebuilt benches/video_prep binary (e.g. an older build, for before/after figures);
#        by default the bench is built here.
# Each measurement runs REPS times, alternating with the others, and the best and median wall
# times are reported: on a machine shared with other work the best run is the one least
# disturbed. x realtime = clip seconds / wall seconds.
# CPU seconds (user + system, all threads) are steadier under load; clip seconds x THREADS /
# CPU seconds is the x realtime the same work would reach on THREADS otherwise idle cores if
# it kept them all busy.
#   ffmpeg_decode: `ffmpeg -threads THREADS -i clip -f null -` (decode only, frames discarded)
#   ours_decode:   our decoder alone (every frame out of libavcodec, nothing converted)
#   ours_prep:     probe + plan + decode + RGB + resize/crop + normalized 64-frame clips for
#                  every 0.5 s bin, i.e. frames ready for V-JEPA2 (decoding chosen per video:
#                  single-threaded decoders on stretches between IDR pictures where that is
#                  predicted faster, else frame threads)
#   ours_prep_ft:  the same, forced to one decoder with frame threads (TRIBE_VIDEO_DECODE)
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
echo "# clip: 1920x1080 H.264 yuv420p, ${FPS} fps, ${SECS} s; threads: $THREADS; $REPS alternating rounds"

# The three measurements alternate, round by round (ffmpeg, ours_decode, ours_prep, ffmpeg, ...),
# so that a slow phase of a shared machine hits all three alike; single runs here move 10-30 %.
# Per measurement: best and median wall time, and least CPU time, over the REPS rounds; then the
# median over rounds of ours_prep's speed relative to the ffmpeg CLI in the same round.
NAMES=(ffmpeg_decode ours_decode ours_prep ours_prep_ft)
run_one() { # run_one NAME: one timed run, appends "wall cpu" to $WORK/NAME.times
    local name=$1 cmd
    case $name in
        ffmpeg_decode) cmd=(ffmpeg -v error -threads "$THREADS" -i "$CLIP" -f null -) ;;
        ours_decode) cmd=("$BIN" decode "$CLIP") ;;
        ours_prep) cmd=(env TRIBE_VIDEO_DECODE=auto "$BIN" prep "$CLIP") ;;
        ours_prep_ft) cmd=(env TRIBE_VIDEO_DECODE=frame-threads "$BIN" prep "$CLIP") ;;
    esac
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.txt" "${cmd[@]}" > "$WORK/$name.txt"
    read -r w u s < "$WORK/time.txt"
    awk -v w="$w" -v u="$u" -v s="$s" 'BEGIN{printf "%s %.2f\n", w, u+s}' >> "$WORK/$name.times"
}
for name in "${NAMES[@]}"; do : > "$WORK/$name.times"; done
for _ in $(seq "$REPS"); do
    for name in "${NAMES[@]}"; do run_one "$name"; done
done
median() { # the median of the numbers on stdin, one per line
    sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
for name in "${NAMES[@]}"; do
    med=$(cut -d' ' -f1 "$WORK/$name.times" | median)
    sort -n "$WORK/$name.times" | awk -v n="$name" -v d="$SECS" -v f="$FPS" -v t="$THREADS" -v med="$med" '
        { if (NR == 1) bw = $1; if (NR == 1 || $2 < bc) bc = $2 }
        END { printf "%s_wall_s=%.2f %s_cpu_s=%.2f %s_fps=%.1f %s_x_realtime=%.2f median=%.2fx (if its CPU time were spread over %d free cores: %.1fx)\n",
                     n, bw, n, bc, n, d * f / bw, n, d / bw, d / med, t, d * t / bc }'
done
for name in ours_prep ours_prep_ft; do
    ratios=$(paste "$WORK/ffmpeg_decode.times" "$WORK/$name.times" | awk '{ print $1 / $3 }')
    echo "${name}_vs_ffmpeg_decode: median $(echo "$ratios" | median | awk '{ printf "%.3f", $1 }')x over $REPS rounds (ours faster in $(echo "$ratios" | awk '$1 > 1' | wc -l))"
done
ratios=$(paste "$WORK/ours_prep_ft.times" "$WORK/ours_prep.times" | awk '{ print $1 / $3 }')
echo "ours_prep_vs_ours_prep_ft: median $(echo "$ratios" | median | awk '{ printf "%.3f", $1 }')x over $REPS rounds (faster in $(echo "$ratios" | awk '$1 > 1' | wc -l))"
grep -h 'frames_\|clips=' "$WORK/ours_prep.txt" "$WORK/ours_prep_ft.txt"
echo "## where the CPU time goes (conversion from decoder runs; resize and normalize: one frame 100 times)"
"$BIN" stages "$CLIP"
