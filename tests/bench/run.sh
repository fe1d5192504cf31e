#!/bin/bash
# Benchmark dohgate beside its peers (run by hand, never by CI): builds a release dohgate in
# build-bench/, then runs the lab harness (../shared/lab/bench/run-all.sh: h2load, servers pinned
# to CPU 1, one worker each, same NSD upstream) with dohgate as an EXTRA server.
#   tests/bench/run.sh [ROUNDS]                  default 1 round
# Environment (passed through to run-all.sh): PEERS (default "unbound dnsdist"), BENCH_TESTS
# (default "cached h2load miss"), DURATION, MISS_SECONDS, ..., LAB (lab folder, default
# ../shared/lab beside the checkout). Prints the lab's summary table (server µs per request is
# the figure to compare) and the dohgate/best-peer ratio per test.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB=${LAB:-$ROOT/../shared/lab}
[ -x "$LAB/bench/run-all.sh" ] || { echo "lab not found at $LAB (set LAB=...)" >&2; exit 2; }
"$ROOT/contrib/deps.sh" --bench
cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$ROOT/build-bench" -j"$(nproc)" --target dohgate >/dev/null
BIN=$ROOT/build-bench/dohgate
export PEERS=${PEERS-unbound dnsdist}
export BENCH_TESTS=${BENCH_TESTS-cached h2load miss}
export EXTRA="dohgate:exec $BIN --listen 127.0.0.1:\$PORT --cert \$LAB_CERTS/server.pem --key \$LAB_CERTS/server.key --upstream \$UPSTREAM --workers 1 --log-level warn --max-connections-per-client 0 --connection-rate-limit 0"
export OUT=${OUT:-/tmp/dohgate-lab/results/dohgate-$(date -u +%Y%m%dT%H%M%SZ)}
"$LAB/bench/run-all.sh" "${1:-1}"
echo
echo "== summary ($OUT/summary.md)"
cat "$OUT/summary.md"
echo
echo "== dohgate vs best peer, server CPU µs per request (lower is better; ratio < 1: dohgate cheaper)"
python3 - "$OUT/results.txt" <<'PY'
import sys, re, statistics, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    if not line.startswith("RESULT"):
        continue
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if kv.get("metric") in ("server_us_per_op",):
        try:
            vals[(kv["test"], kv["server"])].append(float(kv["value"]))
        except (KeyError, ValueError):
            pass
tests = sorted({t for t, _ in vals})
for t in tests:
    med = {s: statistics.median(v) for (tt, s), v in vals.items() if tt == t}
    if "dohgate" not in med:
        continue
    peers = {s: v for s, v in med.items() if s != "dohgate" and v > 0}
    if not peers:
        print(f"{t:10s} dohgate {med['dohgate']:.1f} µs (no peer figure)")
        continue
    best = min(peers, key=peers.get)
    print(f"{t:10s} dohgate {med['dohgate']:7.1f} µs   best peer {best} {peers[best]:7.1f} µs   ratio {med['dohgate']/peers[best]:.2f}   "
          + "  ".join(f"{s}={v:.1f}" for s, v in sorted(peers.items())))
PY
