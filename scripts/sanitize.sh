#!/usr/bin/env bash
# The C++ test suite under AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer), built
# in build-asan/ (the library, the tests; no bindings or examples). Every ctest entry but the
# install-tree consumer and the size lint runs; any report fails the run. LibTorch itself is not
# instrumented: leaks it keeps on purpose (registries filled at load) are suppressed by library in
# tests/sanitizers/lsan.supp, nothing of libprune's.
#
#   bash scripts/sanitize.sh            # configure, build, run (first build ~15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DLIBPRUNE_BUILD_PYTHON=OFF -DLIBPRUNE_BUILD_EXAMPLES=OFF > /dev/null
cmake --build build-asan -j "$(nproc)" --target libprune_tests
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_odr_violation=0"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-asan
ctest -j "$(nproc)" -E "consumer|lint" --output-on-failure
