#!/bin/bash
# One command from a fresh Debian 12 checkout to every test passed: installs the dependencies,
# then
#   1. builds with -Werror (build-test/) and runs the whole ctest suite (unit, integration with
#      NSD, the stub upstream and real clients, the include-graph and README checks), then the
#      stress tests in their short mode (tests/stress), then the Debian package test
#      (tests/package/t_deb.sh: builds the .deb, lintian, installs, upgrades and purges it),
#   2. builds with ASan+UBSan (build-test-asan/) and runs the whole suite again,
#   3. runs the integration suite with dohgate under valgrind memcheck (DG_VALGRIND=1),
#   4. builds the libFuzzer targets with clang (build-test-fuzz/) and runs each for FUZZ_SECONDS
#      (default 30).
#   contrib/test.sh [--quick]     as root, or with sudo; --quick: step 1 only
#
# It cannot pass by accident: its build directories are its own (contrib/run.sh's build/ never
# leaks in) and configured with every option stated; a run that finds fewer tests than the tree
# has, no test at all, a skipped test, or a fuzzer that did not run fails. The one skip accepted is
# integration.t_privs when the script does not run as root (it binds a port below 1024 and
# switches users), and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
contrib/deps.sh --test
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n===== %s =====\n' "$*"; }
die() { printf '\ntest.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# Tests a skip is accepted for on this machine, with the reason (printed when it happens).
ALLOWED_SKIPS=()
if [ "$(id -u)" -ne 0 ]; then
    ALLOWED_SKIPS+=("integration.t_privs")
    echo "note: not root, so integration.t_privs (port below 1024, user switch) will be skipped;" \
         "run as root or with sudo to run it"
fi

n_files() { find "$1" -maxdepth 1 -name "$2" | wc -l; }
N_UNIT=$(n_files tests/unit 'test_*.c')
N_INTEG=$(n_files tests/integration 't_*.sh')
N_FUZZ=$(n_files tests/fuzz 'fuzz_*.c')

# configure DIR [cmake options]: every option that matters stated, whatever the cache holds
configure() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DENABLE_WERROR=ON -DBUILD_TESTING=ON "$@" >/dev/null
    cmake --build "$dir" -j"$JOBS"
}

# run_ctest DIR EXPECTED_INTEGRATION [ctest args]: runs ctest, then fails on a failure, on a
# skipped ctest test or cmocka test case, on no test, and when a unit or integration test of the
# tree is missing from the run (EXPECTED_INTEGRATION: how many integration tests must run).
run_ctest() {
    local dir=$1 want_integ=$2
    shift 2
    local out=$dir/ctest.out rc=0
    local want_unit=$N_UNIT
    case " $* " in *" -R integration "*) want_unit=0 ;; esac
    local have_unit have_integ
    have_unit=$(ctest --test-dir "$dir" -N "$@" | grep -c ' unit\.test_' || true)
    have_integ=$(ctest --test-dir "$dir" -N "$@" | grep -c ' integration\.t_' || true)
    [ "$have_unit" -eq "$want_unit" ] ||
        die "$dir: ctest lists $have_unit unit tests, the tree has $want_unit (BUILD_TESTING off?)"
    [ "$have_integ" -eq "$want_integ" ] ||
        die "$dir: ctest lists $have_integ integration tests, the tree has $want_integ"
    ctest --test-dir "$dir" --no-tests=error --output-on-failure -j"$JOBS" "$@" 2>&1 | tee "$out" ||
        rc=$?
    [ "$rc" -eq 0 ] || die "ctest in $dir: a test failed (see above)"
    local skipped allowed s bad=()
    skipped=$(sed -n 's/^[[:space:]]*[0-9]* - \([^ ]*\) (\(Skipped\|Not Run\|Disabled\))$/\1/p' "$out")
    for s in $skipped; do
        allowed=0
        for a in "${ALLOWED_SKIPS[@]+"${ALLOWED_SKIPS[@]}"}"; do [ "$s" = "$a" ] && allowed=1; done
        if [ $allowed -eq 1 ]; then echo "note: $s skipped (not root, see above)"; else bad+=("$s"); fi
    done
    [ ${#bad[@]} -eq 0 ] || die "skipped tests count as failures: ${bad[*]}"
    # cmocka prints skipped cases only in the test's own output, which ctest keeps in LastTest.log
    if grep -E '^\[  SKIPPED \]' "$dir/Testing/Temporary/LastTest.log"; then
        die "cmocka test cases were skipped (listed above)"
    fi
    grep -Eq '^100% tests passed, 0 tests failed out of [1-9]' "$out" || die "ctest in $dir: no passing summary"
}

step "build (-Werror) and test"
configure build-test -DENABLE_ASAN=OFF -DENABLE_FUZZING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDG_INTEG_TIMEOUT=300
run_ctest build-test "$N_INTEG"

[ $quick -eq 1 ] && { echo "quick: step 1 passed"; exit 0; }

step "stress tests (short)"
DOHGATE=$PWD/build-test/dohgate TOOLS_DIR=$PWD/build-test/tests tests/stress/run.sh --short

step "Debian package: build, lintian, install, upgrade, remove, purge"
# It installs the package on this machine (and purges it again): root, not ctest's parallel run.
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
"${SUDO[@]}" env SRC_DIR="$PWD" TOOLS_DIR="$PWD/build-test/tests" bash tests/package/t_deb.sh ||
    die "the package test failed (see above)"

step "ASan+UBSan build and test"
configure build-test-asan -DENABLE_ASAN=ON -DENABLE_FUZZING=OFF -DCMAKE_BUILD_TYPE=Debug
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-test-asan "$N_INTEG"

step "integration suite under valgrind memcheck"
# The plain build's binary; valgrind is ~20x slower, so the start/stop budgets grow, and so
# does each test's time limit (a TIMEOUT property, which ctest's --timeout does not override:
# t_upstream_tls takes ~200 s without valgrind and went past the 300 s limit with it). Errors
# or definite leaks make dohgate exit 99 and show in the test's output.
cmake -S . -B build-test -DDG_INTEG_TIMEOUT=900 >/dev/null
DG_VALGRIND=1 DG_START_TIMEOUT=60 DG_STOP_TIMEOUT=60 \
    run_ctest build-test "$N_INTEG" -R integration

step "fuzzers, ${FUZZ_SECONDS}s each"
CC=clang configure build-test-fuzz -DENABLE_FUZZING=ON -DENABLE_ASAN=OFF -DCMAKE_BUILD_TYPE=Debug
fpass=0
ffail=0
artifacts=$PWD/build-test-fuzz/artifacts
mkdir -p "$artifacts"
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    target=${name#fuzz_}
    f=build-test-fuzz/tests/fuzz/$name
    if [ ! -x "$f" ]; then
        echo "fuzz $name: FAILED (not built: $f)"
        ffail=$((ffail + 1))
        continue
    fi
    corpus=tests/fuzz/corpus/$target
    work=$(mktemp -d)
    [ -d "$corpus" ] && cp -r "$corpus/." "$work/"
    log=build-test-fuzz/$name.log
    runs=0
    if "$f" -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$name-" "$work" >"$log" 2>&1; then
        runs=$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    fi
    if [ "${runs:-0}" -gt 0 ]; then
        echo "fuzz $name: ok ($runs runs)"
        fpass=$((fpass + 1))
    else
        echo "fuzz $name: FAILED (crashed, or ran no input)"
        tail -n 40 "$log"
        ffail=$((ffail + 1))
    fi
    rm -rf "$work"
done
echo "fuzz: $fpass passed, $ffail failed"
[ $ffail -eq 0 ] || die "$ffail fuzzer(s) failed"
[ $fpass -eq "$N_FUZZ" ] || die "$fpass fuzzers ran, tests/fuzz has $N_FUZZ"
echo "all steps passed"
