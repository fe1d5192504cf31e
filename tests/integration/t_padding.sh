#!/bin/bash
# t_padding: EDNS(0) padding on the client leg (RFC 7830, RFC 8467 §4.1 block-length padding).
# An answer to a query that carries a Padding option goes out padded to a multiple of 468 bytes
# (kdig +padding, POST and GET, answers of every size: upstream answers, cache hits, NXDOMAIN, a
# 3 KB answer, the REFUSED / NOTIMP / ANY answers made locally, a stale answer and a SERVFAIL
# when the upstream is gone); the padding bytes are zero and replace the query's option size.
# A query without padding gets none (kdig +nopadding, with and without EDNS; kdig pads by default
# over DoH), a query without EDNS gets no OPT invented, and --pad-responses no turns padding off.
# The cache holds no padding: a padded question then an unpadded one for the same name (same
# cache key) gives a cache hit without padding, exactly the padded answer less its option.
. "$(dirname "$0")/lib.sh"
need_tools nsd kdig curl python3

BLOCK=468

# ---- pre
start_nsd
make_certs
M_PORT=$(free_port)
start_dohgate --workers 1 --metrics-listen "127.0.0.1:$M_PORT"

# ---- helpers

# kd ARGS... NAME TYPE: kdig over DoH (POST unless ARGS say +https-get), output on stdout
kd() {
    kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
        +timeout=5 +retry=0 "$@" 2>&1
}
# received OUTPUT: the answer size kdig reports ("" when it got none)
received() { printf '%s\n' "$1" | sed -n 's/^;; Received \([0-9]*\) B$/\1/p' | head -1; }

# The last dcurl's answer: its OPT line ("ar . OPT udp=N pad=N" from dnsmsg show), its padding
opt_line() { grep '^ar \. OPT' "$T/resp.txt"; }
# check_padded DESC: the last dcurl's answer parses, its size is a multiple of $BLOCK, and its
# OPT holds exactly one Padding option, all zero bytes
check_padded() {
    local size opt
    size=$(body_size)
    opt=$(opt_line)
    assert_match '^hdr ' "$(head -1 "$T/resp.txt")" "$1: the answer parses (HTTP $HTTP_CODE)"
    assert_eq 0 $((size % BLOCK)) "$1: answer size $size is a multiple of $BLOCK"
    assert_match '^ar \. OPT udp=[0-9]+ pad=[0-9]+$' "$opt" "$1: one padding option of zero bytes ($opt)"
}
# check_unpadded DESC: the last dcurl's answer parses and carries no Padding option
check_unpadded() {
    assert_match '^hdr ' "$(head -1 "$T/resp.txt")" "$1: the answer parses (HTTP $HTTP_CODE)"
    assert_file_nomatch "$T/resp.txt" 'pad=' "$1: no padding option"
}
# pad_len: the data length of the last answer's padding option
pad_len() { opt_line | sed -n 's/.* pad=\([0-9]*\)$/\1/p'; }
hits() { metric_of 'dohgate_cache_hits_total'; }

# ---- test: kdig, which pads its queries to 128 bytes (+padding) over DoH
for q in "www.$ZONE A" "txt.$ZONE TXT" "nonexistent.$ZONE A" "big.$ZONE TXT" "chain1.$ZONE A"; do
    for how in +https +https-get; do
        # shellcheck disable=SC2086
        out=$(kd $how +padding $q)
        n=$(received "$out")
        assert_match '^[0-9]+$' "$n" "kdig $how +padding $q: an answer"
        assert_eq 0 $((${n:-1} % BLOCK)) "kdig $how +padding $q: $n bytes, a multiple of $BLOCK"
        assert_match ';; PADDING: [0-9]+ B' "$out" "kdig $how +padding $q: the answer is padded"
    done
done
out=$(kd +padding "big.$ZONE" TXT)
assert_eq 40 "$(printf '%s\n' "$out" | grep -c 'TXT.*"record-')" "kdig +padding big TXT: all 40 records still there"

# kdig pads over DoH by default; +nopadding sends none: no padding back, with EDNS or without
out=$(kd +nopadding "www.$ZONE" A)
assert_nomatch 'PADDING' "$out" "kdig +nopadding www A (no EDNS): no padding"
assert_nomatch 'EDNS PSEUDOSECTION' "$out" "kdig +nopadding www A (no EDNS): no OPT invented"
out=$(kd +nopadding +edns "www.$ZONE" A)
assert_match 'EDNS PSEUDOSECTION' "$out" "kdig +nopadding +edns www A: OPT in the answer"
assert_nomatch 'PADDING' "$out" "kdig +nopadding +edns www A: no padding"
assert_ne 0 $(($(received "$out") % BLOCK)) "kdig +nopadding +edns www A: not a block multiple"

# ---- test: curl with a padding option of our own (POST and GET), its size never matters
for pad in 0 7 300; do
    doh_post "mail.$ZONE" MX --pad "$pad"
    check_padded "POST mail MX, query padding $pad"
    doh_get "mail.$ZONE" MX --pad "$pad"
    check_padded "GET mail MX, query padding $pad"
done
doh_post "mail.$ZONE" MX --edns 1232
check_unpadded "POST mail MX with EDNS, without padding"
doh_post "mail.$ZONE" MX
check_unpadded "POST mail MX without EDNS"
assert_file_nomatch "$T/resp.txt" 'OPT' "POST mail MX without EDNS: no OPT invented"

# ---- test: the cache holds no padding. A name not asked before: padded question (a miss, the
# answer stored), then the same question without padding (a hit), then padded again (a hit).
h0=$(hits)
doh_post "short.$ZONE" A --edns 1232 --pad 16
check_padded "short A, padded (miss)"
padded_size=$(body_size)
plen=$(pad_len)
h1=$(hits)
assert_eq "$h0" "$h1" "short A, padded: not a cache hit (first question)"
doh_post "short.$ZONE" A --edns 1232
check_unpadded "short A, unpadded, after the padded one"
assert_eq $((h1 + 1)) "$(hits)" "short A, unpadded: a cache hit"
assert_eq $((padded_size - 4 - plen)) "$(body_size)" \
    "short A: the cached answer is the padded one less its option ($padded_size - 4 - $plen)"
assert_match '^short\.dohgate\.test\. [0-9]+ A 192\.0\.2\.42$' "$(answers)" "short A: the record"
doh_post "short.$ZONE" A --edns 1232 --pad 16
check_padded "short A, padded again (hit)"
assert_eq $((h1 + 2)) "$(hits)" "short A, padded again: a cache hit"
assert_eq "$padded_size" "$(body_size)" "short A, padded again: the same size as the first"

# ---- test: answers made here: REFUSED (AXFR), NOTIMP (opcode 2), ANY (RFC 8482)
doh_post "$ZONE" AXFR --pad 0
assert_eq REFUSED "$(rcode)" "AXFR: REFUSED"
check_padded "REFUSED to a padded AXFR"
doh_post "$ZONE" A --opcode 2 --pad 0
assert_eq NOTIMP "$(rcode)" "opcode 2: NOTIMP"
check_padded "NOTIMP to a padded query"
doh_post "www.$ZONE" ANY --pad 0
# HINFO (type 13) "RFC8482" "": dnsmsg shows it in the generic form
assert_match ' 13 .*075246433834383200' "$(answers)" "ANY: the RFC 8482 answer"
check_padded "ANY answer to a padded query"
doh_post "www.$ZONE" ANY --edns 1232
check_unpadded "ANY answer to an unpadded query"

stop_dohgate

# ---- test: --pad-responses no: padded queries, unpadded answers
start_dohgate --workers 1 --pad-responses no
out=$(kd +padding "www.$ZONE" A)
assert_match 'EDNS PSEUDOSECTION' "$out" "--pad-responses no: kdig +padding gets its OPT back"
assert_nomatch 'PADDING' "$out" "--pad-responses no: kdig +padding gets no padding"
doh_post "www.$ZONE" AXFR --pad 0
check_unpadded "--pad-responses no: REFUSED to a padded AXFR"
doh_post "mail.$ZONE" MX --pad 0
check_unpadded "--pad-responses no: mail MX"
stop_dohgate

# ---- test: a stale answer and a SERVFAIL, once the upstream is gone
start_dohgate --workers 1 --cache-max-ttl 1 --serve-stale yes --upstream-timeout 300 --query-timeout 600
doh_post "txt.$ZONE" TXT --pad 0
check_padded "txt TXT before the upstream goes"
kill "$NSD_PID"
wait "$NSD_PID" 2>/dev/null
untrack "$NSD_PID"
sleep 2 # past the 1 s lifetime: only stale data left
doh_post "txt.$ZONE" TXT --pad 0
assert_match 'hello from dohgate' "$(answers)" "upstream gone: txt TXT answered stale"
assert_eq 30 "$(max_age)" "upstream gone: the stale answer's max-age (stale-answer-ttl)"
check_padded "stale answer to a padded query"
doh_post "txt.$ZONE" TXT --edns 1232
check_unpadded "stale answer to an unpadded query"
doh_post "mail.$ZONE" MX --pad 0
assert_eq SERVFAIL "$(rcode)" "upstream gone, mail MX never cached: SERVFAIL"
check_padded "SERVFAIL to a padded query"

# ---- post
stop_dohgate
finish
