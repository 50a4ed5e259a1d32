#!/usr/bin/env bash
# The test command (README.md, and what CI runs): the independent Python oracles, then every
# Rust test. Offline once the oracle venv exists.
#
# The suite runs on the built-in matrix library (TRIBE_BLAS=builtin), so that it tests the
# path every machine has. Where Intel MKL is installed, the model golden tests then run a
# second time on MKL (TRIBE_BLAS=mkl), with the MKL backend's own tests (tests/blas_mkl.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
export TRIBE_TEST_PYTHON="$PWD/${TRIBE_TEST_VENV:-.venv-test}/bin/python"
status=0
TRIBE_BLAS=builtin cargo test --no-fail-fast "$@" || status=$?
# grep reads the whole list (no -q): with pipefail, `grep -q` quitting at the first match could
# kill ldconfig with SIGPIPE and make the test false, silently skipping the MKL pass.
if [ $# -eq 0 ] && /sbin/ldconfig -p 2>/dev/null | grep 'libmkl_rt\.so' > /dev/null; then
  echo "== the model golden tests again, on Intel MKL (TRIBE_BLAS=mkl)"
  TRIBE_BLAS=mkl TRIBE_TEST_REQUIRE_MKL=1 cargo test --no-fail-fast \
    --test blas_mkl --test text_decoder --test text_features --test video_model \
    --test video_features --test audio_parity --test model_parity || status=$?
elif [ $# -eq 0 ]; then
  echo "== Intel MKL is not installed (libmkl_rt.so): its tests did not run; the built-in GEMM was tested"
fi
exit $status
