#!/usr/bin/env bash
# Configures and builds libprune in build/ (Release, Ninja). Extra arguments go to cmake's
# configure step, e.g. -DCMAKE_PREFIX_PATH=... for another LibTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)"
