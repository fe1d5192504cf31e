#!/bin/bash
# Benchmark dohgate beside its peers (run by hand, never by CI): builds a release dohgate in
# build-bench/, then runs the lab harness (../shared/lab/bench/run-all.sh: h2load, servers pinned
# to CPU 1, one worker each, same NSD upstream) with dohgate as an EXTRA server, and prints
# tests/bench/table.py's comparison (also saved as OUT/table.md).
#   tests/bench/run.sh [ROUNDS]                  default 1 round: ~9 min (4 peers + dohgate), 2: ~17 min
# Environment:
#   PEERS        default "unbound dnsdist kresd bind" (all four); "" for dohgate alone
#   BENCH_TESTS  default "cached h2load miss idle handshake latency" (all six); "" also runs the
#                lab's physical.sh (openssl speed reference)
#   DOHGATE_BIN  use this dohgate binary instead of building build-bench/dohgate
#   DOHGATE_ARGS extra dohgate flags, appended to the command line below (parsed by sh)
#   LAB          lab folder (default ../shared/lab beside the checkout); OUT results folder
#   DURATION, MISS_SECONDS, ... and everything else run-all.sh / doh-bench.sh read is passed through.
# Server µs per request is the figure to compare (see the lab's bench/README.md).
# Related: tests/bench/table.py results.txt... (the tables, by hand, pooling several runs);
# tests/bench/churn.sh BIN (RSS after 10,000 connections came and went, scaling with --workers 2).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB=${LAB:-$ROOT/../shared/lab}
[ -x "$LAB/bench/run-all.sh" ] || { echo "lab not found at $LAB (set LAB=...)" >&2; exit 2; }
"$ROOT/contrib/deps.sh" --bench
if [ -n "${DOHGATE_BIN:-}" ]; then
  BIN=$(command -v -- "$DOHGATE_BIN") || { echo "DOHGATE_BIN=$DOHGATE_BIN: not an executable" >&2; exit 2; }
  # run-all.sh starts the server in its own folder: a relative path would not resolve there
  [[ $BIN == /* ]] || BIN=$PWD/$BIN
else
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j"$(nproc)" --target dohgate >/dev/null
  BIN=$ROOT/build-bench/dohgate
fi
export PEERS=${PEERS-unbound dnsdist kresd bind}
export BENCH_TESTS=${BENCH_TESTS-cached h2load miss idle handshake latency}
# EXTRA is run by `sh -c`: the binary path is quoted for it, DOHGATE_ARGS is left to its word splitting
QBIN=$(printf '%q' "$BIN")
export EXTRA="dohgate:exec $QBIN --listen 127.0.0.1:\$PORT --cert \$LAB_CERTS/server.pem --key \$LAB_CERTS/server.key --upstream \$UPSTREAM --workers 1 --log-level warn --max-connections-per-client 0 --connection-rate-limit 0${DOHGATE_ARGS:+ $DOHGATE_ARGS}"
export OUT=${OUT:-/tmp/dohgate-lab/results/dohgate-$(date -u +%Y%m%dT%H%M%SZ)}
"$LAB/bench/run-all.sh" "${1:-1}"
echo
echo "== summary ($OUT/summary.md)"
cat "$OUT/summary.md"
echo
echo "== dohgate vs peers, medians, lower is better ($OUT/table.md)"
python3 "$ROOT/tests/bench/table.py" "$OUT/results.txt" | tee "$OUT/table.md"
