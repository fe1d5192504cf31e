#!/bin/bash
# t_shutdown: SIGTERM with requests in flight. A query that is pending upstream when the signal
# comes still gets its answer (dohgate drains open requests, up to a bound), new connections are
# not served normally any more, and dohgate exits 0 once the drain is done.
. "$(dirname "$0")/lib.sh"
need_tools dig curl python3 openssl

# ---- pre
start_stub
start_dohgate --workers 2 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 3000 --query-timeout 4000
S=$STUBZONE

# ---- a query the stub answers after 1500 ms, in flight when SIGTERM comes
q=$(dnsmsg query "slow-1500.drain.$S" A --b64)
curl -s --http2 --max-time 10 --cacert "$CERTS/ca.pem" -o "$T/drain.bin" -w '%{http_code}' \
    "$(dohgate_url)?dns=$q" >"$T/drain.code" 2>"$T/drain.err" &
CURL_PID=$!
track "$CURL_PID"
for i in $(seq 1 30); do [ "$(stub_count udp "slow-1500.drain.$S.")" -ge 1 ] && break; sleep 0.1; done
assert_eq 1 "$(stub_count udp "slow-1500.drain.$S.")" "the slow query is pending upstream"
t0=$(now_ms)
signal_dohgate TERM || finish
sleep 0.3

# ---- a new connection during the drain: refused, or an HTTP error (503), but no normal service
code=$(curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
    "$(dohgate_url)?dns=$(dnsmsg query "new.drain.$S" A --b64)" 2>/dev/null)
assert_match '^(000|503)$' "$code" "a new request during the drain: refused or 503 (got $code)"

# ---- the in-flight query is answered
wait "$CURL_PID"
untrack "$CURL_PID"
assert_eq 200 "$(cat "$T/drain.code")" "the query in flight at SIGTERM: HTTP 200 ($(snip "$T/drain.err"))"
assert_match 'rcode=NOERROR' "$(dnsmsg show "$T/drain.bin" 2>&1)" "the query in flight at SIGTERM: NOERROR"

# ---- and dohgate exits 0 after the drain
reap_dohgate TERM
dt=$(($(now_ms) - t0))
assert_range 0 7000 "$dt" "dohgate exited within the drain bound (took $dt ms after SIGTERM)"

# ---- SIGTERM with a query that would never end: the drain is bounded
start_dohgate --workers 1 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 30000 --query-timeout 60000
curl -s --http2 --max-time 20 --cacert "$CERTS/ca.pem" -o /dev/null \
    "$(dohgate_url)?dns=$(dnsmsg query "silent.drain.$S" A --b64)" 2>/dev/null &
track $!
sleep 0.5
t0=$(now_ms)
DG_STOP_TIMEOUT=15 stop_dohgate TERM
dt=$(($(now_ms) - t0))
assert_range 0 10000 "$dt" "with a query that never ends, dohgate still exits (took $dt ms)"

# ---- post
finish
