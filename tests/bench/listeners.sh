#!/bin/bash
# Plain DNS, DoT and JSON front ends (issue 16), run by hand, never by CI. Three parts, side by side
# in one run; every server is started fresh for every row, pinned to SERVER_CPU (one worker/thread),
# the load generator (dnsperf, h2load) runs on LOADGEN_CPU, and rounds alternate the order of the rows.
# The figure is the server's CPU (utime+stime of all its threads, /proc/PID/stat) per answered query.
# One dnsperf or h2load thread on one core rarely saturates a cached server: "server CPU %" under
# ~90 means the load generator set the pace (fewer queries per wake-up, so a higher cost per query
# than at saturation). Compare rows of the same run, not with figures taken elsewhere.
# All three use a hot set of LS_NAMES cached names (n0.. of the lab zone bench.lab.test, A), each
# asked once to warm the cache over the transport under test before the measured run:
#   udp   plain DNS over UDP: `dnsperf -c UDP_CLIENTS -q UDP_INFLIGHT -l LS_SECONDS` against
#         dohgate (--workers 1 --dns-listen, UDP upstream the lab NSD) and the lab's peers unbound,
#         dnsdist, kresd, bind (peers/*.sh, their plain-DNS port PEER_DNS_PORT; unbound: UDP on its
#         DoH port). Targets (issue 16): dohgate <= 0.5x dnsdist, <= 1x unbound
#   dot   DNS over TLS, 4 connections x 100 in flight: `dnsperf -m dot -c DOT_CLIENTS -q DOT_INFLIGHT`
#         against dohgate (--dot-listen), dnsdist (addTLSLocal, OpenSSL, packet cache as the lab's
#         dnsdist.sh) and unbound (tls-port, one thread, cache defaults). Target: dohgate <= 0.5x dnsdist
#   json  dohgate's DoH with h2load (-c H2_CLIENTS -m H2_STREAMS -D LS_SECONDS -i over the hot URIs, as
#         the lab's doh-bench.sh): wire GETs (/dns-query?dns=, accept: application/dns-message) and JSON
#         GETs (JSON_FORM: "resolve" = /resolve?name=N&type=A, "accept" = /dns-query?name=N&type=A;
#         both with accept: application/dns-json). Target: JSON <= 2x wire
# A row whose server does not start, does not answer the preflight query (dig, kdig +tls, curl), or
# answers less than MIN_NOERROR_PCT % of the measured queries with NOERROR (or nothing at all) prints
# a FAIL line instead of figures; the script then exits 1 after the table.
#   tests/bench/listeners.sh [ROUNDS]        default 1 round: ~2.5 min (10 rows of ~15 s)
# Environment (defaults): DOHGATE_BIN (build-bench/dohgate, built if missing), DOHGATE_ARGS (extra
#   dohgate flags, word-split), LAB (../shared/lab beside the checkout), LAB_RUN (/tmp/dohgate-lab),
#   LAB_CERTS ($LAB_RUN/certs), LS_PARTS ("udp dot json"), LS_UDP_SERVERS ("dohgate unbound dnsdist
#   kresd bind"), LS_DOT_SERVERS ("dohgate dnsdist unbound"), LS_JSON_ROWS ("wire json"),
#   LS_SECONDS (10: dnsperf -l, h2load -D), LS_NAMES (1000), UDP_CLIENTS (4), UDP_INFLIGHT (100: in
#   flight over all clients), DOT_CLIENTS (4), DOT_INFLIGHT (400), H2_CLIENTS (4), H2_STREAMS (50),
#   JSON_FORM (resolve | accept), MIN_NOERROR_PCT (99), DNSDIST_TLS_OPTS (the addTLSLocal options,
#   "provider='openssl'"), LS_PORT_BASE (8480: DoH +0, plain DNS +1 (unbound: +0), DoT +2, dohgate
#   metrics +3), SERVER_CPU (1), LOADGEN_CPU (0), OUT ($LAB_RUN/results/listeners-<UTC time>):
#   results.txt (RESULT and FAIL lines), table.md (listeners_table.py), logs/ (dnsperf and h2load
#   outputs, configurations, dohgate /metrics after each row).
# Packages: as the lab (nsd unbound dnsdist knot-resolver bind9 nghttp2-client curl knot-dnsutils
# bind9-dnsutils python3 iproute2 util-linux) and dnsperf (2.10; its UDP and DoT modes only: its
# DoH mode loses answers, see the lab's bench/README.md). On a 2-core machine run nothing else meanwhile.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=$ROOT/tests/bench
LAB=${LAB:-$ROOT/../shared/lab}
[ -f "$LAB/peers/lib.sh" ] || { echo "lab not found at $LAB (set LAB=...)" >&2; exit 2; }
LAB=$(cd "$LAB" && pwd)
ROUNDS=${1:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS]" >&2; exit 2; }
export LAB_RUN=${LAB_RUN:-/tmp/dohgate-lab}
export LAB_CERTS=${LAB_CERTS:-$LAB_RUN/certs}
export LAB_UPSTREAM_PORT=${LAB_UPSTREAM_PORT:-5300}
PARTS=${LS_PARTS:-udp dot json}
read -r -a UDP_SERVERS <<< "${LS_UDP_SERVERS:-dohgate unbound dnsdist kresd bind}"
read -r -a DOT_SERVERS <<< "${LS_DOT_SERVERS:-dohgate dnsdist unbound}"
read -r -a JSON_ROWS <<< "${LS_JSON_ROWS:-wire json}"
SECONDS_RUN=${LS_SECONDS:-10}; NAMES=${LS_NAMES:-1000}
UDP_CLIENTS=${UDP_CLIENTS:-4}; UDP_INFLIGHT=${UDP_INFLIGHT:-100}
DOT_CLIENTS=${DOT_CLIENTS:-4}; DOT_INFLIGHT=${DOT_INFLIGHT:-400}
H2_CLIENTS=${H2_CLIENTS:-4}; H2_STREAMS=${H2_STREAMS:-50}
JSON_FORM=${JSON_FORM:-resolve}
MIN_NOERROR_PCT=${MIN_NOERROR_PCT:-99}
DNSDIST_TLS_OPTS=${DNSDIST_TLS_OPTS:-provider='openssl'}
SERVER_CPU=${SERVER_CPU:-1}; LOADGEN_CPU=${LOADGEN_CPU-0}
PB=${LS_PORT_BASE:-8480}
SPORT=$PB; DNSPORT=$((PB + 1)); DOTPORT=$((PB + 2)); MPORT=$((PB + 3))
TLSNAME=doh.lab.test   # in the lab certificate (with localhost, 127.0.0.1, ::1)
NSD=127.0.0.1:$LAB_UPSTREAM_PORT
LG=(); [ -n "$LOADGEN_CPU" ] && LG=(taskset -c "$LOADGEN_CPU")
SPIN=(); [ -n "$SERVER_CPU" ] && SPIN=(taskset -c "$SERVER_CPU")
case $JSON_FORM in resolve) JPATH=/resolve ;; accept) JPATH=/dns-query ;;
  *) echo "JSON_FORM must be resolve or accept" >&2; exit 2 ;; esac
for p in $PARTS; do case $p in udp | dot | json) ;; *) echo "LS_PARTS: unknown part $p" >&2; exit 2 ;; esac; done
OUT=${OUT:-$LAB_RUN/results/listeners-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"; OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.txt; : > "$RES"
W=$LAB_RUN/listeners; mkdir -p "$W"
TCK=$(getconf CLK_TCK)

if [ -n "${DOHGATE_BIN:-}" ]; then
  BIN=$(command -v -- "$DOHGATE_BIN") || { echo "DOHGATE_BIN=$DOHGATE_BIN: not an executable" >&2; exit 2; }
  [[ $BIN == /* ]] || BIN=$PWD/$BIN
else
  BIN=$ROOT/build-bench/dohgate
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j2 --target dohgate >/dev/null
fi
read -r -a DG_ARGS <<< "${DOHGATE_ARGS:-}"
for c in dnsperf h2load dig kdig curl python3 ss taskset unbound dnsdist kresd named; do
  command -v "$c" >/dev/null || { echo "$c not found (the lab's README.md; dnsperf: apt-get install dnsperf)" >&2; exit 2; }
done

note() { echo "# $*" | tee -a "$RES" >&2; }
result() { echo "RESULT $*" | tee -a "$RES"; }
# a row's figures wait in PEND until report_cpu has checked its answers: a row that fails prints none
PEND=()
pend() { PEND+=("$*"); }
FAILS=()
fail() {  # fail ROUND SERVER TEST REASON: the row measured nothing usable; no figure is printed
  echo "FAIL round=$1 server=$2 test=$3 reason=$4" | tee -a "$RES" >&2
  FAILS+=("round $1 $2 $3: $4")
  PEND=()
  if [ -n "$SLOG" ] && [ -f "$SLOG" ]; then   # the server's own words, kept beside the outputs
    cp "$SLOG" "$OUT/logs/round$1-$3-$2.server.log"
    echo "# last lines of $SLOG:" >&2; tail -5 "$SLOG" | sed 's/^/#   /' >&2
  fi
}
port_free() { [ -z "$(ss -Hltun "sport = :$1" 2>/dev/null)" ]; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }

"$LAB/certs/make.sh" "$LAB_CERTS" >/dev/null
CA=$LAB_CERTS/ca.pem
dig +short +time=1 +tries=1 @127.0.0.1 -p "$LAB_UPSTREAM_PORT" www.lab.test A 2>/dev/null | grep -q 192.0.2.10 \
  || "$LAB/upstream/run.sh" start
dig +short +time=1 +tries=1 @127.0.0.1 -p "$LAB_UPSTREAM_PORT" "n$((NAMES - 1)).bench.lab.test" A 2>/dev/null | grep -q . \
  || { echo "the upstream does not serve n$((NAMES - 1)).bench.lab.test (LS_NAMES=$NAMES too large?)" >&2; exit 2; }
for p in "$SPORT" "$DNSPORT" "$DOTPORT" "$MPORT"; do
  port_free "$p" || { echo "port $p is in use (set LS_PORT_BASE)" >&2; exit 2; }
done

# ---- the hot set: a dnsperf data file, wire and JSON URI lists for h2load ----
DATA=$W/hot$NAMES.txt
[ -s "$DATA" ] || for ((i = 0; i < NAMES; i++)); do echo "n$i.bench.lab.test A"; done > "$DATA"
WIRE_URIS=$W/hot$NAMES-wire.uris
[ -s "$WIRE_URIS" ] || python3 "$LAB/bench/dohuris.py" paths /dns-query 0 "$NAMES" "$WIRE_URIS"
JSON_URIS=$W/hot$NAMES-json$(echo "$JPATH" | tr / _).uris
[ -s "$JSON_URIS" ] || for ((i = 0; i < NAMES; i++)); do echo "$JPATH?name=n$i.bench.lab.test&type=A"; done > "$JSON_URIS"

# ---- servers: one at a time; SPID is the process measured ----
# SKIND: peer name (stopped by its lab script) or "own" (started here, stopped by pid); SLOG: its log
SPID=; SKIND=; SLOG=
stop_server() {
  local i=0
  # the configurations (peers' and ours) and dohgate's command line, beside the outputs
  cp "$W/peers/$SKIND"/*.conf "$W"/*/cmdline "$OUT/logs/" 2>/dev/null || true
  if [ "$SKIND" = own ] && [ -n "$SPID" ]; then
    kill "$SPID" 2>/dev/null || true
    while kill -0 "$SPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -0 "$SPID" 2>/dev/null && kill -9 "$SPID" 2>/dev/null || true
    wait "$SPID" 2>/dev/null || true
  elif [ -n "$SKIND" ]; then
    PEER_RUN=$W/peers/$SKIND "$LAB/peers/$SKIND.sh" stop || true
  fi
  SPID=; SKIND=; SLOG=
}
trap stop_server EXIT

dns_ok() {  # dns_ok PORT: plain DNS over UDP answers www.lab.test
  dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" www.lab.test A 2>/dev/null | grep -q '^192\.0\.2\.10$'
}
dot_ok() {  # dot_ok PORT: DNS over TLS answers www.lab.test (certificate verified)
  kdig +short +time=1 +retry=0 +tls +tls-ca="$CA" +tls-hostname=$TLSNAME @127.0.0.1 -p "$1" \
    www.lab.test A 2>/dev/null | grep -q '^192\.0\.2\.10$'
}
doh_ok() { python3 "$LAB/bench/dohuris.py" check "https://127.0.0.1:$SPORT/dns-query" www.lab.test A >/dev/null 2>&1; }
json_check() {  # json_check: prints what the JSON API answered; 0 when it is a NOERROR answer with data
  curl -sk --http2 --max-time 5 -H 'accept: application/dns-json' -w '\n%{http_code} %{content_type}' \
    "https://127.0.0.1:$SPORT$JPATH?name=www.lab.test&type=A" | python3 -c '
import json, sys
body, _, tail = sys.stdin.read().rpartition("\n")
try:
    j = json.loads(body)
except ValueError:
    print(f"http+type={tail!r}, not JSON: {body[:80]!r}"); sys.exit(1)
ans = [a.get("data") for a in j.get("Answer", []) if a.get("type") == 1]
st = j.get("Status")
print(f"http+type={tail!r} Status={st} A={ans}")
sys.exit(0 if tail.startswith("200") and st == 0 and "192.0.2.10" in ans else 1)'
}
hint() { [ "$1" = dohgate ] && echo "; does $BIN serve $2 yet?"; return 0; }
wait_for() {  # wait_for SECONDS CHECK...: retry CHECK every 0.2 s while the server lives
  local n=$(($1 * 5)) i; shift
  for ((i = 0; i < n; i++)); do
    [ -n "$SPID" ] && ! kill -0 "$SPID" 2>/dev/null && return 1
    "$@" && return 0
    sleep 0.2
  done
  return 1
}

start_dohgate() {  # start_dohgate LISTENER-FLAGS...: DoH always (readiness, JSON part), metrics
  local d=$W/dohgate
  rm -rf "$d"; mkdir -p "$d"
  echo "${SPIN[*]} $BIN --listen 127.0.0.1:$SPORT --cert $LAB_CERTS/server.pem --key $LAB_CERTS/server.key --upstream $NSD --workers 1 --log-level warn --max-connections-per-client 0 --connection-rate-limit 0 --metrics-listen 127.0.0.1:$MPORT $* ${DG_ARGS[*]}" > "$d/cmdline"
  "${SPIN[@]}" "$BIN" --listen "127.0.0.1:$SPORT" --cert "$LAB_CERTS/server.pem" --key "$LAB_CERTS/server.key" \
    --upstream "$NSD" --workers 1 --log-level warn --max-connections-per-client 0 --connection-rate-limit 0 \
    --metrics-listen "127.0.0.1:$MPORT" "$@" "${DG_ARGS[@]}" </dev/null >"$d/out.log" 2>&1 &
  SPID=$!; SKIND=own; SLOG=$d/out.log
  wait_for 30 doh_ok && return 0
  echo "# dohgate did not answer DoH on $SPORT" >&2
  return 1
}
start_peer() {  # start_peer NAME: the lab's peer script (DoH on SPORT, plain DNS on DNSPORT)
  local log=$W/peer-$1.start.log
  SKIND=$1; SLOG=$log
  if ! PEER_RUN=$W/peers/$1 PEER_CPUS=$SERVER_CPU PEER_DNS_PORT=$DNSPORT "$LAB/peers/$1.sh" start "$SPORT" >"$log" 2>&1; then
    echo "# $1 did not start (its run directory: $W/peers/$1)" >&2
    return 1
  fi
  SPID=$(PEER_RUN=$W/peers/$1 "$LAB/peers/$1.sh" pid) || return 1
}
start_dnsdist_dot() {  # dnsdist with a DoT frontend; cache and backend as the lab's peers/dnsdist.sh
  local d=$W/dnsdist-dot
  rm -rf "$d"; mkdir -p "$d"
  cat > "$d/dnsdist.conf" <<EOF
setLocal('127.0.0.1:$DNSPORT')
addTLSLocal('127.0.0.1:$DOTPORT', '$LAB_CERTS/server.pem', '$LAB_CERTS/server.key', { $DNSDIST_TLS_OPTS })
newServer({address='$NSD', name='nsd', checkName='www.lab.test.'})
pc = newPacketCache(${DNSDIST_CACHE_ENTRIES:-2500000})
getPool(''):setCache(pc)
setVerboseHealthChecks(false)
setSecurityPollSuffix('')
EOF
  cp "$d/dnsdist.conf" "$OUT/logs/dnsdist-dot.conf"
  dnsdist --check-config -C "$d/dnsdist.conf" >/dev/null
  "${SPIN[@]}" dnsdist --supervised --disable-syslog -C "$d/dnsdist.conf" </dev/null >"$d/out.log" 2>&1 &
  SPID=$!; SKIND=own; SLOG=$d/out.log
}
start_unbound_dot() {  # unbound with DoT (tls-port) only; one thread, cache defaults, forwarding to NSD
  local d=$W/unbound-dot
  rm -rf "$d"; mkdir -p "$d"
  cat > "$d/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$DOTPORT
    tls-port: $DOTPORT
    tls-service-key: "$LAB_CERTS/server.key"
    tls-service-pem: "$LAB_CERTS/server.pem"
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    incoming-num-tcp: 100
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
    forward-addr: 127.0.0.1@$LAB_UPSTREAM_PORT
EOF
  cp "$d/unbound.conf" "$OUT/logs/unbound-dot.conf"
  unbound-checkconf "$d/unbound.conf" >/dev/null
  "${SPIN[@]}" unbound -d -c "$d/unbound.conf" </dev/null >"$d/out.log" 2>&1 &
  SPID=$!; SKIND=own; SLOG=$d/out.log
}

# ---- dnsperf: "sent completed lost noerror qps avg_latency_s resp_bytes reconnections" from its
# statistics (the first "Average Latency" is the queries'; TCP and DoT add the connections' after it)
dpsum() {
  awk '/Queries sent:/ { s = $3 } /Queries completed:/ { c = $3 } /Queries lost:/ { l = $3 }
    /Response codes:/ { for (i = 3; i < NF; i++) if ($i == "NOERROR") n = $(i + 1) }
    /Queries per second:/ { q = $4 } /Average Latency/ && a == "" { a = $4 }
    /Average packet size:/ { r = $NF } /Reconnections:/ { rc = $2 }
    END { printf "%d %d %d %d %.0f %s %d %d\n", s, c, l, n, q, (a == "" ? 0 : a), r, rc }' "$1"
}
# h2load: "seconds req_per_s done succeeded data_bytes mean_us" (as the lab's doh-bench.sh)
h2sum() {
  awk '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
    /^finished in/ { s = $3; sub(/s,$/, "", s); if (s ~ /m$/) { sub(/m$/, "", s); s /= 1000 } rps = $4 }
    /^requests:/ { done = $6; ok = $8 }
    /^traffic:/ { if (match($0, /\(([0-9]+)\) data/)) { d = substr($0, RSTART + 1); sub(/\).*/, "", d) } }
    /^time for request:/ { mean = us($6) }
    END { printf "%.3f %.2f %.0f %.0f %.0f %.0f\n", s, rps, done, ok, d, mean }' "$1"
}
# report ROUND SERVER TEST OK NOERROR T0 T1 NS0 NS1: server CPU per answered query, or FAIL
report_cpu() {
  local r="round=$1 server=$2 test=$3" ok=$4 noerr=$5 dt=$(($7 - $6)) wall=$(($9 - $8)) x
  if [ "$ok" -le 0 ]; then fail "$1" "$2" "$3" "no answers"; return 1; fi
  if awk -v n="$noerr" -v c="$ok" -v m="$MIN_NOERROR_PCT" 'BEGIN { exit !(n * 100 < c * m) }'; then
    fail "$1" "$2" "$3" "only $noerr of $ok answers NOERROR"; return 1
  fi
  for x in "${PEND[@]}"; do result "$x"; done
  PEND=()
  result "$r metric=server_cpu_pct value=$(awk -v d="$dt" -v w="$wall" -v h="$TCK" 'BEGIN { printf "%.0f", d / h / (w / 1e9) * 100 }')"
  result "$r metric=server_us_per_op value=$(awk -v d="$dt" -v n="$ok" -v h="$TCK" 'BEGIN { printf "%.2f", d / h * 1e6 / n }')"
}
dg_answers() {  # dg_answers FILE TRANSPORT [RCODE]: dohgate_dns_answers_total on that transport
  awk -v t="transport=\"$2\"" -v r="rcode=\"${3:-}" \
    'index($1, "dohgate_dns_answers_total{") == 1 && index($1, t) && index($1, r) { s += $NF }
     END { printf "%.0f\n", s }' "$1"
}
metrics_row() {  # metrics_row ROUND TEST TRANSPORT: dohgate's own count of answers on that transport
  local m=$OUT/logs/metrics-round$1-$2.txt
  curl -s --max-time 5 "http://127.0.0.1:$MPORT/metrics" > "$m" || true
  pend "round=$1 server=dohgate test=$2 metric=server_answers value=$(dg_answers "$m" "$3")"
  pend "round=$1 server=dohgate test=$2 metric=server_noerror value=$(dg_answers "$m" "$3" NOERROR)"
}

# dnsperf_row ROUND SERVER TEST MODE PORT CLIENTS INFLIGHT TRANSPORT: warm (every name once), then
# measure; TRANSPORT: dohgate's label for it in /metrics
dnsperf_row() {
  local round=$1 s=$2 t=$3 mode=$4 port=$5 c=$6 q=$7 lg=$OUT/logs/round$1-$3-$2
  PEND=()
  local sent ok lost noerr qps lat rb rc t0 t1 n0 n1
  "${LG[@]}" dnsperf -m "$mode" -s 127.0.0.1 -p "$port" -d "$DATA" -n 1 -c 1 -q 20 -t 2 > "$lg.warm.txt" 2>&1 || true
  read -r sent ok lost noerr qps lat rb rc < <(dpsum "$lg.warm.txt")
  [ "$noerr" -ge $((NAMES * MIN_NOERROR_PCT / 100)) ] \
    || { fail "$round" "$s" "$t" "warm-up: $noerr of $NAMES names NOERROR (see $lg.warm.txt)"; return 1; }
  sleep 1
  t0=$(ticks "$SPID"); n0=$(date +%s%N)
  "${LG[@]}" dnsperf -m "$mode" -s 127.0.0.1 -p "$port" -d "$DATA" -c "$c" -q "$q" -l "$SECONDS_RUN" > "$lg.txt" 2>&1 || true
  t1=$(ticks "$SPID"); n1=$(date +%s%N)
  kill -0 "$SPID" 2>/dev/null || { fail "$round" "$s" "$t" "server died during the run"; return 1; }
  read -r sent ok lost noerr qps lat rb rc < <(dpsum "$lg.txt")
  local r="round=$round server=$s test=$t"
  pend "$r metric=qps value=$qps"
  pend "$r metric=sent value=$sent"
  pend "$r metric=queries value=$ok"
  pend "$r metric=lost value=$lost"
  pend "$r metric=noerror value=$noerr"
  pend "$r metric=avg_latency_us value=$(awk -v a="$lat" 'BEGIN { printf "%.0f", a * 1e6 }')"
  pend "$r metric=resp_bytes value=$rb"
  [ "$mode" = udp ] || pend "$r metric=reconnections value=$rc"
  [ "$s" = dohgate ] && metrics_row "$round" "$t" "$8"
  report_cpu "$round" "$s" "$t" "$ok" "$noerr" "$t0" "$t1" "$n0" "$n1"
}

row_udp() {  # row_udp ROUND SERVER
  local round=$1 s=$2 port=$DNSPORT
  case $s in
  dohgate) start_dohgate --dns-listen "127.0.0.1:$DNSPORT" || { fail "$round" "$s" dns-udp "did not start"; return; } ;;
  unbound | dnsdist | kresd | bind)
    start_peer "$s" || { fail "$round" "$s" dns-udp "did not start"; return; }
    [ "$s" = unbound ] && port=$SPORT ;;
  *) fail "$round" "$s" dns-udp "unknown server (LS_UDP_SERVERS)"; return ;;
  esac
  if ! wait_for 10 dns_ok "$port"; then
    fail "$round" "$s" dns-udp "no plain-DNS answer over UDP on 127.0.0.1:$port (dig www.lab.test)$(hint "$s" --dns-listen)"
  else
    dnsperf_row "$round" "$s" dns-udp udp "$port" "$UDP_CLIENTS" "$UDP_INFLIGHT" dns-udp || true
  fi
  stop_server
}

row_dot() {  # row_dot ROUND SERVER
  local round=$1 s=$2
  case $s in
  dohgate) start_dohgate --dot-listen "127.0.0.1:$DOTPORT" || { fail "$round" "$s" dot "did not start"; return; } ;;
  dnsdist) start_dnsdist_dot ;;
  unbound) start_unbound_dot ;;
  *) fail "$round" "$s" dot "unknown server (LS_DOT_SERVERS)"; return ;;
  esac
  if ! wait_for 20 dot_ok "$DOTPORT"; then
    fail "$round" "$s" dot "no DoT answer on 127.0.0.1:$DOTPORT (kdig +tls www.lab.test)$(hint "$s" --dot-listen)"
  else
    dnsperf_row "$round" "$s" dot dot "$DOTPORT" "$DOT_CLIENTS" "$DOT_INFLIGHT" dot || true
  fi
  stop_server
}

row_json() {  # row_json ROUND wire|json: dohgate's DoH with h2load
  local round=$1 form=$2 t=doh-$2 list accept lg=$OUT/logs/round$1-doh-$2 r
  local s rps ndone ok data mean t0 t1 n0 n1
  PEND=()
  case $form in
  wire) list=$WIRE_URIS; accept=application/dns-message ;;
  json) list=$JSON_URIS; accept=application/dns-json ;;
  *) fail "$round" dohgate "doh-$form" "unknown row (LS_JSON_ROWS)"; return ;;
  esac
  start_dohgate || { fail "$round" dohgate "$t" "did not start"; return; }
  if [ "$form" = json ] && ! r=$(json_check); then
    fail "$round" dohgate "$t" "no JSON answer at $JPATH?name=www.lab.test&type=A ($r)$(hint dohgate json-api)"
    stop_server; return
  fi
  local H2=(h2load -t 1 -B "https://127.0.0.1:$SPORT" -H "accept: $accept")
  "${LG[@]}" "${H2[@]}" -c 1 -m 1 -n "$NAMES" -i "$list" > "$lg.warm.txt" 2>&1 || true
  read -r s rps ndone ok data mean < <(h2sum "$lg.warm.txt")
  if [ "$ok" -lt "$NAMES" ]; then
    fail "$round" dohgate "$t" "warm-up: $ok of $NAMES requests succeeded (see $lg.warm.txt)"
    stop_server; return
  fi
  sleep 1
  # h2load sees HTTP statuses only: the NOERROR answers are counted by dohgate's /metrics
  local tr=doh m0=$OUT/logs/metrics-round$round-$t.before.txt noerr
  [ "$form" = json ] && tr=json
  curl -s --max-time 5 "http://127.0.0.1:$MPORT/metrics" > "$m0" || true
  t0=$(ticks "$SPID"); n0=$(date +%s%N)
  "${LG[@]}" "${H2[@]}" -c "$H2_CLIENTS" -m "$H2_STREAMS" -D "$SECONDS_RUN" -i "$list" > "$lg.txt" 2>&1 || true
  t1=$(ticks "$SPID"); n1=$(date +%s%N)
  read -r s rps ndone ok data mean < <(h2sum "$lg.txt")
  r="round=$round server=dohgate test=$t"
  pend "$r metric=qps value=${rps%.*}"
  pend "$r metric=queries value=$ok"
  pend "$r metric=lost value=$((ndone - ok))"
  pend "$r metric=avg_latency_us value=$mean"
  pend "$r metric=resp_bytes value=$(awk -v d="$data" -v n="$ok" 'BEGIN { printf "%.0f", n ? d / n : 0 }')"
  metrics_row "$round" "$t" "$tr"
  # NOERROR answers during the run (a few requests h2load started at its end are answered after it)
  noerr=$(( $(dg_answers "$OUT/logs/metrics-round$round-$t.txt" "$tr" NOERROR) - $(dg_answers "$m0" "$tr" NOERROR) ))
  [ "$noerr" -le "$ok" ] || noerr=$ok
  pend "$r metric=noerror value=$noerr"
  report_cpu "$round" dohgate "$t" "$ok" "$noerr" "$t0" "$t1" "$n0" "$n1" || true
  stop_server
}

run_part() {  # run_part PART ROWS...: every row once per round, order reversed in even rounds
  local part=$1 round i x order=(); shift
  local rows=("$@")
  for ((round = 1; round <= ROUNDS; round++)); do
    order=("${rows[@]}")
    if ((round % 2 == 0)); then order=(); for ((i = ${#rows[@]} - 1; i >= 0; i--)); do order+=("${rows[i]}"); done; fi
    for x in "${order[@]}"; do
      note "round $round: $part $x (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
      "row_$part" "$round" "$x"
      sleep 1
    done
  done
}

{ echo "# date: $(date -u), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?), dohgate $BIN ${DG_ARGS[*]}"
  echo "# $(lscpu | awk -F: '/Model name/{gsub(/^ +/, "", $2); print $2}'), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# servers on CPU '$SERVER_CPU', load generators on CPU '$LOADGEN_CPU'; $NAMES hot names, $SECONDS_RUN s per row;" \
    "udp: dnsperf -c $UDP_CLIENTS -q $UDP_INFLIGHT; dot: dnsperf -m dot -c $DOT_CLIENTS -q $DOT_INFLIGHT;" \
    "json: h2load -c $H2_CLIENTS -m $H2_STREAMS, JSON at $JPATH"
  for p in unbound dnsdist knot-resolver bind9 nsd dnsperf nghttp2-client libssl3; do
    dpkg-query -W -f='# ${Package} ${Version}\n' "$p" 2>/dev/null || true
  done
} | tee -a "$RES"
for part in $PARTS; do
  case $part in
  udp) run_part udp "${UDP_SERVERS[@]}" ;;
  dot) run_part dot "${DOT_SERVERS[@]}" ;;
  json) run_part json "${JSON_ROWS[@]}" ;;
  esac
done
stop_server
python3 "$B/listeners_table.py" "$RES" | tee "$OUT/table.md"
echo "results: $OUT"
if [ ${#FAILS[@]} -gt 0 ]; then
  echo "FAILED: ${#FAILS[@]} row(s) measured nothing (no figure printed for them):" >&2
  printf '  %s\n' "${FAILS[@]}" >&2
  exit 1
fi
