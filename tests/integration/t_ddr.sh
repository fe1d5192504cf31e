#!/bin/bash
# t_ddr: Discovery of Designated Resolvers (RFC 9462). _dns.resolver.arpa SVCB and
# _dns.<server-name> SVCB are answered by dohgate itself with its DoH and DoT endpoints (kdig
# prints SVCB), over DoH and over plain DNS (UDP and TCP, where a client handed the address by
# DHCP asks), never forwarded; other names and types under resolver.arpa get NODATA with a SOA;
# the announced endpoint passes the check a client makes (the certificate covers the address
# asked, RFC 9462 §4.2); a warning when the certificate does not cover a plain-DNS address;
# with ddr no the query goes upstream like any other.
. "$(dirname "$0")/lib.sh"
need_tools nsd kdig openssl

start_nsd
make_certs
DOT_PORT=$(free_port)
DNS_PORT=$(free_port)
start_dohgate --workers 1 --server-name localhost --dot-listen "127.0.0.1:$DOT_PORT" \
    --dns-listen "127.0.0.1:$DNS_PORT"

# q TRANSPORT NAME TYPE: kdig's answer section and status, one line each
q() {
    local how=()
    case "$1" in
    doh) how=(-p "$DG_PORT" +https +tls-ca="$CERTS/ca.pem" +tls-hostname=localhost) ;;
    udp) how=(-p "$DNS_PORT" +notcp) ;;
    tcp) how=(-p "$DNS_PORT" +tcp) ;;
    esac
    kdig @127.0.0.1 "${how[@]}" +timeout=5 +retry=0 +noall +header +answer +authority "$2" "$3" 2>&1 |
        awk '/status: / { s = $0; sub(/.*status: /, "", s); sub(/[^A-Z].*/, "", s); print "status " s; next }
             /^;/ || NF < 4 { next } { print }'
}

check_svcb() { # check_svcb TRANSPORT OWNER
    local out
    out=$(q "$1" "$2" SVCB)
    assert_match 'status NOERROR' "$out" "$1 $2 SVCB: NOERROR"
    assert_match "SVCB[[:space:]]+1 localhost\. alpn=h2,http/1\.1 port=$DG_PORT ipv4hint=127\.0\.0\.1 key7=\"/dns-query\{\?dns\}\"" \
        "$out" "$1 $2 SVCB: priority 1 is DoH (alpn, port, hint, dohpath)"
    assert_match "SVCB[[:space:]]+2 localhost\. alpn=dot port=$DOT_PORT ipv4hint=127\.0\.0\.1" \
        "$out" "$1 $2 SVCB: priority 2 is DoT"
    assert_eq 2 "$(echo "$out" | grep -c 'SVCB')" "$1 $2 SVCB: two records"
    assert_match "^$2\.[[:space:]]+300[[:space:]]" "$(echo "$out" | grep SVCB | head -1)" "$1 $2 SVCB: TTL 300"
}

check_svcb doh _dns.resolver.arpa
check_svcb doh _dns.localhost
# where DDR is used: a device given the plain-DNS address by DHCP asks there
check_svcb udp _dns.resolver.arpa
check_svcb tcp _dns.resolver.arpa
assert_nomatch 'ddr: the certificate does not cover' "$(cat "$DG_LOG")" \
    "no coverage warning: the test certificate names 127.0.0.1"
out=$(q doh _dns.resolver.arpa A)
assert_match 'status NOERROR' "$out" "A at _dns.resolver.arpa: NOERROR (NODATA)"
assert_nomatch '[[:space:]]A[[:space:]]' "$(echo "$out" | grep -v SOA)" "A at _dns.resolver.arpa: no A record"
assert_match 'resolver\.arpa\..*SOA' "$out" "A at _dns.resolver.arpa: the SOA of resolver.arpa"
out=$(q doh foo.resolver.arpa AAAA)
assert_match 'status NOERROR' "$out" "another name under resolver.arpa: NODATA"
assert_match 'resolver\.arpa\..*SOA' "$out" "another name under resolver.arpa: with the SOA"
out=$(q doh _dns.localhost A)
assert_nomatch 'SVCB' "$out" "_dns.<server-name> of another type is not DDR's"

# The check a client makes before it uses the designation (RFC 9462 §4.2): a TLS connection to
# the announced address and port whose certificate covers the IP address it asked.
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -CAfile "$CERTS/ca.pem" -verify_ip 127.0.0.1 \
    -verify_return_error </dev/null 2>&1)
assert_match 'Verify return code: 0' "$out" "the DoH endpoint's certificate covers 127.0.0.1 (verified discovery)"

# a certificate without the plain-DNS address: clients would not switch, and the log says so
stop_dohgate
issue_cert localhost 77 ec "$T/noip" "DNS:localhost"
DG_NO_CERT=1 start_dohgate --workers 1 --server-name localhost --cert "$T/noip.pem" \
    --key "$T/noip.key" --dns-listen "127.0.0.1:$DNS_PORT"
assert_match 'ddr: the certificate does not cover 127\.0\.0\.1' "$(cat "$DG_LOG")" \
    "a certificate without the plain-DNS address: one warning at start"
check_svcb_doh_only() {
    local out
    out=$(q udp _dns.resolver.arpa SVCB)
    assert_match "SVCB[[:space:]]+1 localhost\. alpn=h2,http/1\.1 port=$DG_PORT" "$out" "without a DoT listener: the DoH record"
    assert_eq 1 "$(echo "$out" | grep -c SVCB)" "without a DoT listener: no DoT record"
}
check_svcb_doh_only

# ddr no: forwarded like any name (NSD is not authoritative for resolver.arpa: REFUSED)
stop_dohgate
start_dohgate --workers 1 --server-name localhost --ddr no
out=$(q doh _dns.resolver.arpa SVCB)
assert_nomatch 'SVCB[[:space:]]+1' "$out" "ddr no: no SVCB answer from dohgate"
assert_match 'status REFUSED' "$out" "ddr no: the upstream's answer (NSD: REFUSED)"

finish
