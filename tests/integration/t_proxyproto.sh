#!/bin/bash
# t_proxyproto: the PROXY protocol (v1, v2) before TLS and on the plain listeners, from the
# load balancers in proxy-protocol-from only. A real HAProxy (TCP mode, send-proxy-v2 and
# send-proxy, health checks) in front of the TLS listener, reached from 127.0.0.9: the query log
# shows 127.0.0.9, deny-client 127.0.0.9 gives 403 through HAProxy while 127.0.0.1 gets 200, a
# per-client rate limit hits 127.0.0.9 only; the health checks (v2 LOCAL) are taken. Raw faults
# from tests/tools/ppclient.py: no header, a truncated one (closed at handshake-timeout), one
# split across writes (works), oversized, wrong signature, bad v1 numbers, a header from a
# peer not in the list (closed) and a plain client from it (unaffected); a v2 header on the
# dns-listen TCP, dot-listen and http-listen listeners; X-Forwarded-For to the site backend.
# Each closure counted in dohgate_proxy_protocol_total{result}.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl haproxy python3 od

LB=127.0.0.3     # the load balancer's address as dohgate sees it (HAProxy's `source`)
CLIENT=127.0.0.9 # the real client, behind HAProxy
PPC=$SRC_DIR/tests/tools/ppclient.py
start_nsd
M_PORT=$(free_port)
Q=$(dnsmsg query "www.$ZONE" A --b64)
pp() { curl -s "http://127.0.0.1:$M_PORT/metrics" | sed -n "s/^dohgate_proxy_protocol_total{result=\"$1\"} //p"; }
# ppc ARGS...: one connection of tests/tools/ppclient.py; prints its result line
ppc() { python3 "$PPC" --ca "$CERTS/ca.pem" "$@" 2>&1 | tail -1; }
# code PORT [curl args]: HTTP status of one DoH GET through HAProxy's frontend on PORT
code() {
    local port=$1
    shift
    curl -s --max-time 5 --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$@" \
        "https://127.0.0.1:$port/dns-query?dns=$Q" 2>/dev/null
}

HA_V2=$(free_port)
HA_V1=$(free_port)
HA_PID=
# start_haproxy: HAProxy in TCP mode in front of dohgate's TLS port ($DG_PORT): HA_V2 sends
# PROXY v2 (with TLS health checks every 200 ms, which send a v2 LOCAL header), HA_V1 sends v1;
# both connect to dohgate from $LB
start_haproxy() {
    stop_haproxy
    cat >"$T/haproxy.cfg" <<EOF
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe_v2
    bind 127.0.0.1:$HA_V2
    default_backend be_v2
backend be_v2
    server dg 127.0.0.1:$DG_PORT source $LB send-proxy-v2 check check-ssl verify none inter 200ms
frontend fe_v1
    bind 127.0.0.1:$HA_V1
    default_backend be_v1
backend be_v1
    server dg 127.0.0.1:$DG_PORT source $LB send-proxy
EOF
    "${GUARD[@]}" haproxy -f "$T/haproxy.cfg" -db >>"$T/haproxy.log" 2>&1 </dev/null &
    HA_PID=$!
    track "$HA_PID"
    wait_for 5 bash -c "[ \"\$(curl -s --max-time 2 --cacert '$CERTS/ca.pem' -o /dev/null -w '%{http_code}' 'https://127.0.0.1:$HA_V2/dns-query?dns=$Q')\" = 200 ]" ||
        ko "HAProxy did not pass a DoH query within 5 s (see $T/haproxy.log: $(snip "$T/haproxy.log" 300))"
}
stop_haproxy() {
    [ -n "$HA_PID" ] || return 0
    kill "$HA_PID" 2>/dev/null
    wait "$HA_PID" 2>/dev/null
    untrack "$HA_PID"
    HA_PID=
}

# ---- through HAProxy: the client's address everywhere
DNSP=$(free_port)
DOTP=$(free_port)
HTTPP=$(free_port)
start_dohgate --proxy-protocol-from "$LB/32" --metrics-listen "127.0.0.1:$M_PORT" \
    --query-log yes --query-log-client full --handshake-timeout 2 \
    --dns-listen "127.0.0.1:$DNSP" --dot-listen "127.0.0.1:$DOTP" --http-listen "127.0.0.1:$HTTPP"
start_haproxy
: >"$DG_LOG"
assert_eq 200 "$(code "$HA_V2" --interface "$CLIENT")" "v2 through HAProxy: DoH answered"
assert_eq 200 "$(code "$HA_V1" --interface "$CLIENT" --http1.1)" "v1 through HAProxy: DoH answered"
wait_for 3 grep -q "query: $CLIENT www\.$ZONE\. A NOERROR GET HTTP/1\.1" "$DG_LOG"
assert_file_match "$DG_LOG" "query: ${CLIENT//./\\.} www\.$ZONE\. A NOERROR GET HTTP/2$" \
    "query log: the v2 header's client $CLIENT"
assert_file_match "$DG_LOG" "query: ${CLIENT//./\\.} www\.$ZONE\. A NOERROR GET HTTP/1\.1$" \
    "query log: the v1 header's client $CLIENT"
assert_file_nomatch "$DG_LOG" "query: ${LB//./\\.} " "query log: never the load balancer's address"
assert_range 1 1000 "$(pp v2)" "metrics: proxy_protocol{result=v2}"
assert_range 1 1000 "$(pp v1)" "metrics: proxy_protocol{result=v1}"
# HAProxy's health checks: a v2 LOCAL header, then a TLS handshake; taken, nothing refused
sleep 1
assert_range 3 1000 "$(pp local)" "HAProxy's health checks (v2 LOCAL, every 200 ms) are taken"
for r in missing invalid oversized untrusted timeout; do
    assert_eq 0 "$(pp "$r")" "through HAProxy and its checks: nothing counted $r"
done
assert_match 'dohgate_connections_refused_total\{reason="acl"\} 0' \
    "$(curl -s "http://127.0.0.1:$M_PORT/metrics")" "no connection refused"

# ---- raw faults, from the load balancer's address unless said
n=$(pp missing)
out=$(ppc --src "$LB" --port "$DG_PORT" --then hello)
assert_match '^closed' "$out" \
    "no header (a TLS ClientHello straight away) from $LB: closed"
assert_eq $((n + 1)) "$(pp missing)" "... counted missing"

# cpu_ticks: dohgate's user + system time so far, in clock ticks (/proc/PID/stat fields 14, 15)
cpu_ticks() { sed -e 's/^.*) //' "/proc/$DG_PID/stat" | awk '{ print $12 + $13 }'; }
n=$(pp timeout)
t0=$(cpu_ticks)
out=$(ppc --src "$LB" --port "$DG_PORT" --raw "$(printf 'PROXY TCP4 192.0.2.1' | od -An -v -tx1 | tr -d ' \n')" --then wait --wait 15)
t1=$(cpu_ticks)
ms=$(echo "$out" | sed -n 's/^closed ms=//p')
assert_range 1000 8000 "${ms:-99999}" "a truncated header, then silence: closed at handshake-timeout 2 s ($out)"
assert_eq $((n + 1)) "$(pp timeout)" "... counted timeout"
# the bytes of an incomplete header are taken off the socket: left there, the level-triggered
# read event would spin a worker for the whole 2 s (seconds of CPU; idle is a few ticks)
assert_range 0 $(($(getconf CLK_TCK) * 4 / 10)) "$((t1 - t0))" \
    "no busy loop while the header is incomplete (dohgate used $((t1 - t0)) ticks of CPU in those 2 s)"

: >"$DG_LOG"
assert_eq "http 200" "$(ppc --src "$LB" --port "$DG_PORT" --v2 192.0.2.77 --pieces 4 --pause 0.3)" \
    "a v2 header in 4 writes 300 ms apart, then TLS and DoH: answered"
assert_eq "http 200" "$(ppc --src "$LB" --port "$DG_PORT" --v1 2001:db8::77 --pieces 3 --pause 0.3)" \
    "a v1 TCP6 header in 3 writes, then TLS and DoH: answered"
wait_for 3 grep -q "query: 2001:db8::77 " "$DG_LOG"
assert_file_match "$DG_LOG" "query: 192\.0\.2\.77 www\.$ZONE\. A NOERROR GET HTTP/1\.1$" "query log: the split v2 header's client"
assert_file_match "$DG_LOG" "query: 2001:db8::77 www\.$ZONE\. A NOERROR GET HTTP/1\.1$" "query log: the split v1 header's IPv6 client"

n=$(pp oversized)
out=$(ppc --src "$LB" --port "$DG_PORT" --raw 0d0a0d0a000d0a515549540a2111ffff --then wait)
assert_match '^closed ms=' "$out" \
    "a v2 header announcing 65535 bytes: closed at once"
assert_eq $((n + 1)) "$(pp oversized)" "... counted oversized"
# a v1 line without its CRLF in 107 bytes
out=$(ppc --src "$LB" --port "$DG_PORT" --raw "$(printf 'PROXY UNKNOWN %0120d' 0 | od -An -v -tx1 | tr -d ' \n')" --then wait)
assert_match '^closed ms=' "$out" \
    "a v1 line of 134 bytes without CRLF: closed"
assert_eq $((n + 2)) "$(pp oversized)" "... counted oversized"

n=$(pp missing)
out=$(ppc --src "$LB" --port "$DG_PORT" --raw 0d0a0d0a000d0a515549580a2111000c --then wait)
assert_match '^closed ms=' "$out" \
    "a wrong v2 signature (QUIX): closed"
assert_eq $((n + 1)) "$(pp missing)" "... counted missing (no PROXY signature)"

n=$(pp invalid)
for bad in 'PROXY TCP4 192.0.2.1 127.0.0.1 65536 443\r\n' 'PROXY TCP4 192.0.2.1 127.0.0.1 0443 443\r\n' \
    'PROXY TCP4 192.0.2.1 127.0.0.1 -1 443\r\n' 'PROXY TCP4 192.0.2.300 127.0.0.1 1 443\r\n'; do
    out=$(ppc --src "$LB" --port "$DG_PORT" --raw "$(printf "$bad" | od -An -v -tx1 | tr -d ' \n')" --then wait)
    assert_match '^closed ms=' "$out" \
        "v1 with bad numbers ($(printf "$bad" | tr -d '\r\n')): closed"
done
assert_eq $((n + 4)) "$(pp invalid)" "... each counted invalid"
# a v2 PROXY/INET header whose length is shorter than its addresses
out=$(ppc --src "$LB" --port "$DG_PORT" --raw 0d0a0d0a000d0a515549540a2111000bc0000201 --then wait)
assert_match '^closed ms=' "$out" \
    "v2 INET with 11 bytes of addresses: closed"
assert_eq $((n + 5)) "$(pp invalid)" "... counted invalid"

# a peer not in proxy-protocol-from: a header closes it, a plain client is not touched
n=$(pp untrusted)
out=$(ppc --src 127.0.0.1 --port "$DG_PORT" --v2 192.0.2.66)
assert_match '^closed' "$out" \
    "a valid v2 header from 127.0.0.1 (not in proxy-protocol-from): closed"
out=$(ppc --src 127.0.0.1 --port "$DG_PORT" --v1 192.0.2.66)
assert_match '^closed' "$out" \
    "a valid v1 header from 127.0.0.1: closed"
assert_eq $((n + 2)) "$(pp untrusted)" "... counted untrusted"
assert_eq 200 "$(code "$DG_PORT")" "a plain DoH client from 127.0.0.1 is unaffected"
assert_eq "http 200" "$(ppc --src 127.0.0.1 --port "$DG_PORT")" "... also over HTTP/1.1 (ppclient without a header)"
assert_file_nomatch "$DG_LOG" "query: 192\.0\.2\.66 " "the untrusted header's address was never used"

# the other listeners: dns-listen TCP, dot-listen, http-listen
: >"$DG_LOG"
assert_eq "rcode NOERROR id=4242" "$(ppc --src "$LB" --port "$DNSP" --v2 10.1.2.3 --then dns)" \
    "dns-listen TCP: v2 header, then a length-prefixed query: answered"
assert_eq "rcode REFUSED id=4242" "$(ppc --src "$LB" --port "$DNSP" --v2 192.0.2.55 --then dns)" \
    "dns-listen TCP: a header naming a public client: REFUSED (dns-allow reads the header's address)"
assert_eq "rcode NOERROR id=4242" "$(ppc --src 127.0.0.1 --port "$DNSP" --then dns)" \
    "dns-listen TCP: a plain client from 127.0.0.1 unaffected"
assert_eq "rcode NOERROR id=4242" "$(ppc --src "$LB" --port "$DOTP" --v1 10.4.5.6 --then dot)" \
    "dot-listen: v1 header, then TLS and a query: answered"
assert_eq "http 301" "$(ppc --src "$LB" --port "$HTTPP" --v2 192.0.2.8 --then http)" \
    "http-listen: v2 header, then GET /: 301"
wait_for 3 grep -q "query: 10\.4\.5\.6 " "$DG_LOG"
assert_file_match "$DG_LOG" "query: 10\.1\.2\.3 www\.$ZONE\. A NOERROR" "query log: dns-listen TCP client from the header"
assert_file_match "$DG_LOG" "query: 10\.4\.5\.6 www\.$ZONE\. A NOERROR" "query log: dot-listen client from the header"
assert_file_nomatch "$DG_LOG" "query: ${LB//./\\.} " "query log: never the load balancer's address"
stop_haproxy
stop_dohgate

# ---- deny-client: the header's address is the one judged
: >"$DG_LOG"
start_dohgate --proxy-protocol-from "$LB/32" --deny-client "$CLIENT/32" --metrics-listen "127.0.0.1:$M_PORT"
start_haproxy
assert_eq 403 "$(code "$HA_V2" --interface "$CLIENT")" "deny-client $CLIENT: 403 through HAProxy (v2)"
assert_eq 403 "$(code "$HA_V1" --interface "$CLIENT")" "deny-client $CLIENT: 403 through HAProxy (v1)"
assert_eq 200 "$(code "$HA_V2")" "127.0.0.1 through the same HAProxy: 200"
stop_haproxy
stop_dohgate
# acl-scope all: the connection is closed once the header named the client (counted as at
# accept); HAProxy's own health checks (v2 LOCAL) are judged on its own address, which the ACL
# lets through (a LOCAL header may carry client traffic too: it is never exempt)
start_dohgate --proxy-protocol-from "$LB/32" --allow-client 127.0.0.1/32 --allow-client "$LB/32" --acl-scope all --metrics-listen "127.0.0.1:$M_PORT"
start_haproxy
assert_eq 000 "$(code "$HA_V2" --interface "$CLIENT")" "acl-scope all: $CLIENT's connection through HAProxy is closed"
assert_eq 000 "$(code "$HA_V1" --interface "$CLIENT")" "... also over v1"
assert_eq 200 "$(code "$HA_V2")" "... 127.0.0.1's is not"
sleep 1
assert_eq 2 "$(curl -s "http://127.0.0.1:$M_PORT/metrics" | sed -n 's/^dohgate_connections_refused_total{reason="acl"} //p')" \
    "metrics: refused{reason=acl} counts the 2 refused, not the health checks"
assert_range 3 1000 "$(pp local)" "... which went on meanwhile ($(pp local) LOCAL headers)"
stop_haproxy
stop_dohgate
# ... and the balancer left out of the ACL: its LOCAL header keeps its own address, refused
start_dohgate --proxy-protocol-from "$LB/32" --allow-client 127.0.0.1/32 --acl-scope all
assert_match "^closed" "$(ppc --src "$LB" --port "$DG_PORT" --local --then hello)" \
    "a v2 LOCAL header is judged on the balancer's own address: closed by the ACL"
assert_eq "tls ok" "$(ppc --src "$LB" --port "$DG_PORT" --v2 127.0.0.1 --then hello)" \
    "... while a PROXY header naming an allowed client passes"
stop_dohgate

# ---- a per-client rate limit through the proxy: 127.0.0.9 only; X-Forwarded-For to the site's
# backend names it too
BP=$(free_port)
start_backend "$BP"
start_dohgate --proxy-protocol-from "$LB/32" --rate-limit 2 --rate-limit-burst 5 --max-connections-per-client 20 \
    --site-backend "http://127.0.0.1:$BP"
start_haproxy
xff=$(curl -s --max-time 5 --cacert "$CERTS/ca.pem" --interface "$CLIENT" "https://127.0.0.1:$HA_V2/echo" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["headers"].get("x-forwarded-for"))' 2>&1)
assert_eq "$CLIENT" "$xff" "the site's backend gets X-Forwarded-For $CLIENT through HAProxy (v2)"
urls=()
for i in $(seq 1 20); do urls+=(-o /dev/null "https://127.0.0.1:$HA_V2/dns-query?dns=$Q"); done
codes=$(curl -s --http2 --max-time 10 --cacert "$CERTS/ca.pem" --interface "$CLIENT" -w '%{http_code}\n' "${urls[@]}" 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ';')
n429=$(echo "$codes" | tr ';' '\n' | awk '$2 == 429 { print $1 }')
assert_range 10 20 "${n429:-0}" "rate-limit 2/s (burst 5): $CLIENT's 20 quick queries through HAProxy get 429s ($codes)"
assert_eq 200 "$(code "$HA_V2")" "127.0.0.1 through the same HAProxy (same load balancer address) is not limited"
assert_eq 200 "$(code "$HA_V1")" "... nor over v1"
stop_haproxy

finish
