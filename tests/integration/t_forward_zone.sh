#!/bin/bash
# t_forward_zone: split horizon (forward-zone NAME UPSTREAM...) against real NSDs.
#   NSD 1 (start_nsd): the test zone dohgate.test, the default upstream. It has no name under
#         corp.dohgate.test: NXDOMAIN there.
#   NSD 2: corp.dohgate.test, the reverse zone 2.0.10.in-addr.arpa (a router's PTR records), and
#         a decoy dohgate.test whose www and mx have other addresses (10.9.9.x): a test-zone name
#         sent there by mistake gets a visibly wrong answer.
#   NSD 3: sub.corp.dohgate.test, nested in NSD 2's zone (whose own copy of www.sub differs):
#         the longest zone wins.
#   Unbound (DoT and DoH) for forward-zone txt.dohgate.test tls://... and loop.dohgate.test
#         https://...: zones with only encrypted servers (the upstream TLS context is made for
#         them; the default upstream is plain DNS). Unbound asks NSD 1: the metrics show the route.
# Checks, over DoH (curl) and plain DNS (dig, dns-listen): each name answered by the server of
# its zone; metrics series per zone server ({upstream=...,zone=...}) counting; NSD 2 stopped:
# corp names SERVFAIL within query-timeout, its up gauge 0, other names still answered;
# SIGHUP without the corp zones: corp names go to NSD 1 (NXDOMAIN; the cache of the old routes
# is not kept), the remaining zones still routed.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl dig unbound kdig python3

CORPZ=corp.$ZONE
start_nsd
start_nsd_zone CORP_PORT "$CORPZ" corp.zone 2.0.10.in-addr.arpa corp-rev.zone "$ZONE" corp-decoy.zone
start_nsd_zone SUB_PORT "sub.$CORPZ" corp-sub.zone
make_certs
start_unbound_dot

CONF=$T/dohgate.conf
DG_PORT=$(free_port)
M_PORT=$(free_port)
DNS_PORT=$(free_port)
QT=1500
# write_conf [forward-zone lines...]
write_conf() {
    {
        echo "listen 127.0.0.1:$DG_PORT"
        echo "cert $CERTS/server.pem"
        echo "key $CERTS/server.key"
        echo "upstream 127.0.0.1:$NSD_PORT"
        echo "upstream-ca $CERTS/ca.pem"
        echo "workers 2"
        echo "metrics-listen 127.0.0.1:$M_PORT"
        echo "dns-listen 127.0.0.1:$DNS_PORT"
        echo "upstream-timeout 300"
        echo "query-timeout $QT"
        echo "log-level info"
        printf 'forward-zone %s\n' "$@"
    } >"$CONF.new"
    mv -f "$CONF.new" "$CONF"
}
TLS_UP="tls://127.0.0.1:$UB_PORT#dot.dohgate.test"
HTTPS_UP="https://dot.dohgate.test:$UB_HTTPS_PORT/dns-query addr=127.0.0.1"
write_conf "$CORPZ 127.0.0.1:$CORP_PORT" "sub.$CORPZ 127.0.0.1:$SUB_PORT" \
    "2.0.10.in-addr.arpa 127.0.0.1:$CORP_PORT" "txt.$ZONE $TLS_UP" "loop.$ZONE $HTTPS_UP"
launch_dohgate -c "$CONF"

# doh NAME [TYPE]: "RCODE FIRST-ANSWER-DATA" of a DoH GET (a new connection each time)
doh() {
    local q code
    q=$(dnsmsg query "$1" "${2:-A}" --b64)
    code=$(curl -s --http2 --cacert "$CERTS/ca.pem" -o "$T/doh.bin" -w '%{http_code}' \
        "$(dohgate_url)?dns=$q")
    [ "$code" = 200 ] || { echo "HTTP $code"; return; }
    dnsmsg show "$T/doh.bin" | awk '/^hdr/{for(i=1;i<=NF;i++) if($i ~ /^rcode=/) r=substr($i,7)}
        $1=="an" && !a {a=$5} END{print r, a}' | sed 's/ $//'
}
# udp NAME [TYPE]: "RCODE FIRST-ANSWER-DATA" over plain DNS (UDP) to dns-listen
udp() {
    local out
    out=$(dig_udp "$DNS_PORT" "$1" "${2:-A}")
    printf '%s %s' "$(printf '%s\n' "$out" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')" \
        "$(printf '%s\n' "$out" | awk '/^;; ANSWER SECTION:/{s=1; next} s && NF>=5 {print $5; exit}')" |
        sed 's/ $//'
}
# metric NAME LABELS: the value of NAME{LABELS} on /metrics ("" when absent)
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk -v p="$1{$2} " 'index($0, p) == 1 { print $NF; exit }'
}
CORP_L="upstream=\"127.0.0.1:$CORP_PORT\",zone=\"$CORPZ\""
SUB_L="upstream=\"127.0.0.1:$SUB_PORT\",zone=\"sub.$CORPZ\""
REV_L="upstream=\"127.0.0.1:$CORP_PORT\",zone=\"2.0.10.in-addr.arpa\""
TLS_L="upstream=\"$TLS_UP\",zone=\"txt.$ZONE\""
DEF_L="upstream=\"127.0.0.1:$NSD_PORT\""

# ---- pre: the servers themselves (what a wrong route would give)
assert_eq "NXDOMAIN" "$(dig +time=2 +tries=1 @127.0.0.1 -p "$NSD_PORT" "host.$CORPZ" A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')" \
    "pre: the test zone's NSD has no corp names (NXDOMAIN)"
assert_eq "10.9.9.10" "$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$CORP_PORT" "www.$ZONE" A)" \
    "pre: the corp NSD has a decoy www.$ZONE"
assert_eq "10.0.1.99" "$(dig +short +time=2 +tries=1 @127.0.0.1 -p "$CORP_PORT" "www.sub.$CORPZ" A)" \
    "pre: the corp NSD has its own www.sub.$CORPZ"
def_before=$(metric dohgate_upstream_queries_total "$DEF_L")

# ---- routing over DoH
assert_eq "NOERROR 10.0.1.10" "$(doh "host.$CORPZ")" "DoH: host.$CORPZ from the corp NSD"
assert_eq "NOERROR 2001:db8:c::10" "$(doh "HOST.Corp.$ZONE" AAAA)" "DoH: any case routes the same (AAAA)"
assert_eq "NOERROR 10.0.3.1" "$(doh "www.sub.$CORPZ")" "DoH: www.sub.$CORPZ from NSD 3 (the longest zone wins)"
assert_eq "NOERROR router.corp.dohgate.test." "$(doh 1.2.0.10.in-addr.arpa PTR)" \
    "DoH: the router's PTR from the forwarded reverse zone"
assert_eq "NOERROR 192.0.2.10" "$(doh "www.$ZONE")" "DoH: www.$ZONE from the test zone's NSD, not the decoy"
assert_eq "NXDOMAIN" "$(doh "nothere.$CORPZ")" "DoH: a missing corp name: the corp NSD's NXDOMAIN"
assert_eq "NOERROR \"hello" "$(doh "txt.$ZONE" TXT | cut -d' ' -f1-2)" "DoH: txt.$ZONE through the tls:// zone server"
assert_eq "NOERROR 127.0.0.1" "$(udp "loop.$ZONE")" "UDP: loop.$ZONE through the https:// zone server"

# ---- routing over plain DNS (UDP)
assert_eq "NOERROR 10.0.1.10" "$(udp "host.$CORPZ")" "UDP: host.$CORPZ from the corp NSD"
assert_eq "NOERROR 10.0.3.1" "$(udp "www.sub.$CORPZ")" "UDP: www.sub.$CORPZ from NSD 3"
assert_eq "NOERROR host.corp.dohgate.test." "$(udp 10.2.0.10.in-addr.arpa PTR)" "UDP: a PTR of the reverse zone"
assert_eq "NOERROR 192.0.2.25" "$(udp "mx.$ZONE")" "UDP: mx.$ZONE from the test zone's NSD, not the decoy"

# ---- metrics: the zone servers' series count, the default one's did not count zone names
assert_range 3 100 "$(metric dohgate_upstream_answers_total "$CORP_L")" "metrics: corp server answers counted"
assert_range 2 100 "$(metric dohgate_upstream_answers_total "$SUB_L")" "metrics: sub server answers counted"
assert_range 2 100 "$(metric dohgate_upstream_answers_total "$REV_L")" "metrics: reverse zone answers counted"
assert_range 1 100 "$(metric dohgate_upstream_answers_total "$TLS_L")" "metrics: tls:// zone server answers counted"
assert_range 1 100 "$(metric dohgate_upstream_handshakes_total "$TLS_L")" "metrics: tls:// zone server handshakes"
assert_range 1 100 "$(metric dohgate_upstream_latency_seconds_count "$CORP_L")" "metrics: corp latency histogram"
https_ans=$(curl -s "http://127.0.0.1:$M_PORT/metrics" |
    awk -v z="zone=\"loop.$ZONE\"" '/^dohgate_upstream_answers_total\{upstream="https:/ && index($0, z) { print $NF }')
assert_eq 1 "$https_ans" "metrics: https:// zone server answers counted"
assert_eq 1 "$(metric dohgate_upstream_up "$CORP_L")" "metrics: corp server up"
def_after=$(metric dohgate_upstream_queries_total "$DEF_L")
# www and mx of the test zone (and the start-up probe's www, possibly cached): 1 to 3 tries
assert_range 1 3 "$((def_after - def_before))" "metrics: the default upstream got the test-zone names only"
assert_match "dohgate_upstream_queries_total\\{$DEF_L\\} " "$(curl -s "http://127.0.0.1:$M_PORT/metrics")" \
    "metrics: the default upstream's labels unchanged"

# ---- health: the corp NSD stops
kill -TERM "$CORP_PORT_PID"
wait_gone "$CORP_PORT_PID" 5 || kill -KILL "$CORP_PORT_PID"
wait "$CORP_PORT_PID" 2>/dev/null
untrack "$CORP_PORT_PID"
t0=$(now_ms)
assert_eq "SERVFAIL" "$(doh "new1.$CORPZ")" "NSD 2 down: a corp name gets SERVFAIL"
dt=$(($(now_ms) - t0))
assert_range 0 $((QT + 1000)) "$dt" "NSD 2 down: SERVFAIL within query-timeout ($dt ms)"
for i in 2 3 4 5 6; do doh "new$i.$CORPZ" >/dev/null; done
assert_eq "SERVFAIL" "$(udp "new7.$CORPZ")" "NSD 2 down: SERVFAIL over UDP too"
assert_eq 0 "$(metric dohgate_upstream_up "$CORP_L")" "metrics: the corp server is down"
assert_eq 1 "$(metric dohgate_upstream_up "$DEF_L")" "metrics: the default server is still up"
assert_eq "NOERROR 192.0.2.42" "$(doh "short.$ZONE")" "NSD 2 down: test-zone names still answered"
assert_eq "NOERROR 10.0.3.1" "$(udp "www.sub.$CORPZ")" "NSD 2 down: the nested zone still answered"
assert_file_match "$DG_LOG" "upstream 127.0.0.1:$CORP_PORT: [0-9]+ failed tries in a row" "log: the corp server marked down"

# ---- SIGHUP without the corp and reverse zones: their names go to the default upstream
before=$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")
write_conf "sub.$CORPZ 127.0.0.1:$SUB_PORT" "txt.$ZONE $TLS_UP" "loop.$ZONE $HTTPS_UP"
kill -HUP "$DG_PID"
for _ in $(seq 1 50); do
    [ "$(grep -cE 'configuration reloaded|reload refused' "$DG_LOG")" -gt "$before" ] && break
    sleep 0.1
done
assert_eq $((before + 1)) "$(grep -c 'configuration reloaded' "$DG_LOG")" "SIGHUP: configuration reloaded"
sleep 0.3 # the workers switch between two events
# host.corp was cached from NSD 2 (10.0.1.10): the new routes start with a new cache
assert_eq "NXDOMAIN" "$(doh "host.$CORPZ")" "after reload: host.$CORPZ from the test zone's NSD (NXDOMAIN)"
assert_eq "NXDOMAIN" "$(udp "new1.$CORPZ")" "after reload: corp names over UDP too"
# Without its forward-zone, 10.in-addr.arpa is an RFC 6303 local zone again: NXDOMAIN from
# dohgate itself (NSD 1 serves no reverse zone and would answer REFUSED; the dead corp NSD
# SERVFAIL), and the upstream is not asked
q_before=$(metric dohgate_upstream_queries_total "$DEF_L")
assert_eq "NXDOMAIN" "$(doh 1.2.0.10.in-addr.arpa PTR)" "after reload: the reverse zone is local again (RFC 6303)"
assert_eq "$q_before" "$(metric dohgate_upstream_queries_total "$DEF_L")" "after reload: the reverse name was not forwarded"
assert_eq "NOERROR 10.0.3.1" "$(doh "www.sub.$CORPZ")" "after reload: sub.$CORPZ still forwarded to NSD 3"
assert_eq "" "$(metric dohgate_upstream_up "$CORP_L")" "after reload: no corp series"
assert_eq 1 "$(metric dohgate_upstream_up "$SUB_L")" "after reload: the sub server's series, up"
assert_eq 1 "$(metric dohgate_upstream_up "$TLS_L")" "after reload: the tls:// server's series, up"

stop_dohgate
finish
