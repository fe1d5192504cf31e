#!/bin/bash
# t_cleartext: the clear-text listener (plain-listen) for a TLS-terminating proxy in front, and
# trusted X-Forwarded-For / Forwarded (issue 18).
#   - plain-listen serves what the TLS listener serves: DoH GET/POST and JSON over HTTP/1.1 and
#     h2c (prior knowledge), the landing page; h2load over h2c with no failure; the start-up
#     line, the exposure warning for a wildcard address, the "cleartext" connection metric.
#   - without trusted-proxy a spoofed X-Forwarded-For is ignored (query log, deny-client);
#     with it the header is honoured (query log, deny-client 403), a chain is walked right to
#     left over trusted hops, Forwarded (RFC 7239) with a quoted IPv6 and port, only the header
#     trusted-proxy-header names is read, malformed and obfuscated elements stop the walk at the last good
#     address (forwarded.h), a peer outside trusted-proxy is not believed.
#   - the site backend (tests/tools/backend.py) gets the real client in X-Forwarded-For and the
#     proxy's X-Forwarded-Proto; the TLS listener honours trusted-proxy too.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl h2load python3

start_nsd
M_PORT=$(free_port)

# pstart ARGS...: dohgate with a plain-listen on $P (and the TLS listener of start_dohgate),
# the query log with full client addresses, a fresh log
pstart() {
    P=$(free_port)
    : >"$DG_LOG"
    start_dohgate --plain-listen "127.0.0.1:$P" --query-log yes --query-log-client full "$@"
    wait_for 5 curl -s -o /dev/null "http://127.0.0.1:$P/" || ko "plain-listen 127.0.0.1:$P answers"
}

# pcurl CURL-ARGS...: dcurl (lib.sh: $T/resp.*, HTTP_CODE) against plain-listen; the URL last
purl() { echo "http://127.0.0.1:$P${1:-/dns-query}"; }
pget() { # pget NAME TYPE [CURL-ARGS...]: DoH GET on the clear-text listener (HTTP/1.1)
    local name=$1 type=$2
    shift 2
    dcurl --http1.1 "$@" "$(purl)?dns=$(dnsmsg query "$name" "$type" --b64)"
}
# client_of NAME: the client address of NAME's query-log line
client_of() { sed -n "s/.*query: \([^ ]*\) $1\. .*/\1/p" "$DG_LOG" | tail -1; }

# ============================================================================================
# 1. the listener itself
pstart --metrics-listen "127.0.0.1:$M_PORT"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$P \(clear text for a TLS-terminating proxy; HTTP/1\.1 and h2c\), DoH path /dns-query" \
    "start-up line for plain-listen"
assert_file_nomatch "$DG_LOG" "clear-text DoH listener is exposed" "loopback: no exposure warning"

pget "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "HTTP/1.1 GET on plain-listen: 200"
assert_eq NOERROR "$(rcode)" "HTTP/1.1 GET: NOERROR"
assert_match "www\.$ZONE\. [0-9]+ A " "$(answers)" "HTTP/1.1 GET: the A record"
assert_eq "application/dns-message" "$(hdr content-type)" "HTTP/1.1 GET: content-type"
assert_eq "HTTP/1.1 200 OK" "$(head -1 "$T/resp.hdr")" "HTTP/1.1 GET: answered in HTTP/1.1"

dnsmsg query "www.$ZONE" AAAA --out "$T/q.bin"
dcurl --http1.1 -H 'content-type: application/dns-message' --data-binary "@$T/q.bin" "$(purl)"
assert_eq 200 "$HTTP_CODE" "HTTP/1.1 POST on plain-listen: 200"
assert_match " AAAA " "$(answers)" "HTTP/1.1 POST: the AAAA record"

dcurl --http2-prior-knowledge "$(purl)?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "h2c (prior knowledge) GET: 200"
assert_match "^HTTP/2 200" "$(head -1 "$T/resp.hdr")" "h2c GET: answered in HTTP/2"
assert_match "www\.$ZONE\. [0-9]+ A " "$(answers)" "h2c GET: the A record"
dcurl --http2-prior-knowledge -H 'content-type: application/dns-message' --data-binary "@$T/q.bin" "$(purl)"
assert_eq 200 "$HTTP_CODE" "h2c POST: 200"
assert_match " AAAA " "$(answers)" "h2c POST: the AAAA record"

# curl --http2 on http:// asks for Upgrade: h2c, which is not offered: HTTP/1.1 answers
dcurl --http2 "$(purl)?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq "200 HTTP/1.1 200 OK" "$HTTP_CODE $(head -1 "$T/resp.hdr")" "Upgrade: h2c is not taken: HTTP/1.1 200"

for v in --http1.1 --http2-prior-knowledge; do
    body=$(curl -s $v --max-time 5 "$(purl /resolve)?name=www.$ZONE&type=A")
    assert_match '"Status": ?0' "$body" "JSON API ($v): Status 0"
    assert_match '"type": ?1' "$body" "JSON API ($v): an A answer"
    dcurl $v "$(purl /)"
    assert_eq 200 "$HTTP_CODE" "landing page ($v): 200"
    assert_match "text/html" "$(hdr content-type)" "landing page ($v): HTML"
    assert_match "/dns-query" "$(cat "$T/resp.bin")" "landing page ($v): names the DoH path"
done
# bytes that do not match the preface all the way: HTTP/1.1 (a 400 for garbage)
out=$(printf 'PRI * HTTP/1.1\r\nHost: x\r\n\r\n' | timeout 5 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read())
print(s.recv(100).decode(errors="replace").splitlines()[0])' "$P")
assert_match "^HTTP/1\.1 (400|405|501)" "$out" "a broken preface is HTTP/1.1 (refused: $out)"
# the preface in pieces (1 byte, then the rest): still HTTP/2
out=$(timeout 5 python3 -c '
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
s.sendall(p[:1]); time.sleep(0.2); s.sendall(p[1:10]); time.sleep(0.2); s.sendall(p[10:])
s.sendall(bytes.fromhex("000000040000000000"))  # empty SETTINGS
d = s.recv(9)
print("type=%d" % d[3] if len(d) == 9 else "short")' "$P")
assert_eq "type=4" "$out" "the preface in pieces starts HTTP/2 (server SETTINGS)"

h2load -n 200 -c 4 -m 10 "$(purl)?dns=$(dnsmsg query "www.$ZONE" A --b64)" >"$T/h2load.txt" 2>&1
assert_match "200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored" "$(grep '^requests:' "$T/h2load.txt")" \
    "h2load over h2c: 200 of 200"
assert_match "200 2xx" "$(grep 'status codes:' "$T/h2load.txt")" "h2load: 200 answers 2xx"
acc=$(metric_of 'dohgate_connections_accepted_total{listener="cleartext"}')
assert_range 10 1000 "${acc:-0}" "connections on the cleartext listener counted ($acc)"
stop_dohgate

# a wildcard address: one warning
P2=$(free_port)
: >"$DG_LOG"
start_dohgate --plain-listen "0.0.0.0:$P2"
stop_dohgate
assert_eq 1 "$(grep -c 'plain-listen 0\.0\.0\.0:[0-9]*: a clear-text DoH listener is exposed' "$DG_LOG")" \
    "plain-listen on 0.0.0.0: one exposure warning"

# ============================================================================================
# 2. forwarding headers
pstart --deny-client 203.0.113.7/32
pget spoof1.$ZONE A -H 'X-Forwarded-For: 203.0.113.7'
assert_eq 200 "$HTTP_CODE" "no trusted-proxy: X-Forwarded-For 203.0.113.7 does not meet deny-client"
dcurl --http2-prior-knowledge -H 'Forwarded: for=203.0.113.7' "$(purl)?dns=$(dnsmsg query spoof2.$ZONE A --b64)"
assert_eq 200 "$HTTP_CODE" "no trusted-proxy: Forwarded for=203.0.113.7 ignored (h2c)"
stop_dohgate
assert_eq 127.0.0.1 "$(client_of spoof1.$ZONE)" "no trusted-proxy: the query log shows the peer"
assert_eq 127.0.0.1 "$(client_of spoof2.$ZONE)" "no trusted-proxy: Forwarded not read"

pstart --trusted-proxy 127.0.0.1/32 --deny-client 203.0.113.7/32
pget trust1.$ZONE A -H 'X-Forwarded-For: 203.0.113.8'
assert_eq 200 "$HTTP_CODE" "trusted-proxy 127.0.0.1: X-Forwarded-For 203.0.113.8 answered"
pget trust2.$ZONE A -H 'X-Forwarded-For: 203.0.113.7'
assert_eq 403 "$HTTP_CODE" "trusted-proxy: X-Forwarded-For 203.0.113.7 meets deny-client (403)"
dcurl --http2-prior-knowledge -H 'X-Forwarded-For: 203.0.113.7' "$(purl)?dns=$(dnsmsg query trust3.$ZONE A --b64)"
assert_eq 403 "$HTTP_CODE" "trusted-proxy: the same over h2c (403)"
pget trust4.$ZONE A -H 'X-Forwarded-For: 198.51.100.1, 203.0.113.9, 127.0.0.5'
stop_dohgate
assert_eq 203.0.113.8 "$(client_of trust1.$ZONE)" "trusted-proxy: the query log shows the forwarded client"
assert_eq 127.0.0.5 "$(client_of trust4.$ZONE)" "trusted-proxy 127.0.0.1/32: 127.0.0.5 is not trusted, so it is the client"

pstart --trusted-proxy 127.0.0.0/8
pget chain1.$ZONE A -H 'X-Forwarded-For: 198.51.100.1, 203.0.113.7, 127.0.0.5'
pget chain2.$ZONE A -H 'X-Forwarded-For: 198.51.100.1' -H 'X-Forwarded-For: 203.0.113.7, 127.0.0.5'
pget xff1.$ZONE A -H 'Forwarded: for=192.0.2.44' -H 'X-Forwarded-For: 203.0.113.7'
pget xff2.$ZONE A -H 'Forwarded: for=192.0.2.44'
pget bad1.$ZONE A -H 'X-Forwarded-For: 203.0.113.7, bogus'
pget bad2.$ZONE A -H 'X-Forwarded-For: 203.0.113.7, bogus, 127.0.0.5'
pget all1.$ZONE A -H 'X-Forwarded-For: 127.0.0.9, 127.0.0.5'
stop_dohgate
assert_eq 203.0.113.7 "$(client_of chain1.$ZONE)" "chain 198.51.100.1, 203.0.113.7, 127.0.0.5 (trusted 127/8): 203.0.113.7"
assert_eq 203.0.113.7 "$(client_of chain2.$ZONE)" "the same chain in two header lines: 203.0.113.7"
assert_eq 203.0.113.7 "$(client_of xff1.$ZONE)" "trusted-proxy-header x-forwarded-for (default): a client's Forwarded is not read"
assert_eq 127.0.0.1 "$(client_of xff2.$ZONE)" "Forwarded alone, header x-forwarded-for: the peer stays the client"
assert_eq 127.0.0.1 "$(client_of bad1.$ZONE)" "malformed rightmost element: the peer stays the client"
assert_eq 127.0.0.5 "$(client_of bad2.$ZONE)" "malformed element behind a trusted hop: stop at that hop"
assert_eq 127.0.0.9 "$(client_of all1.$ZONE)" "every hop trusted: the leftmost (nginx real_ip_recursive)"

pstart --trusted-proxy 127.0.0.0/8 --trusted-proxy-header forwarded
pget fwd1.$ZONE A -H 'Forwarded: for="[2001:db8::1]:4711";proto=https'
pget fwd2.$ZONE A -H 'Forwarded: for=192.0.2.44, for="127.0.0.6"' -H 'X-Forwarded-For: 203.0.113.7'
pget fwd3.$ZONE A -H 'X-Forwarded-For: 203.0.113.7'
pget bad3.$ZONE A -H 'Forwarded: for=unknown'
pget bad4.$ZONE A -H 'Forwarded: for=203.0.113.7, for=_hidden, for=127.0.0.7'
pget bad5.$ZONE A -H 'Forwarded: for="203.0.113.7'
stop_dohgate
assert_eq 2001:db8::1 "$(client_of fwd1.$ZONE)" "Forwarded for=\"[2001:db8::1]:4711\": 2001:db8::1"
assert_eq 192.0.2.44 "$(client_of fwd2.$ZONE)" "trusted-proxy-header forwarded: Forwarded read, X-Forwarded-For not"
assert_eq 127.0.0.1 "$(client_of fwd3.$ZONE)" "trusted-proxy-header forwarded: X-Forwarded-For alone is not read"
assert_eq 127.0.0.1 "$(client_of bad3.$ZONE)" "Forwarded for=unknown: the peer"
assert_eq 127.0.0.7 "$(client_of bad4.$ZONE)" "obfuscated for=_hidden: stop at the last good address"
assert_eq 127.0.0.1 "$(client_of bad5.$ZONE)" "Forwarded with a syntax error: the peer"

# a trusted proxy speaks for many clients: its connections are not counted per client
# (8 at once with max-connections-per-client 2); an untrusted peer's are
pstart --trusted-proxy 127.0.0.1/32 --max-connections-per-client 2
h2load -n 80 -c 8 -m 2 "$(purl)?dns=$(dnsmsg query "www.$ZONE" A --b64)" >"$T/h2load-tp.txt" 2>&1
assert_match "80 total, 80 started, 80 done, 80 succeeded, 0 failed" "$(grep '^requests:' "$T/h2load-tp.txt")" \
    "trusted proxy: 8 connections at once past max-connections-per-client 2, no failure"
stop_dohgate
pstart --max-connections-per-client 2
h2load -n 80 -c 8 -m 2 "$(purl)?dns=$(dnsmsg query "www.$ZONE" A --b64)" >"$T/h2load-utp.txt" 2>&1
assert_nomatch "80 succeeded, 0 failed" "$(grep '^requests:' "$T/h2load-utp.txt")" \
    "untrusted peer: 8 connections at once meet max-connections-per-client 2"
stop_dohgate

# a peer outside trusted-proxy is not believed, one inside is
pstart --trusted-proxy 127.0.0.2/32
pget peer1.$ZONE A --interface 127.0.0.1 -H 'X-Forwarded-For: 203.0.113.7'
pget peer2.$ZONE A --interface 127.0.0.2 -H 'X-Forwarded-For: 203.0.113.7'
stop_dohgate
assert_eq 127.0.0.1 "$(client_of peer1.$ZONE)" "peer 127.0.0.1 not in trusted-proxy 127.0.0.2/32: header ignored"
assert_eq 203.0.113.7 "$(client_of peer2.$ZONE)" "peer 127.0.0.2 in trusted-proxy: header honoured"

# the TLS listener with trusted-proxy
pstart --trusted-proxy 127.0.0.1/32
dcurl -H 'X-Forwarded-For: 198.51.100.23' "$(dohgate_url)?dns=$(dnsmsg query tls1.$ZONE A --b64)"
assert_eq 200 "$HTTP_CODE" "TLS listener with trusted-proxy: 200"
stop_dohgate
assert_eq 198.51.100.23 "$(client_of tls1.$ZONE)" "TLS listener: X-Forwarded-For from a trusted peer honoured"

# ============================================================================================
# 3. the site backend hears the real client
BP=$(free_port)
start_backend "$BP"
pstart --site-backend "http://127.0.0.1:$BP" --trusted-proxy 127.0.0.1/32
dcurl --http1.1 -H 'X-Forwarded-For: 203.0.113.7' -H 'X-Forwarded-Proto: https' "$(purl /echo)"
assert_eq 200 "$HTTP_CODE" "site backend through plain-listen: 200"
echo_hdr() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["headers"].get(sys.argv[2]))' "$T/resp.bin" "$1"; }
assert_eq 203.0.113.7 "$(echo_hdr x-forwarded-for)" "backend: X-Forwarded-For is the forwarded client"
assert_eq https "$(echo_hdr x-forwarded-proto)" "backend: X-Forwarded-Proto from the trusted proxy"
dcurl --http2-prior-knowledge -H 'X-Forwarded-For: 203.0.113.8' "$(purl /echo)"
assert_eq 203.0.113.8 "$(echo_hdr x-forwarded-for)" "backend over h2c: the forwarded client"
assert_eq http "$(echo_hdr x-forwarded-proto)" "backend: no X-Forwarded-Proto from the proxy: http"
dcurl --http1.1 --interface 127.0.0.2 -H 'X-Forwarded-For: 203.0.113.7' -H 'X-Forwarded-Proto: https' "$(purl /echo)"
assert_eq 127.0.0.2 "$(echo_hdr x-forwarded-for)" "backend: an untrusted peer's X-Forwarded-For is replaced by the peer"
assert_eq http "$(echo_hdr x-forwarded-proto)" "backend: an untrusted peer's X-Forwarded-Proto is not believed"
dcurl -H 'X-Forwarded-For: 203.0.113.9' "https://127.0.0.1:$DG_PORT/echo"
assert_eq "203.0.113.9 https" "$(echo_hdr x-forwarded-for) $(echo_hdr x-forwarded-proto)" "backend via the TLS listener: forwarded client, https"
stop_dohgate

finish
