#!/bin/bash
# One command from a fresh Debian 12 checkout to every test passed: installs the dependencies,
# then
#   1. builds with -Werror and runs the whole ctest suite (unit + integration with NSD, the stub
#      upstream and real clients), then the stress tests in their short mode (tests/stress),
#   2. builds with ASan+UBSan and runs the whole suite again,
#   3. runs the integration suite with dohgate under valgrind memcheck (DG_VALGRIND=1),
#   4. builds the libFuzzer targets with clang and runs each for FUZZ_SECONDS (default 30).
#   sudo contrib/test.sh [--quick]     --quick: step 1 only
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/deps.sh --test
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n===== %s =====\n' "$*"; }

step "build (-Werror) and test"
cmake -S . -B build -DENABLE_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS"

[ $quick -eq 1 ] && exit 0

step "stress tests (short)"
DOHGATE=$PWD/build/dohgate tests/stress/run.sh --short

step "ASan+UBSan build and test"
cmake -S . -B build-asan -DENABLE_WERROR=ON -DENABLE_ASAN=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS"

step "integration suite under valgrind memcheck"
# The plain build's binary; valgrind is ~20x slower, so the start/stop budgets grow. Errors or
# definite leaks make dohgate exit 99 and show in the test's output.
DG_VALGRIND=1 DG_START_TIMEOUT=60 DG_STOP_TIMEOUT=60 \
  ctest --test-dir build --output-on-failure -j"$JOBS" -R integration --timeout 900

step "fuzzers, ${FUZZ_SECONDS}s each"
CC=clang cmake -S . -B build-fuzz -DENABLE_FUZZING=ON -DENABLE_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$JOBS"
fpass=0; ffail=0
for f in build-fuzz/tests/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  name=$(basename "$f"); target=${name#fuzz_}
  corpus=tests/fuzz/corpus/$target
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus/." "$work/"
  if "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 "$work" \
       > "build-fuzz/$name.log" 2>&1; then
    echo "fuzz $name: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "build-fuzz/$name.log" | grep -o '[0-9]*$') runs)"
    fpass=$((fpass + 1))
  else
    echo "fuzz $name: FAILED"; tail -n 40 "build-fuzz/$name.log"; ffail=$((ffail + 1))
  fi
  rm -rf "$work"
done
echo "fuzz: $fpass passed, $ffail failed"
[ $ffail -eq 0 ]
