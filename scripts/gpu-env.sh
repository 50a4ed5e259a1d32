# Sourced by scripts/gpu-check-*.sh: the set-up every check needs on a lent GPU machine that has
# no Rust, with the binaries of scripts/build-cuda.sh in $BIN (default .gpu).
#
# gpu_unpack NAME: NAME from $BIN/NAME.xz into $WORK (binaries travel xz-compressed to fit a
#   device call's 64 MiB); prints the executable's path.
# gpu_library_path: exports LD_LIBRARY_PATH with the CUDA 13 libraries of the image's PyTorch
#   wheels (nvidia/*/lib), the FFmpeg link stubs in $BIN/stubs and the driver's folder.
# Sets, unless already set: OUT (results, default a new temporary folder), PY (a Python whose
# `nvidia` package holds the CUDA wheels, default python3) and BIN (default .gpu); and WORK, a
# scratch folder removed on exit. Source it from the repository root.

OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python3}
BIN=${BIN:-.gpu}
WORK=$(mktemp -d)
mkdir -p "$OUT"
trap 'rm -rf "$WORK"' EXIT

gpu_unpack() {
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$BIN/$1.xz" "$WORK/$1"
  chmod +x "$WORK/$1"
  echo "$WORK/$1"
}

gpu_library_path() {
  local libs
  libs=$("$PY" -c 'import glob, os, nvidia; print(":".join(d for r in nvidia.__path__ for d in sorted(glob.glob(os.path.join(r, "*", "lib"))) if glob.glob(os.path.join(d, "lib*.so*"))))')
  export LD_LIBRARY_PATH="$libs:$PWD/$BIN/stubs:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}
