#!/bin/bash
# Issue 20's two figures, run by hand (never by CI):
#   1. held connections: dohgate --workers HOLD_WORKERS with --idle-timeout 3600 and
#      --max-connections >= N, its DEFAULT per-client limits kept (256 connections, 100 new per
#      second per address), then `connhold hold` opens N idle TLS 1.3 + HTTP/2 connections (one GET
#      each, then idle) from HOLD_SRC_COUNT source addresses (127.1.0.1, 127.1.0.2, ...: N/count
#      each, paced below the per-address rate). Figures: setup time, connections up / failed, `ss`
#      established count, dohgate VmRSS before / with all held / after they closed, RSS per
#      connection, connhold's own RSS, and the latency of 20 DoH queries (curl, a new connection
#      each: time_total, median and max) before the load and while all are held. For each N in
#      HOLD_N (default "10000 100000": 10,000 compares with the lab's idle10000 test, which also
#      runs, HOLD_LAB_IDLE=1, as the lab runs it: `doh-bench.sh ... idle` on a dohgate with
#      run.sh's flags, since idleconns.py connects from one address).
#   2. handshakes: dohgate --workers 1 pinned to CPU SERVER_CPU (1), `connhold handshake` on
#      LOADGEN_CPU (0): HS_M (2000) connections one after another, each a full TLS 1.3 handshake +
#      one GET + close, then HS_M offering the first connection's session ticket (--resume), HS_ROUNDS
#      (3) times alternating; figure = the server's CPU µs (utime+stime from /proc/PID/stat) per
#      handshake, and the ratio resumed/full (medians over the rounds). The same for each lab peer
#      in HS_PEERS (default "unbound dnsdist kresd bind", started one at a time by the lab's
#      peers/<peer>.sh on CPU 1; a peer that is not installed or does not resume is reported so).
#   tests/bench/hold.sh [PART...]        PART: hold, handshake (default both)
# Needs the lab: NSD on 127.0.0.1:5300 and the certificates in /tmp/dohgate-lab/certs
# (../shared/lab/upstream/run.sh start; ../shared/lab/certs/make.sh), curl, ss, taskset; root
# (descriptor limits, sysctls). When the hard RLIMIT_NOFILE cannot be raised (root without
# CAP_SYS_RESOURCE, e.g. in a container), N is split over k dohgate + k connhold processes on
# ports HOLD_PORT.. (RESULT ... metric=processes); the RSS per connection subtracts every
# process's baseline. Time (measured 2026-12-04, 2 CPUs): hold 10,000 about 20 s, 100,000 about
# 2 min 45 s (set-up at ~800 connections/s), the lab's idle test 1 min; handshake about 2 min for
# dohgate and the four peers at 3 rounds on a quiet machine (twice that under load).
# Environment (defaults): DOHGATE_BIN (else a Release build in build-bench/, as run.sh),
# CONNHOLD_BIN (else built in build-bench-tools/), HOLD_N ("10000 100000"), HOLD_WORKERS (1),
# HOLD_PROCS (1, or what the descriptor limit forces), HOLD_SRC_COUNT (max(1000, N/200)),
# HOLD_CONCURRENCY (256 handshakes in flight), HOLD_BURST (1: GETs each connection sends at once
# before going idle, e.g. 20 for what a page load leaves behind; test=hold<N>b<K> when > 1),
# HOLD_FILE_KB (unset: each GET is a DoH query; K <= 60: a K KiB static file from --site-root
# instead, what a connection that fetched a page of the website keeps; test=hold<N>f<K>), HOLD_SETTLE (4 s: idle sessions give pages back after 2 s), HOLD_LAB_IDLE (1), HS_M (2000),
# HS_ROUNDS (3), HS_PEERS, HOLD_PORT (8490), PEER_PORT (8486), SERVER_CPU (1), LOADGEN_CPU (0),
# LAB (../shared/lab), LAB_CERTS (/tmp/dohgate-lab/certs), UPSTREAM (127.0.0.1:5300),
# HOLD_WORK (/tmp/dohgate-lab/hold: logs, connhold outputs).
# Output: readable lines, and RESULT lines in the lab's format:
#   RESULT server=dohgate test=hold100000 metric=rss_per_conn_kib value=…
#   RESULT server=dohgate test=handshake2000 metric=server_us_per_full value=…
# sysctls it changes (fs.nr_open, net.core.somaxconn, nf_conntrack_max, only when too low) are
# printed and restored at exit. On a 2-core machine the CPU figures of part 2 are noisy; RSS is not.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB=${LAB:-$ROOT/../shared/lab}
LAB_CERTS=${LAB_CERTS:-/tmp/dohgate-lab/certs}
UPSTREAM=${UPSTREAM:-127.0.0.1:5300}
PORT=${HOLD_PORT:-8490}; PEER_PORT=${PEER_PORT:-8486}
HOLD_N=${HOLD_N:-10000 100000}; WORKERS=${HOLD_WORKERS:-1}
CONC=${HOLD_CONCURRENCY:-256}; BURST=${HOLD_BURST:-1}; FILE_KB=${HOLD_FILE_KB:-} SETTLE=${HOLD_SETTLE:-4}; LAB_IDLE=${HOLD_LAB_IDLE:-1}
HS_M=${HS_M:-2000}; HS_ROUNDS=${HS_ROUNDS:-3}; HS_PEERS=${HS_PEERS-unbound dnsdist kresd bind}
SERVER_CPU=${SERVER_CPU:-1}; LOADGEN_CPU=${LOADGEN_CPU-0}
WORK=${HOLD_WORK:-/tmp/dohgate-lab/hold}
PARTS=${*:-hold handshake}
for f in "$LAB/bench/dohuris.py" "$LAB_CERTS/server.pem" "$LAB_CERTS/server.key" "$LAB_CERTS/ca.pem"; do
  [ -r "$f" ] || { echo "missing $f (set LAB=... / LAB_CERTS=...)" >&2; exit 2; }
done
for t in curl ss taskset awk; do command -v $t >/dev/null || { echo "$t not found" >&2; exit 2; }; done
[ "$(id -u)" -eq 0 ] || { echo "run as root: descriptor limits and sysctls" >&2; exit 2; }
mkdir -p "$WORK"
SITE_ARGS=(); PATH_ARGS=()
if [ -n "$FILE_KB" ]; then
  # connhold opens no flow-control window beyond the initial 64 KiB: the file must fit in it
  [ "$FILE_KB" -ge 1 ] && [ "$FILE_KB" -le 60 ] || { echo "HOLD_FILE_KB=$FILE_KB: 1..60" >&2; exit 2; }
  mkdir -p "$WORK/site"
  head -c $((FILE_KB * 1024)) /dev/urandom >"$WORK/site/file.bin"
  SITE_ARGS=(--site-root "$WORK/site"); PATH_ARGS=(--path /file.bin)
fi

if [ -n "${DOHGATE_BIN:-}" ]; then
  BIN=$(command -v -- "$DOHGATE_BIN") || { echo "DOHGATE_BIN=$DOHGATE_BIN: not an executable" >&2; exit 2; }
else
  cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$ROOT/build-bench" -j"$(nproc)" --target dohgate >/dev/null
  BIN=$ROOT/build-bench/dohgate
fi
if [ -n "${CONNHOLD_BIN:-}" ]; then
  CH=$(command -v -- "$CONNHOLD_BIN") || { echo "CONNHOLD_BIN=$CONNHOLD_BIN: not an executable" >&2; exit 2; }
else
  # build-bench has BUILD_TESTING=OFF (run.sh): the test tools get their own Release tree
  cmake -S "$ROOT" -B "$ROOT/build-bench-tools" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build-bench-tools" -j"$(nproc)" --target connhold >/dev/null
  CH=$ROOT/build-bench-tools/tests/connhold
fi

LPIN=(); [ -n "$LOADGEN_CPU" ] && LPIN=(taskset -c "$LOADGEN_CPU")
TCK=$(getconf CLK_TCK)
PID=
declare -a RESTORE=() ALL_PIDS=()
declare -A STOPPED=()

note() { echo "# $*" >&2; }
die() { note "$*"; exit 1; }
result() { echo "RESULT server=$1 test=$2 metric=$3 value=$4"; }
rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
sys_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $13}'; }
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
median() { sort -n | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2}'; }

stop_pid() {  # PID: SIGTERM, 10 s, SIGKILL
  local p=$1 i=0
  [ -n "$p" ] && [ -z "${STOPPED[$p]:-}" ] || return 0
  STOPPED[$p]=1   # never signalled again: the number may belong to another process later
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local r
  for p in "${ALL_PIDS[@]}"; do stop_pid "$p"; done
  for p in $HS_PEERS; do [ -x "$LAB/peers/$p.sh" ] && "$LAB/peers/$p.sh" stop >/dev/null 2>&1 || true; done
  for r in "${RESTORE[@]}"; do sysctl -qw "$r" >/dev/null && note "restored $r"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# sysctl_min KEY VALUE: raises KEY to VALUE when lower (restored at exit); prints what it found
sysctl_min() {
  local cur
  cur=$(sysctl -n "$1")
  if [ "$cur" -lt "$2" ]; then
    sysctl -qw "$1=$2" || die "cannot set $1=$2"
    RESTORE+=("$1=$cur")
    echo "limits: $1 $cur -> $2 (changed, restored at exit)"
  else
    echo "limits: $1 $cur (>= $2 needed, unchanged)"
  fi
}

# start_dohgate PORT WORKERS MAXCONN CPU ARGS...: dohgate on PORT (its pid in PID), waits for a
# DoH answer
start_dohgate() {
  local port=$1 w=$2 maxc=$3 cpu=$4 i=0 pin=(); shift 4
  [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  [ -z "$(ss -Hltn "sport = :$port")" ] || die "port $port is already in use"
  "${pin[@]}" "$BIN" --listen "127.0.0.1:$port" --cert "$LAB_CERTS/server.pem" --key "$LAB_CERTS/server.key" \
    --upstream "$UPSTREAM" --log-level warn --workers "$w" --max-connections "$maxc" "$@" \
    </dev/null >"$WORK/dohgate-$port.log" 2>&1 &
  PID=$!
  ALL_PIDS+=("$PID")
  until python3 "$LAB/bench/dohuris.py" check "https://127.0.0.1:$port/dns-query" www.lab.test A >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || { tail -5 "$WORK/dohgate-$port.log" >&2; die "dohgate exited"; }
    i=$((i + 1)); [ $i -lt 150 ] || die "dohgate did not answer on port $port within 30 s"
    sleep 0.2
  done
}

# latency20 PORT OUTFILE: 20 DoH GETs for www.lab.test (cached), each a new connection from
# 127.0.0.1 (curl, verified); one time_total in ms per line; fails on a non-200 answer
latency20() {
  local port=$1 i out; shift
  : >"$1"
  for i in $(seq 20); do
    out=$(curl -s -o /dev/null --max-time 10 --cacert "$LAB_CERTS/ca.pem" -H 'accept: application/dns-message' \
      -w '%{http_code} %{time_total}' "https://localhost:$port/dns-query?dns=AAABAAABAAAAAAAAA3d3dwNsYWIEdGVzdAAAAQAB" \
      --resolve "localhost:$port:127.0.0.1") || true
    [ "${out%% *}" = 200 ] || { note "latency query $i: '$out'"; echo "fail" >>"$1"; continue; }
    awk -v t="${out#* }" 'BEGIN{printf "%.3f\n", t*1000}' >>"$1"
  done
}
lat_summary() {  # FILE -> "median max failed"
  local f=$1
  echo "$(grep -v fail "$f" | median) $(grep -v fail "$f" | sort -n | tail -1) $(grep -c fail "$f" || true)"
}

# ---------------- part 1: held connections ----------------
sum_rss() { local p t=0; for p in "$@"; do t=$((t + $(rss "$p"))); done; echo "$t"; }
part_hold() {
  local n k maxc np need hard src_count rate t_start up setup failed rss0 rss1 rss2 est chrss closed
  local per_kib per_b wall i p last
  for n in $HOLD_N; do
    t_start=$(date +%s)
    src_count=${HOLD_SRC_COUNT:-$(( n / 200 > 1000 ? n / 200 : 1000 ))}
    echo
    echo "== 1. hold $n connections"
    # descriptors per dohgate: its connections + descriptor-reserve (1024) + listeners, upstream
    # sockets, logs: 2,000 over the connections is plenty for idle clients
    need=$((n + 1000 + 2000))
    sysctl_min fs.nr_open "$need"
    sysctl_min net.core.somaxconn 4096
    echo "limits: fs.file-max $(sysctl -n fs.file-max) (file-nr $(cut -f1 /proc/sys/fs/file-nr)), unchanged"
    if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
      echo "limits: nf_conntrack loaded, $(cat /proc/sys/net/netfilter/nf_conntrack_count) entries tracked now"
      sysctl_min net.netfilter.nf_conntrack_max $((2 * n + 10000))
    else
      echo "limits: nf_conntrack not loaded (no table to fill)"
    fi
    # RLIMIT_NOFILE: raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack
    # even as root. Then (or with HOLD_PROCS=k) the N connections are split over k dohgate
    # processes on ports PORT..PORT+k-1, each with its own connhold: the RSS per connection stays
    # comparable (every process's baseline is subtracted), a one-process figure it is not.
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then ulimit -Hn "$need" 2>/dev/null || true; fi
    hard=$(ulimit -Hn)
    [ "$hard" = unlimited ] && hard=$need
    if [ -n "${HOLD_PROCS:-}" ]; then
      k=$HOLD_PROCS
    elif [ "$hard" -ge "$need" ]; then
      k=1
    else
      k=$(( (n + hard - 3001 - 1) / (hard - 3001) ))
      echo "limits: the hard RLIMIT_NOFILE is $hard and cannot be raised (no CAP_SYS_RESOURCE?): $n connections split over $k dohgate + $k connhold processes (HOLD_PROCS)"
    fi
    ulimit -n "$hard"
    np=$(( (n + k - 1) / k ))
    maxc=$((np + 1000))
    [ $(( np + 3000 )) -le "$hard" ] || die "$np connections per process need $((np + 3000)) descriptors, the hard limit is $hard: set HOLD_PROCS higher"
    [ $(( (np + src_count - 1) / src_count )) -le 256 ] || die "HOLD_SRC_COUNT=$src_count: over 256 connections per address"
    # 50 new connections per second per address at most: half dohgate's default rate limit
    rate=$((src_count * 50))
    echo "limits: ulimit -n $(ulimit -n) for dohgate and connhold (each needs about $((np + 3000)))"
    echo "limits: net.ipv4.ip_local_port_range $(sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ') (ports are per 4-tuple: $(( (np + src_count - 1) / src_count )) per source address and server port), unchanged"
    echo "dohgate x $k: --workers $WORKERS --max-connections $maxc --idle-timeout 3600 (default per-client limits); connhold x $k: $np connections each from $src_count source addresses (127.1.0.1...), $CONC in flight, at most $rate/s"

    local pids=() chpids=() ports=()
    for ((i = 0; i < k; i++)); do
      start_dohgate $((PORT + i)) "$WORKERS" "$maxc" "" --idle-timeout 3600 "${SITE_ARGS[@]}"
      pids+=("$PID"); ports+=($((PORT + i)))
    done
    latency20 "$PORT" "$WORK/lat-before-$n.txt"
    rss0=$(sum_rss "${pids[@]}")
    echo "dohgate pid(s) ${pids[*]}, $(ls /proc/${pids[0]}/task | wc -l) threads each, VmRSS $rss0 KiB (sum)"
    for ((i = 0; i < k; i++)); do
      last=$np; [ $i -eq $((k - 1)) ] && last=$((n - np * (k - 1)))
      "${LPIN[@]}" "$CH" hold --port "${ports[i]}" -n "$last" --src 127.1.0.1 --src-count "$src_count" \
        --concurrency "$CONC" --rate "$rate" --burst "$BURST" "${PATH_ARGS[@]}" >"$WORK/connhold-$n-$i.out" 2>"$WORK/connhold-$n-$i.err" &
      chpids+=("$!"); ALL_PIDS+=("$!")
    done
    for ((i = 0; i < k; i++)); do
      until grep -qs '^up ' "$WORK/connhold-$n-$i.out"; do
        kill -0 "${chpids[i]}" 2>/dev/null || { tail -20 "$WORK/connhold-$n-$i.err" >&2; die "connhold $i exited before all were up"; }
        kill -0 "${pids[i]}" 2>/dev/null || die "dohgate on ${ports[i]} exited"
        sleep 1
      done
    done
    up=0; failed=0; setup=0
    for ((i = 0; i < k; i++)); do
      local u s f
      read -r _ u _ s _ f < <(grep '^up ' "$WORK/connhold-$n-$i.out")
      up=$((up + u)); failed=$((failed + f))
      setup=$(awk -v a="$setup" -v b="$s" 'BEGIN{print (b > a ? b : a)}')
      grep -E '^connhold:   ' "$WORK/connhold-$n-$i.err" | sed "s/^connhold: /  connhold $i failure: /" || true
    done
    echo "connhold: $up up, $failed failed, set-up $setup s ($(awk -v n="$up" -v s="$setup" 'BEGIN{printf "%.0f", (s > 0 ? n/s : 0)}') conn/s)"
    sleep "$SETTLE"
    rss1=$(sum_rss "${pids[@]}")
    est=$(ss -Htn state established "( sport >= :$PORT and sport <= :$((PORT + k - 1)) )" | wc -l)
    chrss=$(sum_rss "${chpids[@]}")
    latency20 "$PORT" "$WORK/lat-held-$n.txt"
    closed=0
    for ((i = 0; i < k; i++)); do
      kill -TERM "${chpids[i]}"
      wait "${chpids[i]}" || true
      closed=$((closed + $(awk '/^closed_by_server/{print $2}' "$WORK/connhold-$n-$i.out")))
    done
    sleep 2
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "dohgate $p exited"; done
    rss2=$(sum_rss "${pids[@]}")
    for p in "${pids[@]}"; do stop_pid "$p"; done
    PID=
    wall=$(( $(date +%s) - t_start ))
    per_kib=$(awk -v a="$rss0" -v b="$rss1" -v e="$est" 'BEGIN{printf "%.2f", (e > 0 ? (b-a)/e : -1)}')
    per_b=$(awk -v a="$rss0" -v b="$rss1" -v e="$est" 'BEGIN{printf "%.0f", (e > 0 ? (b-a)*1024/e : -1)}')
    local lb_med lb_max lb_fail lh_med lh_max lh_fail
    read -r lb_med lb_max lb_fail < <(lat_summary "$WORK/lat-before-$n.txt")
    read -r lh_med lh_max lh_fail < <(lat_summary "$WORK/lat-held-$n.txt")
    echo "ss: $est established with all held; connhold VmRSS $chrss KiB ($(awk -v r="$chrss" -v n="$up" 'BEGIN{printf "%.1f", (n > 0 ? r/n : 0)}') KiB per connection)"
    echo "dohgate VmRSS: $rss0 KiB before, $rss1 KiB held ($per_kib KiB = $per_b bytes per connection), $rss2 KiB 2 s after the clients left"
    echo "20 queries to port $PORT ($np held there; new connection each, ms): before median $lb_med max $lb_max failed $lb_fail; held median $lh_med max $lh_max failed $lh_fail"
    echo "closed by the server while held: $closed; part took $wall s"
    local t=hold$n s=dohgate
    if [ "$BURST" -gt 1 ]; then t=hold${n}b$BURST; fi
    if [ -n "$FILE_KB" ]; then t=${t}f$FILE_KB; fi
    result $s $t conns_up "$up"; result $s $t conns_failed "$failed"; result $s $t conns_held "$est"
    result $s $t setup_s "$setup"; result $s $t workers "$WORKERS"; result $s $t processes "$k"
    result $s $t src_addresses "$src_count"
    result $s $t rss_before_kib "$rss0"; result $s $t rss_held_kib "$rss1"; result $s $t rss_after_close_kib "$rss2"
    result $s $t rss_per_conn_kib "$per_kib"; result $s $t rss_per_conn_bytes "$per_b"
    result $s $t client_rss_kib "$chrss"; result $s $t closed_by_server "$closed"
    result $s $t lat_before_median_ms "$lb_med"; result $s $t lat_before_max_ms "$lb_max"
    result $s $t lat_held_median_ms "$lh_med"; result $s $t lat_held_max_ms "$lh_max"
    result $s $t lat_failed "$((lb_fail + lh_fail))"; result $s $t wall_s "$wall"
    [ "$up" -eq "$n" ] || note "hold$n: only $up of $n connections came up"
  done
  if [ "$LAB_IDLE" = 1 ]; then
    echo
    echo "== 1b. the lab's idle test (idleconns.py, one source address) on dohgate with run.sh's flags"
    start_dohgate "$PORT" 1 12000 "$SERVER_CPU" --max-connections-per-client 0 --connection-rate-limit 0
    LABEL=dohgate IDLE_CONNS=10000 LOADGEN_CPU="$LOADGEN_CPU" "$LAB/bench/doh-bench.sh" \
      "https://127.0.0.1:$PORT/dns-query" "$PID" idle 2>&1 | sed 's/^/  /;s/^  RESULT/RESULT/'
    stop_pid "$PID"; PID=
  fi
}

# ---------------- part 2: handshakes ----------------
# hs_run LABEL PID PORT MODE ROUND: one connhold handshake run on the server PID; prints
# "us_per_handshake resumed failed connhold_status system_share_pct"
hs_run() {
  local label=$1 pid=$2 port=$3 mode=$4 round=$5 t0 t1 s0 s1 out args=() rc=0
  [ "$mode" = resume ] && args=(--resume)
  out=$WORK/hs-$label-$mode-$round
  t0=$(ticks "$pid"); s0=$(sys_ticks "$pid")
  "${LPIN[@]}" "$CH" handshake --port "$port" -n "$HS_M" --src 127.2.0.1 --src-count 1000 "${args[@]}" \
    >"$out.out" 2>"$out.err" || rc=$?
  t1=$(ticks "$pid"); s1=$(sys_ticks "$pid")
  local m r w f
  read -r _ m _ r _ w _ f < <(grep '^handshakes' "$out.out" || echo "handshakes 0 resumed 0 wall_s 0 failed $HS_M")
  [ "$rc" -eq 0 ] || note "$label $mode round $round: connhold failed ($(tail -2 "$out.err" | tr '\n' ' '))"
  local us sp
  sp=$(awk -v d=$((t1 - t0)) -v s=$((s1 - s0)) 'BEGIN{printf "%.0f", (d > 0 ? s*100/d : -1)}')
  us=$(awk -v d=$((t1 - t0)) -v h="$TCK" -v n="$m" -v f="$f" 'BEGIN{printf "%.1f", (n - f > 0 ? d/h*1e6/(n - f) : -1)}')
  echo "  $label $mode round $round: $m handshakes, $f failed, $r resumed, ${w} s, server $us µs/handshake ($sp% system)" >&2
  result "$label" "handshake$HS_M" "server_us_per_${mode}_r$round" "$us" >&2
  echo "$us $r $f $rc $sp"
}

# hs_server LABEL PID PORT: HS_ROUNDS rounds of full + resume; RESULT lines of the medians
hs_server() {
  local label=$1 pid=$2 port=$3 k full=() res=() spf=() spr=() resumed_min=$HS_M ok=1 us r f rc sp
  for ((k = 1; k <= HS_ROUNDS; k++)); do
    # alternate the order so drift on the shared machine does not favour one mode
    local order="full resume"; [ $((k % 2)) -eq 0 ] && order="resume full"
    for mode in $order; do
      read -r us r f rc sp < <(hs_run "$label" "$pid" "$port" "$mode" "$k")
      [ "$rc" -eq 0 ] || ok=0
      if [ "$mode" = full ]; then
        full+=("$us"); spf+=("$sp")
      else
        res+=("$us"); spr+=("$sp")
        [ "$r" -lt "$resumed_min" ] && resumed_min=$r
      fi
    done
  done
  local mf mr ratio msf msr
  mf=$(printf '%s\n' "${full[@]}" | median); mr=$(printf '%s\n' "${res[@]}" | median)
  msf=$(printf '%s\n' "${spf[@]}" | median); msr=$(printf '%s\n' "${spr[@]}" | median)
  ratio=$(awk -v a="$mr" -v b="$mf" 'BEGIN{printf "%.3f", (b > 0 ? a/b : -1)}')
  echo "$label: full $mf µs/handshake ($msf% system), resumed $mr µs/handshake ($msr% system; fewest resumed in a round: $resumed_min of $((HS_M - 1))), ratio $ratio$([ $ok = 1 ] || echo ', SOME RUNS FAILED')"
  result "$label" "handshake$HS_M" server_us_per_full "$mf"
  result "$label" "handshake$HS_M" server_us_per_resumed "$mr"
  result "$label" "handshake$HS_M" system_pct_full "$msf"
  result "$label" "handshake$HS_M" system_pct_resumed "$msr"
  result "$label" "handshake$HS_M" resumed_min "$resumed_min"
  result "$label" "handshake$HS_M" ratio_resumed_full "$ratio"
  result "$label" "handshake$HS_M" all_ok "$ok"
}

part_handshake() {
  echo
  echo "== 2. handshakes: $HS_M full and $HS_M resumed (one ticket), one at a time, $HS_ROUNDS rounds; server on CPU $SERVER_CPU, client on CPU ${LOADGEN_CPU:-any}"
  ulimit -n 65536 2>/dev/null || true
  start_dohgate "$PORT" 1 10000 "$SERVER_CPU"
  hs_server dohgate "$PID" "$PORT"
  stop_pid "$PID"; PID=
  local p pid
  for p in $HS_PEERS; do
    if ! PEER_CPUS=$SERVER_CPU "$LAB/peers/$p.sh" start "$PEER_PORT" >"$WORK/peer-$p.log" 2>&1 </dev/null; then
      echo "$p: not measured (start failed: $(tail -1 "$WORK/peer-$p.log"))"
      continue
    fi
    pid=$("$LAB/peers/$p.sh" pid)
    hs_server "$p" "$pid" "$PEER_PORT"
    "$LAB/peers/$p.sh" stop >/dev/null 2>&1 || true
  done
}

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo); dohgate $BIN ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); connhold $CH"
for part in $PARTS; do
  case "$part" in
  hold) part_hold ;;
  handshake) part_handshake ;;
  *) die "unknown part '$part' (hold, handshake)" ;;
  esac
done
