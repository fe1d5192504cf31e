#!/bin/bash
# The shared second-level cache (cache-redis): does it pay? Run by hand, never by CI.
#   tests/bench/redis.sh BIN        BIN: a dohgate binary (e.g. build-rel/dohgate)
# Two instances A and B (--workers 1 each, plain DNS on UDP through dns-listen so that dnsperf
# measures the server and not a TLS client) on one upstream, the stub tests/tools/stubdns.py,
# which logs every query it gets; N distinct names (each a cache miss), queried one at a time
# (dnsperf -q 1: the average latency is the latency of a miss), first through A, then through B:
#   off      no cache-redis: A and B each ask the upstream for every name
#   on       cache-redis on a local redis-server: B's misses are Redis hits
#   down     cache-redis on a port nothing listens on (refused: backoff at once)
#   stopped  cache-redis on a SIGSTOPped redis-server (connected, silent: one budget, then
#            the backoff skips it; a new budget after 1, 2, 4 ... 30 s)
# each with a fast upstream (the stub on loopback, ~0.2 ms) and a slow one (stub names
# slow-20.*: 20 ms, a far upstream's round trip). Prints one RESULT line per run:
#   RESULT mode=M upstream=fast|slow20 a_us=… b_us=… upstream_queries=… (of 2N)
# Environment: N (1000), BUDGET (cache-redis-timeout, 20), WORK (/tmp/dohgate-bench-redis),
# MODES ("off on down stopped"), UPSTREAMS ("fast slow20"). About 4 minutes with the defaults.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:?usage: $0 DOHGATE_BINARY}
[ -x "$BIN" ] || { echo "$BIN: not an executable" >&2; exit 2; }
for t in dnsperf redis-server redis-cli python3; do
    command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 2; }
done
N=${N:-1000}
BUDGET=${BUDGET:-20}
WORK=${WORK:-/tmp/dohgate-bench-redis}
rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

STUB_PORT=$(port)
python3 "$ROOT/tests/tools/stubdns.py" "$STUB_PORT" "$WORK/stub.log" >"$WORK/stub.out" 2>&1 &
PIDS+=($!)
REDIS_PORT=$(port)
redis-server --save '' --appendonly no --port "$REDIS_PORT" --bind 127.0.0.1 >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
DEAD_PORT=$(port)

# start NAME DNSPORT REDISARG...: one dohgate on 127.0.0.1:DNSPORT (plain DNS), TLS on a free port
start() {
    local name=$1 dport=$2
    shift 2
    "$BIN" --listen "127.0.0.1:$(port)" --dns-listen "127.0.0.1:$dport" --workers 1 \
        --upstream "127.0.0.1:$STUB_PORT" --log-level warn "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST=$!
    for _ in $(seq 50); do
        dig +short +time=1 +tries=1 -p "$dport" @127.0.0.1 "ready.stub.test" A >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "$name did not start" >&2
    exit 1
}

# perf DNSPORT FILE: the average latency of dnsperf over FILE, once, one query at a time (µs)
perf() {
    dnsperf -s 127.0.0.1 -p "$1" -d "$2" -n 1 -c 1 -q 1 -t 5 >"$WORK/perf.out" 2>&1
    awk '/Average Latency/ { printf "%d", $4 * 1e6 }' "$WORK/perf.out"
}

run() {
    local mode=$1 up=$2 prefix redis=() a b
    case $up in fast) prefix="" ;; slow20) prefix="slow-20." ;; esac
    seq 1 "$N" | sed "s/.*/${prefix}n&.$mode-$up.stub.test A/" >"$WORK/names-$mode-$up"
    case $mode in
    off) ;;
    on | stopped) redis=(--cache-redis "127.0.0.1:$REDIS_PORT" --cache-redis-timeout "$BUDGET") ;;
    down) redis=(--cache-redis "127.0.0.1:$DEAD_PORT" --cache-redis-timeout "$BUDGET") ;;
    esac
    local pa pb
    pa=$(port)
    start A "$pa" "${redis[@]}"
    local apid=$LAST
    pb=$(port)
    start B "$pb" "${redis[@]}"
    local bpid=$LAST
    [ "$mode" = stopped ] && kill -STOP "$REDIS_PID"
    : >"$WORK/stub.log"
    a=$(perf "$pa" "$WORK/names-$mode-$up")
    b=$(perf "$pb" "$WORK/names-$mode-$up")
    [ "$mode" = stopped ] && kill -CONT "$REDIS_PID"
    local q
    q=$(grep -c "$mode-$up" "$WORK/stub.log" || true)
    echo "RESULT mode=$mode upstream=$up a_us=$a b_us=$b upstream_queries=$q of $((2 * N))"
    kill "$apid" "$bpid"
    wait "$apid" "$bpid" 2>/dev/null || true
}

for up in ${UPSTREAMS:-fast slow20}; do
    for mode in ${MODES:-off on down stopped}; do
        run "$mode" "$up"
    done
done
