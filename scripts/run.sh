#!/usr/bin/env bash
# README command (1): install what is missing, build, then run the main job on the embedded
# default (Fashion-MNIST from Debian's dataset-fashion-mnist). Arguments go to the program.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
exec ./build/libprune-demo "$@"
