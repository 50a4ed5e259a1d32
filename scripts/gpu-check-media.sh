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
. scripts/gpu-env.sh
media=$(gpu_unpack gpu_media)
gpu_library_path
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
rc=0
"$media" cuda 2>&1 | tee "$OUT/media-cuda.log"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
"$media" cpu 2>&1 | tee "$OUT/media-cpu.log"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
echo "overall: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
