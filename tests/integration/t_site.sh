#!/bin/bash
# t_site: the website that dohgate serves on the DoH port, next to DoH.
#   A  --site-root (static files) with --http-listen/--acme-webroot and --request-timeout 2:
#      index files, content types, the /dir -> /dir/ redirect, HEAD, conditional GET (ETag,
#      Last-Modified), byte ranges, wget; escapes from the root refused (.., %2e%2e, %2f, NUL,
#      a symlink out); a 100 MB file over HTTP/1.1 and HTTP/2 with bounded server memory; slow
#      readers; DoH on the same port and certificate (kdig, curl GET/POST over HTTP/1.1, curl
#      --doh-url); raw HTTP/1.1 over openssl s_client (pipelining, Connection: close, no Host,
#      414, 431, 413, Expect: 100-continue, 408, garbage); the plain-HTTP listener (301 to https,
#      ACME challenges); default headers (HSTS on every HTTPS response, never on plain HTTP; no
#      Server header).
#   B  --site-backend (reverse proxy to tests/tools/backend.py): X-Forwarded-*, Host, hop-by-hop
#      headers, request bodies, chunked and large responses, HEAD, 404 passed through, backend
#      connections reused, --backend-timeout -> 504, backend down -> 502 and back; DoH meanwhile.
#   C  neither: the built-in landing page and .mobileconfig (from the request's authority), with
#      --hsts-max-age 0 --header 'Alt-Svc: clear' --server-header dohgate.
. "$(dirname "$0")/lib.sh"
need_tools nsd kdig curl wget openssl python3

BACKEND_PY=$SRC_DIR/tests/tools/backend.py

# ---- helpers

# use_log NAME: the next dohgate logs to $T/dohgate-NAME.log
use_log() { DG_LOG=$T/dohgate-$1.log; }

# fetch CURL-ARGS...: curl with the test CA. Headers (CR stripped) in $T/resp.hdr (so lib.sh's
# `hdr NAME` works), body in $T/resp.bin; sets HTTP_CODE, HTTP_VER (1.1 or 2), SIZE_DL, CURL_RC
fetch() {
    local w
    rm -f "$T/resp.hdr" "$T/resp.raw" "$T/resp.bin"
    w=$(curl -sS --max-time "${CURL_MAX_TIME:-15}" --cacert "$CERTS/ca.pem" -D "$T/resp.raw" \
        -o "$T/resp.bin" -w '%{http_code} %{http_version} %{size_download}' "$@" 2>"$T/curl.err")
    CURL_RC=$?
    read -r HTTP_CODE HTTP_VER SIZE_DL <<<"$w"
    if [ -f "$T/resp.raw" ]; then tr -d '\r' <"$T/resp.raw" >"$T/resp.hdr"; else : >"$T/resp.hdr"; fi
    [ -f "$T/resp.bin" ] || : >"$T/resp.bin"
}

# has_hdr NAME: the last fetch's response has header NAME
has_hdr() { grep -qi "^$1:" "$T/resp.hdr"; }

# url PATH: https://127.0.0.1:$DG_PORT/PATH
url() { echo "https://127.0.0.1:$DG_PORT$1"; }

# first_a FILE: the first A record's address in a DNS answer file
first_a() { dnsmsg show "$1" 2>/dev/null | awk '$1 == "an" && $4 == "A" { print $5; exit }'; }

# raw1 IN OUT [s_client args...]: send file IN over TLS to dohgate (openssl s_client -quiet, so
# stdin's end is ignored) and read until the server closes, at most $RAW_TIMEOUT (6) s. Sets
# RAW_RC (124: the server did not close) and RAW_MS; `h1parse OUT` splits the answers.
raw1() {
    local in=$1 out=$2 t0
    shift 2
    t0=$(now_ms)
    timeout "${RAW_TIMEOUT:-6}" openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost \
        -quiet "$@" <"$in" >"$out" 2>"$out.err"
    RAW_RC=$?
    RAW_MS=$(($(now_ms) - t0))
}

# h1parse FILE [--head]: the HTTP/1.1 responses in FILE, one block per response:
#   status HTTP/1.1 200 OK / h name: value (lower-case name) / body LEN
# the bodies go to FILE.body.N (N from 0); --head: the responses have no body
cat >"$T/h1parse.py" <<'PYEOF'
import sys
path = sys.argv[1]
head = "--head" in sys.argv[2:]
data = open(path, "rb").read()
i, n = 0, 0
while i < len(data):
    j = data.find(b"\r\n\r\n", i)
    if j < 0:
        print("incomplete %d" % (len(data) - i))
        break
    lines = data[i:j].decode("latin-1").split("\r\n")
    print("status " + lines[0])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
        print("h %s: %s" % (k.strip().lower(), v.strip()))
    i = j + 4
    try:
        code = int(lines[0].split()[1])
    except (IndexError, ValueError):
        code = 0
    body = b""
    if 100 <= code < 200:
        print("interim")
        continue
    if head or code in (204, 304):
        pass
    elif "chunked" in hdrs.get("transfer-encoding", "").lower():
        while True:
            e = data.find(b"\r\n", i)
            size = int(data[i:e].split(b";")[0], 16)
            i = e + 2
            if size == 0:
                i = data.find(b"\r\n", i) + 2  # no trailers expected
                break
            body += data[i:i + size]
            i += size + 2
    elif "content-length" in hdrs:
        ln = int(hdrs["content-length"])
        body = data[i:i + ln]
        i += ln
    else:
        body = data[i:]
        i = len(data)
    open("%s.body.%d" % (path, n), "wb").write(body)
    print("body %d" % len(body))
    n += 1
print("responses %d" % n)
PYEOF
h1parse() { python3 "$T/h1parse.py" "$@"; }

# rss_kb: dohgate's resident set size in kB
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$DG_PID/status" 2>/dev/null; }

# dl_sample OUT CURL-ARGS...: download in the background while sampling dohgate's VmRSS every
# 0.1 s; sets DL_CODE (http code), RSS_PEAK (kB)
dl_sample() {
    local out=$1 pid r
    shift
    curl -sS --max-time 60 --cacert "$CERTS/ca.pem" -o "$out" -w '%{http_code}' "$@" \
        >"$out.code" 2>"$out.err" &
    pid=$!
    RSS_PEAK=$(rss_kb)
    while proc_alive "$pid"; do
        r=$(rss_kb)
        [ -n "$r" ] && [ "$r" -gt "$RSS_PEAK" ] && RSS_PEAK=$r
        sleep 0.1
    done
    wait "$pid"
    r=$(rss_kb)
    [ -n "$r" ] && [ "$r" -gt "$RSS_PEAK" ] && RSS_PEAK=$r
    DL_CODE=$(cat "$out.code")
}

# check_refused WHAT: the last fetch was an escape attempt: 400 or 404, the secret not in the body
check_refused() {
    assert_match '^(400|404)$' "$HTTP_CODE" "$1: refused with 400 or 404"
    if grep -q 'TOPSECRET' "$T/resp.bin"; then
        ko "$1: the body holds the secret file's content"
    else
        ok "$1: the body does not hold the secret file's content"
    fi
}

# ============================================================================================
# pre: the document root, the ACME webroot, NSD
start_nsd
make_certs
W=$T/www
mkdir -p "$W/sub" "$T/acme/.well-known/acme-challenge"
printf '<!doctype html>\n<title>dohgate test site</title>\n<p>MARKER-ROOT the root index page</p>\n' >"$W/index.html"
printf '<!doctype html>\n<title>sub</title>\n<p>MARKER-SUB the sub index page</p>\n' >"$W/sub/index.html"
printf 'body { color: #123456; }\n' >"$W/style.css"
printf 'a static file named like the DoH path\n' >"$W/dns-query"
printf 'TOPSECRET-4f1c outside the root\n' >"$T/secret"
ln -s ../secret "$W/link-out"
printf 'TOPSECRET-acme outside the challenge dir\n' >"$T/acme/x"
printf 'tok123.challenge-content-Zq9\n' >"$T/acme/.well-known/acme-challenge/tok123"
head -c 100M /dev/urandom >"$W/big.bin"
BIG_SHA=$(sha256sum "$W/big.bin" | cut -d' ' -f1)
IDX_SIZE=$(wc -c <"$W/index.html" | tr -d ' ')
HP=$(free_port)

# ============================================================================================
# A: static site, plain-HTTP listener, request timeout 2 s
use_log a
start_dohgate --workers 1 --site-root "$W" --request-timeout 2 \
    --http-listen "127.0.0.1:$HP" --acme-webroot "$T/acme"
A_PORT=$DG_PORT

# ---- 1. static files over HTTP/1.1 and HTTP/2
for v in 1.1 2; do
    P=--http$v
    fetch $P "$(url /)"
    assert_eq "200 $v" "$HTTP_CODE $HTTP_VER" "static $P: GET / is 200 over HTTP/$v"
    if cmp -s "$W/index.html" "$T/resp.bin"; then ok "static $P: GET / is index.html"; else ko "static $P: GET / body differs from index.html: '$(snip "$T/resp.bin")'"; fi
    assert_match '^text/html' "$(hdr content-type)" "static $P: index.html is text/html"
    fetch $P "$(url /sub/)"
    assert_eq 200 "$HTTP_CODE" "static $P: GET /sub/ is 200"
    if cmp -s "$W/sub/index.html" "$T/resp.bin"; then ok "static $P: GET /sub/ is sub/index.html"; else ko "static $P: GET /sub/ body differs: '$(snip "$T/resp.bin")'"; fi
    fetch $P "$(url /style.css)"
    assert_eq 200 "$HTTP_CODE" "static $P: GET /style.css is 200"
    assert_match '^text/css' "$(hdr content-type)" "static $P: .css is text/css"
    fetch $P "$(url /sub)"
    assert_eq 301 "$HTTP_CODE" "static $P: GET /sub (no slash) is 301"
    assert_eq /sub/ "$(hdr location)" "static $P: /sub redirects to location /sub/"
    fetch $P "$(url /nope.html)"
    assert_eq 404 "$HTTP_CODE" "static $P: a missing file is 404"

    # HEAD: the length of the body that a GET would get, no body
    fetch $P -I "$(url /)"
    assert_eq 200 "$HTTP_CODE" "static $P: HEAD / is 200"
    assert_eq "$IDX_SIZE" "$(hdr content-length)" "static $P: HEAD / has content-length $IDX_SIZE"
    assert_eq 0 "$SIZE_DL" "static $P: HEAD / has no body"

    # conditional GET
    fetch $P "$(url /)"
    etag=$(hdr etag)
    lm=$(hdr last-modified)
    assert_match '^(W/)?".+"$' "$etag" "static $P: GET / has an etag"
    assert_match '^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$' "$lm" "static $P: GET / has an HTTP-date last-modified"
    fetch $P -H "If-None-Match: $etag" "$(url /)"
    assert_eq 304 "$HTTP_CODE" "static $P: If-None-Match with the etag is 304"
    assert_eq 0 "$SIZE_DL" "static $P: the 304 has no body"
    fetch $P -H 'If-None-Match: "not-the-etag"' "$(url /)"
    assert_eq 200 "$HTTP_CODE" "static $P: If-None-Match with another etag is 200"
    fetch $P -H "If-Modified-Since: $lm" "$(url /)"
    assert_eq 304 "$HTTP_CODE" "static $P: If-Modified-Since with the last-modified value is 304"
    fetch $P -H 'If-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT' "$(url /)"
    assert_eq 200 "$HTTP_CODE" "static $P: If-Modified-Since long before the mtime is 200"

    # a byte range
    fetch $P -H 'Range: bytes=0-9' "$(url /)"
    assert_eq 206 "$HTTP_CODE" "static $P: Range bytes=0-9 is 206"
    assert_eq 10 "$SIZE_DL" "static $P: Range bytes=0-9 gives 10 bytes"
    assert_eq "$(head -c 10 "$W/index.html" | od -An -tx1)" "$(od -An -tx1 <"$T/resp.bin")" "static $P: the range is the file's first 10 bytes"
    assert_eq "bytes 0-9/$IDX_SIZE" "$(hdr content-range)" "static $P: content-range bytes 0-9/$IDX_SIZE"
done

# wget: an HTTP/1.1-only client
rm -f "$T/wget.html"
wget -q -T 10 -t 1 --ca-certificate="$CERTS/ca.pem" -O "$T/wget.html" "$(url /)" 2>"$T/wget.err"
rc=$?
assert_eq 0 "$rc" "wget fetches / (exit status; $(snip "$T/wget.err"))"
if cmp -s "$W/index.html" "$T/wget.html"; then ok "wget: the page is index.html"; else ko "wget: the page differs from index.html"; fi

# ---- 1b. escapes from the root (over both protocols; --path-as-is sends the path unchanged)
for v in 1.1 2; do
    for p in /../secret /sub/../../secret /%2e%2e/secret /%2e%2e%2fsecret /sub/..%2f..%2fsecret \
        /%252e%252e/secret /link-out /index.html%00.txt /%00 /..%5csecret; do
        fetch --http$v --path-as-is "$(url "$p")"
        check_refused "escape --http$v $p"
    done
done

# ---- 1c. the 100 MB file, streamed with bounded memory.
# This is a memory bound, not a timing test: a server that read the file into memory (or
# buffered what the client cannot take yet) would grow by ~100 MB. curl's --limit-rate keeps the
# transfer going for ~2 s so that several samples of VmRSS fall inside it; the peak growth over
# the RSS before the download must stay below 60 MB (dohgate reads the file with pread in
# small pieces as the connection drains).
for v in 1.1 2; do
    rss0=$(rss_kb)
    dl_sample "$T/dl.bin" --http$v --limit-rate 50M "$(url /big.bin)"
    assert_eq 200 "$DL_CODE" "100 MB file --http$v: 200"
    assert_eq "$BIG_SHA" "$(sha256sum "$T/dl.bin" | cut -d' ' -f1)" "100 MB file --http$v: sha256 matches"
    assert_range 0 61440 "$((RSS_PEAK - rss0))" "100 MB file --http$v: dohgate's peak RSS growth ($((RSS_PEAK - rss0)) kB over $rss0 kB) < 60 MB"
    rm -f "$T/dl.bin"
done

# slow readers (1 MB/s, one per protocol) for 3 s, then killed mid-transfer
rss0=$(rss_kb)
curl -s --http1.1 --max-time 30 --cacert "$CERTS/ca.pem" --limit-rate 1M -o /dev/null "$(url /big.bin)" &
s1=$!
curl -s --http2 --max-time 30 --cacert "$CERTS/ca.pem" --limit-rate 1M -o /dev/null "$(url /big.bin)" &
s2=$!
peak=$rss0
for _ in $(seq 1 30); do
    r=$(rss_kb)
    [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.1
done
fetch --http2 "$(url /style.css)"
assert_eq 200 "$HTTP_CODE" "while two slow readers download big.bin, other requests are answered"
alive=0
proc_alive "$s1" && proc_alive "$s2" && alive=1
assert_eq 1 "$alive" "the slow readers are still downloading after 3 s (the server did not drop them)"
kill "$s1" "$s2" 2>/dev/null
wait "$s1" "$s2" 2>/dev/null
assert_range 0 61440 "$((peak - rss0))" "slow readers: dohgate's RSS growth ($((peak - rss0)) kB) < 60 MB"
sleep 0.3
fetch --http1.1 "$(url /)"
assert_eq 200 "$HTTP_CODE" "after the slow readers were killed: GET / over HTTP/1.1 answers 200"
fetch --http2 "$(url /)"
assert_eq 200 "$HTTP_CODE" "after the slow readers were killed: GET / over HTTP/2 answers 200"

# ---- 2. DoH alongside, same port and certificate
for mode in +https +https-get; do
    out=$(kdig @127.0.0.1 -p "$DG_PORT" "$mode" +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
        +timeout=5 +retry=0 +noall +answer "www.$ZONE" A 2>&1)
    assert_match "www\\.$ZONE\\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\\.0\\.2\\.10" "$out" "kdig $mode with --site-root: www A is 192.0.2.10"
done
Q=$(dnsmsg query "www.$ZONE" A --b64)
dnsmsg query "mail.$ZONE" MX --id 4321 --out "$T/q-mx.bin"
for v in 1.1 2; do
    fetch --http$v -H 'accept: application/dns-message' "$(url /dns-query)?dns=$Q"
    assert_eq "200 $v" "$HTTP_CODE $HTTP_VER" "DoH GET --http$v with --site-root: 200 over HTTP/$v"
    assert_eq application/dns-message "$(hdr content-type)" "DoH GET --http$v: content-type application/dns-message (not the static file named dns-query)"
    assert_eq 192.0.2.10 "$(first_a "$T/resp.bin")" "DoH GET --http$v: www A is 192.0.2.10"
    fetch --http$v -H 'content-type: application/dns-message' -H 'accept: application/dns-message' \
        --data-binary "@$T/q-mx.bin" "$(url /dns-query)"
    assert_eq 200 "$HTTP_CODE" "DoH POST --http$v with --site-root: 200"
    assert_eq application/dns-message "$(hdr content-type)" "DoH POST --http$v: content-type"
    out=$(dnsmsg show "$T/resp.bin" 2>&1)
    assert_match "hdr id=4321 " "$out" "DoH POST --http$v: the ID comes back"
    assert_match "an mail\\.$ZONE\\. [0-9]+ MX 10 mx\\.$ZONE\\." "$out" "DoH POST --http$v: mail MX"
done
# curl resolves loop.dohgate.test (127.0.0.1) through dohgate, then fetches the site from it
out=$(curl -sS --http2 --max-time 10 --cacert "$CERTS/ca.pem" --doh-url "$(dohgate_url)" \
    -o "$T/doh-url.bin" -w '%{remote_ip} %{http_code}' "https://loop.$ZONE:$DG_PORT/" 2>"$T/doh-url.err")
assert_eq "127.0.0.1 200" "$out" "curl --doh-url: loop.$ZONE resolved through dohgate, then the site fetched ($(snip "$T/doh-url.err"))"
if cmp -s "$W/index.html" "$T/doh-url.bin"; then ok "curl --doh-url: the page is index.html"; else ko "curl --doh-url: the page differs"; fi

# ---- 3. HTTP/1.1 on the wire (openssl s_client)
for alpn in "-alpn http/1.1" ""; do
    what="raw HTTP/1.1 ${alpn:-(no ALPN)}"
    # two pipelined requests in one write
    printf 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET /style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >"$T/in"
    # shellcheck disable=SC2086
    raw1 "$T/in" "$T/out" $alpn
    assert_ne 124 "$RAW_RC" "$what: pipelined GETs: the connection ends after the second (Connection: close)"
    p=$(h1parse "$T/out")
    assert_match 'responses 2' "$p" "$what: pipelined GETs: two responses on one connection"
    assert_eq "HTTP/1.1 200 OK|HTTP/1.1 200 OK" "$(sed -n 's/^status //p' <<<"$p" | paste -sd'|')" "$what: pipelined GETs: both 200"
    assert_match '^text/html.*\|text/css' "$(sed -n 's/^h content-type: //p' <<<"$p" | paste -sd'|')" "$what: pipelined GETs: answered in order (html, then css)"
    if cmp -s "$W/index.html" "$T/out.body.0" && cmp -s "$W/style.css" "$T/out.body.1"; then
        ok "$what: pipelined GETs: the bodies are index.html then style.css"
    else
        ko "$what: pipelined GETs: wrong bodies: '$(snip "$T/out" 300)'"
    fi
    # Connection: close
    printf 'GET /style.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >"$T/in"
    # shellcheck disable=SC2086
    raw1 "$T/in" "$T/out" $alpn
    p=$(h1parse "$T/out")
    assert_match 'h connection: close' "$p" "$what: Connection: close is answered with connection: close"
    assert_ne 124 "$RAW_RC" "$what: after Connection: close the server ends the connection"
done

# HEAD on the wire: the header block and not one byte more
printf 'HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
p=$(h1parse "$T/out" --head)
assert_match "h content-length: $IDX_SIZE" "$p" "raw HEAD /: content-length $IDX_SIZE"
assert_eq 0 "$(python3 -c 'import sys; d = open(sys.argv[1], "rb").read(); print(len(d) - d.find(b"\r\n\r\n") - 4)' "$T/out")" "raw HEAD /: no body bytes after the header block"

# no Host
printf 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n' >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 400 ' "$(h1parse "$T/out")" "raw: HTTP/1.1 without Host is 400"

# a 5000-byte target
{ printf 'GET /'; head -c 5000 /dev/zero | tr '\0' a; printf ' HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'; } >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 414 ' "$(h1parse "$T/out")" "raw: a 5000-byte request target is 414"

# 20 KB of headers
{
    printf 'GET / HTTP/1.1\r\nHost: localhost\r\n'
    for i in $(seq 1 200); do printf 'X-Pad-%03d: %090d\r\n' "$i" 0; done
    printf 'Connection: close\r\n\r\n'
} >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 431 ' "$(h1parse "$T/out")" "raw: 20 KB of request headers is 431"

# a body announced, not sent: static files take none (issue 14): 405 for POST, 413 for GET
printf 'POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 2000000\r\n\r\n' >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 405 ' "$(h1parse "$T/out")" "raw: POST to the site with Content-Length 2000000 is 405 (before the body)"
printf 'GET /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n' >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 413 ' "$(h1parse "$T/out")" "raw: GET to the site with Content-Length 2000000 is 413 (before the body)"

# Expect: 100-continue: the interim answer comes before the body is sent, then the DoH answer
dnsmsg query "www.$ZONE" A --id 77 --out "$T/q.bin"
{
    printf 'POST /dns-query HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/dns-message\r\nAccept: application/dns-message\r\nContent-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n' "$(wc -c <"$T/q.bin")"
    sleep 1
    cat "$T/q.bin"
} | timeout 8 openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -quiet -alpn http/1.1 \
    >"$T/out" 2>"$T/out.err"
p=$(h1parse "$T/out")
assert_eq "HTTP/1.1 100 Continue|HTTP/1.1 200 OK" "$(sed -n 's/^status //p' <<<"$p" | paste -sd'|')" "raw: Expect: 100-continue gets 100 Continue, then 200"
assert_eq 192.0.2.10 "$(first_a "$T/out.body.0")" "raw: Expect: 100-continue: the final answer is the DNS answer"

# headers never finished: 408 after --request-timeout 2 (a timeout test: up to 8 s allowed)
printf 'GET / HTTP/1.1\r\nHost: localhost\r\n' >"$T/in"
RAW_TIMEOUT=10 raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 408 ' "$(h1parse "$T/out")" "raw: a request whose headers never end gets 408"
assert_ne 124 "$RAW_RC" "raw: ... and the connection is closed after the 408"
assert_range 1500 8000 "$RAW_MS" "raw: ... after about --request-timeout 2 s (took $RAW_MS ms)"

# garbage
printf '\x01\x02GARBAGE\xff\xfe not http at all\r\n\r\n' >"$T/in"
raw1 "$T/in" "$T/out" -alpn http/1.1
assert_match '^status HTTP/1.1 400 ' "$(h1parse "$T/out")" "raw: garbage bytes get 400"
assert_ne 124 "$RAW_RC" "raw: ... and the connection is closed"

# ---- 7a. default headers: HSTS on every HTTPS response, no Server header
for v in 1.1 2; do
    for what in "site /:$(url /)" "DoH:$(url /dns-query)?dns=$Q" "404:$(url /nope)" "304:$(url /)"; do
        name=${what%%:*}
        u=${what#*:}
        if [ "$name" = 304 ]; then fetch --http$v -H "If-None-Match: $etag" "$u"; else fetch --http$v "$u"; fi
        assert_eq "max-age=31536000" "$(hdr strict-transport-security)" "default headers --http$v $name ($HTTP_CODE): strict-transport-security: max-age=31536000"
        if has_hdr server; then ko "default headers --http$v $name: a server header: '$(hdr server)'"; else ok "default headers --http$v $name: no server header"; fi
    done
done

# ---- 6. the plain-HTTP listener: redirects and ACME challenges
PH="http://127.0.0.1:$HP"
fetch "$PH/foo?x=1"
assert_eq 301 "$HTTP_CODE" "port 80: GET /foo?x=1 is 301"
assert_eq "https://127.0.0.1:$A_PORT/foo?x=1" "$(hdr location)" "port 80: location is https://127.0.0.1:TLSPORT/foo?x=1"
if has_hdr strict-transport-security; then ko "port 80: the redirect has a strict-transport-security header"; else ok "port 80: no strict-transport-security on the redirect"; fi
fetch -H "Host: loop.$ZONE:$HP" "$PH/a/b"
assert_eq "https://loop.$ZONE:$A_PORT/a/b" "$(hdr location)" "port 80: the redirect uses the Host header's name"
fetch "$PH/dns-query?dns=$Q"
assert_eq 301 "$HTTP_CODE" "port 80: /dns-query is redirected, not answered"
assert_eq "https://127.0.0.1:$A_PORT/dns-query?dns=$Q" "$(hdr location)" "port 80: /dns-query redirects to the https DoH URL"
fetch "$PH/.well-known/acme-challenge/tok123"
assert_eq 200 "$HTTP_CODE" "port 80: the ACME challenge file is served"
if cmp -s "$T/acme/.well-known/acme-challenge/tok123" "$T/resp.bin"; then ok "port 80: the challenge's content is exact"; else ko "port 80: the challenge's content differs: '$(snip "$T/resp.bin")'"; fi
if has_hdr strict-transport-security; then ko "port 80: the challenge answer has a strict-transport-security header"; else ok "port 80: no strict-transport-security on the challenge answer"; fi
fetch "$PH/.well-known/acme-challenge/missing-token"
assert_eq 404 "$HTTP_CODE" "port 80: a missing challenge token is 404"
for p in /.well-known/acme-challenge/../../x /.well-known/acme-challenge/%2e%2e/%2e%2e/x /.well-known/acme-challenge/..%2f..%2fx; do
    fetch --path-as-is "$PH$p"
    assert_match '^(400|404)$' "$HTTP_CODE" "port 80: $p is refused with 400 or 404 ($HTTP_CODE)"
    if grep -q TOPSECRET "$T/resp.bin"; then ko "port 80: $p returned the file outside the challenge dir"; else ok "port 80: $p does not return the file outside the challenge dir"; fi
done

# ---- still fine after all that
doh_get "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "static instance at the end: DoH answers 200"
stop_dohgate

# ============================================================================================
# B: reverse proxy to backend.py, --backend-timeout 1
BP=$(free_port)
BE_LOG=$T/backend.log
start_backend() {
    local i
    "${GUARD[@]}" python3 "$BACKEND_PY" "$BP" "$BE_LOG" >>"$T/backend.out" 2>&1 </dev/null &
    BE_PID=$!
    track "$BE_PID"
    for i in $(seq 1 50); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$BP/echo")" = 200 ] && return 0
        sleep 0.1
    done
    die "backend.py did not answer on port $BP"
}
stop_backend() {
    kill -TERM "$BE_PID" 2>/dev/null
    wait "$BE_PID" 2>/dev/null
    untrack "$BE_PID"
}
# jq_py FILE EXPR: a Python expression over d = the JSON in FILE
jq_py() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>&1; }
# backend_ports: the client-side ports of every TCP connection to the backend (TIME-WAIT included)
backend_ports() {
    ss -tanH "( dport = :$BP or sport = :$BP )" |
        awk -v p=":$BP\$" '$1 != "LISTEN" { if ($4 ~ p) print $5; else print $4 }' | sort -u
}

start_backend
use_log b
start_dohgate --workers 1 --site-backend "http://127.0.0.1:$BP" --backend-timeout 1
head -c 204800 /dev/urandom >"$T/post.bin"
POST_SHA=$(sha256sum "$T/post.bin" | cut -d' ' -f1)
BIG30_SHA=$(python3 -c 'import hashlib, sys
n = int(sys.argv[1]); b = bytes(range(256)) * 256; h = hashlib.sha256()
while n > 0:
    k = min(n, len(b)); h.update(b[:k]); n -= k
print(h.hexdigest())' 30000000)

for v in 1.1 2; do
    P=--http$v
    fetch $P -H 'X-Custom: kept' "$(url /echo?a=1)"
    assert_eq "200 $v" "$HTTP_CODE $HTTP_VER" "proxy $P: GET /echo is 200 over HTTP/$v"
    cp "$T/resp.bin" "$T/echo.json"
    assert_eq "GET /echo?a=1" "$(jq_py "$T/echo.json" 'd["method"] + " " + d["path"]')" "proxy $P: the backend got GET /echo?a=1"
    assert_eq 127.0.0.1 "$(jq_py "$T/echo.json" 'd["headers"].get("x-forwarded-for")')" "proxy $P: x-forwarded-for 127.0.0.1"
    assert_eq https "$(jq_py "$T/echo.json" 'd["headers"].get("x-forwarded-proto")')" "proxy $P: x-forwarded-proto https"
    assert_eq "127.0.0.1:$DG_PORT" "$(jq_py "$T/echo.json" 'd["headers"].get("host")')" "proxy $P: host is the client's authority"
    assert_eq kept "$(jq_py "$T/echo.json" 'd["headers"].get("x-custom")')" "proxy $P: an ordinary request header is forwarded"
    assert_eq yes "$(hdr x-backend)" "proxy $P: the backend's response headers come back"

    fetch $P -H 'X-Forwarded-For: 198.51.100.7' "$(url /echo)"
    assert_eq "127.0.0.1" "$(jq_py "$T/resp.bin" 'd["headers"].get("x-forwarded-for")')" "proxy $P: a client's X-Forwarded-For is replaced (no trusted proxies: t_smuggling)"

    fetch $P -H 'content-type: application/octet-stream' --data-binary "@$T/post.bin" "$(url /echo)"
    assert_eq 200 "$HTTP_CODE" "proxy $P: POST /echo of 200 KB is 200"
    assert_eq "POST 204800 $POST_SHA" "$(jq_py "$T/resp.bin" 'd["method"] + " " + str(d["body_len"]) + " " + d["body_sha256"]')" "proxy $P: POST 200 KB: the backend got the body whole (length, sha256)"

    fetch $P "$(url /chunked)"
    assert_eq 200 "$HTTP_CODE" "proxy $P: GET /chunked is 200"
    assert_eq "$(for i in $(seq 0 9); do echo "line $i"; done)" "$(cat "$T/resp.bin")" "proxy $P: /chunked: the 10 lines"

    CURL_MAX_TIME=60 fetch $P "$(url /big?n=30000000)"
    assert_eq 200 "$HTTP_CODE" "proxy $P: GET /big?n=30000000 is 200"
    assert_eq 30000000 "$SIZE_DL" "proxy $P: /big: 30000000 bytes"
    assert_eq "$BIG30_SHA" "$(sha256sum "$T/resp.bin" | cut -d' ' -f1)" "proxy $P: /big: the bytes are the backend's"
    rm -f "$T/resp.bin"

    fetch $P "$(url /nothing-here)"
    assert_eq 404 "$HTTP_CODE" "proxy $P: the backend's 404 is passed through"
    assert_eq yes "$(hdr x-backend)" "proxy $P: ... with its x-backend: yes header"
    assert_eq "backend: not found" "$(cat "$T/resp.bin")" "proxy $P: ... and its body"

    fetch $P -I "$(url /echo)"
    assert_eq 200 "$HTTP_CODE" "proxy $P: HEAD /echo is 200"
    assert_match '^[1-9][0-9]*$' "$(hdr content-length)" "proxy $P: HEAD /echo has the backend's content-length"
    assert_eq 0 "$SIZE_DL" "proxy $P: HEAD /echo has no body"
done

# hop-by-hop request headers (HTTP/1.1 client): Connection, the fields it names, Keep-Alive, TE
fetch --http1.1 -H 'Connection: foo' -H 'Foo: bar' -H 'Keep-Alive: timeout=5' -H 'TE: trailers' "$(url /echo)"
cp "$T/resp.bin" "$T/echo.json"
assert_ne foo "$(jq_py "$T/echo.json" 'd["headers"].get("connection")')" "proxy: the client's 'connection: foo' is not forwarded"
assert_eq None "$(jq_py "$T/echo.json" 'd["headers"].get("foo")')" "proxy: a header named by Connection (foo) is not forwarded"
assert_eq None "$(jq_py "$T/echo.json" 'd["headers"].get("keep-alive")')" "proxy: keep-alive is not forwarded"
assert_eq None "$(jq_py "$T/echo.json" 'd["headers"].get("te")')" "proxy: te is not forwarded"

# backend connections are reused: 10 requests from 10 client connections, few backend connections
if command -v ss >/dev/null 2>&1; then
    backend_ports >"$T/ports0"
    for i in $(seq 1 10); do fetch --http1.1 "$(url "/echo?n=$i")"; done
    assert_eq 200 "$HTTP_CODE" "proxy: 10 sequential requests answered"
    backend_ports >"$T/ports1"
    assert_range 1 1000 "$(wc -l <"$T/ports1")" "proxy: ss sees dohgate's backend connection(s) (control for the next check)"
    assert_range 0 3 "$(comm -13 "$T/ports0" "$T/ports1" | wc -l)" "proxy: 10 requests from 10 client connections opened at most 3 new backend connections (keep-alive reuse)"
else
    echo "(ss not installed: the backend connection reuse check is skipped)"
fi

# --backend-timeout 1: /slow?s=3 is 504; DoH answers meanwhile
curl -s --http2 --max-time 10 --cacert "$CERTS/ca.pem" -o "$T/slow.bin" -w '%{http_code}' "$(url /slow?s=3)" >"$T/slow.code" 2>/dev/null &
sp=$!
sleep 0.3
doh_get "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "proxy: DoH answers 200 while a backend request is pending"
assert_match 'A 192\.0\.2\.10' "$(answers)" "proxy: ... with the right answer"
wait "$sp"
assert_eq 504 "$(cat "$T/slow.code")" "proxy --http2: --backend-timeout 1 and /slow?s=3 is 504"
fetch --http1.1 "$(url /slow?s=3)"
assert_eq 504 "$HTTP_CODE" "proxy --http1.1: --backend-timeout 1 and /slow?s=3 is 504"
fetch --http1.1 "$(url /echo)"
assert_eq 200 "$HTTP_CODE" "proxy: after the 504s, /echo is 200 again"

# backend down: 502; DoH still answers; backend back: 200
stop_backend
for v in 1.1 2; do
    fetch --http$v "$(url /echo)"
    assert_eq 502 "$HTTP_CODE" "proxy --http$v: backend down: 502"
done
out=$(kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    +timeout=5 +retry=0 +noall +answer "www.$ZONE" A 2>&1)
assert_match '192\.0\.2\.10' "$out" "proxy: backend down: kdig DoH still answers"
doh_get "www.$ZONE" AAAA
assert_match 'AAAA 2001:db8::10' "$(answers)" "proxy: backend down: curl DoH still answers"
start_backend
for v in 1.1 2; do
    fetch --http$v "$(url /echo)"
    assert_eq 200 "$HTTP_CODE" "proxy --http$v: backend restarted on the same port: 200 again"
done
stop_dohgate
stop_backend

# ============================================================================================
# C: the landing page, with custom headers
use_log c
start_dohgate --workers 1 --hsts-max-age 0 --header 'Alt-Svc: clear' --server-header dohgate
for v in 1.1 2; do
    P=--http$v
    fetch $P "$(url /)"
    assert_eq "200 $v" "$HTTP_CODE $HTTP_VER" "landing $P: GET / is 200"
    assert_match '^text/html' "$(hdr content-type)" "landing $P: text/html"
    assert_file_match "$T/resp.bin" "https://127\\.0\\.0\\.1:$DG_PORT/dns-query" "landing $P: the page shows the DoH URL https://127.0.0.1:$DG_PORT/dns-query"
    if grep -Eqi 'src="?https?:|<script|<link[^>]*href="?https?:' "$T/resp.bin"; then
        ko "landing $P: the page loads external resources or scripts"
    else
        ok "landing $P: no external resources, no <script"
    fi
    fetch $P --resolve "localhost:$DG_PORT:127.0.0.1" "https://localhost:$DG_PORT/"
    assert_file_match "$T/resp.bin" "https://localhost:$DG_PORT/dns-query" "landing $P: fetched as localhost, the page shows https://localhost:$DG_PORT/dns-query"

    fetch $P "$(url /dohgate.mobileconfig)"
    assert_eq 200 "$HTTP_CODE" "landing $P: /dohgate.mobileconfig is 200"
    assert_eq application/x-apple-aspen-config "$(hdr content-type)" "landing $P: mobileconfig content-type"
    out=$(python3 -c 'import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
d = p["PayloadContent"][0]["DNSSettings"]
print(d["DNSProtocol"], d["ServerURL"])' "$T/resp.bin" 2>&1)
    assert_eq "HTTPS $(url /dns-query)" "$out" "landing $P: the profile's DNSSettings are DNSProtocol HTTPS, ServerURL the DoH URL"

    fetch $P "$(url /other)"
    assert_eq 404 "$HTTP_CODE" "landing $P: /other is 404"
    fetch $P -d x "$(url /)"
    assert_eq 405 "$HTTP_CODE" "landing $P: POST / is 405"

    # ---- 7b. --hsts-max-age 0 --header 'Alt-Svc: clear' --server-header dohgate
    for what in "landing:$(url /)" "DoH:$(url /dns-query)?dns=$Q" "404:$(url /other)"; do
        name=${what%%:*}
        fetch $P "${what#*:}"
        if has_hdr strict-transport-security; then ko "custom headers $P $name: strict-transport-security with --hsts-max-age 0"; else ok "custom headers $P $name: no strict-transport-security (--hsts-max-age 0)"; fi
        assert_eq clear "$(hdr alt-svc)" "custom headers $P $name: alt-svc: clear"
        assert_eq dohgate "$(hdr server)" "custom headers $P $name: server: dohgate"
    done
done

# ---- post
finish
