#!/bin/bash
# t_metrics: /metrics on metrics-listen parses as Prometheus text (the reference parser of
# python3-prometheus-client, plus histogram and TYPE checks in tests/tools/promparse.py), and its
# counters move with real traffic by exactly what was sent: HTTP responses by version, method
# and status, DoH answers by rcode, cache hits, upstream answers and latency, connections, TLS
# handshakes by version and resumption, bytes, certificate expiry. /healthz answers; the public
# port does not serve the metrics.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl openssl kdig /usr/bin/python3
/usr/bin/python3 -c 'import prometheus_client' 2>/dev/null || die "python3-prometheus-client missing (contrib/deps.sh --test installs it)"

start_nsd
M_PORT=$(free_port)
start_dohgate --metrics-listen "127.0.0.1:$M_PORT" --workers 2
PROM=$SRC_DIR/tests/tools/promparse.py

# scrape FILE: parse /metrics into FILE (one canonical sample per line)
scrape() {
    curl -s --max-time 5 -o "$T/raw" "http://127.0.0.1:$M_PORT/metrics" &&
        /usr/bin/python3 "$PROM" "$T/raw" >"$1" 2>"$T/prom.err"
}
# val FILE SAMPLE: the value of one canonical sample (0 when absent)
val() { awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) print 0 }' "$1"; }
# delta SAMPLE: after minus before
delta() { echo "# $1: $(val "$T/before" "$1") -> $(val "$T/after" "$1")" >&2; echo $(($(val "$T/after" "$1" | cut -d. -f1) - $(val "$T/before" "$1" | cut -d. -f1))); }

scrape "$T/before"
assert_eq 0 "$?" "the first scrape parses as Prometheus text ($(snip "$T/prom.err"))"
hdrs=$(curl -s -D - -o /dev/null "http://127.0.0.1:$M_PORT/metrics")
assert_match 'content-type: text/plain; version=0\.0\.4' "$hdrs" "content type of the text format 0.0.4"

# ---- traffic
for i in 1 2 3 4 5; do doh_get "mail.$ZONE" MX >/dev/null; done # HTTP/2 GET, 1 miss + 4 hits
for i in 1 2; do doh_get "nope$i.$ZONE" A >/dev/null; done      # NXDOMAIN
code=$(curl -s --http1.1 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$(dohgate_url /)")
assert_eq 200 "$code" "traffic: the landing page over HTTP/1.1"
code=$(curl -s --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' -X PUT "$(dohgate_url)")
assert_eq 405 "$code" "traffic: PUT /dns-query is 405"
kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost "txt.$ZONE" TXT >"$T/kdig.out" 2>&1
assert_match 'status: NOERROR' "$(cat "$T/kdig.out")" "traffic: kdig POST over HTTP/2"
sleep 1 | openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -tls1_2 -sess_out "$T/s12" >/dev/null 2>&1
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -tls1_2 -sess_in "$T/s12" </dev/null 2>&1)
assert_match 'Reused, TLSv1.2' "$out" "traffic: a resumed TLS 1.2 handshake"
long=$(printf 'a%.0s' $(seq 1 5000))
code=$(curl -s --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$(dohgate_url "/$long")")
assert_eq 414 "$code" "traffic: an HTTP/2 request with a 5000-byte path is 414"
printf 'GARBAGE\r\n\r\n' | openssl s_client -connect "127.0.0.1:$DG_PORT" -quiet -alpn http/1.1 >/dev/null 2>&1
printf 'GARBAGE\r\n\r\n' | timeout 5 python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.stdin.buffer.read()); s.recv(4096)' "$M_PORT" 2>/dev/null
out=$(curl -s --http2 --cacert "$CERTS/ca.pem" "$(dohgate_url /metrics)")
assert_nomatch 'dohgate_build_info' "$out" "the public HTTPS port does not serve the metrics"

scrape "$T/after"
assert_eq 0 "$?" "the second scrape parses ($(snip "$T/prom.err"))"

# the public /metrics request above is a landing-page 200 or a 404: count whichever it was
assert_range 7 8 "$(delta 'dohgate_http_requests_total{method="GET",status="200",version="2"}')" \
    "http_requests_total: 7 HTTP/2 GETs with 200 (+1 if the public /metrics is a page)"
assert_eq 1 "$(delta 'dohgate_http_requests_total{method="GET",status="200",version="1.1"}')" \
    "http_requests_total: 1 HTTP/1.1 GET with 200"
assert_eq 1 "$(delta 'dohgate_http_requests_total{method="other",status="405",version="2"}')" \
    "http_requests_total: the PUT as method=other status=405"
assert_eq 1 "$(delta 'dohgate_http_requests_total{method="GET",status="414",version="2"}')" \
    "http_requests_total: the HTTP/2 414, with its version and method"
assert_eq 1 "$(delta 'dohgate_http_requests_total{method="other",status="400",version="1.1"}')" \
    "http_requests_total: garbage on the HTTP/1.1 port counted once; garbage to the metrics port not at all"
assert_eq 1 "$(delta 'dohgate_http_requests_total{method="POST",status="200",version="2"}')" \
    "http_requests_total: kdig's POST"
assert_eq 6 "$(delta 'dohgate_dns_answers_total{rcode="NOERROR",transport="doh"}')" "dns_answers_total NOERROR: 5 + kdig"
assert_eq 2 "$(delta 'dohgate_dns_answers_total{rcode="NXDOMAIN",transport="doh"}')" "dns_answers_total NXDOMAIN: 2"
assert_eq 4 "$(delta 'dohgate_cache_hits_total{}')" "cache_hits_total: the 4 repeats"
UP="upstream=\"127.0.0.1:$NSD_PORT\""
assert_eq 4 "$(delta "dohgate_upstream_answers_total{$UP}")" "upstream_answers_total: mail, 2 NXDOMAIN, txt"
assert_eq 4 "$(delta "dohgate_upstream_latency_seconds_count{$UP}")" "upstream latency histogram: one per answer"
assert_eq 4 "$(delta "dohgate_upstream_latency_seconds_bucket{le=\"+Inf\",$UP}")" "... +Inf bucket"
assert_range 4 100 "$(delta 'dohgate_connections_accepted_total{listener="https"}')" \
    "connections_accepted_total https moved"
assert_eq 1 "$(delta 'dohgate_tls_handshakes_total{resumed="true",version="TLSv1.2"}')" \
    "tls_handshakes_total: the resumed TLS 1.2 handshake"
assert_range 3 100 "$(delta 'dohgate_tls_handshakes_total{resumed="false",version="TLSv1.3"}')" \
    "tls_handshakes_total: full TLS 1.3 handshakes"
assert_range 1000 10000000 "$(delta 'dohgate_sent_bytes_total{}')" "sent_bytes_total moved"
assert_range 100 10000000 "$(delta 'dohgate_received_bytes_total{}')" "received_bytes_total moved"
assert_eq 2 "$(val "$T/after" 'dohgate_workers{}')" "workers gauge"
assert_range 1 1 "$(val "$T/after" 'dohgate_connections_open{listener="metrics"}')" \
    "connections_open: the scrape's own connection"

end=$(date -d "$(openssl x509 -in "$CERTS/server.pem" -noout -enddate | cut -d= -f2)" +%s)
got=$(grep '^dohgate_certificate_expiry_timestamp_seconds{' "$T/after" | awk '{print $2}')
assert_eq "$end" "$got" "certificate_expiry_timestamp_seconds is the certificate's notAfter"

# ---- the rest of the listener
out=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$M_PORT/healthz")
assert_eq "ok 200" "$(echo $out)" "/healthz: 200 ok"
assert_eq 405 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$M_PORT/metrics")" "POST /metrics: 405"
assert_eq 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$M_PORT/other")" "other paths: 404"

finish
