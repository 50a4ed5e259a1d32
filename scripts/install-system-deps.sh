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
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev \
  ffmpeg gifti-bin nifti-bin connectome-workbench chromium \
  python3 python3-venv ca-certificates >/dev/null
echo "system packages ready"
