#!/bin/bash
# t_acme: the built-in ACME client (issue 19) against a real ACME server, pebble, on loopback.
#   1. tls-alpn-01 with no port-80 listener at all: the self-signed certificate while the CA is
#      down (failures counted), then the issued chain for both names, verified by openssl
#      s_client, curl --cacert and kdig +https against pebble's root; the state dir's modes
#   2. an HTTP/2 connection opened before that swap (tests/tools/h2keep.py: it never
#      reconnects) answers every request across it
#   3. a restart with the same state dir serves the stored certificate at once, no new order
#   4. a renewal forced early (DOHGATE_TEST_ACME_RENEW_S) serves a new serial in the same
#      process, an HTTP/2 connection opened before it kept
#   5. pebble stopped in the middle of the next renewal's order: failures counted, the old
#      certificate still served; a new pebble (new root, no accounts): a new certificate from it
#   6. http-01 through http-listen: issued; the port-80 path answers no token but pending ones
#   7. config errors: http-01 without http-listen, a wildcard, addresses (file:line, exit 2)
#   8. external account binding: pebble requiring it refuses an account without, accepts one
#      with acme-eab-kid/acme-eab-hmac-key
# Test knobs of acme.c: DOHGATE_TEST_ACME_RETRY_S (backoff base), DOHGATE_TEST_ACME_RENEW_S.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl curl kdig pebble python3

start_nsd
make_certs
N1=acme.$ZONE # both with an A record 127.0.0.1 in zone/test.zone: pebble connects there
N2=loop.$ZONE
DG_PORT=$(free_port)
M_PORT=$(free_port)
HTTP_PORT=$(free_port)
# pebble validates at dohgate's own ports; its own ports are fixed now so that dohgate can be
# started before it (the CA down at first) and a new pebble comes back at the same address
PEBBLE_TLS_PORT=$DG_PORT
PEBBLE_HTTP_PORT=$HTTP_PORT
PEBBLE_PORT=$(free_port)
PEBBLE_MGMT_PORT=$(free_port)
PEBBLE_LOG=$T/pebble/pebble.log
mkdir -p "$T/pebble"
: >"$PEBBLE_LOG"
export DOHGATE_TEST_ACME_RETRY_S=1
unset DOHGATE_TEST_ACME_RENEW_S
STATE=$T/acme
Q=$(dnsmsg query "www.$ZONE" A --b64)
H2KEEP=$SRC_DIR/tests/tools/h2keep.py
# generous bounds: issuance takes a second or two here, far more under valgrind
SLOW=$((${DG_START_TIMEOUT:-10} * 3 + 30))

# acme_dohgate ARGS...: dohgate with the ACME client for N1 and N2 and no cert/key of its own
acme_dohgate() {
    DG_NO_CERT=1 launch_dohgate --listen "127.0.0.1:$DG_PORT" --log-level "${DG_LOG_LEVEL:-info}" \
        --upstream "127.0.0.1:$NSD_PORT" --metrics-listen "127.0.0.1:$M_PORT" \
        --acme-domain "$N1" --acme-domain "$N2" --acme-email admin@example.test \
        --acme-directory "https://127.0.0.1:$PEBBLE_PORT/dir" --acme-ca "$CERTS/ca.pem" "$@"
}

# served SNI [x509 options]: what `openssl x509 -noout OPTIONS` says of the certificate dohgate
# presents for SNI (default -serial -issuer -subject), one line
served() {
    local sni=$1
    shift
    [ $# -gt 0 ] || set -- -serial -issuer -subject
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$sni" </dev/null 2>/dev/null |
        openssl x509 -noout "$@" 2>/dev/null | tr '\n' ' '
}
served_pem() { # SNI FILE
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$1" </dev/null 2>/dev/null |
        openssl x509 >"$2" 2>/dev/null
}
from_pebble() { [[ $(served "$1" -issuer) =~ Pebble ]]; }
# self_signed PEM-FILE: issuer = subject (dohgate's ephemeral certificate)
self_signed() {
    local i s
    i=$(openssl x509 -in "$1" -noout -issuer 2>/dev/null | sed 's/^issuer=//')
    s=$(openssl x509 -in "$1" -noout -subject 2>/dev/null | sed 's/^subject=//')
    [ -n "$i" ] && [ "$i" = "$s" ]
}
serial_not() { [ "$(served_serial "$1")" != "$2" ] && from_pebble "$1"; } # SNI OLD-SERIAL
# verify SNI ROOT: s_client's verification of the served chain against ROOT, for name SNI
verify() {
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$1" -CAfile "$2" \
        -verify_return_error -verify_hostname "$1" </dev/null 2>&1 | grep -E '^ *Verify return code'
}
m() { metric_of "$1"; } # a series' value, by its whole name with labels
m_int() { local v; v=$(metric_of "$1"); printf '%.0f' "${v:-0}" 2>/dev/null || echo 0; }
failures() { # all dohgate_acme_failures_total series added
    curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" |
        awk '/^dohgate_acme_failures_total\{/ { s += $NF } END { printf "%d", s }'
}
fails_at_least() { [ "$(failures)" -ge "$1" ]; }
epoch_of() { date -d "$(openssl x509 -in "$1" -noout "-$2" | cut -d= -f2)" +%s; } # PEM notbefore|notafter
h2keep_answers() { grep -c '^resp [0-9]* 200$' "$1"; }
h2keep_more() { [ "$(h2keep_answers "$1")" -ge "$2" ]; } # FILE N
# h2keep_stop PID OUT: SIGUSR1, its status; the summary checked by the caller
h2keep_stop() {
    kill -USR1 "$1"
    wait "$1"
    H2KEEP_RC=$?
    untrack "$1"
}
doh_curl() { # SNI ROOT: a DoH GET by name, verified against ROOT; "HTTP-CODE rcode answer"
    curl -s --http2 --max-time 10 --cacert "$2" --resolve "$1:$DG_PORT:127.0.0.1" \
        -o "$T/acme.bin" -w '%{http_code}' "https://$1:$DG_PORT/dns-query?dns=$Q" 2>"$T/curl.err"
    printf ' %s' "$(dnsmsg show "$T/acme.bin" 2>/dev/null | sed -n 's/^an .* A \(.*\)$/\1/p')"
}
# alpn_cert SNI: the text of the certificate a handshake offering ALPN acme-tls/1 gets; a
# validation certificate has the id-pe-acmeIdentifier extension (1.3.6.1.5.5.7.1.31)
alpn_cert() {
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$1" -alpn acme-tls/1 </dev/null 2>/dev/null |
        openssl x509 -noout -text 2>/dev/null
}
kdig_https() { # SNI ROOT
    kdig +https +tls-ca="$2" +tls-hostname="$1" +time=5 +retry=0 +short @127.0.0.1 -p "$DG_PORT" \
        "www.$ZONE" A 2>&1
}

# ---- 1. tls-alpn-01, no http-listen, the CA down at first -----------------------------------
ts=$(date +%s)
acme_dohgate --acme-state-dir "$STATE"
START_S=$(($(date +%s) - ts)) # how long a start-up takes here (valgrind: far longer)
PID1=$DG_PID
served_pem "$N1" "$T/before.pem"
self_signed "$T/before.pem" && r=yes || r=no
assert_eq yes "$r" "1: before issuance, $N1 gets the self-signed certificate ($(served "$N1"))"
assert_eq 000 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null)" \
    "1: nothing listens on the http-01 port (no http-listen)"
wait_for "$SLOW" fails_at_least 2
assert_range 2 1000000 "$(failures)" "1: CA unreachable: failures counted, retried (dohgate_acme_failures_total)"
assert_range 1 1000000 "$(m_int 'dohgate_acme_failures_total{reason="network"}')" "1: ... reason network"
now=$(date +%s)
assert_range "$((now - 1))" "$((now + 3600))" "$(m_int dohgate_acme_next_attempt_timestamp_seconds)" \
    "1: ... next attempt planned (minutes at most with DOHGATE_TEST_ACME_RETRY_S=1)"
assert_eq 0 "$(m_int dohgate_acme_last_success_timestamp_seconds)" "1: ... no success yet"

# 2. an HTTP/2 connection opened now, before the swap, stays in use across it
"${GUARD[@]}" python3 "$H2KEEP" --port "$DG_PORT" --sni "$N1" --cert-out "$T/keep1.pem" \
    --interval 0.5 >"$T/keep1.out" 2>"$T/keep1.err" &
KEEP1=$!
track "$KEEP1"
wait_for 20 h2keep_more "$T/keep1.out" 1 || ko "2: h2keep's first request was not answered ($(snip "$T/keep1.err"))"

start_pebble
ROOT1=$PEBBLE_ROOT
t0=$(date +%s)
wait_for "$SLOW" from_pebble "$N1"
t1=$(date +%s)
s=$(served "$N1")
assert_match 'issuer=CN ?= ?Pebble Intermediate' "$s" "1: issued: $N1 gets pebble's certificate without a restart ($((t1 - t0)) s after pebble started)"
assert_eq "$PID1" "$DG_PID" "1: ... the same process"
proc_alive "$PID1" && alive=yes || alive=no
assert_eq yes "$alive" "1: ... still running"
SERIAL1=$(served_serial "$N1")
assert_eq "$SERIAL1" "$(served_serial "$N2")" "1: $N2 gets the same certificate (one order for both names)"
assert_match "DNS:$N1.*DNS:$N2|DNS:$N2.*DNS:$N1" "$(served "$N1" -ext subjectAltName)" "1: ... its SAN names both"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT1")" "1: openssl s_client verifies the chain for $N1 against pebble's root"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N2" "$ROOT1")" "1: ... and for $N2"
assert_eq "200 192.0.2.10" "$(doh_curl "$N1" "$ROOT1")" "1: curl --cacert <pebble root>: DoH GET by name $N1 ($(snip "$T/curl.err"))"
assert_eq "200 192.0.2.10" "$(doh_curl "$N2" "$ROOT1")" "1: ... by name $N2"
assert_eq "192.0.2.10" "$(kdig_https "$N1" "$ROOT1")" "1: kdig +https +tls-ca=<pebble root> +tls-hostname=$N1"
assert_eq 1 "$(pebble_orders)" "1: one order at pebble"
assert_eq 0 "$(grep -c 'validate w/ HTTP' "$PEBBLE_LOG")" "1: pebble made no http-01 request (tls-alpn-01 only)"
assert_eq 1 "$(m_int dohgate_acme_orders_total)" "1: dohgate_acme_orders_total 1"
now=$(date +%s)
assert_range "$((t0 - 1))" "$((now + 1))" "$(m_int dohgate_acme_last_success_timestamp_seconds)" "1: dohgate_acme_last_success_timestamp_seconds: just now"
served_pem "$N1" "$T/issued1.pem"
NOTAFTER1=$(epoch_of "$T/issued1.pem" enddate)
assert_eq "$NOTAFTER1" "$(m_int dohgate_acme_certificate_expiry_timestamp_seconds)" "1: dohgate_acme_certificate_expiry_timestamp_seconds = the served notAfter"
assert_eq "$NOTAFTER1" "$(m_int "dohgate_certificate_expiry_timestamp_seconds{file=\"$STATE/cert.pem\"")" \
    "1: dohgate_certificate_expiry_timestamp_seconds covers the ACME certificate"
assert_range "$((now + 86400))" "$NOTAFTER1" "$(m_int dohgate_acme_next_attempt_timestamp_seconds)" \
    "1: next attempt: the renewal, before the expiry and not now"
assert_eq "$(failures)" "$(grep -c "dohgate\[$PID1\] warn: ACME: .*retry in" "$DG_LOG")" \
    "1: one log line per failure, with the retry delay"
assert_file_match "$DG_LOG" "dohgate\[$PID1\] info: ACME: certificate installed" "1: the installation logged"
assert_file_match "$DG_LOG" "dohgate\[$PID1\] info: certificates reloaded" "1: ... through the certificate reload"
assert_nomatch '1\.3\.6\.1\.5\.5\.7\.1\.31|acmeIdentifier' "$(alpn_cert "$N1")" "1: acme-tls/1 offered with no challenge pending: no validation certificate"
assert_eq 700 "$(stat -c %a "$STATE")" "1: acme-state-dir mode 0700"
for f in key.pem account.key; do
    assert_eq 600 "$(stat -c %a "$STATE/$f" 2>&1)" "1: $f mode 0600"
done
assert_match 'Verify return code: 0' "$(openssl verify -CAfile "$ROOT1" -untrusted "$STATE/cert.pem" "$STATE/cert.pem" 2>&1; echo "Verify return code: $?")" \
    "1: $STATE/cert.pem (leaf and chain) verifies against pebble's root"

# 2. the connection opened before the swap: three more answers after it, on the same connection
n=$(h2keep_answers "$T/keep1.out")
wait_for 20 h2keep_more "$T/keep1.out" $((n + 3))
h2keep_stop "$KEEP1"
assert_eq 0 "$H2KEEP_RC" "2: the HTTP/2 connection opened before the swap answered every request, never broken ($(grep -E '^(broken|summary)' "$T/keep1.out" | tr '\n' ' '))"
self_signed "$T/keep1.pem" && r=yes || r=no
assert_eq yes "$r" "2: ... it was opened on the self-signed certificate"
assert_range $((n + 3)) 100000 "$(h2keep_answers "$T/keep1.out")" "2: ... answers after the swap: $(($(h2keep_answers "$T/keep1.out") - n))"

# ---- 3. restart with the same state dir: the stored certificate at once, no new order -------
stop_dohgate
# the renewal of part 4 is due DOHGATE_TEST_ACME_RENEW_S after notBefore: far enough ahead that
# this start-up and the checks after it cannot reach it (three times the first start-up's time,
# plus 15 s), near enough to keep the test short
NOTBEFORE1=$(epoch_of "$T/issued1.pem" startdate)
RENEW_S=$(($(date +%s) - NOTBEFORE1 + 3 * START_S + 15))
export DOHGATE_TEST_ACME_RENEW_S=$RENEW_S
acme_dohgate --acme-state-dir "$STATE"
PID2=$DG_PID
assert_eq "$SERIAL1" "$(served_serial "$N1")" "3: restart: the stored certificate is served at once"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT1")" "3: ... and verifies"
assert_eq "200 192.0.2.10" "$(doh_curl "$N1" "$ROOT1")" "3: ... DoH by name over it"

# 4. the renewal (forced early), in this process, across an open HTTP/2 connection
"${GUARD[@]}" python3 "$H2KEEP" --port "$DG_PORT" --sni "$N1" --cafile "$ROOT1" \
    --cert-out "$T/keep2.pem" --interval 0.5 >"$T/keep2.out" 2>"$T/keep2.err" &
KEEP2=$!
track "$KEEP2"
wait_for 20 h2keep_more "$T/keep2.out" 1 || ko "4: h2keep's first request was not answered ($(snip "$T/keep2.err"))"
wait_for $((RENEW_S + SLOW)) serial_not "$N1" "$SERIAL1"
SERIAL2=$(served_serial "$N1")
t2=$(date +%s)
assert_ne "$SERIAL1" "$SERIAL2" "4: renewal: a new serial is served ($((t2 - NOTBEFORE1)) s after the first notBefore, DOHGATE_TEST_ACME_RENEW_S=$RENEW_S)"
served_pem "$N1" "$T/issued2.pem"
assert_range "$((NOTBEFORE1 + RENEW_S - 2))" "$t2" "$(epoch_of "$T/issued2.pem" startdate)" \
    "4: ... a new certificate, not the old one re-read"
assert_eq "$PID2" "$DG_PID" "4: ... by the same process"
proc_alive "$PID2" && alive=yes || alive=no
assert_eq yes "$alive" "4: ... which kept running"
assert_eq "$SERIAL2" "$(served_serial "$N2")" "4: ... for $N2 too"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT1")" "4: ... and verifies against pebble's root"
# 3 (cont.): the restart placed no order: the renewal is the only one since the first
assert_eq 2 "$(pebble_orders)" "3+4: pebble saw two orders in all (the first, the renewal): none at the restart"
assert_eq 1 "$(m_int dohgate_acme_orders_total)" "3+4: dohgate_acme_orders_total 1 since the restart"
n=$(h2keep_answers "$T/keep2.out")
wait_for 20 h2keep_more "$T/keep2.out" $((n + 3))
h2keep_stop "$KEEP2"
assert_eq 0 "$H2KEEP_RC" "4: the HTTP/2 connection opened before the renewal answered every request ($(grep -E '^(broken|summary)' "$T/keep2.out" | tr '\n' ' '))"
assert_eq "$SERIAL1" "$(openssl x509 -in "$T/keep2.pem" -noout -serial | sed 's/^serial=//')" "4: ... it was opened on the first certificate"

# ---- 5. pebble stopped during the next renewal: failures, the old certificate kept ----------
# (DOHGATE_TEST_ACME_RENEW_S still set: the next renewal is due RENEW_S after this notBefore.)
# pebble is stopped as soon as its log shows the renewal's order: mid-order, since the client
# polls the authorizations at 1 s intervals (Retry-After) before it can finalize
f0=$(failures)
o0=$(pebble_orders)
orders_above() { [ "$(pebble_orders)" -gt "$1" ]; }
wait_for $((RENEW_S + SLOW)) orders_above "$o0"
stop_pebble
assert_eq $((o0 + 1)) "$(pebble_orders)" "5: the next renewal's order reached pebble, which was stopped then"
wait_for "$SLOW" fails_at_least $((f0 + 2))
assert_range $((f0 + 2)) 1000000 "$(failures)" "5: the renewal interrupted: failures counted, retried"
assert_range 1 1000000 "$(m_int 'dohgate_acme_failures_total{reason="network"}')" "5: ... reason network"
assert_eq "$SERIAL2" "$(served_serial "$N1")" "5: ... the old certificate is still served"
for n in "$N1" "$N2"; do
    assert_nomatch '1\.3\.6\.1\.5\.5\.7\.1\.31|acmeIdentifier' "$(alpn_cert "$n")" \
        "5: ... the abandoned order's tls-alpn-01 challenge for $n is no longer answered"
done
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT1")" "5: ... and still verifies"
assert_eq "200 192.0.2.10" "$(doh_curl "$N1" "$ROOT1")" "5: ... DoH by name over it"
now=$(date +%s)
assert_range "$((now - 1))" "$((now + 3600))" "$(m_int dohgate_acme_next_attempt_timestamp_seconds)" "5: ... a retry planned"
last=$(m_int dohgate_acme_last_success_timestamp_seconds)
start_pebble # a new pebble: a new root, and no account of dohgate's (accounts live in memory)
ROOT2=$PEBBLE_ROOT
assert_ne "$(openssl x509 -in "$ROOT1" -noout -fingerprint)" "$(openssl x509 -in "$ROOT2" -noout -fingerprint)" "5: the new pebble has a new root"
wait_for $((SLOW * 2)) serial_not "$N1" "$SERIAL2"
SERIAL3=$(served_serial "$N1")
assert_ne "$SERIAL2" "$SERIAL3" "5: pebble back: a new certificate is served"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT2")" "5: ... issued by the new pebble (verifies against its root)"
assert_eq "200 192.0.2.10" "$(doh_curl "$N1" "$ROOT2")" "5: ... DoH by name over it (curl --cacert <new root>)"
assert_eq "$PID2" "$DG_PID" "5: ... still the same process"
assert_range "$((last + 1))" "$(date +%s)" "$(m_int dohgate_acme_last_success_timestamp_seconds)" "5: ... dohgate_acme_last_success_timestamp_seconds moved"
stop_dohgate
unset DOHGATE_TEST_ACME_RENEW_S

# ---- 6. http-01 through http-listen ----------------------------------------------------------
STATE6=$T/acme-http
o0=$(pebble_orders)
h0=$(grep -c 'validate w/ HTTP' "$PEBBLE_LOG")
acme_dohgate --acme-state-dir "$STATE6" --acme-challenge http-01 --http-listen "127.0.0.1:$HTTP_PORT"
wait_for "$SLOW" from_pebble "$N1"
assert_match 'issuer=CN ?= ?Pebble Intermediate' "$(served "$N1")" "6: http-01: issued, served for $N1"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N2" "$ROOT2")" "6: ... verifies for $N2"
assert_eq $((o0 + 1)) "$(pebble_orders)" "6: ... one order"
assert_range $((h0 + 1)) 100000 "$(grep -c 'validate w/ HTTP' "$PEBBLE_LOG")" "6: pebble validated over HTTP at dohgate's http-listen"
TOKEN=$(sed -n "s|.*validate w/ HTTP: http://[^/]*:$HTTP_PORT/.well-known/acme-challenge/\([A-Za-z0-9_-]*\).*|\1|p" "$PEBBLE_LOG" | tail -1)
assert_match '^[A-Za-z0-9_-]{20,}$' "$TOKEN" "6: the token pebble fetched, from its log"
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_PORT$1"; }
assert_eq 404 "$(code "/.well-known/acme-challenge/$TOKEN")" "6: that token, no longer pending: 404"
assert_eq 404 "$(code "/.well-known/acme-challenge/$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')")" "6: a random token: 404"
assert_eq 404 "$(code "/.well-known/acme-challenge/")" "6: no token: 404"
assert_nomatch '^2' "$(curl -s --path-as-is -o /dev/null -w '%{http_code}' --max-time 5 \
    "http://127.0.0.1:$HTTP_PORT/.well-known/acme-challenge/../../../etc/passwd")" "6: a path escape: not served"
stop_dohgate

# ---- 7. config errors -------------------------------------------------------------------------
conf() { # FILE LINE3: a file whose third line is LINE3
    printf 'listen 127.0.0.1:%s\nacme-domain %s\n%s\nacme-state-dir %s\n' "$DG_PORT" "$N1" "$2" "$T/acme7" >"$T/$1"
}
# run_conf FILE [FLAGS]: OUT, RC of dohgate -c FILE (bounded: a start that succeeds is a failure)
run_conf() { OUT=$(timeout 20 "$DOHGATE" -c "$T/$1" "${@:2}" 2>&1 </dev/null); RC=$?; }
conf bad-http.conf 'acme-challenge http-01'
run_conf bad-http.conf --check-config
assert_eq 2 "$RC" "7: http-01 without http-listen: --check-config exits 2"
assert_match 'bad-http\.conf:3: acme-challenge http-01 needs http-listen' "$OUT" "7: ... file:line message"
run_conf bad-http.conf
assert_eq 2 "$RC" "7: ... a real start exits 2 too ($(printf '%s' "$OUT" | tail -1))"
conf bad-wild.conf "acme-domain *.$ZONE"
run_conf bad-wild.conf --check-config
assert_eq 2 "$RC" "7: acme-domain *.$ZONE refused"
assert_match "bad-wild\.conf:3: .*acme-domain.*wildcard" "$OUT" "7: ... file:line, wildcard named"
for a in 192.0.2.1 2001:db8::1; do
    conf bad-ip.conf "acme-domain $a"
    run_conf bad-ip.conf --check-config
    assert_eq 2 "$RC" "7: acme-domain $a refused"
    assert_match "bad-ip\.conf:3: .*acme-domain.*'$a'" "$OUT" "7: ... file:line ($OUT)"
done
assert_match "not an address" "$(conf bad-ip.conf 'acme-domain 192.0.2.1'; run_conf bad-ip.conf --check-config; echo "$OUT")" "7: ... an IPv4 address named as such"
OUT=$("$DOHGATE" --listen "127.0.0.1:$DG_PORT" --acme-domain "*.$ZONE" --check-config 2>&1)
assert_match 'command line: --acme-domain: .*wildcard' "$OUT" "7: on the command line too"

# ---- 8. external account binding -------------------------------------------------------------
stop_pebble
EAB_KEY=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W # pebble's example
# and pebble's default 5 % of nonces refused: the badNonce retry in use (no order count here)
PEBBLE_NONCEREJECT=5 PEBBLE_EAB="{\"kid-1\": \"$EAB_KEY\"}" start_pebble
ROOT3=$PEBBLE_ROOT
acme_dohgate --acme-state-dir "$T/acme-noeab"
wait_for "$SLOW" fails_at_least 1
assert_range 1 1000000 "$(failures)" "8: EAB required, none given: a failure (rejected: $(m_int 'dohgate_acme_failures_total{reason="rejected"}'), local: $(m_int 'dohgate_acme_failures_total{reason="local"}'))"
assert_file_match "$DG_LOG" '[Ee]xternal ?[Aa]ccount|acme-eab' "8: ... logged, naming external account binding"
assert_nomatch 'Pebble' "$(served "$N1")" "8: ... still self-signed"
stop_dohgate
acme_dohgate --acme-state-dir "$T/acme-eab" --acme-eab-kid kid-1 --acme-eab-hmac-key "$EAB_KEY"
wait_for "$SLOW" from_pebble "$N1"
assert_match 'Verify return code: 0 \(ok\)' "$(verify "$N1" "$ROOT3")" "8: with acme-eab-kid/-hmac-key: issued"
assert_file_match "$PEBBLE_LOG" 'newAccount Binding with CA using kid "kid-1"' "8: ... pebble bound the account to kid-1"
grep -v '^# ' "$DG_LOG" >"$T/dg-own.log" # without the command lines the harness wrote there
assert_file_nomatch "$T/dg-own.log" "$EAB_KEY" "8: the HMAC key is not in dohgate's log"

finish
