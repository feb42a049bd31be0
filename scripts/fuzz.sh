#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz) for N seconds, two at a time, under ASan + UBSan, built
# with clang in build-fuzz/. Each starts from its kept corpus in tests/fuzz/corpus/<target>; inputs
# that reach new code are merged back into it, minimised (commit them), and a crash leaves its input in
# build-fuzz/artifacts/<target>/ (copy it into the corpus once fixed: ctest replays every input).
#
#   bash scripts/fuzz.sh                 # 600 s per target (first build ~20 min on 2 cores)
#   bash scripts/fuzz.sh 60 plan idx     # 60 s, two targets
#   FUZZ_JOBS=3 bash scripts/fuzz.sh ...  # how many run at once (default 2)
# Prints a table: executions, inputs added, corpus size, peak memory, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(recipe plan checkpoint state_dict idx cifar)
command -v clang++ > /dev/null || { echo "fuzz.sh needs clang and libFuzzer. Fix: bash scripts/setup.sh --sanitizers" >&2; exit 2; }

flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DLIBPRUNE_BUILD_PYTHON=OFF -DLIBPRUNE_BUILD_EXAMPLES=OFF -DLIBPRUNE_BUILD_FUZZERS=ON > /dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_odr_violation=0"
export LSAN_OPTIONS="suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
mkdir -p build-fuzz/logs

run_one() {
  local t=$1 seconds=$2 new=build-fuzz/new/$1
  # This run's crashes only (earlier ones were moved aside, or copied into the corpus once fixed).
  rm -rf "$new" "build-fuzz/artifacts/$t.old" && mkdir -p "$new" "build-fuzz/artifacts/$t"
  mv "build-fuzz/artifacts/$t" "build-fuzz/artifacts/$t.old" && mkdir -p "build-fuzz/artifacts/$t"
  # -rss_limit_mb: a decompression bomb or a huge header must fail cleanly, not eat the machine.
  build-fuzz/tests/fuzz/fuzz_"$t" "$new" "tests/fuzz/corpus/$t" -max_total_time="$seconds" -timeout=30 \
    -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t/" \
    > "build-fuzz/logs/$t.log" 2>&1 || true
  # Keep a minimal corpus with the same coverage, plus every seed and past crash (regressions).
  local min=build-fuzz/min/$t
  rm -rf "$min" && mkdir -p "$min"
  # The same limits as the run, and the corpus replaced only by a merge that finished.
  if build-fuzz/tests/fuzz/fuzz_"$t" -merge=1 -timeout=30 -rss_limit_mb=3072 "$min" "tests/fuzz/corpus/$t" "$new" \
      > "build-fuzz/logs/$t.merge.log" 2>&1 && [ -n "$(ls -A "$min")" ]; then
    find "tests/fuzz/corpus/$t" -type f ! -name 'crash-*' ! -name 'seed-*' -delete
    cp -n "$min"/* "tests/fuzz/corpus/$t/"
  fi
  return 0
}
export -f run_one
printf '%s\n' "${targets[@]}" | xargs -P "${FUZZ_JOBS:-2}" -I{} bash -c "run_one {} $seconds"

echo "| target | seconds | executions | exec/s | minimised corpus | kept inputs (with seeds, past crashes) | peak RSS MB | crashes |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  stat() { grep -m1 "stat::$1" "$log" | awk '{print $2}' || true; }
  added=$(grep -o 'MERGE-OUTER: [0-9]* new files' "build-fuzz/logs/$t.merge.log" | awk '{print $2}' || true)
  crashes=$(find "build-fuzz/artifacts/$t" -type f | wc -l)
  echo "| $t | $seconds | $(stat number_of_executed_units) | $(stat average_exec_per_sec) | ${added:-0} |" \
       "$(find "tests/fuzz/corpus/$t" -type f | wc -l) | $(stat peak_rss_mb) | $crashes |"
done
