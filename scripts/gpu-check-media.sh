#!/usr/bin/env bash
# The video (V-JEPA2) and audio (Wav2Vec-BERT 2.0) encoders on CUDA, on a lent GPU machine
# without Rust, with the binaries of scripts/build-cuda.sh in .gpu/ (see scripts/gpu-check.sh
# for the setup). Runs benches/gpu_media.rs: every hidden state of the tiny fixture models from
# the golden model inputs (pixels, filterbank features), f32 within the CPU tests' bound
# (1e-4 x max|expected|) and V-JEPA2 in bf16 within 3e-2 x max|expected|; then seconds per
# full-width ViT-g layer (8,192 tokens) in f32 and bf16. The same parity checks run on that
# machine's CPU. Writes media-cuda.log, media-cpu.log to $OUT.
#
# No media is decoded: the GPU image has no FFmpeg (the binaries carry link stubs), and the
# decoders and processors are tested on CPU by the test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python3}
BIN=${BIN:-.gpu}
WORK=$(mktemp -d)
mkdir -p "$OUT"
trap 'rm -rf "$WORK"' EXIT
"$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BIN/gpu_media.xz" "$WORK/gpu_media"
chmod +x "$WORK/gpu_media"
libs=$("$PY" -c 'import glob, os, nvidia; print(":".join(d for r in nvidia.__path__ for d in sorted(glob.glob(os.path.join(r, "*", "lib"))) if glob.glob(os.path.join(d, "lib*.so*"))))')
export LD_LIBRARY_PATH="$libs:$PWD/$BIN/stubs:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
"$WORK/gpu_media" cuda 2>&1 | tee "$OUT/media-cuda.log"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
"$WORK/gpu_media" cpu 2>&1 | tee "$OUT/media-cpu.log"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
echo "overall: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
