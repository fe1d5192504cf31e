#!/bin/bash
# t_errors: every refusal and bad client. HTTP problems get an HTTP status with a one-line text body
# (404, 405 + Allow, 400, 413, 414, 415); DNS problems in a decodable message get a DNS rcode in
# a 200 (NOTIMP for opcode STATUS, REFUSED for AXFR); the same refusals over HTTP/1.1; a client
# that offers only http/1.1, or no ALPN, is served over HTTP/1.1; plain HTTP on the TLS port and
# garbage instead of the HTTP/2 preface get a close, not a hang. The server keeps answering
# afterwards.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig kdig curl openssl python3

# ---- pre
start_nsd
start_dohgate --workers 1

URL=$(dohgate_url)
Q=$(dnsmsg query "www.$ZONE" A --b64)

# check_error WHAT EXPECTED-STATUS: status of the last dcurl, and a one-line text body
check_error() {
    local what=$1 want=$2 lines
    assert_eq "$want" "$HTTP_CODE" "$what: HTTP $want"
    if [ ! -s "$T/resp.bin" ]; then
        ko "$what: the error body is empty (expected one line of text)"
        return
    fi
    lines=$(tr -d '\n' <"$T/resp.bin" | wc -c | tr -d ' ')
    if LC_ALL=C grep -q '[^[:print:][:space:]]' "$T/resp.bin"; then
        ko "$what: the error body is not text: '$(snip "$T/resp.bin" 80)'"
    elif [ "$(grep -c '' "$T/resp.bin")" -ne 1 ] || [ "$lines" -eq 0 ]; then
        ko "$what: the error body is not one line: '$(snip "$T/resp.bin" 300)'"
    else
        ok "$what: one-line text body ('$(snip "$T/resp.bin" 80)')"
    fi
}

# post_bytes FILE [CONTENT-TYPE]
post_bytes() {
    dcurl -H "content-type: ${2:-application/dns-message}" --data-binary "@$1" "$URL"
}

# ---- 404: other paths (the DoH path matches exactly; "/" is the landing page, see t_site)
for p in /other /dns-query/ /dns-queryx /DNS-QUERY "/other?dns=$Q"; do
    dcurl "$(dohgate_url "$p")"
    check_error "GET $p" 404
done

# ---- 405: other methods on the DoH path
for m in PUT DELETE PATCH OPTIONS; do
    dcurl -X "$m" "$URL?dns=$Q"
    check_error "$m /dns-query" 405
    allow=$(hdr allow)
    assert_match '^GET, ?POST$' "$allow" "$m /dns-query: allow header lists GET and POST"
done

dcurl -I "$URL?dns=$Q"
assert_eq 405 "$HTTP_CODE" "HEAD /dns-query: HTTP 405"

# ---- 400: GET without a usable dns=
dcurl "$URL";                   check_error "GET without a query string" 400
dcurl "$URL?foo=bar";           check_error "GET without dns=" 400
dcurl "$URL?dns=";              check_error "GET with an empty dns=" 400
dcurl "$URL?dns=!!!!";          check_error "GET with dns= not base64url" 400
dcurl "$URL?dns=${Q}%3D%3D";    check_error "GET with %-encoded '=' padding" 400
dcurl "$URL?dns=$Q==";          check_error "GET with '=' padding" 400
std=$(dnsmsg query "www.$ZONE" A --id 0xfbff --edns 4096 --b64 | tr '_-' '/+')
dcurl "$URL?dns=$std";          check_error "GET with standard base64 (+ and /) instead of base64url" 400
dcurl "$URL?dns=$Q&dns=$Q";     check_error "GET with dns= given twice" 400

# ---- 400: messages that decode but are not one query
q=$(dnsmsg query "www.$ZONE" A --qr --b64)
dcurl "$URL?dns=$q";            check_error "GET of a message with QR set" 400
q=$(dnsmsg query "www.$ZONE" A --qdcount 2 --b64)
dcurl "$URL?dns=$q";            check_error "GET with QDCOUNT=2" 400
q=$(dnsmsg query "www.$ZONE" A --qdcount 0 --b64)
dcurl "$URL?dns=$q";            check_error "GET with QDCOUNT=0" 400
q=$(dnsmsg query "www.$ZONE" A --truncate 20 --b64)
dcurl "$URL?dns=$q";            check_error "GET of a message cut inside the question" 400
q=$(dnsmsg query "www.$ZONE" A --truncate 7 --b64)
dcurl "$URL?dns=$q";            check_error "GET of a message shorter than a header" 400

dnsmsg query "www.$ZONE" A --qr --out "$T/qr.bin"
post_bytes "$T/qr.bin";         check_error "POST of a message with QR set" 400
dnsmsg query "www.$ZONE" A --qdcount 2 --out "$T/qd2.bin"
post_bytes "$T/qd2.bin";        check_error "POST with QDCOUNT=2" 400
dnsmsg query "www.$ZONE" A --truncate 25 --out "$T/trunc.bin"
post_bytes "$T/trunc.bin";      check_error "POST of a truncated message" 400
: >"$T/empty.bin"
post_bytes "$T/empty.bin";      check_error "POST with an empty body" 400

# ---- 415: POST content-type
dnsmsg query "www.$ZONE" A --out "$T/good.bin"
post_bytes "$T/good.bin" text/plain;                check_error "POST with content-type text/plain" 415
post_bytes "$T/good.bin" application/x-www-form-urlencoded
check_error "POST with content-type application/x-www-form-urlencoded" 415
dcurl -H 'content-type:' --data-binary "@$T/good.bin" "$URL"
check_error "POST without content-type" 415
post_bytes "$T/good.bin" "application/dns-message; charset=binary"
assert_eq 200 "$HTTP_CODE" "POST with content-type parameters (application/dns-message; ...) is accepted"

# ---- 413: body larger than 65535
head -c 70000 /dev/zero >"$T/big.bin"
post_bytes "$T/big.bin";        check_error "POST of a 70000-byte body" 413

# ---- 414: :path over 4096 bytes
long=$(head -c 5000 /dev/zero | tr '\0' 'A')
dcurl "$URL?dns=$long";         check_error "GET with a 5000-byte :path" 414
big=$(head -c 20000 /dev/zero | tr '\0' 'B')
dcurl -H "x-big: $big" "$URL?dns=$Q"; check_error "HTTP/2 header list over 16 KiB" 431
dcurl -H "x-big: ${big:0:8000}" "$URL?dns=$Q"
assert_eq 200 "$HTTP_CODE" "an 8 KB header field is fine"

# ---- DNS-level refusals: 200 with an rcode
doh_get "www.$ZONE" A --opcode 2
assert_eq 200 "$HTTP_CODE" "opcode STATUS (2): HTTP 200"
assert_eq NOTIMP "$(rcode)" "opcode STATUS (2): rcode NOTIMP"
doh_get "$ZONE" AXFR --id 77
assert_eq 200 "$HTTP_CODE" "AXFR: HTTP 200"
assert_eq REFUSED "$(rcode)" "AXFR: rcode REFUSED"
assert_eq 77 "$(dns_id)" "AXFR: the ID comes back"
out=$(kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost "www.$ZONE" ANY 2>&1)
assert_match 'status: NOERROR' "$out" "ANY: NOERROR"
assert_match 'www\.dohgate\.test\.[[:space:]]+3600[[:space:]]+IN[[:space:]]+HINFO[[:space:]]+"RFC8482" ""' "$out" \
    "ANY: one synthesized HINFO \"RFC8482\" (RFC 8482), not the records"
assert_nomatch '192\.0\.2\.10' "$out" "ANY: the A record is not in it (never forwarded)"

# ---- a client offering only http/1.1: DoH over HTTP/1.1, refusals as over HTTP/2
t0=$(now_ms)
code=$(curl -s --http1.1 --max-time 5 --cacert "$CERTS/ca.pem" -o "$T/h1.body" -w '%{http_code} %{http_version} %{content_type}' \
    "$URL?dns=$Q" 2>"$T/h1.err")
rc=$?
dt=$(($(now_ms) - t0))
assert_range 0 4000 "$dt" "curl --http1.1: an answer in under 4 s (no hang)"
assert_eq "200 1.1 application/dns-message" "$code" "curl --http1.1: DoH GET answered over HTTP/1.1 (curl rc $rc $(snip "$T/h1.err"))"
assert_eq "192.0.2.10" "$(dnsmsg show "$T/h1.body" 2>/dev/null | awk '$1 == "an" && $4 == "A" {print $5; exit}')" "curl --http1.1: the answer is right"
for args in "--http1.1" "--http2"; do
    # shellcheck disable=SC2086
    dcurl $args "$URL?dns=!!!!";    check_error "$args: GET with dns= not base64url" 400
    # shellcheck disable=SC2086
    dcurl $args -H 'content-type: text/plain' --data-binary "@$T/good.bin" "$URL"
    check_error "$args: POST with content-type text/plain" 415
    # shellcheck disable=SC2086
    dcurl $args -H 'content-type: application/dns-message' --data-binary "@$T/big.bin" "$URL"
    check_error "$args: POST of a 70000-byte body" 413
    # shellcheck disable=SC2086
    dcurl $args -X PUT "$URL?dns=$Q";  check_error "$args: PUT /dns-query" 405
done

for alpn in "-alpn http/1.1" ""; do
    t0=$(now_ms)
    # shellcheck disable=SC2086
    printf 'GET /dns-query?dns=%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$Q" |
        timeout 6 openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost $alpn -quiet -ign_eof \
        >"$T/s_client.out" 2>"$T/s_client.err"
    rc=$?
    dt=$(($(now_ms) - t0))
    what="openssl s_client ${alpn:-without ALPN}"
    assert_ne 124 "$rc" "$what: Connection: close is honoured, no hang (took $dt ms)"
    assert_eq 'HTTP/1.1 200 OK' "$(head -1 "$T/s_client.out" | tr -d '\r')" "$what: served over HTTP/1.1"
    assert_file_match "$T/s_client.out" '^content-type: application/dns-message' "$what: a DNS answer"
done

# ---- not TLS at all: plain HTTP/1.1 on the TLS port
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DG_PORT/dns-query?dns=$Q" 2>/dev/null)
rc=$?
assert_ne 28 "$rc" "plain HTTP on the TLS port: the server closes, no hang (curl exit $rc, code $code)"

# ---- TLS with ALPN h2, then garbage instead of the HTTP/2 client preface
head -c 3000 /dev/urandom >"$T/garbage.bin"
timeout 6 openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -alpn h2 -quiet \
    <"$T/garbage.bin" >/dev/null 2>&1
rc=$?
assert_ne 124 "$rc" "garbage instead of the HTTP/2 preface: the server closes the connection"

# ---- the server is still fine
doh_get "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "after all that: a normal query answers 200"
assert_match 'A 192\.0\.2\.10' "$(answers)" "after all that: the answer is right"

# ---- post
finish
