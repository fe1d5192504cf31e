#!/bin/bash
# t_nginx: Debian's nginx terminating TLS in front of plain-listen, with contrib/nginx.conf as
# written (only its ports, certificate paths and state directories changed by sed): DoH GET and
# POST over proxy_pass (HTTP/1.1 clients) and over grpc_pass (HTTP/2 clients: h2c to dohgate),
# told apart by the HTTP version dohgate's query log records; curl --doh-url, kdig +https,
# the JSON API and the landing page through nginx; X-Forwarded-For honoured with
# trusted-proxy 127.0.0.1/32 (a client bound to 127.0.0.9 is logged as 127.0.0.9), ignored
# without it, and a spoofed X-Forwarded-For sent to nginx is not taken (nginx appends the real
# peer, which the right-to-left walk finds first).
. "$(dirname "$0")/lib.sh"
need_tools nsd curl kdig nginx python3

start_nsd
make_certs
P=$(free_port)
NG_PORT=$(free_port)
NG=$T/nginx
mkdir -p "$NG"
CONF=$NG/nginx.conf
sed -e "s#127\.0\.0\.1:8053#127.0.0.1:$P#g" \
    -e "s#listen 443 #listen $NG_PORT #" \
    -e "s#/etc/letsencrypt/live/doh\.example\.net/fullchain\.pem#$CERTS/server.pem#" \
    -e "s#/etc/letsencrypt/live/doh\.example\.net/privkey\.pem#$CERTS/server.key#" \
    -e "s#/run/#$NG/#" -e "s#/var/log/nginx/#$NG/#g" -e "s#/var/lib/nginx/#$NG/#g" \
    "$SRC_DIR/contrib/nginx.conf" >"$CONF"
# only the intended lines changed
changed=$(diff "$SRC_DIR/contrib/nginx.conf" "$CONF" | grep -c '^>')
assert_eq 14 "$changed" "contrib/nginx.conf: 14 lines adapted by sed (ports, certificates, paths)"

dgstart() {
    : >"$DG_LOG"
    start_dohgate --plain-listen "127.0.0.1:$P" --query-log yes --query-log-client full "$@"
}
dgstart --trusted-proxy 127.0.0.1/32

nginx -t -p "$NG" -c "$CONF" >"$T/nginx-t.txt" 2>&1
assert_eq 0 "$?" "nginx -t accepts contrib/nginx.conf ($(snip "$T/nginx-t.txt" 300))"
"${GUARD[@]}" nginx -p "$NG" -c "$CONF" -g 'daemon off;' >>"$T/nginx.out" 2>&1 </dev/null &
NG_PID=$!
track "$NG_PID"
wait_for 5 curl -sk -o /dev/null "https://127.0.0.1:$NG_PORT/" || ko "nginx answers on $NG_PORT"

NURL="https://localhost:$NG_PORT/dns-query"
# ncurl CURL-ARGS...: dcurl (lib.sh) through nginx from 127.0.0.9
ncurl() { dcurl --interface 127.0.0.9 "$@"; }
# logline NAME: NAME's query-log line, "CLIENT METHOD VERSION"
logline() { sed -n "s/.*query: \([^ ]*\) $1\. [A-Z]* [A-Z]* \([A-Z]*\) \(HTTP\/[0-9.]*\)$/\1 \2 \3/p" "$DG_LOG" | tail -1; }

# ============================================================================================
q=$(dnsmsg query "h1get.$ZONE" A --b64)
ncurl --http1.1 "$NURL?dns=$q"
assert_eq 200 "$HTTP_CODE" "proxy_pass: HTTP/1.1 GET through nginx: 200"
assert_eq "application/dns-message" "$(hdr content-type)" "proxy_pass: content-type"
dnsmsg query "h1post.$ZONE" A --out "$T/q.bin"
ncurl --http1.1 -H 'content-type: application/dns-message' --data-binary "@$T/q.bin" "$NURL"
assert_eq 200 "$HTTP_CODE" "proxy_pass: HTTP/1.1 POST through nginx: 200"
ncurl --http2 "$NURL?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "grpc_pass: HTTP/2 GET through nginx: 200"
assert_eq "application/dns-message" "$(hdr content-type)" "grpc_pass: a DoH answer, not a gRPC one"
assert_match "www\.$ZONE\. [0-9]+ A 192\.0\.2\.10" "$(answers)" "grpc_pass: the A record"
ncurl --http2 "$NURL?dns=$(dnsmsg query "h2get.$ZONE" A --b64)"
dnsmsg query "h2post.$ZONE" AAAA --out "$T/q.bin"
ncurl --http2 -H 'content-type: application/dns-message' --data-binary "@$T/q.bin" "$NURL"
assert_eq 200 "$HTTP_CODE" "grpc_pass: HTTP/2 POST through nginx: 200"
ncurl --http2 -H 'X-Forwarded-For: 203.0.113.7' "$NURL?dns=$(dnsmsg query "spoof2.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "grpc_pass: a client's spoofed X-Forwarded-For: 200"
ncurl --http1.1 -H 'X-Forwarded-For: 203.0.113.7' "$NURL?dns=$(dnsmsg query "spoof1.$ZONE" A --b64)"
# a client's own Forwarded header (nginx only appends to X-Forwarded-For)
ncurl --http2 -H 'Forwarded: for=198.51.100.66' "$NURL?dns=$(dnsmsg query "spoof3.$ZONE" A --b64)"
ncurl --http1.1 -H 'Forwarded: for=198.51.100.66' "$NURL?dns=$(dnsmsg query "spoof4.$ZONE" A --b64)"
# curl --doh-url (HTTP/2) and kdig +https (HTTP/2 POST) through nginx
out=$(curl -s --interface 127.0.0.9 --max-time 10 --cacert "$CERTS/ca.pem" --doh-url "$NURL" \
    -o /dev/null -w '%{remote_ip} %{http_code}' "https://loop.$ZONE:$NG_PORT/" 2>"$T/doh-url.err")
assert_eq "127.0.0.1 200" "$out" "curl --doh-url through nginx: loop.$ZONE resolved, then fetched"
out=$(kdig -b 127.0.0.9 @127.0.0.1 -p "$NG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    "kdig.$ZONE" A 2>&1)
assert_match "status: NXDOMAIN" "$out" "kdig +https through nginx: an answer (NXDOMAIN)"
out=$(kdig -b 127.0.0.9 @127.0.0.1 -p "$NG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    "www.$ZONE" A +short 2>&1)
assert_eq "192.0.2.10" "$out" "kdig +https through nginx: www's address"
# the JSON API and the landing page (proxy_pass)
body=$(curl -s --max-time 5 --cacert "$CERTS/ca.pem" "https://localhost:$NG_PORT/resolve?name=www.$ZONE&type=A")
assert_match '"data": ?"192\.0\.2\.10"' "$body" "JSON API through nginx"
ncurl --http2 "https://localhost:$NG_PORT/"
assert_eq 200 "$HTTP_CODE" "landing page through nginx: 200"
# Host $host: the name without the port (the page assumes 443, nginx's port in production)
assert_match "<title>DNS over HTTPS: localhost</title>" "$(cat "$T/resp.bin")" \
    "landing page: the name the client used (Host passed on)"
stop_dohgate
assert_eq "127.0.0.9 GET HTTP/1.1" "$(logline "h1get.$ZONE")" "proxy_pass GET: dohgate saw HTTP/1.1 from 127.0.0.9"
assert_eq "127.0.0.9 POST HTTP/1.1" "$(logline "h1post.$ZONE")" "proxy_pass POST: HTTP/1.1, client 127.0.0.9"
assert_eq "127.0.0.9 GET HTTP/2" "$(logline "h2get.$ZONE")" "grpc_pass GET: dohgate saw HTTP/2 (h2c) from 127.0.0.9"
assert_eq "127.0.0.9 POST HTTP/2" "$(logline "h2post.$ZONE")" "grpc_pass POST: HTTP/2, client 127.0.0.9"
assert_eq "127.0.0.9 POST HTTP/2" "$(logline "kdig.$ZONE")" "kdig +https: POST over grpc_pass, client 127.0.0.9"
# curl's own DoH requests do not take --interface: they come from 127.0.0.1
assert_match "^127\.0\.0\.1 (GET|POST) HTTP/2" "$(logline "loop.$ZONE")" "curl --doh-url: over grpc_pass"
assert_eq "127.0.0.9 GET HTTP/2" "$(logline "spoof2.$ZONE")" "grpc_pass: spoofed X-Forwarded-For not taken (nginx appended the peer)"
assert_eq "127.0.0.9 GET HTTP/1.1" "$(logline "spoof1.$ZONE")" "proxy_pass: spoofed X-Forwarded-For not taken"
assert_eq "127.0.0.9 GET HTTP/2" "$(logline "spoof3.$ZONE")" "grpc_pass: a client's Forwarded header not taken"
assert_eq "127.0.0.9 GET HTTP/1.1" "$(logline "spoof4.$ZONE")" "proxy_pass: a client's Forwarded header not taken"

# ---- without trusted-proxy: nginx's X-Forwarded-For is ignored, nginx is the client
dgstart
ncurl --http1.1 "$NURL?dns=$(dnsmsg query "untr1.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "no trusted-proxy: proxy_pass GET 200"
ncurl --http2 "$NURL?dns=$(dnsmsg query "untr2.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "no trusted-proxy: grpc_pass GET 200"
stop_dohgate
assert_eq "127.0.0.1 GET HTTP/1.1" "$(logline "untr1.$ZONE")" "no trusted-proxy: proxy_pass, the client is nginx (127.0.0.1)"
assert_eq "127.0.0.1 GET HTTP/2" "$(logline "untr2.$ZONE")" "no trusted-proxy: grpc_pass, the client is nginx (127.0.0.1)"

kill -QUIT "$NG_PID"
wait_gone "$NG_PID" 5 || ko "nginx stops on SIGQUIT"
wait "$NG_PID" 2>/dev/null
untrack "$NG_PID"
assert_file_nomatch "$NG/dohgate-error.log" '\[(error|crit|alert|emerg)\]' "nginx's error log: no error"
finish
