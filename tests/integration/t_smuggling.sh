#!/bin/bash
# t_smuggling: what a hostile HTTP/1.1 client can make dohgate send to the site's backend
# (issue 14, defect 1 and the smaller ones), with tests/tools/backend.py logging every request head
# it receives byte for byte.
#   1. raw requests over TLS (python ssl): field names with whitespace before the colon
#      (Transfer-Encoding, Content-Length, X-Forwarded-Host), obs-fold, a bare CR, two Hosts,
#      invalid Hosts, userinfo in an absolute-form target: each 400, the connection closed, and
#      the backend never sees the request
#   2. what the backend gets: the client's X-Forwarded-For / X-Real-IP / Forwarded are replaced
#      by dohgate's own fields (HTTP/1.1 and HTTP/2); HTTP/1.0 without Host gets Host: server-name
#      and no X-Forwarded-Host; trailers of a chunked body are not forwarded as fields; HTTP/2
#      with an invalid :authority is 400
#   3. backend status codes outside 100..599 (99, 600), 101, malformed status lines, response
#      field names with whitespace, obs-fold or a bare CR in a response head: 502 (HTTP/1.1 and
#      HTTP/2)
#   4. the plain-HTTP listener: an invalid Host is 400, never a Location built from it
. "$(dirname "$0")/lib.sh"
need_tools nsd curl openssl python3

BACKEND_PY=$SRC_DIR/tests/tools/backend.py
SERVER_NAME=site.$ZONE

# rawtls IN OUT: send file IN over TLS to dohgate (the test CA verified), read until the server
# closes or 5 s pass; the bytes go to OUT, and RAW_END is "closed" or "open" (still open at 5 s)
cat >"$T/rawtls.py" <<'PYEOF'
import socket, ssl, sys, time
port, inp, out, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.sendall(open(inp, "rb").read())
data, end, deadline = b"", "open", time.time() + 5
while time.time() < deadline:
    s.settimeout(max(0.05, deadline - time.time()))
    try:
        b = s.recv(65536)
    except socket.timeout:
        break
    except (ssl.SSLError, OSError):
        end = "closed"
        break
    if not b:
        end = "closed"
        break
    data += b
open(out, "wb").write(data)
print(end)
PYEOF
rawtls() { RAW_END=$(python3 "$T/rawtls.py" "$DG_PORT" "$1" "$2" "$CERTS/ca.pem" 2>"$2.err"); }
# status_line FILE: the first line of a raw answer, CR stripped
status_line() { head -n 1 "$1" | tr -d '\r'; }

# the backend, logging request heads to $BE_LOG
BP=$(free_port)
BE_LOG=$T/backend.log
: >"$BE_LOG"
"${GUARD[@]}" python3 "$BACKEND_PY" "$BP" "$BE_LOG" >>"$T/backend.out" 2>&1 </dev/null &
track $!
for i in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$BP/echo")" = 200 ] && break
    sleep 0.1
done
[ "$i" -lt 50 ] || die "backend.py did not answer on port $BP"

# backend_head CASE: the head the backend logged for the request whose target holds case=CASE
backend_head() {
    awk -v c="case=$1" '
        /^> / && !inhead { inhead = 1; buf = "" }
        inhead { buf = buf $0 "\n" }
        /^>$/ && inhead { inhead = 0; if (index(buf, c)) printf "%s", buf }' "$BE_LOG"
}
# head_has CASE LINE WHAT: the head of CASE at the backend has exactly the line "> LINE"
head_has() {
    if backend_head "$1" | grep -qxF -- "> $2"; then ok "$3"; else
        ko "$3: no line '> $2' in:"
        backend_head "$1" | sed 's/^/       | /'
    fi
}
# head_lacks CASE ERE WHAT: no line of the head of CASE at the backend matches ERE (no case)
head_lacks() {
    if backend_head "$1" | grep -qiE -- "$2"; then
        ko "$3: lines matching /$2/:"
        backend_head "$1" | grep -iE -- "$2" | sed 's/^/       | /'
    else ok "$3"; fi
}
# backend_saw CASE: how many requests with case=CASE reached the backend
backend_saw() { grep -c "^> [A-Z]* /[^ ]*case=$1[& ]" "$BE_LOG"; }

start_nsd
HP=$(free_port)
start_dohgate --workers 1 --site-backend "http://127.0.0.1:$BP" --server-name "$SERVER_NAME" \
    --http-listen "127.0.0.1:$HP"

# ---- 0. control: the raw path works and reaches the backend
printf 'GET /echo?case=control HTTP/1.1\r\nHost: localhost\r\nX-Custom: kept\r\nConnection: close\r\n\r\n' >"$T/in"
rawtls "$T/in" "$T/out"
assert_match '^HTTP/1.1 200 ' "$(status_line "$T/out")" "control: a plain raw request is 200"
assert_eq 1 "$(backend_saw control)" "control: the backend saw it once"
head_has control 'x-custom: kept' "control: its ordinary field was forwarded"

# ---- 1. smuggling shapes: 400, closed, never at the backend
# refused NAME REQUEST-PRINTF-FORMAT: the request (with case=NAME in its target) is refused
refused() {
    local name=$1
    # shellcheck disable=SC2059
    printf "$2" >"$T/in.$name"
    rawtls "$T/in.$name" "$T/out.$name"
    assert_match '^HTTP/1.1 400 ' "$(status_line "$T/out.$name")" "$name: 400"
    assert_eq 1 "$(grep -c '^HTTP/1.1 ' "$T/out.$name")" "$name: one response only (nothing smuggled behind it)"
    assert_eq closed "$RAW_END" "$name: the connection is closed after the 400"
    assert_eq 0 "$(backend_saw "$name")" "$name: the backend never saw the request"
}
SMUGGLED='GET /echo?case=smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n'
refused te-space "POST /echo?case=te-space HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n$SMUGGLED"
refused te-tab "POST /echo?case=te-tab HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n$SMUGGLED"
refused cl-space "POST /echo?case=cl-space HTTP/1.1\r\nHost: localhost\r\nContent-Length : 5\r\n\r\nhello$SMUGGLED"
refused xfh-space "GET /echo?case=xfh-space HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Host : evil.example\r\n\r\n"
refused obs-fold "GET /echo?case=obs-fold HTTP/1.1\r\nHost: localhost\r\nX-A: one\r\n two\r\n\r\n"
refused obs-fold-te "POST /echo?case=obs-fold-te HTTP/1.1\r\nHost: localhost\r\nX-A: one\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"
refused bare-cr "GET /echo?case=bare-cr HTTP/1.1\r\nHost: localhost\r\nX-A: b\rX-Forwarded-For: 203.0.113.9\r\n\r\n"
refused two-hosts "GET /echo?case=two-hosts HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n"
refused two-hosts-10 "GET /echo?case=two-hosts-10 HTTP/1.0\r\nHost: localhost\r\nhost: evil.example\r\n\r\n"
refused host-slash "GET /echo?case=host-slash HTTP/1.1\r\nHost: evil.example/x\r\n\r\n"
refused host-userinfo "GET /echo?case=host-userinfo HTTP/1.1\r\nHost: user@evil.example\r\n\r\n"
refused host-port "GET /echo?case=host-port HTTP/1.1\r\nHost: localhost:80x\r\n\r\n"
refused host-space "GET /echo?case=host-space HTTP/1.1\r\nHost: evil example\r\n\r\n"
refused host-empty "GET /echo?case=host-empty HTTP/1.1\r\nHost:\r\n\r\n"
refused host-v6 "GET /echo?case=host-v6 HTTP/1.1\r\nHost: [evil]\r\n\r\n"
refused abs-userinfo "GET https://user@localhost/echo?case=abs-userinfo HTTP/1.1\r\nHost: localhost\r\n\r\n"
refused abs-nohost "GET https://localhost/echo?case=abs-nohost HTTP/1.1\r\n\r\n"
assert_eq 0 "$(backend_saw smuggled)" "no smuggled request behind a refused one reached the backend"
assert_file_nomatch "$BE_LOG" '^> [^:]*[ 	]:' "no field name with whitespace before its colon reached the backend"

# ---- 2. what the backend gets
# the client's forwarding fields are replaced (HTTP/1.1 raw, then curl over both versions)
printf 'GET /echo?case=xff HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nX-Real-IP: 198.51.100.8\r\nForwarded: for=198.51.100.9\r\nConnection: close\r\n\r\n' >"$T/in"
rawtls "$T/in" "$T/out"
assert_match '^HTTP/1.1 200 ' "$(status_line "$T/out")" "xff: 200"
H=$(backend_head xff)
head_has xff 'x-forwarded-for: 127.0.0.1' "xff: the backend gets x-forwarded-for: 127.0.0.1 (the address dohgate saw)"
assert_eq 1 "$(grep -ci '^> x-forwarded-for:' <<<"$H")" "xff: exactly one x-forwarded-for line"
assert_nomatch '198\.51\.100\.|evil\.example' "$H" "xff: none of the client's forwarding values reach the backend"
head_has xff 'x-forwarded-proto: https' "xff: x-forwarded-proto: https"
head_has xff 'x-forwarded-host: localhost' "xff: x-forwarded-host is the request's Host"
head_lacks xff '^> (x-real-ip|forwarded|x-forwarded-port):' "xff: x-real-ip, forwarded, x-forwarded-port are not passed on"
for v in 1.1 2; do
    code=$(curl -sS --http$v --cacert "$CERTS/ca.pem" -o "$T/xff.json" -w '%{http_code}' \
        -H 'X-Forwarded-For: 198.51.100.7' -H 'X-Real-IP: 198.51.100.8' \
        "https://127.0.0.1:$DG_PORT/echo?case=xff-$v" 2>"$T/curl.err")
    assert_eq 200 "$code" "xff --http$v: 200"
    assert_eq "127.0.0.1 None" "$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1]))["headers"]; print(h.get("x-forwarded-for"), h.get("x-real-ip"))' "$T/xff.json" 2>&1)" \
        "xff --http$v: the backend gets x-forwarded-for 127.0.0.1 and no x-real-ip"
done

# HTTP/1.0 without Host: the backend still gets a Host (server-name), no X-Forwarded-Host
printf 'GET /echo?case=http10 HTTP/1.0\r\n\r\n' >"$T/in"
rawtls "$T/in" "$T/out"
assert_match '^HTTP/1.1 200 ' "$(status_line "$T/out")" "http/1.0 without Host: 200"
head_has http10 'GET /echo?case=http10 HTTP/1.1' "http/1.0 without Host: forwarded as HTTP/1.1"
head_has http10 "host: $SERVER_NAME" "http/1.0 without Host: the backend gets host: server-name"
head_lacks http10 '^> x-forwarded-host:' "http/1.0 without Host: no x-forwarded-host"

# trailers of a chunked request body never become fields at the backend
printf 'POST /echo?case=trailers HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-T1: a\r\nX-T2: b\r\n\r\n' >"$T/in"
rawtls "$T/in" "$T/out"
assert_match '^HTTP/1.1 200 ' "$(status_line "$T/out")" "trailers: 200"
head_has trailers 'content-length: 5' "trailers: the body is forwarded with its length"
head_lacks trailers '^> (x-t1|x-t2|transfer-encoding):' "trailers: no trailer (nor transfer-encoding) is forwarded as a field"

# HTTP/2: an invalid :authority (curl sends the Host option as :authority) is 400
for a in 'user@evil.example' 'evil.example:x'; do
    code=$(curl -sS --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
        --connect-to "::127.0.0.1:$DG_PORT" -H "Host: $a" \
        "https://localhost:$DG_PORT/echo?case=h2-authority" 2>"$T/curl.err")
    assert_eq 400 "$code" "h2 :authority '$a': 400"
done
assert_eq 0 "$(backend_saw h2-authority)" "h2: a request with an invalid :authority never reached the backend"

# ---- 3. backend status codes and response fields: 502
# backend_bad WHAT QUERY: /status?QUERY over both versions is 502
backend_bad() {
    local v code
    for v in 1.1 2; do
        code=$(curl -sS --http$v --cacert "$CERTS/ca.pem" -o "$T/bad.out" -w '%{http_code}' \
            "https://127.0.0.1:$DG_PORT/status?$2" 2>"$T/curl.err")
        assert_eq 502 "$code" "backend $1 --http$v: 502"
    done
}
backend_bad "status 99" 'code=99'
backend_bad "status 600" 'code=600'
backend_bad "status 999" 'code=999'
backend_bad "status 101" 'code=101&line=Upgrade:%20x'
backend_bad "status 2000" 'code=2000'
backend_bad "status abc" 'code=abc'
backend_bad "field 'Transfer-Encoding : chunked'" 'code=200&line=Transfer-Encoding%20:%20chunked'
backend_bad "field 'X-A : b'" 'code=200&line=X-A%20:%20b'
backend_bad "obs-fold" 'code=200&line=X-A:%20a%0D%0A%20b'
backend_bad "bare CR" 'code=200&line=X-A:%20a%0DX-B:%20b'
backend_bad "obs-fold after a 100 Continue" 'code=100&line=%0D%0AHTTP/1.1%20200%20OK%0D%0AX-A:%20a%0D%0A%20b'
code=$(curl -sS --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
    "https://127.0.0.1:$DG_PORT/status?code=100&line=%0D%0AHTTP/1.1%20201%20Made%0D%0AX-A:%20a" 2>"$T/curl.err")
assert_eq 201 "$code" "backend 100 then 201 (a clean interim answer): 201 passed through"
code=$(curl -sS --http1.1 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
    "https://127.0.0.1:$DG_PORT/status?code=599" 2>"$T/curl.err")
assert_eq 599 "$code" "backend status 599 (the top of the range) is passed through"

# ---- 4. the plain-HTTP listener: no Location from an invalid Host
for h in 'evil.example:+80' '[evil]' 'user@evil.example'; do
    printf 'GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$h" >"$T/in"
    out=$(timeout 5 python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(open(sys.argv[2], "rb").read())
d = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    d += b
sys.stdout.write(d.decode("latin-1"))' "$HP" "$T/in" 2>&1 | tr -d '\r')
    assert_match '^HTTP/1.1 400 ' "$out" "port 80: Host '$h' is 400"
    assert_nomatch '(^|\n)location:' "$out" "port 80: Host '$h': no location header"
done
fetch_loc=$(curl -sS -o /dev/null -w '%{redirect_url}' -H "Host: www.$ZONE:$HP" "http://127.0.0.1:$HP/a?b=1")
assert_eq "https://www.$ZONE:$DG_PORT/a?b=1" "$fetch_loc" "port 80: a valid Host is redirected to"

# ---- still fine after all that: DoH answers
doh_get "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "DoH answers 200 at the end"
finish
