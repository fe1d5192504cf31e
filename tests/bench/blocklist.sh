#!/bin/bash
# Blocklists (issue 17), run by hand, never by CI: what a large list costs dohgate, beside Unbound
# holding the same list as `local-zone: "NAME." always_nxdomain` lines. Every server is started
# fresh for every row, pinned to SERVER_CPU with one worker/thread; dnsperf runs on LOADGEN_CPU.
#   (a) load: the time from exec to the first answer (with the list minus without it; wall clock,
#       and the server's CPU time until then, which a busy machine does not inflate), the line
#       dohgate logs about its policy at start, `tests/tools/nameset_bench N FILE` (the set alone:
#       parse and load time, bytes per name, ns per lookup) on the same file when the build has it; RSS (VmRSS after start and after the run) with and without the list,
#       and the bytes per listed domain that makes (after the run), the peak RSS (VmHWM: the file's
#       buffer while loading)
#   (b) per-query cost: the server's CPU (utime+stime, /proc/PID/stat) per answered query under
#       `dnsperf -c BL_CLIENTS -q BL_INFLIGHT -l BL_SECONDS` over plain DNS (UDP), as
#       tests/bench/listeners.sh measures it: "hot" = BL_HOT cached names no list holds (each
#       asked once before the measured run), "blocked" = BL_HOT names below listed domains
#       (answered by the policy step: dohgate with --block-answer nxdomain, so both servers
#       give NXDOMAIN); the list's lookup cost is hot(list) - hot(none)
#   (c) the same rows for Unbound (local-zone always_nxdomain, one thread, forwarding to the
#       same upstream)
# The upstream is a private NSD (zone bench.example, BL_HOT names) on a free port: nothing of the
# lab is needed. The list: BL_DOMAINS names in hosts format ("0.0.0.0 NAME"), generated once
# (seeded, so the same every run) under $BL_RUN.
#   tests/bench/blocklist.sh [ROUNDS]     default 1 round; rows alternate order in even rounds
# Environment (defaults): DOHGATE_BIN (build-bench/dohgate, built Release if missing), BL_DOMAINS
#   (1000000), BL_HOT (1000), BL_SECONDS (10), BL_CLIENTS (4), BL_INFLIGHT (100), BL_SERVERS
#   ("dohgate unbound"), SERVER_CPU (1), LOADGEN_CPU (0), BL_PORT_BASE (8490: NSD +0, server
#   plain DNS +1, dohgate DoH +2, metrics +3), BL_RUN (/tmp/dohgate-blbench), OUT
#   ($BL_RUN/results/blocklist-<UTC time>: results.txt, table.md, logs/).
# Packages: nsd, unbound, dnsperf, bind9-dnsutils (dig), python3, util-linux (taskset).
# Do not take final figures on a busy machine (2 cores: run nothing else meanwhile).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ROUNDS=${1:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [ROUNDS]" >&2; exit 2; }
N=${BL_DOMAINS:-1000000}; HOT=${BL_HOT:-1000}
SECS=${BL_SECONDS:-10}; CLIENTS=${BL_CLIENTS:-4}; INFLIGHT=${BL_INFLIGHT:-100}
read -r -a SERVERS <<< "${BL_SERVERS:-dohgate unbound}"
SERVER_CPU=${SERVER_CPU:-1}; LOADGEN_CPU=${LOADGEN_CPU-0}
PB=${BL_PORT_BASE:-8490}
NSDPORT=$PB; DNSPORT=$((PB + 1)); DOHPORT=$((PB + 2)); MPORT=$((PB + 3))
BL_RUN=${BL_RUN:-/tmp/dohgate-blbench}
OUT=${OUT:-$BL_RUN/results/blocklist-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs" "$BL_RUN"; OUT=$(cd "$OUT" && pwd)
RES=$OUT/results.txt; : > "$RES"
TCK=$(getconf CLK_TCK)
LG=(); [ -n "$LOADGEN_CPU" ] && LG=(taskset -c "$LOADGEN_CPU")
SPIN=(); [ -n "$SERVER_CPU" ] && SPIN=(taskset -c "$SERVER_CPU")

for c in nsd unbound dnsperf dig python3 taskset ss; do
  command -v "$c" >/dev/null || { echo "$c not found (apt-get install nsd unbound dnsperf bind9-dnsutils)" >&2; exit 2; }
done
if [ -n "${DOHGATE_BIN:-}" ]; then
  BIN=$(command -v -- "$DOHGATE_BIN") || { echo "DOHGATE_BIN=$DOHGATE_BIN: not an executable" >&2; exit 2; }
  [[ $BIN == /* ]] || BIN=$PWD/$BIN
else
  BIN=$ROOT/build-bench/dohgate
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j2 --target dohgate >/dev/null
fi
# the list-loading microbenchmark of the "sets" work, when this build has it
NSB=
for x in "$(dirname "$BIN")/tests/nameset_bench" "$ROOT/build/tests/nameset_bench"; do
  [ -x "$x" ] && { NSB=$x; break; }
done
port_free() { [ -z "$(ss -Hltun "sport = :$1" 2>/dev/null)" ]; }
for p in "$NSDPORT" "$DNSPORT" "$DOHPORT" "$MPORT"; do
  port_free "$p" || { echo "port $p is in use (set BL_PORT_BASE)" >&2; exit 2; }
done

note() { echo "# $*" | tee -a "$RES" >&2; }
result() { echo "RESULT $*" | tee -a "$RES"; }
FAILS=()
fail() { echo "FAIL $*" | tee -a "$RES" >&2; FAILS+=("$*"); }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }  # peak RSS (the load's buffers)
now_ns() { date +%s%N; }

# ---- data: the list (hosts format), the unbound form of it, the hot and blocked query sets
LIST=$BL_RUN/list-$N.hosts
UBLIST=$BL_RUN/list-$N.unbound.conf
if [ ! -s "$LIST" ] || [ ! -s "$UBLIST" ]; then
  note "generating $N domains into $LIST"
  python3 - "$N" "$LIST" "$UBLIST" <<'PY'
import random, sys
n, out, ub = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = random.Random(17)
tlds = ["com", "net", "org", "info", "io", "de", "ru", "cn", "xyz", "top", "co.uk", "com.br"]
words = ["ads", "track", "stat", "pixel", "cdn", "metric", "click", "banner", "promo", "tag",
         "beacon", "log", "sync", "adserv", "analytics", "counter", "telemetry", "affiliate"]
alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
seen = set()
with open(out, "w") as f, open(ub, "w") as u:
    f.write("# generated by tests/bench/blocklist.sh: %d domains, hosts format\n" % n)
    f.write("127.0.0.1 localhost\n0.0.0.0 0.0.0.0\n")
    i = 0
    while i < n:
        base = "".join(r.choice(alpha) for _ in range(r.randint(5, 14)))
        name = "%s.%s" % (base, r.choice(tlds))
        d = r.random()
        if d < 0.45:  # a host below a listed-looking domain, as real lists hold them
            name = "%s%d.%s" % (r.choice(words), r.randint(0, 99), name)
        if d < 0.15:
            name = "%s.%s" % ("".join(r.choice(alpha) for _ in range(r.randint(3, 8))), name)
        if name in seen:
            continue
        seen.add(name)
        f.write("0.0.0.0 %s\n" % name)
        u.write('local-zone: "%s." always_nxdomain\n' % name)
        i += 1
PY
fi
HOTQ=$BL_RUN/hot-$HOT.txt
[ -s "$HOTQ" ] || for ((i = 0; i < HOT; i++)); do echo "n$i.bench.example A"; done > "$HOTQ"
BLKQ=$BL_RUN/blocked-$N-$HOT.txt
[ -s "$BLKQ" ] || awk -v h="$HOT" 'NR > 3 && NR % 7 == 0 && c < h { print "x" c ".sub." $2 " A"; c++ }' "$LIST" > "$BLKQ"

# ---- the upstream: NSD for bench.example with the hot names
NSDD=$BL_RUN/nsd
mkdir -p "$NSDD"
{ echo '$ORIGIN bench.example.'; echo '$TTL 3600'
  echo '@ IN SOA ns.bench.example. h.bench.example. 1 3600 600 86400 300'
  echo '@ IN NS ns.bench.example.'; echo 'ns IN A 127.0.0.1'; echo 'www IN A 192.0.2.10'
  for ((i = 0; i < HOT; i++)); do echo "n$i IN A 192.0.2.$((i % 250 + 1))"; done
} > "$NSDD/bench.zone"
cat > "$NSDD/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1@$NSDPORT
    port: $NSDPORT
    server-count: 1
    zonesdir: "$NSDD"
    database: ""
    pidfile: "$NSDD/nsd.pid"
    username: ""
    chroot: ""
    zonelistfile: "$NSDD/zone.list"
    xfrdfile: "$NSDD/xfrd.state"
    xfrdir: "$NSDD"
    logfile: "$NSDD/nsd.log"
    verbosity: 0
    rrl-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "bench.example"
    zonefile: "$NSDD/bench.zone"
EOF
NSD_PID=
SPID=
stop_pid() {  # stop_pid PID
  local i=0
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  kill -0 "$1" 2>/dev/null && kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() { stop_pid "$SPID"; stop_pid "$NSD_PID"; }
trap cleanup EXIT
nsd -d -c "$NSDD/nsd.conf" </dev/null >"$NSDD/nsd.out" 2>&1 &
NSD_PID=$!
for ((i = 0; i < 100; i++)); do
  dig +short +time=1 +tries=1 @127.0.0.1 -p "$NSDPORT" www.bench.example A 2>/dev/null | grep -q 192.0.2.10 && break
  sleep 0.1
done
[ $i -lt 100 ] || { cat "$NSDD/nsd.out"; echo "NSD did not start on $NSDPORT" >&2; exit 1; }

# ---- servers
# dns_ok: the server under test answers a hot name over UDP
dns_ok() { dig +short +time=1 +tries=1 @127.0.0.1 -p "$DNSPORT" www.bench.example A 2>/dev/null | grep -q '^192\.0\.2\.10$'; }
# wait_ready T0: until dns_ok (60 s at most); prints the milliseconds since T0 (ns)
wait_ready() {
  local i
  for ((i = 0; i < 6000; i++)); do
    kill -0 "$SPID" 2>/dev/null || return 1
    dns_ok && { echo $(( ($(now_ns) - $1) / 1000000 )); return 0; }
    sleep 0.01
  done
  return 1
}
start_server() {  # start_server SERVER LIST(none|list): sets SPID, SLOG, READY_MS
  local s=$1 l=$2 d=$BL_RUN/$1-$2 t0
  rm -rf "$d"; mkdir -p "$d"
  SLOG=$d/out.log
  case $s in
  dohgate)
    local args=(--listen "127.0.0.1:$DOHPORT" --dns-listen "127.0.0.1:$DNSPORT" --upstream "127.0.0.1:$NSDPORT"
      --workers 1 --log-level info --metrics-listen "127.0.0.1:$MPORT" --block-answer nxdomain)
    [ "$l" = list ] && args+=(--blocklist "bench=$LIST")
    echo "${SPIN[*]} $BIN ${args[*]}" > "$d/cmdline"
    t0=$(now_ns)
    "${SPIN[@]}" "$BIN" "${args[@]}" </dev/null >"$SLOG" 2>&1 &
    SPID=$! ;;
  unbound)
    cat > "$d/unbound.conf" <<EOF
server:
    interface: 127.0.0.1@$DNSPORT
    port: $DNSPORT
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$d"
    pidfile: "$d/unbound.pid"
    logfile: "$d/unbound.log"
    use-syslog: no
    verbosity: 0
    do-not-query-localhost: no
    module-config: "iterator"
EOF
    [ "$l" = list ] && echo "    include: \"$UBLIST\"" >> "$d/unbound.conf"
    printf 'remote-control:\n    control-enable: no\nforward-zone:\n    name: "."\n    forward-addr: 127.0.0.1@%s\n' \
      "$NSDPORT" >> "$d/unbound.conf"
    t0=$(now_ns)
    "${SPIN[@]}" unbound -d -c "$d/unbound.conf" </dev/null >"$SLOG" 2>&1 &
    SPID=$! ;;
  *) echo "unknown server $s (BL_SERVERS)" >&2; exit 2 ;;
  esac
  READY_MS=$(wait_ready "$t0") || { fail "server=$s list=$l reason=did not answer within 60 s"; tail -5 "$SLOG" >&2; stop_pid "$SPID"; SPID=; return 1; }
}

# dnsperf: "sent completed lost noerror nxdomain qps" from its statistics
dpsum() {
  awk '/Queries sent:/ { s = $3 } /Queries completed:/ { c = $3 } /Queries lost:/ { l = $3 }
    /Response codes:/ { for (i = 3; i < NF; i++) { if ($i == "NOERROR") n = $(i + 1); if ($i == "NXDOMAIN") x = $(i + 1) } }
    /Queries per second:/ { q = $4 }
    END { printf "%d %d %d %d %d %.0f\n", s, c, l, n, x, q }' "$1"
}

# row ROUND SERVER LIST: start, load figures, then the query sets
row() {
  local round=$1 s=$2 l=$3 r="round=$1 server=$2 list=$3" set data want t0 t1 n0 n1 lg
  local sent ok lost noerr nx qps good
  start_server "$s" "$l" || return 0
  result "$r metric=ready_ms value=$READY_MS"
  # CPU time spent until then: the load's own cost, whatever else the machine runs
  result "$r metric=ready_cpu_ms value=$(( $(ticks "$SPID") * 1000 / TCK ))"
  result "$r metric=rss_start_kb value=$(rss_kb "$SPID")"
  if [ "$s" = dohgate ]; then
    # the policy's own line (what it loaded, and the time when it says it)
    grep -iE 'blocked|polic' "$SLOG" | head -3 | sed "s/^/# $s $l log: /" | tee -a "$RES" >&2 || true
  fi
  for set in hot blocked; do
    [ "$set" = blocked ] && [ "$l" = none ] && continue
    if [ "$set" = hot ]; then data=$HOTQ; want=NOERROR; else data=$BLKQ; want=NXDOMAIN; fi
    lg=$OUT/logs/round$round-$s-$l-$set
    "${LG[@]}" dnsperf -m udp -s 127.0.0.1 -p "$DNSPORT" -d "$data" -n 1 -c 1 -q 20 -t 2 > "$lg.warm.txt" 2>&1 || true
    sleep 0.5
    t0=$(ticks "$SPID"); n0=$(now_ns)
    "${LG[@]}" dnsperf -m udp -s 127.0.0.1 -p "$DNSPORT" -d "$data" -c "$CLIENTS" -q "$INFLIGHT" -l "$SECS" > "$lg.txt" 2>&1 || true
    t1=$(ticks "$SPID"); n1=$(now_ns)
    read -r sent ok lost noerr nx qps < <(dpsum "$lg.txt")
    if [ "$want" = NOERROR ]; then good=$noerr; else good=$nx; fi
    if [ "$ok" -le 0 ] || [ $((good * 100)) -lt $((ok * 99)) ]; then
      fail "$r set=$set reason=$good of $ok answers $want (see $lg.txt)"; continue
    fi
    result "$r set=$set metric=sent value=$sent"
    result "$r set=$set metric=qps value=$qps"
    result "$r set=$set metric=queries value=$ok"
    result "$r set=$set metric=lost value=$lost"
    result "$r set=$set metric=server_cpu_pct value=$(awk -v d=$((t1 - t0)) -v w=$((n1 - n0)) -v h="$TCK" 'BEGIN { printf "%.0f", d / h / (w / 1e9) * 100 }')"
    result "$r set=$set metric=us_per_query value=$(awk -v d=$((t1 - t0)) -v n="$ok" -v h="$TCK" 'BEGIN { printf "%.3f", d / h * 1e6 / n }')"
  done
  result "$r metric=rss_end_kb value=$(rss_kb "$SPID")"
  result "$r metric=rss_peak_kb value=$(hwm_kb "$SPID")"
  stop_pid "$SPID"; SPID=
}

{ echo "# date: $(date -u), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?), dohgate $BIN"
  echo "# $(lscpu | awk -F: '/Model name/{gsub(/^ +/, "", $2); print $2}'), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# $N listed domains ($(du -m "$LIST" | cut -f1) MB hosts file), $HOT hot names, dnsperf -c $CLIENTS -q $INFLIGHT -l $SECS;" \
    "servers on CPU '$SERVER_CPU', dnsperf on CPU '$LOADGEN_CPU'"
  for p in unbound nsd dnsperf; do dpkg-query -W -f='# ${Package} ${Version}\n' "$p" 2>/dev/null || true; done
} | tee -a "$RES"

if [ -n "$NSB" ]; then
  note "nameset_bench ($NSB) on the list:"
  if "${SPIN[@]}" "$NSB" "$N" "$LIST" > "$OUT/logs/nameset_bench.txt" 2>&1; then
    while read -r k v; do
      [[ $v =~ ^[0-9.]+$ ]] && result "round=1 server=nameset_bench list=list metric=$k value=$v"
    done < "$OUT/logs/nameset_bench.txt"
  else
    fail "server=nameset_bench list=list reason=exit status $? (see $OUT/logs/nameset_bench.txt)"
  fi
else
  note "no tests/tools/nameset_bench in this build: load time from the servers only"
fi

ROWS=()
for s in "${SERVERS[@]}"; do ROWS+=("$s none" "$s list"); done
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${ROWS[@]}")
  if ((round % 2 == 0)); then order=(); for ((i = ${#ROWS[@]} - 1; i >= 0; i--)); do order+=("${ROWS[i]}"); done; fi
  for x in "${order[@]}"; do
    read -r s l <<< "$x"
    note "round $round: $s, list $l (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
    row "$round" "$s" "$l"
    sleep 1
  done
done

python3 - "$RES" "$N" <<'PY' | tee "$OUT/table.md"
import re, statistics, sys
from collections import defaultdict
res, n = sys.argv[1], int(sys.argv[2])
R = re.compile(r"^RESULT round=(\d+) server=(\S+) list=(\S+)(?: set=(\S+))? metric=(\S+) value=(\S+)")
v = defaultdict(list)
fails = []
for line in open(res):
    m = R.match(line)
    if m:
        _, s, l, st, met, val = m.groups()
        v[(s, l, st or "", met)].append(float(val))
    elif line.startswith("FAIL "):
        fails.append(line[5:].strip())
med = lambda k: statistics.median(v[k]) if v.get(k) else None
def f(x, nd=2):
    return "–" if x is None else f"{x:,.{nd}f}"
servers = sorted({k[0] for k in v} - {"nameset_bench"}, key=lambda s: (s != "dohgate", s))
print("### Per query: server CPU µs per answered query (UDP, medians over rounds)\n")
print("| server | list | queries | µs/query | queries/s | server CPU % | lost | per round |")
print("|---|---|---|---:|---:|---:|---:|---|")
for s in servers:
    for l in ("none", "list"):
        for st in ("hot", "blocked"):
            k = (s, l, st, "us_per_query")
            if k not in v:
                continue
            print(f"| {s} | {l} | {st} | {f(med(k), 3)} | {f(med((s, l, st, 'qps')), 0)} "
                  f"| {f(med((s, l, st, 'server_cpu_pct')), 0)} | {f(sum(v[(s, l, st, 'lost')]), 0)} "
                  f"| {' / '.join(f(x, 3) for x in v[k])} |")
print()
print(f"### Load and memory ({n:,} domains)\n")
print("| server | ready ms, no list | ready ms, list | load ms (difference) | load CPU ms (difference) | RSS MB, no list | RSS MB, list | peak RSS MB, list | bytes per domain | list lookup µs (hot: list − none) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in servers:
    r0, r1 = med((s, "none", "", "ready_ms")), med((s, "list", "", "ready_ms"))
    m0, m1 = med((s, "none", "", "rss_end_kb")), med((s, "list", "", "rss_end_kb"))
    u0, u1 = med((s, "none", "hot", "us_per_query")), med((s, "list", "hot", "us_per_query"))
    load = None if r0 is None or r1 is None else r1 - r0
    c0, c1 = med((s, "none", "", "ready_cpu_ms")), med((s, "list", "", "ready_cpu_ms"))
    lcpu = None if c0 is None or c1 is None else c1 - c0
    bpd = None if m0 is None or m1 is None else (m1 - m0) * 1024 / n
    look = None if u0 is None or u1 is None else u1 - u0
    print(f"| {s} | {f(r0, 0)} | {f(r1, 0)} | {f(load, 0)} | {f(lcpu, 0)} | {f(m0 and m0 / 1024, 1)} | {f(m1 and m1 / 1024, 1)} "
          f"| {f(med((s, 'list', '', 'rss_peak_kb')) and med((s, 'list', '', 'rss_peak_kb')) / 1024, 1)} "
          f"| {f(bpd, 1)} | {f(look, 3)} |")
print()
nb = lambda k: med(("nameset_bench", "list", "", k))
if nb("load_ms") is not None:
    print(f"tests/tools/nameset_bench on the same file (the set alone, pinned like the servers): "
          f"{f(nb('names'), 0)} names, parse {f(nb('parse_ms'), 0)} ms, parse + load {f(nb('load_ms'), 0)} ms, "
          f"{f(nb('bytes_per_name'), 1)} bytes/name in the set ({f(nb('rss_bytes_per_name'), 1)} RSS), "
          f"lookup {f(nb('hit_ns'), 1)} ns (listed subdomain) / {f(nb('miss_ns'), 1)} ns (not listed)\n")
print("Targets (issue 17, dohgate): load < 2000 ms, < 64 bytes per domain, lookup < 0.2 µs per query.")
if fails:
    print("\nFailed rows (no figure): " + "; ".join(fails))
PY
echo "results: $OUT"
if [ ${#FAILS[@]} -gt 0 ]; then
  echo "FAILED: ${#FAILS[@]} row(s) measured nothing" >&2
  exit 1
fi
