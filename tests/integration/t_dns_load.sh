#!/bin/bash
# t_dns_load: dnsperf (the load generator operators use) against the plain-DNS and DoT
# listeners at a modest fixed rate, over UDP, TCP and DoT, with NSD upstream: every query is
# answered (none lost, none timed out), with the rcodes the zone gives (NOERROR for the names
# that exist, NXDOMAIN for one that does not), and dohgate's own counters agree with what
# dnsperf received, transport by transport. A rate, not a speed: nothing here is timed (speed
# lives in tests/bench/listeners.sh).
. "$(dirname "$0")/lib.sh"
need_tools nsd dnsperf dig

start_nsd
M_PORT=$(free_port)
DNS_PORT=$(free_port)
DOT_PORT=$(free_port)
start_dohgate --workers 2 --dns-listen "127.0.0.1:$DNS_PORT" --dot-listen "127.0.0.1:$DOT_PORT" \
    --metrics-listen "127.0.0.1:$M_PORT"
Z=dohgate.test
printf '%s\n' "www.$Z A" "www.$Z AAAA" "mail.$Z MX" "txt.$Z TXT" "nothing.$Z A" >"$T/names"
# under valgrind (about 20 times slower) a lower rate keeps the same checks meaningful
if [ "${DG_VALGRIND:-0}" = 1 ]; then RATE=${DNS_LOAD_RATE:-100}; else RATE=${DNS_LOAD_RATE:-400}; fi
SECS=3

# run MODE PORT: dnsperf for SECS seconds at RATE q/s; its summary in $T/perf.MODE
run() {
    dnsperf -m "$1" -s 127.0.0.1 -p "$2" -d "$T/names" -c 2 -Q "$RATE" -l "$SECS" -t 5 \
        >"$T/perf.$1" 2>&1
}
# field MODE KEY: a number from dnsperf's summary ("Queries sent", "Queries completed", ...)
field() { sed -n "s/^ *$2: *\([0-9]*\).*/\1/p" "$T/perf.$1" | head -1; }
# rcode_count MODE RCODE: from "Response codes: NOERROR 5 (50.00%), NXDOMAIN 5 (50.00%)"
rcode_count() { grep 'Response codes:' "$T/perf.$1" | grep -o "$2 [0-9]*" | awk '{print $2}' | head -1; }
answers() { metric_of "dohgate_dns_answers_total{transport=\"$1\",rcode=\"$2\"}"; }

for mode in udp tcp dot; do
    port=$DNS_PORT
    tr=dns-$mode
    [ "$mode" = dot ] && port=$DOT_PORT && tr=dot
    before_ok=$(answers "$tr" NOERROR)
    before_nx=$(answers "$tr" NXDOMAIN)
    run "$mode" "$port"
    sent=$(field "$mode" 'Queries sent')
    done_=$(field "$mode" 'Queries completed')
    lost=$(field "$mode" 'Queries lost')
    assert_range $((RATE * SECS / 2)) $((RATE * SECS * 2)) "$sent" "$mode: dnsperf sent about $RATE q/s for $SECS s ($sent)"
    assert_eq "$sent" "$done_" "$mode: every query completed ($done_ of $sent)"
    assert_eq 0 "$lost" "$mode: none lost"
    ok=$(rcode_count "$mode" NOERROR)
    nx=$(rcode_count "$mode" NXDOMAIN)
    ok=${ok:-0}
    nx=${nx:-0}
    assert_eq "$done_" "$((ok + nx))" "$mode: only NOERROR and NXDOMAIN answers ($ok + $nx)"
    assert_range $((done_ / 5 - done_ / 10)) $((done_ / 5 + done_ / 10)) "$nx" \
        "$mode: NXDOMAIN for the one name in five that does not exist ($nx of $done_)"
    assert_eq "$ok" "$(($(answers "$tr" NOERROR) - before_ok))" "$mode: dohgate counted the same NOERROR answers"
    assert_eq "$nx" "$(($(answers "$tr" NXDOMAIN) - before_nx))" "$mode: dohgate counted the same NXDOMAIN answers"
done
# the cache served the load: the upstream saw each name a handful of times at most
q=$(metric_of 'dohgate_upstream_queries_total{upstream="127.0.0.1:'"$NSD_PORT"'"}')
assert_range 1 40 "${q:-0}" "the cache answered the load: $q upstream queries for 5 names"

finish
