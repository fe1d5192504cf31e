#!/bin/bash
# Issue 18's rolling-restart figure, by hand: tests/integration/t_fleet.sh's scenarios (HAProxy
# with contrib/haproxy.cfg in front of two dohgate instances, NSD upstream; h2load -D 6 -c 8
# -m 10 through HAProxy; at 2 s SIGTERM to one instance, then, in a second run, SIGKILL; and a
# socket-activation restart on one machine) run ROUNDS times for each binary given, and the
# figures those runs print gathered into one table per scenario (a binary from before the
# two-step GOAWAY fails some of t_fleet's assertions: that is the point, the figures still come).
#
#   tests/bench/fleet.sh [ROUNDS] BIN [BIN...]     e.g. fleet.sh 3 /tmp/main/build/dohgate build-rel/dohgate
#
# No lab needed (t_fleet starts NSD, HAProxy and the instances on loopback ports itself); about
# 40 s per round and binary. PROXY_V2=0 (default here): HAProxy without send-proxy-v2, so that a
# binary without the PROXY protocol can be measured too; the restart does not depend on it.
# Columns: h2load's summary (succeeded, failed); from its --log-file, the requests it sent that
# failed ("sent+failed": refused by a GOAWAY, reset, ...) and those it queued but never sent
# (its nghttp2 starts no stream after any GOAWAY, and h2load does not retry them elsewhere);
# for SIGKILL, started - done (in flight on the killed connections, plus those in flight on the
# others when the run ended); for socket activation, new connections made during the restart
# that did not get 200.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=3
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [ROUNDS] DOHGATE_BINARY..." >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/dohgate-fleet-bench.XXXXXX)}
mkdir -p "$OUT"
for bin in "$@"; do
    [ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }
    for r in $(seq 1 "$ROUNDS"); do
        log=$OUT/$(echo "$bin" | tr '/' '_')-$r.txt
        PROXY_V2=${PROXY_V2:-0} DOHGATE=$bin bash "$ROOT/tests/integration/t_fleet.sh" >"$log" 2>&1
        echo "$bin round $r: $(tail -1 "$log")" >&2
    done
done
# one row per run, from the "# ..." lines t_fleet prints
python3 - "$OUT" "$@" <<'EOF'
import glob, re, sys
out, bins = sys.argv[1], sys.argv[2:]
def num(pat, line):
    m = re.search(pat, line)
    return m.group(1) if m else "?"
print("| binary | run | SIGTERM: succeeded | failed (h2load) | sent+failed | never sent "
      "| SIGKILL: succeeded | started - done | socket activation: succeeded | failed (h2load) "
      "| sent+failed | never sent | new conns not 200 |")
print("|" + "---|" * 13)
for b in bins:
    for f in sorted(glob.glob("%s/%s-*.txt" % (out, b.replace("/", "_")))):
        term = kill = sa = ""
        newbad = "?"
        for line in open(f, errors="replace"):
            if line.startswith("# SIGTERM under load"): term = line
            elif line.startswith("# SIGKILL under load"): kill = line
            elif line.startswith("# socket activation restart"): sa = line
            elif "new connections during the restart all answered 200" in line:
                newbad = "0" if line.startswith("ok") else "some"
        run = re.search(r"-(\d+)\.txt$", f).group(1)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            b, run,
            num(r"succeeded=(\d+)", term), num(r" failed=(\d+)", term),
            num(r"(\d+) of them failed", term), num(r"(\d+) never sent", term),
            num(r"succeeded=(\d+)", kill), num(r"\(started - done\) (\d+)", kill),
            num(r"succeeded=(\d+)", sa), num(r" failed=(\d+)", sa),
            num(r"(\d+) sent and failed", sa), num(r"(\d+) never sent", sa), newbad))
print("\nlogs: %s" % out)
EOF
