#!/bin/bash
# Two dohgate figures the lab harness (run.sh) does not give; run by hand, never by CI:
#   A. RSS after 10,000 connections have come and gone: does memory come back (or at least stop
#      growing) once clients leave? dohgate --workers 1 pinned to CPU $SERVER_CPU; 10 batches of
#      `h2load -c 1000 -n 1000 -m 1` (a full TLS handshake and one GET per connection), VmRSS after
#      each batch and after 2 s idle; then 2,000 idle connections held (idleconns.py) and closed.
#   B. scaling with --workers 2: req/s and server CPU µs/request over the 100 hot URIs (the lab's
#      `cached` list), 4 connections x 100 streams, --workers 1 then 2 (nothing pinned: the two
#      workers need both CPUs), and 8 connections for --workers 2 (SO_REUSEPORT spreads connections
#      by hash, so 4 may all land on one worker).
#   tests/bench/churn.sh BIN            BIN: a dohgate binary (e.g. build-bench/dohgate)
# Takes about a minute with the defaults. Needs the lab: NSD on 127.0.0.1:5300 and the certificates
# in /tmp/dohgate-lab/certs (../shared/lab/upstream/run.sh start; see ../shared/lab/README.md).
# Environment (defaults): CHURN_BATCHES (10), CHURN_CONNS (1000, per batch), CHURN_IDLE (2000),
# SCALE_SECONDS (10), CHURN_PORT (8460), SERVER_CPU (1), LOADGEN_CPU (0, part A only; "" = no
# pinning), LAB (../shared/lab), LAB_CERTS (/tmp/dohgate-lab/certs), UPSTREAM (127.0.0.1:5300),
# CHURN_WORK (/tmp/dohgate-lab/churn: logs, h2load outputs, URI list).
# Output: readable lines, and RESULT lines at the end of each part:
#   RESULT churn rss_start_kib=… rss_after_10k_kib=… growth_last5_batches_kib=…
#   RESULT scale workers=N conns=C req_per_s=… us_per_req=…   and   RESULT scale ratio_w2_w1=…
# On a 2-core machine run nothing else meanwhile: part B's client shares the CPUs with the server.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:?usage: $0 DOHGATE_BINARY}
[ -x "$BIN" ] || { echo "$BIN: not an executable" >&2; exit 2; }
LAB=${LAB:-$ROOT/../shared/lab}
LAB_CERTS=${LAB_CERTS:-/tmp/dohgate-lab/certs}
UPSTREAM=${UPSTREAM:-127.0.0.1:5300}
PORT=${CHURN_PORT:-8460}
BATCHES=${CHURN_BATCHES:-10}; CONNS=${CHURN_CONNS:-1000}; IDLE=${CHURN_IDLE:-2000}
SCALE_SECONDS=${SCALE_SECONDS:-10}
SERVER_CPU=${SERVER_CPU:-1}; LOADGEN_CPU=${LOADGEN_CPU-0}
WORK=${CHURN_WORK:-/tmp/dohgate-lab/churn}
for f in "$LAB/bench/idleconns.py" "$LAB/bench/dohuris.py" "$LAB_CERTS/server.pem" "$LAB_CERTS/server.key"; do
  [ -r "$f" ] || { echo "missing $f (set LAB=... / LAB_CERTS=...)" >&2; exit 2; }
done
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
[ "$BATCHES" -ge 1 ] || { echo "CHURN_BATCHES must be >= 1" >&2; exit 2; }
mkdir -p "$WORK"
# h2load opens CONNS sockets at once; the default soft limit (1024) would fail a 1000-connection batch
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

BASE=https://127.0.0.1:$PORT
URL="$BASE/dns-query?dns=AAABAAABAAAAAAAAA3d3dwNsYWIEdGVzdAAAAQAB"   # www.lab.test A, ID 0, RD
ACCEPT=(-H 'accept: application/dns-message')
LPIN=(); [ -n "$LOADGEN_CPU" ] && LPIN=(taskset -c "$LOADGEN_CPU")
TCK=$(getconf CLK_TCK)
PID=

note() { echo "# $*" >&2; }
die() { note "$*"; exit 1; }
rss() { awk '/^VmRSS/{print $2}' "/proc/$PID/status"; }
# CPU ticks, user+system of all threads (the process line sums its threads); comm may hold spaces
ticks() { sed 's/.*) //' "/proc/$PID/stat" | awk '{print $12+$13}'; }
# "tid ticks" per thread, one a line: with two snapshots, whether both workers got work
thread_ticks() {
  local t
  for t in /proc/"$PID"/task/*; do echo "${t##*/} $(sed 's/.*) //' "$t/stat" | awk '{print $12+$13}')"; done
}
# thread_cpu BEFORE AFTER: "tid:seconds" per thread between two thread_ticks snapshots
thread_cpu() {
  awk -v h="$TCK" 'NR == FNR { b[$1] = $2; next } { printf "%s%s:%.2f", sep, $1, ($2 - b[$1]) / h; sep = " " }
    END { print "" }' <(echo "$1") <(echo "$2")
}

start_dohgate() {  # WORKERS [CPU]: starts dohgate (pinned to CPU if given) and waits for a DoH answer
  local i=0 pin=()
  [ -n "${2:-}" ] && pin=(taskset -c "$2")
  [ -z "$(ss -Hltn "sport = :$PORT")" ] || die "port $PORT is already in use"
  # exec'd by taskset, so $! is dohgate itself and /proc/$! is what we measure
  "${pin[@]}" "$BIN" --listen "127.0.0.1:$PORT" --cert "$LAB_CERTS/server.pem" --key "$LAB_CERTS/server.key" \
    --upstream "$UPSTREAM" --log-level warn --max-connections-per-client 0 --connection-rate-limit 0 \
    --workers "$1" </dev/null >"$WORK/dohgate-w$1.log" 2>&1 &
  PID=$!
  until python3 "$LAB/bench/dohuris.py" check "$BASE/dns-query" www.lab.test A >/dev/null; do
    kill -0 "$PID" 2>/dev/null || { tail -5 "$WORK/dohgate-w$1.log" >&2; die "dohgate exited"; }
    i=$((i + 1)); [ $i -lt 150 ] || die "dohgate did not answer on $BASE within 30 s"
    sleep 0.2
  done
}
stop_dohgate() {
  local i=0
  [ -n "$PID" ] || return 0
  if kill -0 "$PID" 2>/dev/null; then
    kill "$PID" 2>/dev/null || true
    while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$PID" 2>/dev/null || true
  fi
  wait "$PID" 2>/dev/null || true
  PID=
}
trap stop_dohgate EXIT
trap 'exit 130' INT TERM   # through the EXIT trap, so dohgate never outlives the script

# h2run NAME EXPECT H2LOAD_ARGS...: runs h2load (output in WORK/NAME.out) and prints
# "seconds req_per_s succeeded". Exits unless every request succeeded: EXPECT requests exactly, or
# with EXPECT=0 (a -D run, where the count is open) at least one and none failed or errored.
h2run() {
  local name=$1 expect=$2 out=$WORK/$1.out r; shift 2
  "$@" >"$out" 2>&1 || true   # h2load's exit status says little; its counts below decide
  r=$(awk '
    /^finished in/ { s = $3; sub(/s,$/, "", s); if (s ~ /m$/) { sub(/m$/, "", s); s /= 1000 } rps = $4 }
    /^requests:/ { done = $6; ok = $8; bad = $10 + $12 + $14 }
    END { if (done == "") exit 1; printf "%.3f %.2f %d %d %d\n", s, rps, ok, done, bad }' "$out") \
    || { tail -5 "$out" >&2; die "$name: no h2load summary (see $out)"; }
  local s rps ok ndone bad; read -r s rps ok ndone bad <<< "$r"
  if [ "$expect" -gt 0 ]; then
    [ "$ok" -eq "$expect" ] || die "$name: $ok of $expect requests succeeded, $ndone done (see $out)"
  else
    if [ "$ok" -eq 0 ] || [ "$bad" -ne 0 ]; then die "$name: $ok succeeded, $bad failed/errored/timed out (see $out)"; fi
  fi
  echo "$s $rps $ok"
}

# ---- part A: connection churn ----
echo "== A. RSS while $BATCHES x $CONNS connections come and go (one TLS handshake + one GET each), --workers 1 on CPU $SERVER_CPU"
start_dohgate 1 "$SERVER_CPU"
rss0=$(rss)
echo "VmRSS after start: $rss0 KiB"
# the warm-up has a batch's shape: TLS, h2 and allocator pools reach their working size before
# the batches, so growth over the batches is what churn leaves behind
h2run churn-warmup "$CONNS" "${LPIN[@]}" h2load -t 1 -c "$CONNS" -n "$CONNS" -m 1 "${ACCEPT[@]}" "$URL" >/dev/null
declare -a after=()
after[0]=$(rss)
echo "VmRSS after a warm-up batch: ${after[0]} KiB"
for ((b = 1; b <= BATCHES; b++)); do
  read -r s rps _ < <(h2run "churn-$b" "$CONNS" "${LPIN[@]}" h2load -t 1 -c "$CONNS" -n "$CONNS" -m 1 "${ACCEPT[@]}" "$URL")
  after[b]=$(rss)
  printf 'VmRSS after batch %2d (%6d connections, %.0f conn/s): %s KiB\n' "$b" $((b * CONNS)) "$rps" "${after[b]}"
done
sleep 2
rss_idle=$(rss)
echo "VmRSS after 2 s idle: $rss_idle KiB"
# growth over the last 5 batches (or all of them, measured from the warm-up, when there are fewer)
from=$(( BATCHES > 5 ? BATCHES - 5 : 0 ))
growth=$(( after[BATCHES] - after[from] ))
echo "$IDLE idle connections (idleconns.py), held, then closed:"
"${LPIN[@]}" python3 "$LAB/bench/idleconns.py" --host 127.0.0.1 --port "$PORT" --pid "$PID" -n "$IDLE" \
  --label "server=dohgate " | sed 's/^/  /' || die "idleconns.py failed"
sleep 2
echo "VmRSS 2 s after the idle connections closed: $(rss) KiB"
echo "RESULT churn rss_start_kib=$rss0 rss_after_10k_kib=$rss_idle growth_last5_batches_kib=$growth"
[ $((BATCHES * CONNS)) -eq 10000 ] || note "rss_after_10k_kib is after $((BATCHES * CONNS)) connections here (CHURN_BATCHES x CHURN_CONNS); growth is over batches $from..$BATCHES"
stop_dohgate

# ---- part B: scaling with workers ----
echo
echo "== B. --workers 1 vs 2, 100 hot URIs, ${SCALE_SECONDS} s each (nothing pinned)"
HOT=$WORK/hot100.uris
[ -s "$HOT" ] || python3 "$LAB/bench/dohuris.py" paths /dns-query 0 100 "$HOT"   # as doh-bench.sh's cached test
H2=(h2load -t 1 -B "$BASE" "${ACCEPT[@]}")
declare -A RPS=()
scale() {  # WORKERS CONNS: one timed run on the running dohgate
  local w=$1 c=$2 t0 t1 th0 s rps ok us
  t0=$(ticks); th0=$(thread_ticks)
  read -r s rps ok < <(h2run "scale-w$w-c$c" 0 "${H2[@]}" -c "$c" -m 100 -D "$SCALE_SECONDS" -i "$HOT")
  t1=$(ticks)
  us=$(awk -v d=$((t1 - t0)) -v n="$ok" -v h="$TCK" 'BEGIN{printf "%.2f", d/h*1e6/n}')
  RPS[$w-$c]=$rps
  printf 'workers %d, %d connections x 100 streams: %.0f req/s, server CPU %s µs/request\n' "$w" "$c" "$rps" "$us"
  echo "  CPU seconds per thread during the run (tid:s): $(thread_cpu "$th0" "$(thread_ticks)")"
  echo "RESULT scale workers=$w conns=$c req_per_s=${rps%.*} us_per_req=$us"
}
for w in 1 2; do
  start_dohgate "$w"
  # the cache is shared by the workers: one pass over the names fills it for both
  h2run "scale-w$w-warm" 100 "${H2[@]}" -c 1 -m 1 -n 100 -i "$HOT" >/dev/null
  scale "$w" 4
  [ "$w" = 1 ] || scale "$w" 8
  stop_dohgate
  sleep 1
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", (b > 0 ? a/b : 0)}'; }
echo "req/s workers 2 / workers 1: $(ratio "${RPS[2-4]}" "${RPS[1-4]}") (4 connections), $(ratio "${RPS[2-8]}" "${RPS[1-4]}") (8 connections vs 4)"
echo "RESULT scale ratio_w2_w1=$(ratio "${RPS[2-4]}" "${RPS[1-4]}") ratio_w2c8_w1=$(ratio "${RPS[2-8]}" "${RPS[1-4]}")"
