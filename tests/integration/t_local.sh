#!/bin/bash
# t_local: names dohgate answers itself (issue 17). hosts-file (A, AAAA, aliases, PTR to the
# line's first name, an address on two lines: the first line's name is the PTR, a name that
# overrides the upstream's), local-record of several types (A, AAAA, TXT, MX, SRV, CNAME; a
# CNAME chain followed within the local data, one out of it left to the client), local-zone
# (NXDOMAIN with the zone's SOA, NODATA with it for a name with other types and for an empty
# non-terminal, a SOA of its own from local-record, the longest zone wins), all with AA=1 and
# never forwarded (dohgate_upstream_queries_total does not move; the zone is one NSD serves);
# the RFC 6303 / 6761 / 8375 defaults with no option at all (private reverse zones, localhost,
# invalid, home.arpa), and a forward-zone naming a default zone taking it over (a second NSD
# serving 10.in-addr.arpa and home.arpa). Over plain DNS (UDP, TCP), DoH and the JSON API.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig kdig curl python3

# use_log NAME: the next dohgate logs to $T/dohgate-NAME.log
use_log() { DG_LOG=$T/dohgate-$1.log; }

# dq DIG-ARGS...: dig over UDP (one try) at dohgate's plain-DNS port $UP
dq() { dig @127.0.0.1 -p "$UP" +tries=1 +time=3 +nocookie "$@" 2>&1; }
# status OUTPUT: the rcode of a dig or kdig output
status() { sed -n 's/.*status: \([A-Z][A-Z]*\).*/\1/p' <<<"$1" | head -1; }
# section NAME OUTPUT: the records of a section (ANSWER, AUTHORITY), blanks squeezed:
# "owner ttl IN type rdata"
section() {
    awk -v s="$1" '/^;; [A-Z]+ SECTION:/ { cur = $2; next } /^[[:space:]]*$/ { cur = "" }
        cur == s && !/^;/ { $1 = $1; print }' <<<"$2"
}
# rdata TYPE OUTPUT: the rdata of the answer records of TYPE, space-separated
rdata() { section ANSWER "$2" | awk -v t="$1" '$4 == t { $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }' | tr '\n' ' ' | sed 's/ $//'; }
# ttl_of TYPE OUTPUT: the TTL of the first answer record of TYPE
ttl_of() { section ANSWER "$2" | awk -v t="$1" '$4 == t { print $2; exit }'; }
# soa_owner OUTPUT: the owner of the SOA in the authority section (empty when none)
soa_owner() { section AUTHORITY "$1" | awk '$4 == "SOA" { print $1; exit }'; }
# aa OUTPUT: 1 when the answer has the AA flag
aa() { if grep -qE '^;; [Ff]lags:[a-z ]* aa[ ;]' <<<"$1"; then echo 1; else echo 0; fi; }
# upq: the queries dohgate sent to any upstream so far
upq() {
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk 'index($0, "dohgate_upstream_queries_total{") == 1 { s += $NF } END { printf "%d\n", s }'
}
# kdoh KDIG-ARGS...: kdig over DoH (POST)
kdoh() { kdig @127.0.0.1 -p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost +timeout=5 +retry=0 "$@" 2>&1; }

# neg WHAT RCODE SOA-OWNER DIG-ARGS...: a negative local answer: RCODE, no answer records, the
# zone's SOA in the authority section, AA
neg() {
    local what=$1 rc=$2 owner=$3 out
    shift 3
    out=$(dq "$@")
    assert_eq "$rc" "$(status "$out")" "$what: $rc"
    assert_match 'ANSWER: 0,' "$out" "$what: no answer records"
    assert_eq "$owner" "$(soa_owner "$out")" "$what: the SOA of $owner in the authority section"
    assert_eq 1 "$(aa "$out")" "$what: AA=1"
}

# start_nsd_rev: a second NSD on $NSD2_PORT, authoritative for 10.in-addr.arpa (10.1.2.3 ->
# router.dohgate.test) and home.arpa (printer.home.arpa A 192.168.1.50): what a home router
# answers, for the forward-zone checks
start_nsd_rev() {
    start_nsd_zone NSD2_PORT 10.in-addr.arpa local-rev.zone home.arpa local-home.zone
}

start_nsd
start_nsd_rev
make_certs

# ================================================================================================
# local data: hosts-file, local-record, local-zone
cat >"$T/hosts" <<'EOF'
# the home's names
192.168.1.10    nas.home.arpa   files.home.arpa
192.168.1.11    printer.lan
2001:db8:1::10  nas.home.arpa
192.168.1.10    other.home.arpa     # the same address again: nas.home.arpa stays its PTR
192.0.2.77      mx.dohgate.test     # the upstream says 192.0.2.25: the local name wins
EOF
use_log local
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$UP" --metrics-listen "127.0.0.1:$M_PORT" \
    --hosts-file "$T/hosts" \
    --local-record 'svc.home.arpa. 600 IN TXT "hello local" "two"' \
    --local-record 'home.arpa. 300 IN MX 10 mail.home.arpa.' \
    --local-record 'mail.home.arpa. 300 IN A 192.168.1.25' \
    --local-record '_http._tcp.home.arpa. 300 IN SRV 0 5 80 nas.home.arpa.' \
    --local-record 'www.home.arpa. 300 IN CNAME mail.home.arpa.' \
    --local-record 'alias.home.arpa. 300 IN CNAME www.home.arpa.' \
    --local-record 'ext.home.arpa. 300 IN CNAME www.dohgate.test.' \
    --local-record 'v6.home.arpa. IN AAAA 2001:db8::99' \
    --local-record 'txt.dohgate.test. 60 IN TXT "local wins"' \
    --local-zone lz.dohgate.test \
    --local-record 'host.lz.dohgate.test. 120 IN A 10.0.0.1' \
    --local-record 'a.b.lz.dohgate.test. 120 IN A 10.0.0.2'
u0=$(upq)

# ---- hosts-file
out=$(dq nas.home.arpa A)
assert_eq NOERROR "$(status "$out")" "hosts: nas.home.arpa A NOERROR"
assert_eq 192.168.1.10 "$(rdata A "$out")" "hosts: nas.home.arpa A 192.168.1.10"
assert_eq 3600 "$(ttl_of A "$out")" "hosts: TTL 3600"
assert_eq 1 "$(aa "$out")" "hosts: AA=1"
out=$(dq nas.home.arpa AAAA)
assert_eq 2001:db8:1::10 "$(rdata AAAA "$out")" "hosts: nas.home.arpa AAAA 2001:db8:1::10 (a second line)"
assert_eq 3600 "$(ttl_of AAAA "$out")" "hosts: AAAA TTL 3600"
assert_eq 192.168.1.10 "$(rdata A "$(dq files.home.arpa A)")" "hosts: the alias files.home.arpa"
assert_eq 192.168.1.10 "$(rdata A "$(dq other.home.arpa A)")" "hosts: other.home.arpa (the address on a second line)"
assert_eq 192.168.1.10 "$(rdata A "$(dq NaS.HoMe.ArPa A)")" "hosts: names match case-insensitively"
assert_eq 192.168.1.11 "$(rdata A "$(dq printer.lan A)")" "hosts: printer.lan (outside any local zone)"
out=$(dq printer.lan AAAA)
assert_eq NOERROR "$(status "$out")" "hosts: printer.lan AAAA: NOERROR"
assert_match 'ANSWER: 0,' "$out" "hosts: printer.lan AAAA: NODATA"
out=$(dq mx.dohgate.test A)
assert_eq 192.0.2.77 "$(rdata A "$out")" "hosts: mx.dohgate.test is the local 192.0.2.77, not the upstream's"
out=$(dq -x 192.168.1.10)
assert_eq nas.home.arpa. "$(rdata PTR "$out")" "hosts PTR: 192.168.1.10 -> nas.home.arpa. only (the first line's first name)"
assert_eq 1 "$(aa "$out")" "hosts PTR: AA=1"
assert_eq 3600 "$(ttl_of PTR "$out")" "hosts PTR: TTL 3600"
assert_eq nas.home.arpa. "$(rdata PTR "$(dq -x 2001:db8:1::10)")" "hosts PTR: 2001:db8:1::10 -> nas.home.arpa."
assert_eq printer.lan. "$(rdata PTR "$(dq -x 192.168.1.11)")" "hosts PTR: 192.168.1.11 -> printer.lan."
assert_eq mx.dohgate.test. "$(rdata PTR "$(dq -x 192.0.2.77)")" "hosts PTR: 192.0.2.77 -> mx.dohgate.test. (not a default zone)"
neg "hosts PTR: an address not in the file (192.168.1.99)" NXDOMAIN 168.192.in-addr.arpa. -x 192.168.1.99

# ---- local-record, several types
out=$(dq svc.home.arpa TXT)
assert_eq '"hello local" "two"' "$(rdata TXT "$out")" "local-record TXT: as given"
assert_eq 600 "$(ttl_of TXT "$out")" "local-record TXT: TTL 600 as given"
assert_eq 1 "$(aa "$out")" "local-record TXT: AA=1"
assert_eq "10 mail.home.arpa." "$(rdata MX "$(dq home.arpa MX)")" "local-record MX at the apex of home.arpa"
assert_eq "0 5 80 nas.home.arpa." "$(rdata SRV "$(dq _http._tcp.home.arpa SRV)")" "local-record SRV"
out=$(dq v6.home.arpa AAAA)
assert_eq 2001:db8::99 "$(rdata AAAA "$out")" "local-record AAAA"
assert_eq 3600 "$(ttl_of AAAA "$out")" "local-record without a TTL: 3600"
out=$(dq www.home.arpa A)
assert_eq mail.home.arpa. "$(rdata CNAME "$out")" "local-record CNAME: the CNAME"
assert_eq 192.168.1.25 "$(rdata A "$out")" "local-record CNAME: followed to mail.home.arpa's A"
out=$(dq alias.home.arpa A)
assert_eq "www.home.arpa. mail.home.arpa." "$(rdata CNAME "$out")" "local CNAME chain of two: both CNAMEs"
assert_eq 192.168.1.25 "$(rdata A "$out")" "local CNAME chain of two: the A at its end"
assert_eq mail.home.arpa. "$(rdata CNAME "$(dq www.home.arpa CNAME)")" "a CNAME query: the CNAME itself"
out=$(dq ext.home.arpa A)
assert_eq NOERROR "$(status "$out")" "a CNAME out of the local data: NOERROR"
assert_eq www.dohgate.test. "$(rdata CNAME "$out")" "a CNAME out of the local data: the CNAME given"
out=$(dq txt.dohgate.test TXT)
assert_eq '"local wins"' "$(rdata TXT "$out")" "local-record over a name the upstream has: the local TXT"
neg "local data of another type in a default zone (svc.home.arpa A)" NOERROR home.arpa. svc.home.arpa A
neg "no local data under home.arpa (nothing.home.arpa)" NXDOMAIN home.arpa. nothing.home.arpa A

# ---- local-zone lz.dohgate.test: the upstream serves dohgate.test and would say otherwise
neg "local-zone: a name without data (nope.lz)" NXDOMAIN lz.dohgate.test. nope.lz.dohgate.test A
neg "local-zone: a deeper name (x.y.lz)" NXDOMAIN lz.dohgate.test. x.y.lz.dohgate.test AAAA
neg "local-zone: a name with other types (host.lz AAAA): NODATA" NOERROR lz.dohgate.test. host.lz.dohgate.test AAAA
neg "local-zone: an empty non-terminal (b.lz): NODATA" NOERROR lz.dohgate.test. b.lz.dohgate.test A
out=$(dq host.lz.dohgate.test A)
assert_eq 10.0.0.1 "$(rdata A "$out")" "local-zone: a name with data answers it"
assert_eq 120 "$(ttl_of A "$out")" "local-zone: its TTL"
out=$(dq +tcp nope.lz.dohgate.test A)
assert_eq NXDOMAIN "$(status "$out")" "local-zone over TCP: NXDOMAIN"
assert_match '\(TCP\)' "$out" "local-zone over TCP: asked over TCP"

assert_eq "$u0" "$(upq)" "none of the local answers above was forwarded (upstream queries unchanged)"

# ---- over DoH and JSON
out=$(kdoh nas.home.arpa A)
assert_eq 192.168.1.10 "$(rdata A "$out")" "DoH (kdig): hosts name"
assert_match '[Ff]lags:[a-z ]* aa' "$out" "DoH (kdig): AA=1"
out=$(kdoh nope.lz.dohgate.test A)
assert_eq NXDOMAIN "$(status "$out")" "DoH (kdig): local-zone NXDOMAIN"
assert_eq lz.dohgate.test. "$(soa_owner "$out")" "DoH (kdig): with the zone's SOA"
doh_get nas.home.arpa A
assert_eq 3600 "$(max_age)" "DoH (curl GET): max-age = the TTL 3600"
doh_get nope.lz.dohgate.test A
assert_range 1 300 "$(max_age)" "DoH (curl GET), NXDOMAIN: max-age from the SOA (at most 300) ($(max_age))"
assert_eq "0 192.168.1.10" "$(json nas.home.arpa A)" "JSON: hosts name"
assert_eq "0 2001:db8:1::10" "$(json nas.home.arpa AAAA)" "JSON: hosts AAAA"
assert_eq "3 " "$(json nope.lz.dohgate.test A)" "JSON: local-zone NXDOMAIN (Status 3)"
assert_eq "0 nas.home.arpa." "$(json 10.1.168.192.in-addr.arpa PTR)" "JSON: the PTR"
assert_eq "$u0" "$(upq)" "DoH and JSON local answers: not forwarded either"

# ---- the rest still goes upstream
out=$(dq www.dohgate.test A)
assert_eq 192.0.2.10 "$(rdata A "$out")" "a name outside the local data: the upstream's answer"
out=$(dq txt.dohgate.test A)
assert_eq NOERROR "$(status "$out")" "txt.dohgate.test A (local TXT only): NOERROR"
assert_match 'ANSWER: 0,' "$out" "txt.dohgate.test A: NODATA"
assert_eq "10 mx.dohgate.test." "$(rdata MX "$(dq mail.dohgate.test MX)")" "mail.dohgate.test MX: from the upstream"
assert_range $((u0 + 1)) $((u0 + 3)) "$(upq)" "the upstream was asked for those"
# 11 local-record; hosts: 6 A/AAAA and 4 PTR (192.168.1.10 once); localhost's A, AAAA and 2 PTR
assert_file_match "$DG_LOG" 'info: policy: 25 local records' "start-up logs the local data (25 records)"

# ---- counters: local data and local-zone answers
metric_sum() {
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { printf "%d\n", s }'
}
d0=$(metric_sum 'dohgate_local_answers_total{kind="data"}')
z0=$(metric_sum 'dohgate_local_answers_total{kind="zone"}')
assert_range 20 1000 "$d0" "metrics: the answers from local data so far are counted ($d0)"
dq nas.home.arpa A >/dev/null
dq nope.lz.dohgate.test A >/dev/null
dq x.invalid A >/dev/null
dq www.dohgate.test A >/dev/null
assert_eq $((d0 + 1)) "$(metric_sum 'dohgate_local_answers_total{kind="data"}')" "metrics: one more answer from local data: +1"
assert_eq $((z0 + 2)) "$(metric_sum 'dohgate_local_answers_total{kind="zone"}')" "metrics: two more local-zone NXDOMAINs: +2"
stop_dohgate

# ================================================================================================
# the defaults, without any option
use_log defaults
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$UP" --metrics-listen "127.0.0.1:$M_PORT"
u0=$(upq)
neg "default: dig -x 10.1.2.3" NXDOMAIN 10.in-addr.arpa. -x 10.1.2.3
neg "default: dig -x 192.168.1.1" NXDOMAIN 168.192.in-addr.arpa. -x 192.168.1.1
neg "default: dig -x 172.16.5.4" NXDOMAIN 16.172.in-addr.arpa. -x 172.16.5.4
neg "default: dig -x 172.31.0.1" NXDOMAIN 31.172.in-addr.arpa. -x 172.31.0.1
neg "default: dig -x 100.64.0.1 (RFC 7793)" NXDOMAIN 64.100.in-addr.arpa. -x 100.64.0.1
neg "default: dig -x 169.254.1.1" NXDOMAIN 254.169.in-addr.arpa. -x 169.254.1.1
neg "default: dig -x fd00::1" NXDOMAIN d.f.ip6.arpa. -x fd00::1
neg "default: dig -x fe80::1" NXDOMAIN 8.e.f.ip6.arpa. -x fe80::1
neg "default: something.invalid" NXDOMAIN invalid. something.invalid A
neg "default: printer.home.arpa" NXDOMAIN home.arpa. printer.home.arpa A
out=$(dq localhost A)
assert_eq 127.0.0.1 "$(rdata A "$out")" "default: localhost A 127.0.0.1"
assert_eq 1 "$(aa "$out")" "default: localhost A: AA=1"
assert_eq ::1 "$(rdata AAAA "$(dq localhost AAAA)")" "default: localhost AAAA ::1"
assert_eq localhost. "$(rdata PTR "$(dq -x 127.0.0.1)")" "default: dig -x 127.0.0.1 -> localhost."
assert_eq localhost. "$(rdata PTR "$(dq -x ::1)")" "default: dig -x ::1 -> localhost."
assert_eq "$u0" "$(upq)" "default zones: nothing forwarded"
out=$(kdoh -x 10.1.2.3)
assert_eq NXDOMAIN "$(status "$out")" "default over DoH: dig -x 10.1.2.3 NXDOMAIN"
out=$(dq -x 8.8.8.8)
assert_ne "$u0" "$(upq)" "a public address's PTR is forwarded"
stop_dohgate

# ================================================================================================
# a forward-zone or local-zone naming a default zone takes it over; a local-zone below a
# default zone wins for its names (the longest); a SOA of its own
use_log override
UP=$(free_port)
M_PORT=$(free_port)
start_dohgate --workers 1 --dns-listen "127.0.0.1:$UP" --metrics-listen "127.0.0.1:$M_PORT" \
    --forward-zone "10.in-addr.arpa 127.0.0.1:$NSD2_PORT" --forward-zone "home.arpa 127.0.0.1:$NSD2_PORT" \
    --local-zone 1.168.192.in-addr.arpa --local-zone invalid \
    --local-zone z3.dohgate.test \
    --local-record 'z3.dohgate.test. 600 IN SOA ns.z3.dohgate.test. admin.z3.dohgate.test. 7 3600 600 86400 120'
u0=$(upq)
out=$(dq -x 10.1.2.3)
assert_eq NOERROR "$(status "$out")" "forward-zone 10.in-addr.arpa: NOERROR"
assert_eq router.dohgate.test. "$(rdata PTR "$out")" "forward-zone 10.in-addr.arpa: the router's PTR"
assert_eq 192.168.1.50 "$(rdata A "$(dq printer.home.arpa A)")" "forward-zone home.arpa: the router's answer"
assert_range $((u0 + 2)) $((u0 + 2)) "$(upq)" "forward-zone over default zones: both forwarded"
neg "other defaults stay: dig -x 192.168.2.1" NXDOMAIN 168.192.in-addr.arpa. -x 192.168.2.1
neg "local-zone below a default: dig -x 192.168.1.1" NXDOMAIN 1.168.192.in-addr.arpa. -x 192.168.1.1
neg "local-zone invalid (a default named): still local" NXDOMAIN invalid. x.invalid A
assert_eq 127.0.0.1 "$(rdata A "$(dq localhost A)")" "other defaults stay: localhost"
out=$(dq nope.z3.dohgate.test A)
assert_eq NXDOMAIN "$(status "$out")" "local-zone with a local SOA: NXDOMAIN"
assert_match 'z3\.dohgate\.test\. [0-9]+ IN SOA ns\.z3\.dohgate\.test\. admin\.z3\.dohgate\.test\. 7 ' \
    "$(section AUTHORITY "$out")" "local-zone with a local SOA: that SOA (serial 7)"
out=$(dq z3.dohgate.test SOA)
assert_match ' 7 3600 600 86400 120' "$(rdata SOA "$out")" "local-zone: its SOA asked for"
stop_dohgate

# ================================================================================================
# a hosts file changed while running: picked up by the file watch; a broken one keeps the old
# data with one error naming FILE:LINE
answers_a() { [ "$(rdata A "$(dq "$1" A)")" = "$2" ]; }
use_log hostsreload
UP=$(free_port)
H2=$T/hosts2
printf '192.168.5.1 one.home.arpa\n' >"$H2"
start_dohgate --workers 2 --dns-listen "127.0.0.1:$UP" --cert-check-interval 1 --hosts-file "$H2"
assert_eq 192.168.5.1 "$(rdata A "$(dq one.home.arpa A)")" "hosts reload: before, one.home.arpa"
printf '192.168.5.2 two.home.arpa\n' >"$H2.new"
mv -f "$H2.new" "$H2"
wait_for 15 answers_a two.home.arpa 192.168.5.2
assert_eq 192.168.5.2 "$(rdata A "$(dq two.home.arpa A)")" "hosts reload: the new name answered"
assert_eq NXDOMAIN "$(status "$(dq one.home.arpa A)")" "hosts reload: the removed name is gone (NXDOMAIN in home.arpa)"
assert_eq two.home.arpa. "$(rdata PTR "$(dq -x 192.168.5.2)")" "hosts reload: the new PTR"
printf '192.168.5.3 three.home.arpa\n192.168.5.300 four.home.arpa\n' >"$H2.new"
mv -f "$H2.new" "$H2"
wait_for 15 grep -q "$H2:2" "$DG_LOG"
sleep 3
assert_eq 1 "$(grep -c "error: .*$H2:2" "$DG_LOG")" "broken hosts file (a bad address): exactly one error naming $H2:2"
assert_eq 192.168.5.2 "$(rdata A "$(dq two.home.arpa A)")" "broken hosts file: the old data keeps answering"
assert_eq NXDOMAIN "$(status "$(dq three.home.arpa A)")" "broken hosts file: nothing of it applies"
stop_dohgate

finish
