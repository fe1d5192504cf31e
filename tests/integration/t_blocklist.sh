#!/bin/bash
# t_blocklist: blocklists (issue 17). The stub is the upstream (it answers A 192.0.2.1 for any
# name and logs every query), so "blocked" is an answer the upstream never gives and "not
# forwarded" is a count in its log. Checked: the three list formats (hosts, one domain per
# line, adblock ||x^ with an @@ exception and rules that cannot apply to DNS), a name blocks its
# subdomains but not its parent, an allowlist wins; block-answer null (A 0.0.0.0, AAAA ::, other
# types NODATA, TTL block-ttl), nxdomain (with a SOA) and refused, each with EDE 15 "Blocked"
# when the query had EDNS and no OPT when it had none; the same answers over DoH (kdig POST,
# dig GET, curl --doh-url), the JSON API, plain DNS over UDP and TCP and DoT; the blocked
# counters; per-client policies (a DoH path ID, a network, "default", an unknown ID: 404); the
# file watch under h2load load (a list replaced: no failed request, new names blocked, removed
# ones resolve, a cached name blocked once listed), broken files (a bad name, a NUL byte: the
# old list keeps answering, exactly one error naming FILE:LINE, a fixed file picked up), the same
# through SIGHUP; --check-config with a missing list.
. "$(dirname "$0")/lib.sh"
need_tools dig kdig curl h2load python3

# use_log NAME: the next dohgate logs to $T/dohgate-NAME.log
use_log() { DG_LOG=$T/dohgate-$1.log; }

# dq PORT DIG-ARGS...: dig over UDP (one try) at 127.0.0.1:PORT
dq() {
    local p=$1
    shift
    dig @127.0.0.1 -p "$p" +tries=1 +time=3 +nocookie "$@" 2>&1
}
# status OUTPUT: the rcode of a dig or kdig output
status() { sed -n 's/.*status: \([A-Z][A-Z]*\).*/\1/p' <<<"$1" | head -1; }
# section NAME OUTPUT: the records of a dig/kdig section (ANSWER, AUTHORITY), one per line,
# blanks squeezed: "owner ttl IN type rdata"
section() {
    awk -v s="$1" '/^;; [A-Z]+ SECTION:/ { cur = $2; next } /^[[:space:]]*$/ { cur = "" }
        cur == s && !/^;/ { $1 = $1; print }' <<<"$2"
}
# rdata TYPE OUTPUT: the rdata of the answer records of TYPE, space-separated
rdata() { section ANSWER "$2" | awk -v t="$1" '$4 == t { $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }' | tr '\n' ' ' | sed 's/ $//'; }
# ttls OUTPUT: the TTLs of the answer records, space-separated
ttls() { section ANSWER "$1" | awk '{ print $2 }' | tr '\n' ' ' | sed 's/ $//'; }

# kdoh [+https=PATH] KDIG-ARGS...: kdig over DoH (POST) at dohgate
kdoh() { kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost +timeout=5 +retry=0 "$@" 2>&1; }
# kpath PATH KDIG-ARGS...: kdig over DoH on another path (/dns-query/ID)
kpath() {
    local p=$1
    shift
    kdig @127.0.0.1 -p "$DG_PORT" +https="$p" +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
        +timeout=5 +retry=0 "$@" 2>&1
}
# code PATH: the HTTP status of a DoH GET for www.site.example on PATH
code() {
    curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
        "$(dohgate_url "$1")?dns=$(dnsmsg query www.site.example A --b64)"
}
# metric_sum PREFIX: the sum of every /metrics line starting with PREFIX (0 when none)
metric_sum() {
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { printf "%d\n", s }'
}
# a_of PORT NAME: the A rdata dohgate gives NAME over UDP (sorted, space-separated)
a_of() { rdata A "$(dq "$1" "$2" A)"; }

is_blocked() { [ "$(a_of "$UP" "$1")" = 0.0.0.0 ]; }
resolves() { [ "$(a_of "$UP" "$1")" = 192.0.2.1 ]; }

start_stub
make_certs
L=$T/lists
mkdir -p "$L"

# ---- the lists: one per format
cat >"$L/ads.hosts" <<'EOF'
# a hosts-format blocklist, as StevenBlack's: the machine's own names are skipped
127.0.0.1 localhost
255.255.255.255 broadcasthost
::1 ip6-localhost
0.0.0.0 0.0.0.0
0.0.0.0 ads.site.example
0.0.0.0   tracker.site.example  metrics.site.example   # two names, a comment
127.0.0.1 cdn-ads.example
0.0.0.0 printer.site.example   # also a local-record in the "null" run: local data comes first
EOF
printf '%s\r\n' "# one domain per line, CRLF line ends" "" "malware.example" "*.phish.example" \
    "Mixed.Case.Example" >"$L/domains.txt"
cat >"$L/adblock.txt" <<'EOF'
[Adblock Plus 2.0]
! Title: test list
||adb.example^
||imp.example^$important
@@||ok.adb.example^
/banner/*/ads^
example.org##.ad-box
EOF
printf '%s\n' "ok.ads.site.example" >"$L/allow.txt"

LISTS=(--blocklist "ads=$L/ads.hosts" --blocklist "$L/domains.txt" --blocklist "adb=$L/adblock.txt"
    --allowlist "$L/allow.txt")

# ================================================================================================
# block-answer null (the default), block-ttl default 10; UDP, TCP, DoT on their own ports
use_log null
UP=$(free_port)
DOTP=$(free_port)
M_PORT=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    --dot-listen "127.0.0.1:$DOTP" --metrics-listen "127.0.0.1:$M_PORT" "${LISTS[@]}" \
    --local-record 'printer.site.example. 300 IN A 192.168.7.7'
: >"$STUB_LOG"
# hosts 5 names (localhost, broadcasthost, ip6-localhost, 0.0.0.0 skipped), domains 3, adblock 2;
# allowed: the allowlist's name and the @@ exception; skipped: the path rule and the cosmetic one
assert_file_match "$DG_LOG" 'info: policy: 5 local records; 10 blocked names in 3 lists \(.*\), 2 allowed, 2 adblock rules skipped' \
    "start-up logs what the lists held"

# ---- the three formats: the name and its subdomains blocked, the parent not
BLOCKED=(ads.site.example tracker.site.example metrics.site.example cdn-ads.example
    deep.sub.ads.site.example malware.example x.malware.example a.phish.example phish.example
    mixed.case.example www.Mixed.CASE.example adb.example sub.adb.example imp.example)
for n in "${BLOCKED[@]}"; do
    assert_eq 0.0.0.0 "$(a_of "$UP" "$n")" "null: $n A blocked (0.0.0.0)"
done
for n in site.example www.site.example example.com notmalware.example ads.site.example.org \
    ok.adb.example x.ok.adb.example ok.ads.site.example y.ok.ads.site.example; do
    assert_eq 192.0.2.1 "$(a_of "$UP" "$n")" "null: $n A not blocked (the upstream's 192.0.2.1)"
done
fwd=0
for n in "${BLOCKED[@]}"; do
    fwd=$((fwd + $(grep -ciFx "udp $n." "$STUB_LOG")))
done
assert_eq 0 "$fwd" "blocked names never reached the upstream"
assert_eq 1 "$(stub_count udp ok.adb.example.)" "the adblock @@ exception is forwarded"
out=$(dq "$UP" printer.site.example A)
assert_eq 192.168.7.7 "$(rdata A "$out")" "a listed name with local data: the local answer (local data before blocklists)"
assert_nomatch 'EDE' "$out" "a listed name with local data: no EDE"
assert_eq 1 "$(stub_count udp ok.ads.site.example.)" "the allowlisted name is forwarded"

# ---- block-answer null: A, AAAA, other types; TTL, EDE with EDNS only, the header
out=$(dq "$UP" ads.site.example A)
assert_eq NOERROR "$(status "$out")" "null A: NOERROR"
assert_eq "0.0.0.0" "$(rdata A "$out")" "null A: one record, 0.0.0.0"
assert_eq 10 "$(ttls "$out")" "null A: TTL = block-ttl (10)"
assert_match 'EDE: 15 \(Blocked\)' "$out" "null A: EDE 15 (Blocked) (dig)"
assert_match "EDE: 15 \\(Blocked\\): .*ads" "$out" "null A: the EDE text names the list (ads)"
out=$(dq "$UP" ads.site.example AAAA)
assert_eq NOERROR "$(status "$out")" "null AAAA: NOERROR"
assert_eq "::" "$(rdata AAAA "$out")" "null AAAA: ::"
assert_eq 10 "$(ttls "$out")" "null AAAA: TTL 10"
assert_match 'EDE: 15 \(Blocked\)' "$out" "null AAAA: EDE 15"
for t in TXT MX HTTPS; do
    out=$(dq "$UP" ads.site.example "$t")
    assert_eq NOERROR "$(status "$out")" "null $t: NOERROR"
    assert_match 'ANSWER: 0,' "$out" "null $t: NODATA (no answer records)"
    assert_match 'EDE: 15 \(Blocked\)' "$out" "null $t: EDE 15"
done
out=$(dq "$UP" +noedns tracker.site.example A)
assert_eq "0.0.0.0" "$(rdata A "$out")" "null, no EDNS: 0.0.0.0"
assert_nomatch 'OPT PSEUDOSECTION|EDE' "$out" "null, no EDNS: no OPT record, so no EDE"
out=$(kdig @127.0.0.1 -p "$UP" +notcp +retry=0 +timeout=3 +edns metrics.site.example A 2>&1)
assert_match 'EDE: 15 \(Blocked\)' "$out" "null: kdig shows EDE 15 (Blocked)"
out=$(dq "$UP" +qid=4242 +norecurse sub.adb.example A)
assert_match 'id: 4242' "$out" "null: the query's ID comes back"
assert_eq "0.0.0.0" "$(rdata A "$out")" "null: RD=0 queries are blocked too"

# ---- the same over every transport
out=$(dig @127.0.0.1 -p "$UP" +tcp +tries=1 +time=3 malware.example A 2>&1)
assert_match '\(TCP\)' "$out" "TCP: dig +tcp asked over TCP"
assert_eq "0.0.0.0" "$(rdata A "$out")" "TCP: malware.example 0.0.0.0"
assert_match 'EDE: 15 \(Blocked\)' "$out" "TCP: EDE 15"
out=$(kdig @127.0.0.1 -p "$DOTP" +tls +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost +timeout=5 \
    +retry=0 +edns malware.example AAAA 2>&1)
assert_match 'TLS' "$out" "DoT: kdig +tls asked over TLS"
assert_eq "::" "$(rdata AAAA "$out")" "DoT: malware.example ::"
assert_match 'EDE: 15 \(Blocked\)' "$out" "DoT: EDE 15"
out=$(kdoh +edns malware.example A)
assert_match 'HTTP session \(HTTP/2-POST\)' "$out" "DoH: kdig +https asked over DoH (HTTP/2 POST)"
assert_eq "0.0.0.0" "$(rdata A "$out")" "DoH (kdig POST): malware.example 0.0.0.0"
assert_eq 10 "$(ttls "$out")" "DoH: TTL 10"
assert_match 'EDE: 15 \(Blocked\)' "$out" "DoH (kdig): EDE 15"
assert_match "EDE: 15 \\(Blocked\\): .*domains" "$out" "DoH (kdig): the EDE text names the list (domains)"
out=$(dig @127.0.0.1 -p "$DG_PORT" +https-get +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    +tries=1 +time=5 adb.example A 2>&1)
assert_eq "0.0.0.0" "$(rdata A "$out")" "DoH (dig GET): adb.example 0.0.0.0"
assert_match 'EDE: 15 \(Blocked\)' "$out" "DoH (dig GET): EDE 15"
doh_get ads.site.example A
assert_eq 200 "$HTTP_CODE" "DoH (curl GET): 200"
assert_eq "10" "$(max_age)" "DoH (curl GET): max-age = block-ttl"
out=$(curl -sv --max-time 5 --connect-timeout 1 --cacert "$CERTS/ca.pem" --doh-url "$(dohgate_url)" \
    "http://ads.site.example:9/" 2>&1)
assert_match 'Trying 0\.0\.0\.0:9' "$out" "curl --doh-url: ads.site.example resolved to 0.0.0.0"
assert_eq "0 0.0.0.0" "$(json ads.site.example A)" "JSON /resolve: Status 0, 0.0.0.0"
assert_eq "0 ::" "$(json sub.adb.example AAAA)" "JSON /resolve: AAAA ::"
assert_eq "0 " "$(json adb.example TXT)" "JSON /resolve: TXT NODATA"
assert_eq "0 192.0.2.1" "$(json www.site.example A)" "JSON /resolve: a name not listed resolves"

# ---- counters
tot=$(metric_sum 'dohgate_blocked_answers_total')
ads=$(metric_sum 'dohgate_blocked_total{list="ads"}')
dom=$(metric_sum 'dohgate_blocked_total{list="domains"}')
adb=$(metric_sum 'dohgate_blocked_total{list="adb"}')
assert_range 1 100000 "$ads" "metrics: blocked answers of list ads counted ($ads)"
assert_range 1 100000 "$dom" "metrics: list 'domains' (named after its file) counted ($dom)"
assert_range 1 100000 "$adb" "metrics: list adb counted ($adb)"
assert_eq $((ads + dom + adb)) "$tot" "metrics: the per-list counts add up to dohgate_blocked_answers_total"
# exactly: one more blocked query of list adb moves adb by one and nothing else
dq "$UP" imp.example A >/dev/null
assert_eq $((adb + 1)) "$(metric_sum 'dohgate_blocked_total{list="adb"}')" "metrics: one more adb answer: +1"
assert_eq "$ads" "$(metric_sum 'dohgate_blocked_total{list="ads"}')" "metrics: ads unchanged"
assert_eq $((tot + 1)) "$(metric_sum 'dohgate_blocked_answers_total')" "metrics: the total: +1"
# allowed and unlisted names are no blocked answers
dq "$UP" ok.adb.example A >/dev/null
dq "$UP" www.site.example A >/dev/null
assert_eq $((tot + 1)) "$(metric_sum 'dohgate_blocked_answers_total')" "metrics: an allowed and an unlisted name: not counted"
stop_dohgate

# ================================================================================================
# block-answer nxdomain, block-ttl 25
use_log nxdomain
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    --metrics-listen "127.0.0.1:$M_PORT" --block-answer nxdomain --block-ttl 25 "${LISTS[@]}"
for t in A AAAA TXT; do
    out=$(dq "$UP" sub.ads.site.example "$t")
    assert_eq NXDOMAIN "$(status "$out")" "nxdomain $t: NXDOMAIN"
    assert_match 'ANSWER: 0,' "$out" "nxdomain $t: no answer records"
    assert_match ' SOA ' "$(section AUTHORITY "$out")" "nxdomain $t: a SOA in the authority section"
    assert_match 'EDE: 15 \(Blocked\)' "$out" "nxdomain $t: EDE 15"
done
out=$(dq "$UP" +noedns malware.example A)
assert_eq NXDOMAIN "$(status "$out")" "nxdomain, no EDNS: NXDOMAIN"
assert_nomatch 'EDE' "$out" "nxdomain, no EDNS: no EDE"
out=$(kdoh +edns adb.example A)
assert_eq NXDOMAIN "$(status "$out")" "nxdomain over DoH: NXDOMAIN"
assert_match 'EDE: 15 \(Blocked\)' "$out" "nxdomain over DoH: EDE 15"
curl -s --max-time 5 --connect-timeout 1 --cacert "$CERTS/ca.pem" --doh-url "$(dohgate_url)" \
    -o /dev/null "http://ads.site.example:9/" 2>/dev/null
assert_eq 6 "$?" "nxdomain: curl --doh-url cannot resolve the name (exit 6)"
assert_eq "3 " "$(json malware.example A)" "nxdomain: JSON Status 3"
assert_eq "0 192.0.2.1" "$(json ok.adb.example A)" "nxdomain: the exception still resolves (JSON)"
doh_get ads.site.example A
assert_range 1 25 "$(max_age)" "nxdomain over DoH: max-age at most block-ttl 25 ($(max_age))"
assert_range 1 100000 "$(metric_sum 'dohgate_blocked_total{list="ads"}')" "nxdomain: counted"
stop_dohgate

# ================================================================================================
# block-answer refused
use_log refused
UP=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    --block-answer refused "${LISTS[@]}"
out=$(dq "$UP" ads.site.example A)
assert_eq REFUSED "$(status "$out")" "refused: REFUSED"
assert_match 'EDE: 15 \(Blocked\)' "$out" "refused: EDE 15"
out=$(dig @127.0.0.1 -p "$UP" +tcp +tries=1 +time=3 x.phish.example AAAA 2>&1)
assert_eq REFUSED "$(status "$out")" "refused over TCP: REFUSED"
out=$(kdoh +edns x.phish.example A)
assert_eq REFUSED "$(status "$out")" "refused over DoH: REFUSED"
assert_match 'EDE: 15 \(Blocked\)' "$out" "refused over DoH: EDE 15"
assert_eq 192.0.2.1 "$(a_of "$UP" www.site.example)" "refused: other names resolve"
stop_dohgate

# ================================================================================================
# per-client policies
# P1: kids = ads + domains; the DoH path ID kid1 gets kids; no policy "default": everybody else
# gets every list; an unknown ID is no DoH path (404)
use_log policy1
UP=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    "${LISTS[@]}" --policy "kids ads domains" --policy-client "kid1 kids"
out=$(kpath /dns-query/kid1 ads.site.example A)
assert_eq 0.0.0.0 "$(rdata A "$out")" "policy kids via /dns-query/kid1: ads blocked"
out=$(kpath /dns-query/kid1 malware.example A)
assert_eq 0.0.0.0 "$(rdata A "$out")" "policy kids via /dns-query/kid1: domains blocked"
out=$(kpath /dns-query/kid1 adb.example A)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy kids via /dns-query/kid1: adb (not in kids) resolves"
out=$(kdoh adb.example A)
assert_eq 0.0.0.0 "$(rdata A "$out")" "/dns-query without an ID, no policy 'default': every list (adb blocked)"
out=$(kdoh ads.site.example A)
assert_eq 0.0.0.0 "$(rdata A "$out")" "/dns-query without an ID: ads blocked"
assert_eq 0.0.0.0 "$(a_of "$UP" adb.example)" "plain DNS, no policy-client for it: every list"
assert_eq 404 "$(code /dns-query/nobody)" "an unknown ID in the path: 404"
assert_eq 200 "$(code /dns-query/kid1)" "the known ID: 200"
assert_eq "0 192.0.2.1" "$(json adb.example A /dns-query/kid1)" "JSON on /dns-query/kid1: the kids policy too"
stop_dohgate

# P1b: a client the ACL refuses learns nothing about the IDs: 403 for a known and an unknown one
use_log policy1b
UP=$(free_port)
# (ready when the website answers: with acl-scope doh it stays public)
DG_READY_PATH=/ start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 \
    --dns-listen "127.0.0.1:$UP" "${LISTS[@]}" --policy "kids ads domains" \
    --policy-client "kid1 kids" --deny-client 127.0.0.1
assert_eq 403 "$(code /dns-query/kid1)" "refused client, a known ID: 403"
assert_eq 403 "$(code /dns-query/nobody)" "refused client, an unknown ID: 403 too, not 404"
stop_dohgate

# P2: default = adb; 127.0.0.2 gets "open" (no lists); kid1 gets kids; an ID beats the network
use_log policy2
UP=$(free_port)
DOTP=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    --dot-listen "127.0.0.1:$DOTP" "${LISTS[@]}" --policy "default adb" --policy open --policy "kids ads" \
    --policy-client "127.0.0.2/32 open" --policy-client "kid1 kids"
assert_eq 0.0.0.0 "$(a_of "$UP" adb.example)" "policy default (127.0.0.1 over UDP): adb blocked"
assert_eq 192.0.2.1 "$(a_of "$UP" ads.site.example)" "policy default: ads (not in it) resolves"
out=$(dig @127.0.0.1 -b 127.0.0.2 -p "$UP" +tries=1 +time=3 adb.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.2/32 open over UDP: nothing blocked"
out=$(dig @127.0.0.1 -b 127.0.0.2 -p "$UP" +tcp +tries=1 +time=3 adb.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.2/32 open over TCP: nothing blocked"
out=$(kdig @127.0.0.1 -b 127.0.0.2 -p "$DOTP" +tls +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    +timeout=5 +retry=0 adb.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.2/32 open over DoT: nothing blocked"
out=$(kdig @127.0.0.1 -p "$DOTP" +tls +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost \
    +timeout=5 +retry=0 adb.example A 2>&1)
assert_eq 0.0.0.0 "$(rdata A "$out")" "policy default over DoT from 127.0.0.1: adb blocked"
q=$(dnsmsg query adb.example A --b64)
dcurl --interface 127.0.0.2 "$(dohgate_url)?dns=$q"
assert_match 'an adb\.example\. [0-9]+ A 192\.0\.2\.1' "$(cat "$T/resp.txt")" "policy-client 127.0.0.2/32 open over DoH: nothing blocked"
dcurl --interface 127.0.0.2 "$(dohgate_url /dns-query/kid1)?dns=$(dnsmsg query ads.site.example A --b64)"
assert_match 'an ads\.site\.example\. [0-9]+ A 0\.0\.0\.0' "$(cat "$T/resp.txt")" \
    "from 127.0.0.2 on /dns-query/kid1: the ID's policy wins over the network's"
out=$(kpath /dns-query/kid1 adb.example A)
assert_eq 192.0.2.1 "$(rdata A "$out")" "/dns-query/kid1: the default's list does not apply"
stop_dohgate

# P3: a network policy for all of loopback; a longer prefix (127.0.0.2/32, a bare address
# 127.0.0.3) wins over it; an IPv6 client (::1/128)
use_log policy3
UP=$(free_port)
UP6=$(free_port)
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 1 --dns-listen "127.0.0.1:$UP" \
    --dns-listen "[::1]:$UP6" "${LISTS[@]}" --policy "lo domains" --policy open --policy "v6 adb" \
    --policy-client "127.0.0.0/8 lo" --policy-client "127.0.0.2/32 open" --policy-client "127.0.0.3 open" \
    --policy-client "::1/128 v6"
assert_eq 0.0.0.0 "$(a_of "$UP" malware.example)" "policy-client 127.0.0.0/8: its list applies"
out=$(dig @127.0.0.1 -b 127.0.0.2 -p "$UP" +tries=1 +time=3 malware.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.2/32 wins over 127.0.0.0/8 (longest prefix)"
out=$(dig @127.0.0.1 -b 127.0.0.3 -p "$UP" +tries=1 +time=3 malware.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.3 (a bare address) wins over 127.0.0.0/8"
out=$(dig @::1 -p "$UP6" +tries=1 +time=3 adb.example A 2>&1)
assert_eq 0.0.0.0 "$(rdata A "$out")" "policy-client ::1/128: its list (adb) applies to the IPv6 client"
out=$(dig @::1 -p "$UP6" +tries=1 +time=3 malware.example A 2>&1)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client ::1/128: the IPv4 loopback's list does not"
assert_eq 192.0.2.1 "$(a_of "$UP" ads.site.example)" "policy-client 127.0.0.0/8: the other lists do not"
out=$(kdoh ads.site.example A)
assert_eq 192.0.2.1 "$(rdata A "$out")" "policy-client 127.0.0.0/8 over DoH: ads not blocked"
stop_dohgate

# ================================================================================================
# reloads: the file watch under load, broken files, SIGHUP
use_log reload
UP=$(free_port)
M_PORT=$(free_port)
DYN=$L/dyn.txt
printf '%s\n' old1.dyn.example keep.dyn.example >"$DYN"
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --workers 2 --dns-listen "127.0.0.1:$UP" \
    --metrics-listen "127.0.0.1:$M_PORT" --cert-check-interval 1 --blocklist "dyn=$DYN"
assert_eq 0.0.0.0 "$(a_of "$UP" old1.dyn.example)" "reload: before, old1 blocked"
assert_eq 192.0.2.1 "$(a_of "$UP" new1.dyn.example)" "reload: before, new1 resolves (and is cached now)"
assert_eq 192.0.2.1 "$(a_of "$UP" load.site.example)" "reload: the name of the load resolves"

# replace: write a new file and mv it over the old one (atomic), while h2load runs
Q=$(dnsmsg query load.site.example A --b64)
# 4 clients x 4000 requests/s: about 12 s, so the reload falls inside the run on any machine
h2load -n 200000 -c 4 -m 10 --rps 4000 "$(dohgate_url)?dns=$Q" >"$T/h2load.out" 2>&1 &
LOAD=$!
track "$LOAD"
sleep 1
# with 50,000 more names, so that the new set takes a moment to build while the load runs
{
    printf '%s\n' new1.dyn.example keep.dyn.example
    seq 1 50000 | sed 's/.*/n&.bulk.example/'
} >"$DYN.new"
mv -f "$DYN.new" "$DYN"
t0=$(now_ms)
wait_for 15 is_blocked new1.dyn.example
ms=$(($(now_ms) - t0))
LOAD_ALIVE=no
proc_alive "$LOAD" && LOAD_ALIVE=yes
assert_eq 0.0.0.0 "$(a_of "$UP" new1.dyn.example)" "file watch: new1 blocked (in $ms ms), though it was cached"
assert_eq yes "$LOAD_ALIVE" "file watch: h2load was still running when the new list answered"
assert_range 0 8000 "$ms" "file watch: the new list in force within 8 s"
assert_eq 192.0.2.1 "$(a_of "$UP" old1.dyn.example)" "file watch: old1, removed, resolves again"
assert_eq 0.0.0.0 "$(a_of "$UP" keep.dyn.example)" "file watch: keep stays blocked"
assert_eq 0.0.0.0 "$(a_of "$UP" www.n49999.bulk.example)" "file watch: the bulk names are in (n49999, a subdomain)"
wait "$LOAD"
untrack "$LOAD"
sed 's/^/       | /' "$T/h2load.out" | grep -E 'requests:|status codes:|finished in'
assert_match 'requests: 200000 total, 200000 started, 200000 done, 200000 succeeded, 0 failed, 0 errored, 0 timeout' \
    "$(cat "$T/h2load.out")" "h2load across the list reload: every request succeeded"
assert_match 'status codes: 200000 2xx, 0 3xx, 0 4xx, 0 5xx' "$(cat "$T/h2load.out")" \
    "h2load across the list reload: 2xx only"
assert_eq 1 "$(grep -c 'info: policy files reloaded: .*50002 blocked names in 1 list' "$DG_LOG")" \
    "log: the file watch's reload in one line"

# errors: the lines of the log at level error or warn
errs() { grep -cE '(error|warn(ing)?): ' "$DG_LOG"; }

# a stray line (a name with an empty label on line 3) in a list: skipped, the rest applies,
# the load line says so (lists from elsewhere carry such lines now and then)
e0=$(errs)
printf '%s\n' keep.dyn.example new1.dyn.example 'bad..name' new2.dyn.example >"$DYN.new"
mv -f "$DYN.new" "$DYN"
wait_for 15 grep -q "1 stray line skipped, the first $DYN:3: 'bad..name' is not a domain name" "$DG_LOG"
assert_eq 1 "$(grep -c "stray line skipped, the first $DYN:3" "$DG_LOG")" "stray line: the reload line names $DYN:3"
assert_eq "$e0" "$(errs)" "stray line: no error line"
assert_eq 0.0.0.0 "$(a_of "$UP" new2.dyn.example)" "stray line: the other names of the file apply (new2 blocked)"

# a broken file: no list at all (an HTML error page saved instead): the old list stays, one error
e0=$(errs)
printf '%s\n' '<html>' '<head><title>502 Bad Gateway</title></head>' '<body>' 'oops.dyn.example' >"$DYN.new"
mv -f "$DYN.new" "$DYN"
wait_for 15 grep -q "$DYN:1" "$DG_LOG"
sleep 3 # more checks of the file: still one line
assert_eq 1 "$(grep -c "$DYN:1" "$DG_LOG")" "broken list (HTML): exactly one line names $DYN:1"
assert_eq $((e0 + 1)) "$(errs)" "broken list: exactly one error line in all"
assert_eq 0.0.0.0 "$(a_of "$UP" new2.dyn.example)" "broken list: the old list keeps answering (new2 blocked)"
assert_eq 192.0.2.1 "$(a_of "$UP" oops.dyn.example)" "broken list: nothing of the broken file applies (oops resolves)"

# a NUL byte on line 2
e0=$(errs)
printf 'keep.dyn.example\nnew3\000.dyn.example\nnew5.dyn.example\n' >"$DYN.new"
mv -f "$DYN.new" "$DYN"
wait_for 15 grep -q "$DYN:2" "$DG_LOG"
sleep 3
assert_eq 1 "$(grep -c "$DYN:2" "$DG_LOG")" "list with a NUL byte: exactly one line names $DYN:2"
assert_eq $((e0 + 1)) "$(errs)" "list with a NUL byte: exactly one error line"
assert_eq 0.0.0.0 "$(a_of "$UP" new2.dyn.example)" "list with a NUL byte: the old list keeps answering"
assert_eq 192.0.2.1 "$(a_of "$UP" new5.dyn.example)" "list with a NUL byte: nothing of it applies"

# fixed: picked up
printf '%s\n' keep.dyn.example new5.dyn.example >"$DYN.new"
mv -f "$DYN.new" "$DYN"
wait_for 15 is_blocked new5.dyn.example
assert_eq 0.0.0.0 "$(a_of "$UP" new5.dyn.example)" "fixed list: picked up (new5 blocked)"
assert_eq 192.0.2.1 "$(a_of "$UP" new2.dyn.example)" "fixed list: new2, removed, resolves"

# SIGHUP with a broken list: refused with FILE:LINE, the running policy stays; then a good one
hup() {
    local before
    before=$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")
    kill -HUP "$DG_PID"
    for _ in $(seq 1 50); do
        [ "$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")" -gt "$before" ] && break
        sleep 0.1
    done
    sleep 0.3
}
printf '%s\n' 'new4..dyn.example' >"$DYN" # its only line is no name: no list
hup
assert_file_match "$DG_LOG" "reload refused: .*$DYN:1" "SIGHUP, broken list: reload refused, naming $DYN:1"
assert_eq 0.0.0.0 "$(a_of "$UP" new5.dyn.example)" "SIGHUP, broken list: the old list stays (new5 blocked)"
printf '%s\n' keep.dyn.example new6.dyn.example >"$DYN"
hup
assert_eq 0.0.0.0 "$(a_of "$UP" new6.dyn.example)" "SIGHUP, fixed list: new6 blocked at once"
assert_eq 192.0.2.1 "$(a_of "$UP" new5.dyn.example)" "SIGHUP, fixed list: new5 resolves"
stop_dohgate

# ================================================================================================
# SIGHUP with a changed configuration file: a list added, block-answer and policies changed;
# a missing list refuses the reload and the running policy stays
use_log conf
CONF=$T/dohgate.conf
DG_PORT=$(free_port)
UP=$(free_port)
write_conf() {
    {
        echo "listen 127.0.0.1:$DG_PORT"
        echo "cert $CERTS/server.pem"
        echo "key $CERTS/server.key"
        echo "upstream 127.0.0.1:$STUB_PORT"
        echo "dns-listen 127.0.0.1:$UP"
        echo "workers 2"
        printf '%s\n' "$@"
    } >"$CONF.new"
    mv -f "$CONF.new" "$CONF"
}
write_conf "blocklist ads=$L/ads.hosts"
launch_dohgate -c "$CONF"
assert_eq 0.0.0.0 "$(a_of "$UP" ads.site.example)" "config file: ads blocked (null)"
assert_eq 192.0.2.1 "$(a_of "$UP" malware.example)" "config file: malware.example not listed yet"
write_conf "blocklist ads=$L/ads.hosts" "blocklist $L/domains.txt" "block-answer refused" \
    "policy kids domains" "policy-client kid1 kids"
hup
assert_file_match "$DG_LOG" "configuration reloaded from $CONF" "SIGHUP, new config: reloaded"
assert_eq REFUSED "$(status "$(dq "$UP" ads.site.example A)")" "SIGHUP, new config: block-answer refused applies"
assert_eq REFUSED "$(status "$(dq "$UP" malware.example A)")" "SIGHUP, new config: the added list applies"
out=$(kpath /dns-query/kid1 ads.site.example A)
assert_eq 192.0.2.1 "$(rdata A "$out")" "SIGHUP, new config: the new policy-client ID works (ads not in kids)"
out=$(kpath /dns-query/kid1 malware.example A)
assert_eq REFUSED "$(status "$out")" "SIGHUP, new config: kids blocks domains"
e0=$(grep -c 'reload refused' "$DG_LOG")
write_conf "blocklist ads=$L/ads.hosts" "blocklist mal=$L/not-there.txt"
hup
assert_eq $((e0 + 1)) "$(grep -c 'reload refused' "$DG_LOG")" "SIGHUP, a missing list: one 'reload refused' line"
assert_file_match "$DG_LOG" "reload refused: .*not-there\.txt" "SIGHUP, a missing list: the line names the file"
assert_eq REFUSED "$(status "$(dq "$UP" malware.example A)")" "SIGHUP, a missing list: the running policy stays"
assert_eq 404 "$(code /dns-query/nobody)" "SIGHUP, a missing list: unknown IDs still 404"
stop_dohgate

# ================================================================================================
# --check-config with a missing list
out=$("$DOHGATE" --check-config --listen 127.0.0.1:18443 --upstream 127.0.0.1:53 \
    --blocklist "ads=$T/no-such-list.txt" 2>&1)
rc=$?
assert_ne 0 "$rc" "--check-config with a missing blocklist: exit status != 0"
assert_match "no-such-list\.txt" "$out" "--check-config with a missing blocklist: the message names the file"
out=$("$DOHGATE" --check-config --listen 127.0.0.1:18443 --upstream 127.0.0.1:53 \
    --blocklist "ads=$L/ads.hosts" 2>&1)
assert_eq 0 "$?" "--check-config with the list present: exit 0 ($(tail -1 <<<"$out"))"

finish
