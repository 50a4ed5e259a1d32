#!/usr/bin/env bash
# Creates .venv-test: the independent oracles the tests compare against (nibabel, nilearn,
# scikit-learn, pybids, bids-validator). Idempotent and offline once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TRIBE_TEST_VENV:-.venv-test}
if ! "$venv/bin/python" -c 'import nibabel, nilearn, sklearn, bids, safetensors' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    numpy scipy nibabel==5.4.2 nilearn scikit-learn pandas safetensors pybids==0.22.0 bids-validator-deno==3.0.2
fi
echo "$venv ready"
