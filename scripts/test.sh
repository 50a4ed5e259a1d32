#!/usr/bin/env bash
# The test command (README.md, and what CI runs): the independent Python oracles, then every
# Rust test. Offline once the oracle venv exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
export TRIBE_TEST_PYTHON="$PWD/${TRIBE_TEST_VENV:-.venv-test}/bin/python"
cargo test --no-fail-fast "$@"
