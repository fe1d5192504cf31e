#!/bin/bash
# t_ocsp: OCSP stapling from "<cert>.ocsp" (a DER response, made here by `openssl ocsp` acting
# as the CA's responder). A good response is stapled (s_client -status), and picked up without a
# restart when the file appears or changes; a response for another certificate or a garbage
# file is refused with a warning and the certificate still serves; no file, no staple.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl

start_nsd
make_certs
C=$T/ocsp
mkdir -p "$C"
SANS="DNS:doh.dohgate.test,DNS:localhost,IP:127.0.0.1"
issue_cert doh.dohgate.test 0x6001 ec "$C/a" "$SANS"
issue_cert doh.dohgate.test 0x6002 ec "$C/b" "$SANS"

# respond LEAF STATUS OUT: the test CA's OCSP response for LEAF, STATUS V (good) or R (revoked)
respond() {
    local serial
    serial=$(openssl x509 -in "$1" -noout -serial | cut -d= -f2)
    if [ "$2" = R ]; then
        printf 'R\t301231000000Z\t250101000000Z\t%s\tunknown\t/CN=doh.dohgate.test\n' "$serial" >"$C/index.txt"
    else
        printf 'V\t301231000000Z\t\t%s\tunknown\t/CN=doh.dohgate.test\n' "$serial" >"$C/index.txt"
    fi
    openssl ocsp -issuer "$CERTS/ca.pem" -cert "$1" -no_nonce -reqout "$C/req.der" >/dev/null 2>&1 &&
        openssl ocsp -index "$C/index.txt" -rsigner "$CERTS/ca.pem" -rkey "$CERTS/ca.key" \
            -CA "$CERTS/ca.pem" -reqin "$C/req.der" -respout "$3" -ndays 7 >/dev/null 2>&1 ||
        die "openssl ocsp could not make a response"
}
stapled() { # what s_client -status says of the staple
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername doh.dohgate.test -status \
        </dev/null 2>/dev/null | grep -E 'OCSP response: no response sent|OCSP Response Status|Cert Status' |
        tr -s ' ' | tr '\n' ';'
}

respond "$C/a.pem" V "$C/a.full.pem.ocsp"
DG_NO_CERT=1 start_dohgate --cert "$C/a.full.pem" --key "$C/a.key" --cert-check-interval 1
out=$(stapled)
assert_match 'OCSP Response Status: successful \(0x0\);.*Cert Status: good' "$out" "a good response is stapled ($out)"
assert_file_match "$DG_LOG" "certificate $C/a.full.pem: .*; OCSP stapled, next update 20[0-9-]+ " "the start-up line says it is stapled"

# the file changes (now: revoked): loaded by the file check, no signal
respond "$C/a.pem" R "$C/a.full.pem.ocsp.new"
mv "$C/a.full.pem.ocsp.new" "$C/a.full.pem.ocsp"
for i in $(seq 1 40); do out=$(stapled); [[ $out =~ revoked ]] && break; sleep 0.2; done
assert_match 'Cert Status: revoked' "$out" "a changed OCSP file is stapled without a restart"
assert_file_match "$DG_LOG" "OCSP $C/a.full.pem.ocsp says the certificate is REVOKED" "a revoked status is logged as an error"

# a response for another certificate: refused, warned, the certificate still serves
respond "$C/b.pem" V "$C/a.full.pem.ocsp.new"
mv "$C/a.full.pem.ocsp.new" "$C/a.full.pem.ocsp"
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "OCSP $C/a.full.pem.ocsp: not a response for this certificate; not stapled" \
    "a response for another certificate is not stapled, with a warning"
assert_match 'no response sent' "$(stapled)" "... and the handshake has no staple"
assert_eq 6001 "$(served_serial)" "... while the certificate itself still serves"

echo garbage >"$C/a.full.pem.ocsp"
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "OCSP $C/a.full.pem.ocsp: not a successful DER OCSP response; not stapled" "a garbage OCSP file: warned"
rm "$C/a.full.pem.ocsp"
kill -HUP "$DG_PID"
sleep 0.5
assert_match 'no response sent' "$(stapled)" "no OCSP file: no staple"
stop_dohgate

finish
