#!/bin/bash
# Stress tests: floods and hostile clients on loopback, bounded in time and count, each printing
# its figures. Run by .ci/run (through contrib/test.sh) in the short mode, by hand in the long one:
#   tests/stress/run.sh [--short|--long] [s_NAME ...]     (DOHGATE=path, default build/dohgate)
# Exit status 1 if any test failed.
set -u
cd "$(dirname "$0")"
MODE=short
case "${1:-}" in --short) shift ;; --long) MODE=long; shift ;; esac
export STRESS_MODE=$MODE
ROOT=$(cd ../.. && pwd)
export DOHGATE=${DOHGATE:-$ROOT/build/dohgate} SRC_DIR=$ROOT
export TOOLS_DIR=${TOOLS_DIR:-$(dirname "$DOHGATE")/tests}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(s_*.sh)
failed=()
for t in "${tests[@]}"; do
    t=${t%.sh}.sh
    echo "=== $t ($MODE)"
    if ! timeout 900 bash "$t"; then failed+=("$t"); fi
done
echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "stress: FAILED: ${failed[*]}"
    exit 1
fi
echo "stress: all passed (${#tests[@]}, $MODE)"
