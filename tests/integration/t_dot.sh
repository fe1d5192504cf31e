#!/bin/bash
# t_dot: DNS over TLS (RFC 7858) on --dot-listen, with kdig, openssl s_client and a pipelining
# python client (tests/tools/dnsconn.py), NSD upstream. Answers with and without certificate
# checks; ALPN: "dot" selected when offered, an offer without it refused (no_application_protocol,
# RFC 7301 §3.2), none at all accepted, and the DoH port unchanged ("dot" offered there proceeds
# without ALPN); pipelining over TLS; EDNS padding (RFC 8467, 468-byte blocks) on and off, with
# keepalive; session resumption; a certificate reloaded by SIGHUP served to new DoT connections;
# bad input; metrics.
. "$(dirname "$0")/lib.sh"
need_tools kdig openssl python3 curl

Z=$ZONE
# ---- pre: a certificate pair in files we can replace, NSD, dohgate with a DoT listener
start_nsd
make_certs
C=$T/pki
mkdir -p "$C"
SANS="DNS:localhost,DNS:dot.dohgate.test,IP:127.0.0.1"
issue_cert dot.dohgate.test 0x2001 ec "$C/c1" "$SANS"
issue_cert dot.dohgate.test 0x2002 ec "$C/c2" "$SANS"
cp "$C/c1.full.pem" "$C/cert.pem"
cp "$C/c1.key" "$C/key.pem"
DOTP=$(free_port)
M_PORT=$(free_port)
DG_NO_CERT=1 start_dohgate --cert "$C/cert.pem" --key "$C/key.pem" --workers 1 \
    --dot-listen "127.0.0.1:$DOTP" --metrics-listen "127.0.0.1:$M_PORT"

# dot_serial: the serial of the certificate presented on the DoT port
dot_serial() {
    openssl s_client -connect "127.0.0.1:$DOTP" -servername dot.dohgate.test </dev/null 2>/dev/null |
        openssl x509 -noout -serial 2>/dev/null | sed 's/^serial=//'
}

# ---- answers: opportunistic (no check), then strict with the test CA
out=$(kdig +tls +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_match 'status: NOERROR' "$out" "kdig +tls: NOERROR"
assert_match "www\.$Z\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+192\.0\.2\.10" "$out" "kdig +tls: the A record"
out=$(kdig +tls-ca="$CERTS/ca.pem" +tls-hostname=dot.dohgate.test +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" AAAA)
assert_match '2001:db8::10' "$out" "kdig +tls-ca +tls-hostname: verified, the AAAA record"
out=$(kdig +tls-ca="$CERTS/ca.pem" +tls-hostname=other.example +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A 2>&1)
assert_nomatch 'status: NOERROR' "$out" "kdig +tls-hostname with a name the certificate lacks: no answer (the check is real)"
out=$(kdig +tls +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "big.$Z" TXT)
assert_match 'ANSWER: 40;' "$out" "kdig +tls: a large answer comes whole (40 records)"

# ---- ALPN
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -alpn dot </dev/null 2>&1)
assert_match 'ALPN protocol: dot' "$out" "openssl -alpn dot: \"dot\" selected"
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -alpn h2 </dev/null 2>&1)
assert_match 'no application protocol' "$out" "openssl -alpn h2 on the DoT port: refused with no_application_protocol"
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -alpn h2,http/1.1 </dev/null 2>&1)
assert_match 'no application protocol' "$out" "openssl -alpn h2,http/1.1 on the DoT port: refused"
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -alpn h2,dot </dev/null 2>&1)
assert_match 'ALPN protocol: dot' "$out" "openssl -alpn h2,dot: \"dot\" selected"
out=$(openssl s_client -connect "127.0.0.1:$DOTP" </dev/null 2>&1)
assert_match 'No ALPN negotiated' "$out" "openssl without ALPN: accepted, none negotiated"
assert_match 'Verify return code|Cipher is TLS' "$out" "openssl without ALPN: the handshake completes"
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -alpn dot </dev/null 2>&1)
assert_match 'No ALPN negotiated' "$out" "DoH port, -alpn dot: proceeds without ALPN (unchanged behaviour)"
assert_nomatch 'no application protocol' "$out" "DoH port, -alpn dot: not refused"
out=$(dnsconn --tls --alpn dot 127.0.0.1 "$DOTP" "www.$Z")
assert_match 'alpn dot' "$out" "python client offering dot: dot selected"
assert_match 'ans id=1 rcode=NOERROR an=1' "$out" "python client offering dot: answered"
out=$(dnsconn --tls --alpn h2 127.0.0.1 "$DOTP" "www.$Z")
assert_match '^error .*(NO_APPLICATION_PROTOCOL|no application protocol)' "$out" "python client offering h2 only: handshake refused"

# ---- pipelining over TLS: 30 queries in one write
qs=()
for i in $(seq 1 30); do if [ $((i % 2)) = 0 ]; then qs+=("www.$Z"); else qs+=("q$i.$Z"); fi; done
out=$(dnsconn --tls --ca "$CERTS/ca.pem" --sni dot.dohgate.test --timeout 10 127.0.0.1 "$DOTP" "${qs[@]}")
assert_eq 30 "$(printf '%s\n' "$out" | grep -c '^ans ')" "pipelining over TLS: 30 answers on one connection"
assert_eq "$(seq 1 30 | tr '\n' ' ' | sed 's/ $//')" "$(ans_ids "$out" | tr ' ' '\n' | sort -n | tr '\n' ' ' | sed 's/ $//')" \
    "pipelining over TLS: every ID answered once"
assert_eq 15 "$(printf '%s\n' "$out" | grep -c 'rcode=NXDOMAIN')" "pipelining over TLS: the 15 NXDOMAIN names"

# ---- padding (pad-responses yes, the default): padded queries get 468-byte blocks
out=$(kdig +tls +padding +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_match 'PADDING: [0-9]+ B' "$out" "kdig +tls +padding: the answer is padded"
out=$(kdig +tls +nopadding +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_match 'status: NOERROR' "$out" "kdig +tls +nopadding: answered"
assert_nomatch 'PADDING' "$out" "kdig +tls +nopadding: no padding (RFC 8467: only for padded queries)"
out=$(dnsconn --tls 127.0.0.1 "$DOTP" "www.$Z+pad" "mail.$Z/MX+pad+ka" "www.$Z+edns")
l1=$(sed -n 's/^ans id=1 .* len=\([0-9]*\) .*/\1/p' <<<"$out")
l2=$(sed -n 's/^ans id=2 .* len=\([0-9]*\) .*/\1/p' <<<"$out")
assert_eq 0 "$((${l1:-1} % 468))" "padded query: the answer is $l1 bytes, a multiple of 468"
assert_eq 0 "$((${l2:-1} % 468))" "padded query with keepalive: $l2 bytes, still a multiple of 468"
assert_match ' ka=600 ' "$(grep '^ans id=2 ' <<<"$out")" "padded query with keepalive: ka=600 (idle-timeout 60)"
assert_nomatch 'pad=' "$(grep '^ans id=3 ' <<<"$out")" "unpadded query: no padding"

# ---- session resumption (tickets, as on the DoH port)
sleep 1 | openssl s_client -connect "127.0.0.1:$DOTP" -alpn dot -sess_out "$T/dot13.pem" >/dev/null 2>&1
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -alpn dot -sess_in "$T/dot13.pem" </dev/null 2>&1)
assert_match 'Reused, TLSv1.3' "$out" "TLS 1.3 session resumed on the DoT port"
sleep 1 | openssl s_client -connect "127.0.0.1:$DOTP" -tls1_2 -sess_out "$T/dot12.pem" >/dev/null 2>&1
out=$(openssl s_client -connect "127.0.0.1:$DOTP" -tls1_2 -sess_in "$T/dot12.pem" </dev/null 2>&1)
assert_match 'Reused, TLSv1.2' "$out" "TLS 1.2 session resumed on the DoT port"

# ---- bad input over TLS closes the connection; the next one is served
out=$(dnsconn --tls --raw 0000 --wait-close 5 127.0.0.1 "$DOTP")
assert_range 0 1500 "$(closed_ms "$out")" "DoT, length 0: closed at once"
out=$(kdig +tls +short +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_eq 192.0.2.10 "$out" "DoT after bad input: the next connection is answered"

# ---- certificate reload (SIGHUP): new DoT connections get the new certificate
assert_eq 2001 "$(dot_serial)" "DoT port: the configured certificate (serial 2001)"
cp "$C/c2.full.pem" "$C/cert.pem"
cp "$C/c2.key" "$C/key.pem"
kill -HUP "$DG_PID"
got=
for _ in $(seq 1 25); do
    got=$(dot_serial)
    [ "$got" = 2002 ] && break
    sleep 0.2
done
assert_eq 2002 "$got" "SIGHUP: new DoT connections get the new certificate (serial 2002)"
out=$(kdig +tls-ca="$CERTS/ca.pem" +tls-hostname=dot.dohgate.test +short +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_eq 192.0.2.10 "$out" "SIGHUP: verified DoT queries answered with the new certificate"

# ---- metrics
assert_range 20 100000 "$(metric_of 'dohgate_connections_accepted_total{listener="dot"}')" \
    "metrics: connections_accepted_total{listener=dot}"
assert_range 20 100000 "$(metric_of 'dohgate_dns_answers_total{transport="dot",rcode="NOERROR"}')" \
    "metrics: dns_answers_total{transport=dot,rcode=NOERROR}"
assert_range 15 100000 "$(metric_of 'dohgate_dns_answers_total{transport="dot",rcode="NXDOMAIN"}')" \
    "metrics: dns_answers_total{transport=dot,rcode=NXDOMAIN}"
assert_eq 0 "$(metric_of 'dohgate_dns_answers_total{transport="dns-tcp",rcode="NOERROR"}')" \
    "metrics: nothing counted as dns-tcp"
stop_dohgate

# ---- pad-responses no: padded queries get no padding
DG_NO_CERT=1 start_dohgate --cert "$C/cert.pem" --key "$C/key.pem" --workers 1 \
    --dot-listen "127.0.0.1:$DOTP" --pad-responses no
out=$(kdig +tls +padding +time=3 +retry=0 @127.0.0.1 -p "$DOTP" "www.$Z" A)
assert_match 'status: NOERROR' "$out" "pad-responses no: answered"
assert_nomatch 'PADDING' "$out" "pad-responses no: kdig +padding gets no padding"
out=$(dnsconn --tls 127.0.0.1 "$DOTP" "www.$Z+pad+ka")
assert_nomatch 'pad=' "$out" "pad-responses no: no Padding option"
assert_match ' ka=600 ' "$out" "pad-responses no: the keepalive option is still there"

finish
