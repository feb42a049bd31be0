#!/usr/bin/env bash
# Configures and builds libprune in build/ (Release, Ninja). Extra arguments go to cmake's
# configure step, e.g. -DCMAKE_PREFIX_PATH=... for another LibTorch. LIBPRUNE_TARGETS (space
# separated) builds only those targets, e.g. LIBPRUNE_TARGETS=libprune-run for the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
targets=()
for t in ${LIBPRUNE_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build build -j "$(nproc)" "${targets[@]}"
