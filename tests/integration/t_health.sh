#!/bin/bash
# t_health: upstream health. Five upstreams: one dead (nothing listens), one answering garbage,
# one answering with wrong IDs, one slow (200 ms), one good. Every query is answered; the dead,
# garbage and wrong-ID ones are marked down after three failed tries and then left alone but
# for probes; the good one carries the load, the slow one little; /metrics shows who is up.
# When the dead one comes back, a probe finds it and it is used again.
. "$(dirname "$0")/lib.sh"
need_tools curl dig python3

# stub NAME MODE: a stub upstream whose every answer behaves as MODE ("" = normal)
stub() {
    local port
    port=$(free_port)
    python3 "$STUB_PY" "$port" "$T/$1.log" 127.0.0.1 $2 >"$T/$1.out" 2>&1 </dev/null &
    track $!
    eval "${1}_PID=$!"
    eval "${1}_PORT=$port"
    : >"$T/$1.log"
}
stub GOOD ""
stub SLOW slow-200
stub GARBAGE garbage
stub WRONGID wrongid
DEAD_PORT=$(free_port)
for i in $(seq 1 50); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$GOOD_PORT" "ready.$STUBZONE" A 2>/dev/null | grep -q 192.0.2.1 && break
    sleep 0.1
done
: >"$T/GOOD.log"
M_PORT=$(free_port)
DG_READY_PATH=/ start_dohgate --workers 1 --metrics-listen "127.0.0.1:$M_PORT" --cache-size 0 \
    --upstream-timeout 300 --query-timeout 4000 \
    --upstream "127.0.0.1:$DEAD_PORT" --upstream "127.0.0.1:$GARBAGE_PORT" \
    --upstream "127.0.0.1:$WRONGID_PORT" --upstream "127.0.0.1:$SLOW_PORT" --upstream "127.0.0.1:$GOOD_PORT"

ok=0
t0=$(now_ms)
for i in $(seq 1 40); do
    q=$(dnsmsg query "q$i.$STUBZONE" A --b64)
    curl -s --http2 --cacert "$CERTS/ca.pem" -o "$T/a.bin" "$(dohgate_url)?dns=$q"
    dnsmsg show "$T/a.bin" 2>/dev/null | grep -q 'rcode=NOERROR' && ok=$((ok + 1))
done
dt=$(($(now_ms) - t0))
echo "# 40 queries in $dt ms"
assert_eq 40 "$ok" "every one of 40 queries is answered NOERROR"
n() { grep -c "q[0-9]*\.$STUBZONE" "$T/$1.log"; }
echo "# tries: good $(n GOOD), slow $(n SLOW), garbage $(n GARBAGE), wrongid $(n WRONGID)"
assert_range 30 40 "$(n GOOD)" "the good upstream carried the load ($(n GOOD) of 40)"
assert_range 0 10 "$(n SLOW)" "the slow one got little ($(n SLOW))"
assert_range 1 6 "$(n GARBAGE)" "the garbage one: tried, then probes only ($(n GARBAGE))"
assert_range 1 6 "$(n WRONGID)" "the wrong-ID one: tried, then probes only ($(n WRONGID))"
assert_file_match "$DG_LOG" "upstream 127.0.0.1:$DEAD_PORT: 3 failed tries in a row, not used for 1 s" "the dead one is marked down (log)"
assert_file_match "$DG_LOG" "upstream 127.0.0.1:$GARBAGE_PORT: [0-9]+ failed tries in a row" "the garbage one is marked down (log)"

metric() { curl -s "http://127.0.0.1:$M_PORT/metrics" | sed -n "s/^$1{upstream=\"127.0.0.1:$2\"} //p"; }
assert_eq 0 "$(metric dohgate_upstream_up "$DEAD_PORT")" "metrics: the dead one is down"
assert_eq 0 "$(metric dohgate_upstream_up "$WRONGID_PORT")" "metrics: the wrong-ID one is down"
assert_eq 1 "$(metric dohgate_upstream_up "$GOOD_PORT")" "metrics: the good one is up"
assert_range 1 20 "$(metric dohgate_upstream_marked_down_total "$GARBAGE_PORT")" "metrics: marked_down_total counts"
srtt_slow=$(metric dohgate_upstream_srtt_seconds "$SLOW_PORT")
srtt_good=$(metric dohgate_upstream_srtt_seconds "$GOOD_PORT")
assert_eq 1 "$(awk -v s="$srtt_slow" -v g="$srtt_good" 'BEGIN { print (s > 0.15 && g < 0.05) ? 1 : 0 }')" \
    "metrics: SRTT slow ${srtt_slow}s vs good ${srtt_good}s"

# ---- the dead one comes back: a probe finds it
python3 "$STUB_PY" "$DEAD_PORT" "$T/DEAD.log" >"$T/DEAD.out" 2>&1 </dev/null &
track $!
back=0
for i in $(seq 1 60); do
    q=$(dnsmsg query "r$i.$STUBZONE" A --b64)
    curl -s --http2 --cacert "$CERTS/ca.pem" -o /dev/null "$(dohgate_url)?dns=$q"
    if grep -q "upstream 127.0.0.1:$DEAD_PORT answers again" "$DG_LOG"; then back=1; break; fi
    sleep 0.5
done
assert_eq 1 "$back" "the recovered upstream is probed and back in use (log)"
assert_eq 1 "$(metric dohgate_upstream_up "$DEAD_PORT")" "metrics: it is up again"

finish
