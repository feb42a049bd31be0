#!/usr/bin/env bash
# The C++ test suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, built in
# build-asan/ (the library, the tests and the fuzz corpora's replay; no bindings or examples). Every
# ctest entry but the install-tree consumer and the size lint runs; any report fails the run. No
# suppressions. One exception, for leaks only: replaying the checkpoint corpus, whose crafted
# archives make LibTorch's module importer throw mid-import and leak its zip reader (LibTorch's
# error path, reachable only by a file whose CRCs were forged; docs/benchmarks.md).
#
#   bash scripts/sanitize.sh            # configure, build, run (first build ~15 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DLIBPRUNE_BUILD_PYTHON=OFF -DLIBPRUNE_BUILD_EXAMPLES=OFF > /dev/null
cmake --build build-asan -j "$(nproc)" --target libprune_tests libprune_fuzz_replay
asan="abort_on_error=0:halt_on_error=1:detect_odr_violation=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd build-asan
ASAN_OPTIONS="detect_leaks=1:$asan" ctest -j "$(nproc)" -E "consumer|lint|fuzz.checkpoint" --output-on-failure
ASAN_OPTIONS="detect_leaks=0:$asan" ctest -R "fuzz.checkpoint" --output-on-failure
