#!/usr/bin/env bash
# System packages tribe-bids needs to build and test (Debian/Ubuntu): FFmpeg development
# libraries and clang for ffmpeg-next's bindgen, the ffmpeg CLI (tests build media files with
# it), the independent format checkers the tests run (gifti_tool, nifti_tool, wb_command), and
# headless Chromium (tests/report_app.rs renders the HTML report in it).
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  pkg-config clang libclang-dev \
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev \
  ffmpeg gifti-bin nifti-bin connectome-workbench chromium \
  python3 python3-venv ca-certificates >/dev/null
# Intel MKL, optional (Debian non-free, Ubuntu multiverse): the feature extractors' large
# matrix products use it when it is installed (src/features/blas.rs), and scripts/test.sh then
# runs the model golden tests on it too.
$SUDO apt-get install -y -qq --no-install-recommends libmkl-rt >/dev/null ||
  echo "libmkl-rt is not available from apt here (enable non-free or multiverse); the built-in GEMM is used"
echo "system packages ready"
