#!/usr/bin/env bash
# README command (2): install what is missing, build, then run every test (ctest, then pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
bash scripts/build.sh
built=$(date +%s)
echo "== build took $((built - start)) s"
(cd build && ctest -j "$(nproc)" --output-on-failure)
# The bindings are built for Debian's /usr/bin/python3, which owns python3-torch.
PYTHONPATH="$PWD/build/python" /usr/bin/python3 -m pytest -q tests/python
echo "== tests took $(($(date +%s) - built)) s"
