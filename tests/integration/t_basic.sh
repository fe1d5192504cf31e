#!/bin/bash
# t_basic: the answers of the test zone through every DoH client we have (kdig POST and GET,
# dig POST and GET, curl GET and POST, curl --doh-url, nghttp GET and POST), and the HTTP side of
# an answer: content-type, content-length, cache-control max-age (positive: min TTL; negative:
# min(SOA TTL, SOA MINIMUM)), the DNS ID sent back unchanged, TCP fallback for a 3 KB answer,
# a second DoH path and an IPv6 listener.
. "$(dirname "$0")/lib.sh"
need_tools nsd kdig dig curl nghttp openssl python3

# ---- pre
start_nsd
make_certs
V6_PORT=$(free_port)
V6=0
python3 -c "import socket; s=socket.socket(socket.AF_INET6); s.bind(('::1', $V6_PORT))" 2>/dev/null && V6=1
if [ "$V6" = 1 ]; then
    start_dohgate --workers 1 --doh-path /dns-query --doh-path /alt/dns --listen "[::1]:$V6_PORT"
else
    echo "(no IPv6 on loopback: the [::1] listener check is skipped)"
    start_dohgate --workers 1 --doh-path /dns-query --doh-path /alt/dns
fi
# Cached answers age while this test runs: TTL bounds below allow for the time since start.
T0=$(date +%s)
aged() { echo $(( $1 - ($(date +%s) - T0) - 1 )); }

# ---- client wrappers: each prints normalised lines "status RCODE" and "TYPE RDATA" (answers)

# dig/kdig text output → normalised lines
norm_dig() {
    awk '
        /status: / { s = $0; sub(/.*status: /, "", s); sub(/[^A-Z].*/, "", s); print "status " s; next }
        /^;/ || NF < 5 { next }
        $3 == "IN" { t = $4; $1 = ""; $2 = ""; $3 = ""; $4 = ""; sub(/^ +/, ""); print t " " $0 }'
}
# dnsmsg show output → normalised lines
norm_msg() {
    awk '
        /^hdr / { for (i = 1; i <= NF; i++) if ($i ~ /^rcode=/) { sub(/rcode=/, "", $i); print "status " $i } next }
        /^an / { t = $4; $1 = ""; $2 = ""; $3 = ""; $4 = ""; sub(/^ +/, ""); print t " " $0 }'
}

# resolve CLIENT NAME TYPE
resolve() {
    local client=$1 name=$2 type=$3 q
    case "$client" in
    kdig-post)
        kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
            +timeout=5 +retry=0 +noall +header +answer "$name" "$type" 2>&1 | norm_dig ;;
    kdig-get)
        kdig @127.0.0.1 -p "$DG_PORT" +https-get +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
            +timeout=5 +retry=0 +noall +header +answer "$name" "$type" 2>&1 | norm_dig ;;
    dig-post)
        dig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
            +time=5 +tries=1 +noall +comments +answer "$name" "$type" 2>&1 | norm_dig ;;
    dig-get)
        dig @127.0.0.1 -p "$DG_PORT" +https-get +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
            +time=5 +tries=1 +noall +comments +answer "$name" "$type" 2>&1 | norm_dig ;;
    curl-get)
        doh_get "$name" "$type"; norm_msg <"$T/resp.txt" ;;
    curl-post)
        doh_post "$name" "$type"; norm_msg <"$T/resp.txt" ;;
    nghttp-get)
        q=$(dnsmsg query "$name" "$type" --b64)
        timeout 10 nghttp -H 'accept: application/dns-message' "$(dohgate_url)?dns=$q" >"$T/ng.bin" 2>"$T/ng.err"
        dnsmsg show "$T/ng.bin" 2>/dev/null | norm_msg ;;
    nghttp-post)
        dnsmsg query "$name" "$type" --out "$T/ngq.bin"
        timeout 10 nghttp -d "$T/ngq.bin" -H 'content-type: application/dns-message' \
            "$(dohgate_url)" >"$T/ng.bin" 2>"$T/ng.err"
        dnsmsg show "$T/ng.bin" 2>/dev/null | norm_msg ;;
    esac
}

# ---- test: the same matrix through every client
for client in kdig-post kdig-get dig-post dig-get curl-get curl-post nghttp-get nghttp-post; do
    out=$(resolve $client "www.$ZONE" A)
    assert_match 'status NOERROR' "$out" "$client: www A is NOERROR"
    assert_match '(^|
)A 192\.0\.2\.10($|
)' "$out" "$client: www A is 192.0.2.10"

    out=$(resolve $client "www.$ZONE" AAAA)
    assert_match '(^|
)AAAA 2001:db8::10($|
)' "$out" "$client: www AAAA is 2001:db8::10"

    out=$(resolve $client "chain1.$ZONE" A)
    assert_match "CNAME chain2\\.$ZONE\\..*
CNAME www\\.$ZONE\\..*
A 192\\.0\\.2\\.10" "$out" "$client: chain1 -> chain2 -> www -> A (2 CNAME hops)"

    out=$(resolve $client "mail.$ZONE" MX)
    assert_match "MX 10 mx\\.$ZONE\\." "$out" "$client: mail MX"

    out=$(resolve $client "txt.$ZONE" TXT)
    assert_match 'TXT "hello from dohgate\.test"' "$out" "$client: txt TXT"

    out=$(resolve $client "nonexistent.$ZONE" A)
    assert_match 'status NXDOMAIN' "$out" "$client: nonexistent is NXDOMAIN"

    out=$(resolve $client "big.$ZONE" TXT)
    n=$(printf '%s\n' "$out" | grep -c '^TXT "record-')
    assert_eq 40 "$n" "$client: big TXT (~3 KB, TCP fallback upstream): all 40 records"
done

# ---- curl: HTTP headers, TTLs, IDs
doh_get "www.$ZONE" A
assert_eq 200 "$HTTP_CODE" "GET www A: HTTP 200"
assert_eq "application/dns-message" "$(hdr content-type)" "GET www A: content-type"
assert_eq "$(body_size)" "$(hdr content-length)" "GET www A: content-length equals the body size"
assert_range "$(aged 600)" 600 "$(max_age)" "GET www A: cache-control max-age is the TTL (600, aged)"
assert_eq 0 "$(dns_id)" "GET www A: DNS ID 0 comes back as 0"
v=$(curl -s --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_version}' --max-time 10 \
    "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)")
assert_eq 2 "$v" "the response came over HTTP/2"

doh_post "www.$ZONE" A --id 0xBEEF
assert_eq 200 "$HTTP_CODE" "POST www A with ID 0xBEEF: HTTP 200"
assert_eq beef "$(head -c 2 "$T/resp.bin" | od -An -tx1 | tr -d ' \n')" "POST: first two bytes of the answer are the client's ID 0xBEEF"
assert_eq "application/dns-message" "$(hdr content-type)" "POST: content-type"
assert_eq "$(body_size)" "$(hdr content-length)" "POST: content-length equals the body size"

doh_get "www.$ZONE" AAAA --id 0x1234
assert_eq 4660 "$(dns_id)" "GET with ID 0x1234 (a cached answer by now): ID unchanged"
doh_get "www.$ZONE" AAAA --id 0
assert_eq 0 "$(dns_id)" "the same cached answer asked with ID 0: ID 0"

doh_get "short.$ZONE" A
assert_match '^A 192\.0\.2\.42$' "$(norm_msg <"$T/resp.txt" | grep '^A ')" "short A"
assert_range "$(aged 42)" 42 "$(max_age)" "short (TTL 42): cache-control max-age <= 42"
ttl=$(answers | awk '$3 == "A" { print $2 }')
assert_range "$(aged 42)" 42 "$ttl" "short: the record's TTL <= 42"

doh_get "chain1.$ZONE" A
assert_range "$(aged 600)" 600 "$(max_age)" "chain1: max-age is the smallest TTL of the chain"

doh_get "nonexistent.$ZONE" A
assert_eq 200 "$HTTP_CODE" "NXDOMAIN: HTTP 200"
assert_eq NXDOMAIN "$(rcode)" "NXDOMAIN: rcode"
assert_file_match "$T/resp.txt" "^ns $ZONE\\. [0-9]+ SOA " "NXDOMAIN: SOA in the authority section"
assert_range "$(aged 300)" 300 "$(max_age)" "NXDOMAIN: max-age = min(SOA TTL 3600, MINIMUM 300)"

doh_get "www.$ZONE" MX
assert_eq NOERROR "$(rcode)" "NODATA (www MX): NOERROR"
assert_eq 0 "$(answers | wc -l | tr -d ' ')" "NODATA: no answer records"
assert_range "$(aged 300)" 300 "$(max_age)" "NODATA: max-age = min(SOA TTL 3600, MINIMUM 300)"

doh_get "big.$ZONE" TXT
assert_eq 40 "$(answers | grep -c ' TXT ')" "big TXT over curl: 40 records"
sz=$(body_size)
assert_range 1233 65535 "$sz" "big TXT: the answer is larger than 1232 bytes"
assert_eq "$sz" "$(hdr content-length)" "big TXT: content-length"

# second DoH path
dcurl -H 'accept: application/dns-message' "$(dohgate_url /alt/dns)?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "second --doh-path /alt/dns answers"
assert_match 'A 192\.0\.2\.10' "$(answers)" "second --doh-path: answer"

# ---- curl --doh-url: curl resolves a name through dohgate, then fetches from the address
q=$(dnsmsg query "www.$ZONE" A --b64)
out=$(curl -s --http2 --max-time 10 --cacert "$CERTS/ca.pem" --doh-url "$(dohgate_url)" \
    -o "$T/doh-url.bin" -w '%{remote_ip} %{http_code}' "https://loop.$ZONE:$DG_PORT/dns-query?dns=$q" 2>"$T/doh-url.err")
assert_eq "127.0.0.1 200" "$out" "curl --doh-url: loop.$ZONE resolved through dohgate to 127.0.0.1, then fetched"
out=$(curl -sv --max-time 5 --connect-timeout 1 --cacert "$CERTS/ca.pem" --doh-url "$(dohgate_url)" \
    "http://www.$ZONE:9/" 2>&1)
assert_match 'Trying 192\.0\.2\.10' "$out" "curl --doh-url: www.$ZONE resolved to 192.0.2.10"

# ---- nghttp: response headers
q=$(dnsmsg query "txt.$ZONE" TXT --b64)
out=$(timeout 10 nghttp -nv -H 'accept: application/dns-message' "$(dohgate_url)?dns=$q" 2>&1)
assert_match ':status: 200' "$out" "nghttp -v: :status 200"
assert_match 'content-type: application/dns-message' "$out" "nghttp -v: content-type"
assert_match 'cache-control: max-age=[0-9]+' "$out" "nghttp -v: cache-control"

# ---- IPv6 listener
if [ "$V6" = 1 ]; then
    out=$(kdig @::1 -p "$V6_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
        +timeout=5 +retry=0 +noall +header +answer "www.$ZONE" A 2>&1 | norm_dig)
    assert_match 'A 192\.0\.2\.10' "$out" "kdig over the [::1] listener"
fi

# ---- privacy: no query names in the log at the default level
assert_file_nomatch "$DG_LOG" "(www|chain1|big|nonexistent|loop)\\.$ZONE" "at --log-level info the log holds no query names"

# ---- post
finish
