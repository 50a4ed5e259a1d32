#!/usr/bin/env bash
# Cross-builds the CUDA binaries for a GPU machine that has no Rust toolchain (e.g. a lent H100/H200
# with driver 580 = CUDA 13.0), from a build machine that has no GPU and no CUDA 13 toolkit.
#
# Why this shape:
# - candle-core's cudarc uses `cuda-version-from-build-system` + `dynamic-linking`: the CUDA version is
#   read from `nvcc --version` and the binary is linked against that toolkit's sonames. The device's
#   PyTorch (cu130) wheels ship libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13,
#   libcudart.so.13, so we build against the CUDA 13.0 pip wheels, not the system's CUDA 11.8.
# - candle-kernels compiles PTX that the device driver JIT-compiles; PTX from a toolkit newer than
#   the driver (580 = 13.0) is rejected, so nvcc must be 13.0, not the newest wheel.
# - The wheels carry no libcuda.so stub; we generate one from cuda.h (every driver entry point as an
#   empty function, soname libcuda.so.1). It is only used at link time; the real driver resolves them.
#
# Output: .gpu/ (git-ignored): stripped `tribe`, `brain_model` and `gpu_media` (benches), FFmpeg stubs.
# Usage: scripts/build-cuda.sh            (env: CUDA13=/work/cuda13  WHEELS=/work/cuda13-wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA13=${CUDA13:-/work/cuda13}
WHEELS=${WHEELS:-/work/cuda13-wheels}
PY=${PY:-/work/venv/bin/python}

if [ ! -x "$CUDA13/bin/nvcc" ]; then
  mkdir -p "$WHEELS/x" "$CUDA13"
  (cd "$WHEELS" && "$PY" -m pip download --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
      --python-version 3.11 \
      nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14 \
      nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)
  for w in "$WHEELS"/*.whl; do unzip -q -o "$w" -d "$WHEELS/x"; done
  S="$WHEELS/x/nvidia/cu13"
  cp -a "$S/bin" "$S/include" "$S/nvvm" "$CUDA13/"
  mkdir -p "$CUDA13/lib64/stubs"
  cp -a "$S"/lib/*.so* "$CUDA13/lib64/"
  ln -sfn lib64 "$CUDA13/lib"
  for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "$CUDA13/lib64/lib$l.so"; done
  ln -sf libcurand.so.10 "$CUDA13/lib64/libcurand.so"
  # Link-time stand-in for the driver library (see above).
  (cd "$CUDA13/lib64/stubs" &&
    echo '#include <cuda.h>' | gcc -E -I"$CUDA13/include" -x c - |
      grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | sed 's/\s*($//' | sort -u |
      awk '{print "void "$1"(void){}"}' > stub.c &&
    gcc -shared -fPIC -o libcuda.so -Wl,-soname,libcuda.so.1 stub.c && ln -sf libcuda.so libcuda.so.1)
fi

export PATH="$CUDA13/bin:$PATH" CUDA_ROOT="$CUDA13" CUDA_PATH="$CUDA13" CUDA_HOME="$CUDA13"
export CUDARC_CUDA_VERSION=13000
# H100 and H200 are both sm_90 (cudaforge turns 90 into sm_90a).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH="$CUDA13/lib64:$CUDA13/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
nvcc --version | tail -2

# `cargo build --release --bench` builds the bench with the release profile (`cargo bench` would
# use the bench profile and rebuild every dependency, candle-kernels' nvcc run included).
nice cargo build --release --features cuda --bin tribe --bin tribe-bids --bench brain_model --bench gpu_media

T=${CARGO_TARGET_DIR:-target}
rm -rf .gpu && mkdir -p .gpu/stubs
# tribe-bids is built (to prove the CUDA build of the app) but not carried: on the GPU image it
# could not decode media (no FFmpeg there, see below), and the device call's size is limited.
cp "$T/release/tribe" .gpu/
bench=$(ls -t "$T"/release/deps/brain_model-* | grep -v '\.d$' | head -1)
cp "$bench" .gpu/brain_model
media=$(ls -t "$T"/release/deps/gpu_media-* | grep -v '\.d$' | head -1)
cp "$media" .gpu/gpu_media
strip .gpu/tribe .gpu/brain_model .gpu/gpu_media

# FFmpeg link stubs. The binaries link Debian bookworm's FFmpeg 5.1 (libavcodec.so.59, ...), which
# the GPU image does not have (and its 200-odd dependencies are far over the 64 MiB a device
# call may carry). The brain model, `tribe encode` and the bench never call FFmpeg (it is
# initialised lazily by the media readers), so each FFmpeg library the binaries need is replaced
# by a stub with the same soname and symbol versions whose every function aborts with a message
# naming itself: media decoding cannot silently run on them.
objdump -T .gpu/tribe .gpu/brain_model .gpu/gpu_media |
  awk '/\*UND\*/ && $(NF-1) ~ /^\((LIBAV|LIBSW)/ { v = $(NF-1); gsub(/[()]/, "", v); print v, $NF }' |
  sort -u > .gpu/stubs/symbols.txt
for node in $(cut -d' ' -f1 .gpu/stubs/symbols.txt | sort -u); do
  # LIBAVCODEC_59 -> libavcodec.so.59
  lib=$(echo "$node" | sed -E 's/^(.*)_([0-9]+)$/\1/' | tr 'A-Z' 'a-z'); ver=${node##*_}
  so="$lib.so.$ver"
  {
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo 'static void stub(const char *f) { fprintf(stderr, "FFmpeg stub: %s was called, but this machine has only link stubs of FFmpeg (scripts/build-cuda.sh): media decoding is unavailable here\n", f); abort(); }'
    awk -v n="$node" '$1 == n { printf "void %s(void) { stub(\"%s\"); }\n", $2, $2 }' .gpu/stubs/symbols.txt
  } > ".gpu/stubs/$lib.c"
  {
    echo "$node { global:"
    awk -v n="$node" '$1 == n { printf "  %s;\n", $2 }' .gpu/stubs/symbols.txt
    echo "local: *; };"
  } > ".gpu/stubs/$lib.map"
  gcc -shared -fPIC -O1 -o ".gpu/stubs/$so" -Wl,-soname,"$so" -Wl,--version-script=".gpu/stubs/$lib.map" ".gpu/stubs/$lib.c"
  strip ".gpu/stubs/$so"
  rm ".gpu/stubs/$lib.c" ".gpu/stubs/$lib.map"
done
# Every NEEDED FFmpeg soname must have its stub (a library with no imported symbol left still
# needs a file to load).
for b in .gpu/tribe .gpu/brain_model .gpu/gpu_media; do
  for so in $(readelf -d "$b" | sed -n 's/.*NEEDED.*\[\(lib\(av\|sw\)[a-z]*\.so\.[0-9]*\)\]/\1/p'); do
    if [ ! -f ".gpu/stubs/$so" ]; then
      echo 'void tribe_ffmpeg_stub_unused(void) {}' > .gpu/stubs/empty.c
      gcc -shared -fPIC -o ".gpu/stubs/$so" -Wl,-soname,"$so" .gpu/stubs/empty.c && rm .gpu/stubs/empty.c
    fi
  done
done

find .gpu -type f | sort | while read -r f; do echo "$f: $(stat -c %s "$f") bytes"; done
for b in .gpu/tribe .gpu/brain_model .gpu/gpu_media; do
  echo "$b needs: $(readelf -d "$b" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
  # glibc symbol versions the device's glibc must provide
  echo "  newest GLIBC symbol: $(objdump -T "$b" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
done
# xz: the binaries are mostly PTX text and compress about 7x (a device call carries 64 MiB in all);
# gpu-check.sh unpacks them.
xz -T0 -9 -f .gpu/tribe .gpu/brain_model .gpu/gpu_media
find .gpu -type f | sort | while read -r f; do echo "$f: $(stat -c %s "$f") bytes"; done
du -sh .gpu
