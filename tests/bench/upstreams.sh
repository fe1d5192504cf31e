#!/bin/bash
# Encrypted upstreams (issue 15), run by hand, never by CI. Two parts, side by side in one run:
#   A. cache-miss cost by upstream transport: the lab's `miss` test (doh-bench.sh: distinct names
#      n100.., each asked once by 4 h2load processes x 1 connection x 50 streams, for MISS_SECONDS)
#      against each front server, started fresh and pinned to CPU 1 (one worker/thread each):
#        dohgate  with a UDP upstream (the lab NSD), a DoT upstream, a DoH upstream
#        dnsdist  with a plain backend (NSD), a DoT backend, a DoH backend (1.7's outgoing DoH)
#        unbound  with forward-zone to NSD, and with forward-tls-upstream to the DoT upstream
#      The figure is the front server's CPU (utime+stime of all its threads, /proc/PID/stat) per
#      answered query. The upstreams' CPU is not counted (reported as upstream CPU %):
#        DoT upstream: one Unbound (tls-port, lab certificate), restarted empty before every run,
#                      answering bench.lab.test itself from a redirect local-zone (UP_DOT=local, the
#                      default) or forwarding to the lab NSD (UP_DOT=forward). Forwarding, Unbound
#                      and NSD take most of the second CPU and cap the DoT rows at ~25k q/s, where
#                      the front servers batch less and their CPU per query rises (docs/benchmarks.md)
#        DoH upstream: a second dohgate, --cache-size 0, forwarding to the lab NSD over UDP
#      Both verify: the lab CA (LAB_CERTS/ca.pem) and the name doh.lab.test of the lab certificate.
#   B. a burst of BURST_NAMES (10,000) distinct names at once (h2load -c 100 -m 100: all in flight
#      together: BURST_PROCS h2load processes x 1 connection x 100 streams, each on its own slice of
#      the names) against a fresh dohgate (--workers BURST_WORKERS, not pinned) with a UDP (for
#      reference), a DoT and a DoH upstream (BURST_TRANSPORTS): answers, SERVFAILs, TLS handshakes,
#      connections, resumptions from its /metrics, against the bound workers x 4 (the pool per
#      worker and upstream).
#   tests/bench/upstreams.sh [ROUNDS]        default 1 round (~4 min); rounds alternate the order
# Environment (defaults): DOHGATE_BIN (build-bench/dohgate, built if missing), LAB
#   (../shared/lab beside the checkout), LAB_RUN (/tmp/dohgate-lab), LAB_CERTS ($LAB_RUN/certs),
#   UP_SERVERS (all eight: "dohgate/udp dohgate/dot dohgate/doh dnsdist/udp dnsdist/dot
#   dnsdist/doh unbound/udp unbound/dot"), UP_PARTS ("miss burst"), MISS_SECONDS (10), UP_DOT
#   (local | forward), UP_PORT_BASE (8470: DoT upstream +0, DoH upstream +1 and its metrics +2,
#   front DoH +3, front plain DNS +4, front metrics +5), BURST_NAMES (10000), BURST_WORKERS (2),
#   SERVER_CPU (1), UPSTREAM_CPU (0: the DoT/DoH upstreams, beside the load generator),
#   OUT ($LAB_RUN/results/upstreams-<UTC time>): results.txt (RESULT lines), table.md, logs/;
#   UP_PERF (e.g. "dohgate/dot dohgate/doh": perf record -g of those front servers for 5 s during
#   their miss test, top symbols in logs/perf-*.txt; perf's cost lands in that run's figures).
# Everything doh-bench.sh reads (MISS_PARTS, MISS_STREAMS, LOADGEN_CPU, ...) is passed through.
# Packages: as the lab (nsd unbound dnsdist nghttp2-client curl python3 iproute2 util-linux).
# On a 2-core machine run nothing else meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$ROOT/tests/bench
LAB=${LAB:-$ROOT/../shared/lab}
[ -x "$LAB/bench/doh-bench.sh" ] || { echo "lab not found at $LAB (set LAB=...)" >&2; exit 2; }
ROUNDS=${1:-1}
export LAB_RUN=${LAB_RUN:-/tmp/dohgate-lab}
export LAB_CERTS=${LAB_CERTS:-$LAB_RUN/certs}
export LAB_UPSTREAM_PORT=${LAB_UPSTREAM_PORT:-5300}
export MISS_SECONDS=${MISS_SECONDS:-10}
export LOADGEN_CPU=${LOADGEN_CPU-0}
SERVER_CPU=${SERVER_CPU:-1}
# the DoT/DoH upstreams share the load generator's CPU, so that they never preempt the server
# measured on SERVER_CPU ("" = not pinned; the lab's NSD is not pinned either way)
UPSTREAM_CPU=${UPSTREAM_CPU-0}
UPIN=(); [ -n "$UPSTREAM_CPU" ] && UPIN=(taskset -c "$UPSTREAM_CPU")
read -r -a SERVERS <<< "${UP_SERVERS:-dohgate/udp dohgate/dot dohgate/doh dnsdist/udp dnsdist/dot dnsdist/doh unbound/udp unbound/dot}"
PARTS=${UP_PARTS:-miss burst}
UP_DOT=${UP_DOT:-local}
PB=${UP_PORT_BASE:-8470}
DOT_PORT=$PB; DOHUP_PORT=$((PB + 1)); DOHUP_METRICS=$((PB + 2))
FRONT_PORT=$((PB + 3)); FRONT_DNS=$((PB + 4)); FRONT_METRICS=$((PB + 5))
BURST_NAMES=${BURST_NAMES:-10000}; BURST_WORKERS=${BURST_WORKERS:-2}
TLSNAME=doh.lab.test   # in the lab certificate (with localhost, 127.0.0.1, ::1)
NSD=127.0.0.1:$LAB_UPSTREAM_PORT
OUT=${OUT:-$LAB_RUN/results/upstreams-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"; OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.txt; : > "$RES"
W=$LAB_RUN/upstreams; mkdir -p "$W"
# doh-bench.sh's URI lists and outputs: our own folder, so that no other lab run's files are removed
export BENCH_WORK=$W/bench; mkdir -p "$BENCH_WORK"
# the lab's URI lists take a minute to make: share them (hard links) when a lab run left them
for f in "$LAB_RUN"/bench/*.uris*; do
  [ -f "$f" ] && [ ! -e "$BENCH_WORK/${f##*/}" ] && { ln "$f" "$BENCH_WORK/" 2>/dev/null || cp "$f" "$BENCH_WORK/"; }
done
# h2load opens 100 connections in part B; dnsdist and unbound raise their own limits
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -n "${DOHGATE_BIN:-}" ]; then
  BIN=$(command -v -- "$DOHGATE_BIN") || { echo "DOHGATE_BIN=$DOHGATE_BIN: not an executable" >&2; exit 2; }
  [[ $BIN == /* ]] || BIN=$PWD/$BIN
else
  BIN=$ROOT/build-bench/dohgate
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j2 --target dohgate >/dev/null
fi
for c in unbound dnsdist h2load curl python3 ss taskset; do
  command -v "$c" >/dev/null || { echo "$c not found (see the lab's README.md)" >&2; exit 2; }
done

note() { echo "# $*" | tee -a "$RES" >&2; }
result() { echo "RESULT $*" | tee -a "$RES"; }
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
port_free() { [ -z "$(ss -Hltun "sport = :$1" 2>/dev/null)" ]; }
doh_ok() { python3 "$LAB/bench/dohuris.py" check "https://127.0.0.1:$1/dns-query" "${2:-www.lab.test}" A >/dev/null 2>&1; }

"$LAB/certs/make.sh" "$LAB_CERTS" >/dev/null
dig +short +time=1 +tries=1 @127.0.0.1 -p "$LAB_UPSTREAM_PORT" www.lab.test A 2>/dev/null | grep -q 192.0.2.10 \
  || "$LAB/upstream/run.sh" start
CA=$LAB_CERTS/ca.pem
for p in "$DOT_PORT" "$DOHUP_PORT" "$DOHUP_METRICS" "$FRONT_PORT" "$FRONT_DNS" "$FRONT_METRICS"; do
  port_free "$p" || { echo "port $p is in use (set UP_PORT_BASE)" >&2; exit 2; }
done

# ---- processes we start: "name pid" lines; stopped by pid, SIGTERM then SIGKILL after 10 s ----
declare -A PIDS=()
stop() {  # stop NAME
  local p=${PIDS[$1]:-} i=0
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || true
  while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "PIDS[$1]"
}
stop_all() { local n; for n in "${!PIDS[@]}"; do stop "$n"; done; }
trap stop_all EXIT

# ---- the upstreams (not pinned, their CPU not counted) ----
start_dot_upstream() {  # Unbound, DNS over TLS only on DOT_PORT, empty cache
  local d=$W/dot-upstream i
  rm -rf "$d"; mkdir -p "$d"
  {
    cat <<EOF
server:
    interface: 127.0.0.1@$DOT_PORT
    tls-port: $DOT_PORT
    tls-service-key: "$LAB_CERTS/server.key"
    tls-service-pem: "$LAB_CERTS/server.pem"
    do-ip6: no
    num-threads: 1
    so-reuseport: no
    # the front servers keep a few pipelined connections each; dnsdist opens more
    incoming-num-tcp: 512
    chroot: ""
    username: ""
    directory: "$d"
    pidfile: "$d/unbound.pid"
    logfile: "$d/unbound.log"
    use-syslog: no
    verbosity: 0
    module-config: "iterator"
    do-not-query-localhost: no
    qname-minimisation: no
    access-control: 127.0.0.0/8 allow
    local-zone: "test." nodefault
EOF
    if [ "$UP_DOT" = local ]; then
      # every name below bench.lab.test gets the same A record, without asking NSD
      cat <<EOF
    local-zone: "bench.lab.test." redirect
    local-data: "bench.lab.test. 300 IN A 192.0.2.20"
    local-zone: "www.lab.test." redirect
    local-data: "www.lab.test. 300 IN A 192.0.2.10"
EOF
    fi
    cat <<EOF
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$LAB_UPSTREAM_PORT
EOF
  } > "$d/unbound.conf"
  unbound-checkconf "$d/unbound.conf" >/dev/null
  "${UPIN[@]}" unbound -d -c "$d/unbound.conf" </dev/null >"$d/unbound.out" 2>&1 &
  PIDS[dotup]=$!
  for i in $(seq 1 100); do
    kdig +short +time=1 +retry=0 +tls +tls-ca="$CA" +tls-hostname=$TLSNAME @127.0.0.1 -p "$DOT_PORT" \
      www.lab.test A 2>/dev/null | grep -q '^192\.0\.2\.10$' && return 0
    sleep 0.1
  done
  echo "DoT upstream (unbound) did not answer on $DOT_PORT; see $d" >&2; exit 1
}
start_doh_upstream() {  # a second dohgate, no cache, UDP to NSD
  local d=$W/doh-upstream i
  rm -rf "$d"; mkdir -p "$d"
  "${UPIN[@]}" "$BIN" --listen "127.0.0.1:$DOHUP_PORT" --cert "$LAB_CERTS/server.pem" --key "$LAB_CERTS/server.key" \
    --upstream "$NSD" --workers 1 --cache-size 0 --log-level warn --max-connections-per-client 0 \
    --connection-rate-limit 0 --metrics-listen "127.0.0.1:$DOHUP_METRICS" </dev/null >"$d/out.log" 2>&1 &
  PIDS[dohup]=$!
  for i in $(seq 1 100); do doh_ok "$DOHUP_PORT" && return 0; sleep 0.1; done
  echo "DoH upstream (dohgate) did not answer on $DOHUP_PORT; see $d/out.log" >&2; exit 1
}

# ---- the front servers: DoH on FRONT_PORT, pinned to SERVER_CPU, one worker ----
DG_COMMON=(--listen "127.0.0.1:$FRONT_PORT" --cert "$LAB_CERTS/server.pem" --key "$LAB_CERTS/server.key"
  --log-level warn --max-connections-per-client 0 --connection-rate-limit 0 --upstream-ca "$CA"
  --metrics-listen "127.0.0.1:$FRONT_METRICS")
upstream_url() {  # transport -> dohgate --upstream value
  case $1 in
  udp) echo "$NSD" ;;
  dot) echo "tls://127.0.0.1:$DOT_PORT#$TLSNAME" ;;
  doh) echo "https://$TLSNAME:$DOHUP_PORT/dns-query addr=127.0.0.1" ;;
  esac
}
start_front() {  # start_front SERVER TRANSPORT [WORKERS]: sets FPID (the process to measure)
  local s=$1 t=$2 d=$W/front-$1-$2 i pin=()
  rm -rf "$d"; mkdir -p "$d"
  [ -n "$SERVER_CPU" ] && pin=(taskset -c "$SERVER_CPU")
  case $s in
  dohgate)
    [ -n "${3:-}" ] && pin=()   # part B: the workers get both CPUs
    "${pin[@]}" "$BIN" "${DG_COMMON[@]}" --upstream "$(upstream_url "$t")" --workers "${3:-1}" \
      </dev/null >"$d/out.log" 2>&1 &
    FPID=$! ;;
  dnsdist)
    local be
    case $t in
    udp) be="address='$NSD'" ;;
    dot) be="address='127.0.0.1:$DOT_PORT', tls='openssl', subjectName='$TLSNAME', caStore='$CA', validateCertificates=true" ;;
    doh) be="address='127.0.0.1:$DOHUP_PORT', tls='openssl', subjectName='$TLSNAME', caStore='$CA', validateCertificates=true, dohPath='/dns-query'" ;;
    esac
    # as the lab's peers/dnsdist.sh (packet cache of 2.5M entries, DoH frontend on h2o), but the
    # backend is the one under test
    cat > "$d/dnsdist.conf" <<EOF
setLocal('127.0.0.1:$FRONT_DNS')
addDOHLocal('127.0.0.1:$FRONT_PORT', '$LAB_CERTS/server.pem', '$LAB_CERTS/server.key', '/dns-query')
newServer({$be, name='up', checkName='www.lab.test.'})
pc = newPacketCache(2500000)
getPool(''):setCache(pc)
setVerboseHealthChecks(false)
setSecurityPollSuffix('')
EOF
    dnsdist --check-config -C "$d/dnsdist.conf" >/dev/null
    "${pin[@]}" dnsdist --supervised --disable-syslog -C "$d/dnsdist.conf" </dev/null >"$d/out.log" 2>&1 &
    FPID=$! ;;
  unbound)
    # as the lab's peers/unbound.sh (DoH frontend, one thread, cache defaults), forwarding
    # over the transport under test
    {
      cat <<EOF
server:
    interface: 127.0.0.1@$FRONT_PORT
    port: $FRONT_PORT
    https-port: $FRONT_PORT
    http-endpoint: "/dns-query"
    tls-service-key: "$LAB_CERTS/server.key"
    tls-service-pem: "$LAB_CERTS/server.pem"
    tls-cert-bundle: "$CA"
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    incoming-num-tcp: 1000
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$d"
    pidfile: "$d/unbound.pid"
    logfile: "$d/unbound.log"
    use-syslog: no
    verbosity: 0
    local-zone: "test." nodefault
    do-not-query-localhost: no
    module-config: "iterator"
remote-control:
    control-enable: no
forward-zone:
    name: "."
EOF
      if [ "$t" = dot ]; then
        echo "    forward-addr: 127.0.0.1@$DOT_PORT#$TLSNAME"
        echo "    forward-tls-upstream: yes"
      else
        echo "    forward-addr: 127.0.0.1@$LAB_UPSTREAM_PORT"
      fi
    } > "$d/unbound.conf"
    unbound-checkconf "$d/unbound.conf" >/dev/null
    "${pin[@]}" unbound -d -c "$d/unbound.conf" </dev/null >"$d/out.log" 2>&1 &
    FPID=$! ;;
  esac
  PIDS[front]=$FPID
  for i in $(seq 1 150); do
    kill -0 "$FPID" 2>/dev/null || break
    doh_ok "$FRONT_PORT" && return 0
    sleep 0.2
  done
  echo "# $s/$t did not answer DoH on $FRONT_PORT; see $d:" >&2; tail -5 "$d/out.log" >&2
  stop front; return 1
}
restart_upstream() {  # TRANSPORT: its upstream restarted empty; UPIDS: the pids of that tier
  local nsd; nsd=$(cat "$LAB_RUN/upstream/nsd.pid" 2>/dev/null || true)
  case $1 in
  udp) # NSD and its descendants (xfrd -> main -> server processes)
    UPIDS=$(ps -e -o pid=,ppid= | awk -v r="$nsd" '{pp[$1] = $2} END { for (p in pp) { q = p
      while (q != "" && q > 1) { if (q == r) { print p; break } q = pp[q] } } }' | tr '\n' ' ') ;;
  dot) stop dotup; start_dot_upstream; UPIDS=${PIDS[dotup]} ;;
  doh) stop dohup; start_doh_upstream; UPIDS=${PIDS[dohup]} ;;
  esac
}
metric_sum() {  # metric_sum NAME FILE [LABEL-REGEX]: sum of a /metrics series' values
  awk -v n="$1" -v re="${3:-.}" '($1 == n || index($1, n "{") == 1) && $1 ~ re { s += $NF }
    END { printf "%.0f\n", s }' "$2"
}

part_miss() {
  local round st s t order=() i
  for ((round = 1; round <= ROUNDS; round++)); do
    order=("${SERVERS[@]}")
    if (( round % 2 == 0 )); then order=(); for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[i]}"); done; fi
    for st in "${order[@]}"; do
      s=${st%/*}; t=${st#*/}
      note "round $round: $st (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
      restart_upstream "$t"
      start_front "$s" "$t" || { note "$st round $round: did not start"; continue; }
      sleep 1
      local perfpid=
      if [[ " ${UP_PERF:-} " == *" $st "* ]]; then
        # a profile of the front server during the load (perf's own cost lands in the figure:
        # profile in a run of its own, not in the one whose figures you keep)
        ( sleep 3; perf record -q -g -F 999 -o "$OUT/logs/perf-${st/\//-}.data" -p "$FPID" -- sleep 5 \
            >/dev/null 2>&1 ) &
        perfpid=$!
      fi
      LABEL=$st UPSTREAM_PIDS="$UPIDS" BENCH_KEEP=$OUT/logs/round$round-${st/\//-} \
        "$LAB/bench/doh-bench.sh" "https://127.0.0.1:$FRONT_PORT/dns-query" "$FPID" miss 2>&1 \
        | sed -u "s/^RESULT /RESULT round=$round /" | tee -a "$RES" || note "$st round $round: doh-bench failed"
      if [ -n "$perfpid" ]; then
        wait "$perfpid" || true
        perf report -i "$OUT/logs/perf-${st/\//-}.data" --no-children --stdio --percent-limit 0.7 \
          -g none 2>/dev/null | grep -v '^$' > "$OUT/logs/perf-${st/\//-}.txt" || true
        note "profile of $st: $OUT/logs/perf-${st/\//-}.txt"
      fi
      if [ "$s" = dohgate ]; then   # proof of the transport: answers counted on that upstream
        curl -s "http://127.0.0.1:$FRONT_METRICS/metrics" > "$OUT/logs/metrics-round$round-${st/\//-}.txt" || true
        result "round=$round server=$st test=miss metric=upstream_answers value=$(metric_sum dohgate_upstream_answers_total "$OUT/logs/metrics-round$round-${st/\//-}.txt")"
        result "round=$round server=$st test=miss metric=upstream_handshakes value=$(metric_sum dohgate_upstream_handshakes_total "$OUT/logs/metrics-round$round-${st/\//-}.txt")"
        result "round=$round server=$st test=miss metric=servfail value=$(metric_sum dohgate_dns_answers_total "$OUT/logs/metrics-round$round-${st/\//-}.txt" 'rcode="SERVFAIL"')"
      fi
      cp "$W/front-$s-$t"/*.conf "$OUT/logs/" 2>/dev/null || true
      stop front
      sleep 2
    done
  done
}

part_burst() {
  # every h2load client walks its -i list from the top, so distinct names need one process per
  # slice: BURST_PROCS processes x 1 connection x up to 100 streams, all started together
  local procs=${BURST_PROCS:-100} list=$W/burst-$BURST_NAMES-${BURST_PROCS:-100}.uris t m first k
  local per=$(( BURST_NAMES / procs ))
  # names from the top of the zone, away from the miss test's start (fresh servers anyway)
  first=$(( ${BENCH_NAMES:-2000000} - 1 - BURST_NAMES ))
  [ -s "$list.$(( procs - 1 ))" ] || python3 "$LAB/bench/dohuris.py" paths /dns-query "$first" "$BURST_NAMES" "$list" "$procs"
  for t in ${BURST_TRANSPORTS:-udp dot doh}; do
    local st=dohgate/$t pids=()
    note "burst: $st, --workers $BURST_WORKERS, $BURST_NAMES names: $procs h2load x 1 connection x $(( per < 100 ? per : 100 )) streams"
    restart_upstream "$t"
    start_front dohgate "$t" "$BURST_WORKERS" || { note "burst $st: did not start"; continue; }
    sleep 1
    rm -f "$OUT/logs/burst-$t".*.out
    for ((k = 0; k < procs; k++)); do
      h2load -t 1 -c 1 -m 100 -n "$(wc -l < "$list.$k")" -B "https://127.0.0.1:$FRONT_PORT" \
        -H 'accept: application/dns-message' -i "$list.$k" > "$OUT/logs/burst-$t.$k.out" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    sleep 1
    m=$OUT/logs/burst-$t.metrics; curl -s "http://127.0.0.1:$FRONT_METRICS/metrics" > "$m"
    local ok
    ok=$(cat "$OUT/logs/burst-$t".*.out | awk '/^requests:/{ok += $8} END {print ok + 0}')
    local r="server=$st test=burst"
    result "$r metric=workers value=$BURST_WORKERS"
    result "$r metric=queries value=$ok"
    result "$r metric=http_failed value=$(( BURST_NAMES - ok ))"
    result "$r metric=servfail value=$(metric_sum dohgate_dns_answers_total "$m" 'rcode="SERVFAIL"')"
    result "$r metric=rejected value=$(metric_sum dohgate_rejected_total "$m")"
    result "$r metric=upstream_queries value=$(metric_sum dohgate_upstream_queries_total "$m")"
    result "$r metric=upstream_timeouts value=$(metric_sum dohgate_upstream_timeouts_total "$m")"
    result "$r metric=upstream_errors value=$(metric_sum dohgate_upstream_errors_total "$m")"
    for x in connections handshakes resumed connection_failures reused; do
      result "$r metric=$x value=$(metric_sum "dohgate_upstream_${x}_total" "$m")"
    done
    result "$r metric=pool_bound value=$(( BURST_WORKERS * 4 ))"
    stop front
    sleep 1
  done
}

{ echo "# date: $(date -u), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?), UP_DOT=$UP_DOT"
  echo "# $(lscpu | awk -F: '/Model name/{gsub(/^ +/, "", $2); print $2}'), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  for p in unbound dnsdist nsd nghttp2-client libssl3; do dpkg-query -W -f='# ${Package} ${Version}\n' "$p" 2>/dev/null || true; done
} | tee -a "$RES"
for part in $PARTS; do "part_$part"; done
stop_all
python3 "$B/upstreams_table.py" "$RES" | tee "$OUT/table.md"
echo "results: $OUT"
