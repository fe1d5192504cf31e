#!/bin/bash
# t_dns_tcp: plain DNS over TCP (RFC 7766) on --dns-listen, with dig, kdig and a pipelining
# python client (tests/tools/dnsconn.py). NSD upstream: answers, a large answer whole over TCP,
# kdig +keepopen on one connection, 50 queries in one write, the EDNS keepalive option (RFC
# 7828), the idle timeout, a message that does not arrive whole (request-timeout), bad lengths
# and garbage closing the connection without harm to the next one, a client that half-closes
# after its queries; metrics. The fault stub upstream: out-of-order answers (RFC 7766 §7),
# dns-tcp-pipeline, graceful stop with a query in flight. dns-allow (REFUSED over TCP) and
# max-connections-per-client on the DNS port.
. "$(dirname "$0")/lib.sh"
need_tools dig kdig python3 curl

Z=$ZONE
accepted() { metric_of 'dohgate_connections_accepted_total{listener="dns-tcp"}'; }

# ---- pre: NSD upstream
start_nsd
DNSP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$DNSP" --metrics-listen "127.0.0.1:$M_PORT" \
    --idle-timeout 3 --request-timeout 2

# ---- answers
out=$(dig +tcp +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "www.$Z" A)
assert_match 'status: NOERROR' "$out" "dig +tcp: NOERROR"
assert_match "www\.$Z\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.10" "$out" "dig +tcp: the A record"
out=$(kdig +tcp +time=3 +retry=0 @127.0.0.1 -p "$DNSP" "www.$Z" AAAA)
assert_match '2001:db8::10' "$out" "kdig +tcp: the AAAA record"
out=$(kdig +tcp +time=3 +retry=0 @127.0.0.1 -p "$DNSP" "nx.$Z" A)
assert_match 'status: NXDOMAIN' "$out" "kdig +tcp: NXDOMAIN"

# ---- a large answer (~2.9 KB, 40 TXT records) comes whole, not truncated
out=$(dig +tcp +bufsize=512 +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "big.$Z" TXT)
assert_match 'ANSWER: 40,' "$out" "large answer over TCP: all 40 records"
assert_nomatch 'flags:[^;]* tc[ ;]' "$out" "large answer over TCP: TC not set"
assert_eq 40 "$(printf '%s\n' "$out" | grep -c 'IN[[:space:]]TXT[[:space:]]"record-')" "large answer over TCP: 40 TXT lines"

# ---- several queries on one connection (kdig +keepopen): one connection accepted
a0=$(accepted)
out=$(kdig +tcp +keepopen +time=3 +retry=0 @127.0.0.1 -p "$DNSP" "www.$Z" A "mail.$Z" MX "txt.$Z" TXT)
assert_eq 3 "$(printf '%s\n' "$out" | grep -c 'status: NOERROR')" "kdig +keepopen: 3 answers"
assert_match 'hello from dohgate.test' "$out" "kdig +keepopen: the TXT answer"
assert_eq 1 "$(($(accepted) - a0))" "kdig +keepopen: the 3 queries used one connection"

# ---- pipelining: 50 queries in one write, 50 answers, each with its ID
qs=()
for i in $(seq 1 50); do
    case $((i % 3)) in
    0) qs+=("www.$Z") ;;
    1) qs+=("p$i.$Z") ;;
    2) qs+=("mail.$Z/MX") ;;
    esac
done
out=$(dnsconn --timeout 10 127.0.0.1 "$DNSP" "${qs[@]}")
assert_eq 50 "$(printf '%s\n' "$out" | grep -c '^ans ')" "pipelining: 50 answers on one connection"
assert_eq "$(seq 1 50 | tr '\n' ' ' | sed 's/ $//')" "$(ans_ids "$out" | tr ' ' '\n' | sort -n | tr '\n' ' ' | sed 's/ $//')" \
    "pipelining: every ID 1..50 answered once"
assert_eq 17 "$(printf '%s\n' "$out" | grep -c 'rcode=NXDOMAIN')" "pipelining: the 17 NXDOMAIN names"

# ---- EDNS keepalive (RFC 7828): the idle timeout in 100 ms units
out=$(dig +tcp +keepalive +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "www.$Z" A)
assert_match 'TCP KEEPALIVE: 3\.0 secs' "$out" "dig +keepalive: the server says 3.0 s (idle-timeout 3)"
out=$(dnsconn 127.0.0.1 "$DNSP" "www.$Z+ka" "www.$Z+edns")
assert_match ' ka=30 ' "$(grep '^ans id=1 ' <<<"$out")" "keepalive asked: ka=30 in the answer"
assert_match 'rcode=NOERROR' "$(grep '^ans id=2 ' <<<"$out")" "keepalive not asked: answered"
assert_nomatch 'ka=' "$(grep '^ans id=2 ' <<<"$out")" "keepalive not asked: no option in the answer"

# ---- idle connections are closed after idle-timeout (3 s; generous bounds)
out=$(dnsconn --wait-close 12 127.0.0.1 "$DNSP" "www.$Z")
ms=$(closed_ms "$out")
assert_range 2000 8000 "$ms" "idle: closed about idle-timeout after the answer (${ms} ms)"
# (the listener's TCP_DEFER_ACCEPT, worker.c, keeps a silent connection in the kernel for
# several seconds before dohgate sees it: hence the wider bound)
out=$(dnsconn --wait-close 25 127.0.0.1 "$DNSP")
ms=$(closed_ms "$out")
assert_range 2000 20000 "$ms" "idle: a connection that never sends is closed too (${ms} ms)"

# ---- a message that never arrives whole: closed after request-timeout (2 s), not idle-timeout
out=$(dnsconn --raw 00200102030405 --wait-close 12 127.0.0.1 "$DNSP")
ms=$(closed_ms "$out")
assert_range 1000 2900 "$ms" "partial message: closed after request-timeout (${ms} ms)"

# ---- bad input closes the connection, and the next connection is served
d0=$(metric_of 'dohgate_dns_dropped_total{reason="malformed"}')
out=$(dnsconn --raw 0000 --wait-close 5 127.0.0.1 "$DNSP")
assert_range 0 1500 "$(closed_ms "$out")" "length 0: closed at once"
out=$(dnsconn --raw 000568656c6c6f --wait-close 5 127.0.0.1 "$DNSP")
assert_range 0 1500 "$(closed_ms "$out")" "length 5: closed at once"
out=$(dnsconn --raw "0014$(printf 'ff%.0s' $(seq 1 20))" --wait-close 5 127.0.0.1 "$DNSP")
assert_range 0 1500 "$(closed_ms "$out")" "20 bytes of garbage: closed at once"
# a good query, then a bad length: the good one is answered, then the connection closes
out=$(dnsconn --raw 0000 --wait-close 5 127.0.0.1 "$DNSP" "www.$Z")
assert_nomatch '^ans' "$out" "bad length before a query: the query after it is not served"
assert_eq "$((${d0:-0} + 4))" "$(metric_of 'dohgate_dns_dropped_total{reason="malformed"}')" \
    "metrics: dropped{reason=malformed} counts the 4 bad inputs"
out=$(dig +tcp +short +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "www.$Z" A)
assert_eq 192.0.2.10 "$out" "after bad input: the next connection is answered"

# ---- a client that half-closes after its queries still gets its answers
out=$(dnsconn --half-close --wait-close 5 127.0.0.1 "$DNSP" "www.$Z" "mail.$Z/MX" "nx2.$Z")
assert_eq 3 "$(printf '%s\n' "$out" | grep -c '^ans ')" "half-close: the 3 answers arrive"
assert_range 0 1500 "$(closed_ms "$out")" "half-close: then the server closes"

# ---- metrics
assert_range 10 100000 "$(accepted)" "metrics: connections_accepted_total{listener=dns-tcp}"
assert_range 40 100000 "$(metric_of 'dohgate_dns_answers_total{transport="dns-tcp",rcode="NOERROR"}')" \
    "metrics: dns_answers_total{transport=dns-tcp,rcode=NOERROR}"
assert_range 1 100000 "$(metric_of 'dohgate_dns_answers_total{transport="dns-tcp",rcode="NXDOMAIN"}')" \
    "metrics: dns_answers_total{transport=dns-tcp,rcode=NXDOMAIN}"
stop_dohgate

# ---- the fault stub upstream: out-of-order answers, the pipeline limit, graceful stop
# (slow-N answers after N ms: tries get 4 s, so no retry doubles the delay)
start_stub
S=$STUBZONE
STUBFLAGS=(--workers 1 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 4000 --query-timeout 8000
    --dns-listen "127.0.0.1:$DNSP")
start_dohgate "${STUBFLAGS[@]}"
out=$(dig +tcp +short +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "fast.$S" A)
assert_eq 192.0.2.1 "$out" "stub: fast.$S answered (now cached)"
out=$(dnsconn --timeout 10 127.0.0.1 "$DNSP" "slow-1000.a.$S" "fast.$S")
assert_eq "2 1" "$(ans_ids "$out")" "out of order: the cached answer (sent second) comes first"
at=$(sed -n 's/^ans id=1 .* at=\([0-9]*\)$/\1/p' <<<"$out")
assert_range 900 5000 "$at" "out of order: the slow one took its 1 s (${at} ms)"
# the quick third query overtakes both slow ones while the pipeline has room
out=$(dnsconn --timeout 10 127.0.0.1 "$DNSP" "slow-800.b.$S" "slow-800.c.$S" "quick.d.$S")
assert_match '^3 ' "$(ans_ids "$out")" "default pipeline: the quick third query is answered first"

# graceful stop: the query in flight is answered, then the connection closes, dohgate exits 0
dnsconn --timeout 10 --wait-close 8 127.0.0.1 "$DNSP" "slow-1000.h.$S" >"$T/stop.out" 2>&1 &
cpid=$!
for _ in $(seq 1 50); do # until the query is in flight (python may start slowly)
    [ "$(stub_count udp "slow-1000.h.$S.")" -ge 1 ] && break
    sleep 0.1
done
stop_dohgate
wait "$cpid"
out=$(cat "$T/stop.out")
assert_match 'ans id=1 rcode=NOERROR' "$out" "graceful stop: the query in flight is answered"
assert_match 'closed ms=' "$out" "graceful stop: then the connection is closed"

# dns-tcp-pipeline 2: the third query waits for a slot: the first answer (0.8 s) frees it, so
# the quick one comes second, after 0.8 s, and the 2.5 s one last
start_dohgate "${STUBFLAGS[@]}" --dns-tcp-pipeline 2
out=$(dnsconn --timeout 10 127.0.0.1 "$DNSP" "slow-800.e.$S" "slow-2500.f.$S" "quick.g.$S")
assert_eq "1 3 2" "$(ans_ids "$out")" "pipeline 2: answers in the order the slots allow"
at=$(sed -n 's/^ans id=3 .* at=\([0-9]*\)$/\1/p' <<<"$out")
assert_range 700 2400 "$at" "pipeline 2: the third query was answered only after the first (${at} ms)"
stop_dohgate

# ---- a client that sends queries and never reads: send-timeout closes it (output waiting,
# none taken); NSD upstream, answers of ~3 KB each
start_dohgate --workers 1 --dns-listen "127.0.0.1:$DNSP" --metrics-listen "127.0.0.1:$M_PORT" \
    --send-timeout 2
s0=$(metric_of 'dohgate_stalled_total{what="connection"}')
python3 - "$DNSP" "big.$Z" >"$T/noread.out" 2>&1 <<'PY' &
import socket, struct, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
qname = b"".join(bytes([len(l)]) + l for l in sys.argv[2].encode().split(b".")) + b"\0"
frames = b""
for i in range(2000):
    q = struct.pack("!HHHHHH", i, 0x100, 1, 0, 0, 0) + qname + struct.pack("!HH", 16, 1)
    frames += struct.pack("!H", len(q)) + q
s.sendall(frames)
print("sent", flush=True)
time.sleep(20)  # never reads
PY
npid=$!
track "$npid"
t0=$(now_ms)
open_n=1
while [ $(($(now_ms) - t0)) -lt 15000 ]; do
    open_n=$(metric_of 'dohgate_connections_open{listener="dns-tcp"}')
    [ "${open_n:-1}" = 0 ] && grep -q sent "$T/noread.out" && break
    sleep 0.2
done
dt=$(($(now_ms) - t0))
assert_eq 0 "$open_n" "a client that does not read: its connection is closed (after ${dt} ms)"
assert_range 1500 12000 "$dt" "a client that does not read: closed by send-timeout (2 s), not at once"
assert_eq "$((${s0:-0} + 1))" "$(metric_of 'dohgate_stalled_total{what="connection"}')" \
    "metrics: stalled_total{what=connection} counts it"
kill "$npid" 2>/dev/null
wait "$npid" 2>/dev/null
untrack "$npid"
out=$(dig +tcp +short +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "www.$Z" A)
assert_eq 192.0.2.10 "$out" "after the stalled client: others are answered"
stop_dohgate

# ---- dns-allow (REFUSED over TCP) and max-connections-per-client on the DNS port
start_dohgate --workers 1 --dns-listen "127.0.0.1:$DNSP" --dns-allow 10.0.0.0/8 \
    --max-connections-per-client 2 --query-log yes
out=$(dig +tcp +time=3 +tries=1 @127.0.0.1 -p "$DNSP" "www.$Z" A)
assert_match 'status: REFUSED' "$out" "dns-allow 10.0.0.0/8: REFUSED to 127.0.0.1 over TCP"
assert_file_match "$DG_LOG" "query: 127\.0\.0\.0 www\.$Z\. A REFUSED dns-tcp" \
    "the refusal is in the query log like any answer (client truncated to /24 by default)"
out=$(dnsconn --conns 3 127.0.0.1 "$DNSP" "www.$Z")
assert_eq "conn 1: answered
conn 2: answered
conn 3: closed" "$(grep '^conn' <<<"$out")" "max-connections-per-client 2: the third connection is closed"
assert_match 'rcode=REFUSED' "$out" "max-connections-per-client: the first two got REFUSED answers"

finish
