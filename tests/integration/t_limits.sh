#!/bin/bash
# t_limits: per-client limits and access lists, each hit by one address (127.0.0.1) while
# another (127.0.0.2, curl --interface) is unaffected: open connections per client, new
# connections per second, DoH queries per second (429 + Retry-After), allow/deny lists for DoH
# (403, the website stays open) and for everything (connection closed). Refusals are counted
# in /metrics.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl h2load python3 dig

start_nsd
M_PORT=$(free_port)
Q=$(dnsmsg query "www.$ZONE" A --b64)
# code [--interface 127.0.0.2] [curl args]: HTTP status of one DoH GET on a new connection
code() {
    curl -s --max-time 5 --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$@" \
        "$(dohgate_url)?dns=$Q" 2>/dev/null
}
refused() { curl -s "http://127.0.0.1:$M_PORT/metrics" | sed -n "s/^dohgate_connections_refused_total{reason=\"$1\"} //p"; }

# ---- open connections per client
start_dohgate --max-connections-per-client 5 --workers 2 --metrics-listen "127.0.0.1:$M_PORT"
python3 -c '
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.check_hostname = False
conns = []
for i in range(5):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
    conns.append(s)
print("open", flush=True)
time.sleep(float(sys.argv[3]))
' "$DG_PORT" "$CERTS/ca.pem" 3 >"$T/hold.out" 2>&1 &
HOLD=$!
track "$HOLD"
for i in $(seq 1 50); do grep -q open "$T/hold.out" && break; sleep 0.1; done
assert_eq open "$(cat "$T/hold.out")" "5 TLS connections from 127.0.0.1 are open"
assert_eq 000 "$(code)" "a 6th connection from 127.0.0.1 is refused"
assert_eq 200 "$(code --interface 127.0.0.2)" "127.0.0.2 is not affected"
assert_range 1 100 "$(refused per-client)" "metrics: refused{reason=per-client} counts it"
wait "$HOLD"
untrack "$HOLD"
sleep 0.3
assert_eq 200 "$(code)" "once the 5 closed, 127.0.0.1 connects again"
stop_dohgate

# ---- new connections per second
start_dohgate --connection-rate-limit 5 --connection-rate-burst 5 --metrics-listen "127.0.0.1:$M_PORT"
# The 12 connect at once (not one after the other): under valgrind a handshake takes a few
# hundred ms, and 12 in a row took long enough for the bucket to refill (10 got in).
pids=()
for i in $(seq 1 12); do
    code >"$T/rate.$i" &
    pids+=($!)
done
wait "${pids[@]}"
ok=0
for i in $(seq 1 12); do [ "$(cat "$T/rate.$i")" = 200 ] && ok=$((ok + 1)); done
no=$((12 - ok))
assert_range 1 9 "$ok" "12 connections at once at 5/s (burst 5): only some get in ($ok)"
assert_range 3 11 "$no" "... the rest are refused ($no)"
assert_eq 200 "$(code --interface 127.0.0.2)" "another address still connects"
assert_range 3 11 "$(refused rate)" "metrics: refused{reason=rate}"
sleep 1.2
assert_eq 200 "$(code)" "a second later 127.0.0.1 connects again"
stop_dohgate

# ---- DoH queries per second: 429 with Retry-After
start_dohgate --rate-limit 5 --rate-limit-burst 5
sleep 1.1 # the start-up check's query spent a token
out=$(h2load -n 20 -c 1 -m 20 "$(dohgate_url)?dns=$Q" 2>&1)
assert_match 'status codes: 5 2xx, 0 3xx, 15 4xx, 0 5xx' "$out" "20 queries at once on one connection: 5 answered, 15 refused"
hdr=$(curl -s --http2 --cacert "$CERTS/ca.pem" -D - -o /dev/null "$(dohgate_url)?dns=$Q")
assert_match '^HTTP/2 429' "$hdr" "the refusal is HTTP 429"
assert_match 'retry-after: 1' "$hdr" "... with Retry-After: 1"
assert_eq 200 "$(code --interface 127.0.0.2)" "127.0.0.2 keeps its own budget"
sleep 1.1
assert_eq 200 "$(code)" "a second later 127.0.0.1 is answered again"
stop_dohgate

# ---- access lists, DoH scope: 403 for DoH, the site stays open
start_dohgate --deny-client 127.0.0.2
assert_eq 403 "$(code --interface 127.0.0.2)" "deny-client 127.0.0.2: its DoH queries get 403"
assert_eq 200 "$(code)" "127.0.0.1 is served"
site=$(curl -s --max-time 5 --http2 --cacert "$CERTS/ca.pem" --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$(dohgate_url /)")
assert_eq 200 "$site" "acl-scope doh: the website stays open to 127.0.0.2"
stop_dohgate

start_dohgate --allow-client 127.0.0.1/32
assert_eq 403 "$(code --interface 127.0.0.2)" "allow-client 127.0.0.1/32 alone: 127.0.0.2 gets 403"
assert_eq 200 "$(code)" "... 127.0.0.1 is served"
stop_dohgate

# ---- access lists, all: the connection is closed at accept
start_dohgate --allow-client 127.0.0.0/8 --deny-client 127.0.0.2 --acl-scope all \
    --metrics-listen "127.0.0.1:$M_PORT"
assert_eq 000 "$(code --interface 127.0.0.2)" "acl-scope all: 127.0.0.2's connection is closed"
site=$(curl -s --max-time 5 --cacert "$CERTS/ca.pem" --interface 127.0.0.2 -o /dev/null -w '%{http_code}' "$(dohgate_url /)")
assert_eq 000 "$site" "... for the website too"
assert_eq 200 "$(code --interface 127.0.0.3)" "127.0.0.3 (allowed by the /8, no deny) is served"
assert_range 2 10 "$(refused acl)" "metrics: refused{reason=acl}"
stop_dohgate

# ---- the open-file limit follows workers x max-connections (Debian's soft limit is 1024)
hard=$(ulimit -Hn)
# (not under valgrind, which keeps the descriptor limit to itself)
if [ "${DG_VALGRIND:-0}" != 1 ] && { [ "$hard" = unlimited ] || [ "$hard" -ge 4200 ]; }; then
    ulimit -Sn 1024
    start_dohgate --workers 1 --max-connections 3000 --max-upstream-queries 500
    soft=$(awk '/^Max open files/ {print $4}' /proc/"$DG_PID"/limits)
    assert_eq 4193 "$soft" "soft open-file limit raised to (3000 + 500) x 9/8 + 256"
    assert_file_match "$DG_LOG" "open-file limit raised from 1024 to 4193" "the log says so"
    stop_dohgate
    ulimit -Sn "$hard"
fi

# ---- upstream queries in flight: past max-upstream-queries, SERVFAIL at once
start_stub
start_dohgate --workers 1 --max-upstream-queries 2 --upstream "127.0.0.1:$STUB_PORT" \
    --upstream-timeout 3000 --query-timeout 3000 --metrics-listen "127.0.0.1:$M_PORT"
for i in 1 2; do
    curl -s --max-time 10 --http2 --cacert "$CERTS/ca.pem" -o /dev/null \
        "$(dohgate_url)?dns=$(dnsmsg query "silent.hold$i.$STUBZONE" A --b64)" &
    track $!
done
for i in $(seq 1 40); do [ "$(grep -c 'silent.hold' "$STUB_LOG")" -ge 2 ] && break; sleep 0.05; done
doh_get "third.$STUBZONE" A >/dev/null
dt=$CURL_MS # curl's time for the request alone (lib.sh dcurl), not the python around it
assert_eq SERVFAIL "$(rcode)" "with 2 queries in flight and max-upstream-queries 2, a third gets SERVFAIL"
assert_range 0 1500 "$dt" "... at once, not after a timeout ($dt ms)"
rej=$(curl -s "http://127.0.0.1:$M_PORT/metrics" | sed -n 's/^dohgate_rejected_total //p')
assert_eq 1 "$rej" "metrics: dohgate_rejected_total counts it"
stop_dohgate

finish
