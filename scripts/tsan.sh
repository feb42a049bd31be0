#!/usr/bin/env bash
# The threaded parts of libprune under ThreadSanitizer: the data loader's prefetch thread, the
# ImageFolder decode pool, and the Trainer that drives them (ctest entries cpp.data,
# cpp.imagefolder, cpp.train), built with clang in build-tsan/. LibTorch and the image codecs are
# not instrumented: tests/sanitizers/tsan.supp says what of theirs is ignored, and why.
#
#   bash scripts/tsan.sh        # first build ~15 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang++ > /dev/null || { echo "tsan.sh needs clang and its runtime. Fix: bash scripts/setup.sh --sanitizers" >&2; exit 2; }
flags="-fsanitize=thread -fno-omit-frame-pointer -g"
CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DLIBPRUNE_BUILD_PYTHON=OFF -DLIBPRUNE_BUILD_EXAMPLES=OFF > /dev/null
cmake --build build-tsan -j "$(nproc)" --target libprune_tests
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0:suppressions=$PWD/tests/sanitizers/tsan.supp"
cd build-tsan
# Without address randomisation: clang 14's TSan fails to map its shadow under high mmap entropy.
setarch "$(uname -m)" -R ctest -R "^(images.generate|cpp\.(data|imagefolder|train))$" --output-on-failure
