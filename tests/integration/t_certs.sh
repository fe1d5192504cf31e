#!/bin/bash
# t_certs: certificates without restarts. SIGHUP and a changed file (certbot-style symlink swap)
# load a new certificate while an HTTP/2 connection opened before keeps answering; a broken or
# mismatched new file keeps the old certificate with one clear error; a renewal written in two
# steps (cert, then key) is not tried half-way; session tickets survive a reload; several
# certificate pairs are chosen by SNI (exact and wildcard names, default for the rest), and an
# ECDSA and an RSA certificate for the same name by the client's signature algorithms.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl curl python3

start_nsd
make_certs
C=$T/pki
mkdir -p "$C/archive" "$C/live"

SANS="DNS:doh.dohgate.test,DNS:localhost,IP:127.0.0.1"
for n in 1 2 3; do issue_cert doh.dohgate.test "0x100$n" ec "$C/archive/c$n" "$SANS"; done

# link_to N: point live/ at archive generation N the way certbot does (new links, rename over)
link_to() {
    ln -sfn "../archive/c$1.full.pem" "$C/live/.cert.tmp" && mv -fT "$C/live/.cert.tmp" "$C/live/cert.pem"
    ln -sfn "../archive/c$1.key" "$C/live/.key.tmp" && mv -fT "$C/live/.key.tmp" "$C/live/key.pem"
}

count() { grep -cE "$1" "$DG_LOG"; }

link_to 1
DG_NO_CERT=1 start_dohgate --cert "$C/live/cert.pem" --key "$C/live/key.pem" \
    --cert-check-interval 1 --workers 2
TRUST=(--cacert "$CERTS/ca.pem" --resolve "doh.dohgate.test:$DG_PORT:127.0.0.1")
URL="https://doh.dohgate.test:$DG_PORT/dns-query?dns=$(dnsmsg query "www.$ZONE" A --b64)"

assert_eq 1001 "$(served_serial)" "start: the configured certificate is served"
assert_file_match "$DG_LOG" "certificate $C/live/cert.pem: CN=doh.dohgate.test, names doh.dohgate.test,localhost, ECDSA 256, serial 1001, expires 20[0-9-]+ [0-9:]+ UTC \(in (29|30) days\)" \
    "start-up log: subject, names, key, serial, expiry of the certificate"

# ---- a session to resume later, and an HTTP/2 connection that stays open across the reloads
sleep 1 | openssl s_client -connect "127.0.0.1:$DG_PORT" -servername doh.dohgate.test \
    -sess_out "$T/sess13.pem" >/dev/null 2>&1
sleep 1 | openssl s_client -connect "127.0.0.1:$DG_PORT" -servername doh.dohgate.test -tls1_2 \
    -sess_out "$T/sess12.pem" >/dev/null 2>&1
urls=()
for i in $(seq 1 12); do urls+=(-o /dev/null "$URL&n=$i"); done
# one transfer every 0.5 s over one connection (curl keeps it for the next URL)
curl -s --http2 "${TRUST[@]}" --rate 2/s -w '%{http_code} %{num_connects} %{http_version}\n' \
    "${urls[@]}" >"$T/keep.out" 2>"$T/keep.err" &
KEEP=$!
track "$KEEP"
sleep 1

# ---- SIGHUP
link_to 2
kill -HUP "$DG_PID"
assert_eq 1002 "$(wait_serial 1002 5)" "SIGHUP: the new certificate is served to new connections"
assert_eq 1 "$(count 'certificates reloaded')" "SIGHUP: one 'certificates reloaded' line"
assert_file_match "$DG_LOG" "certificate $C/live/cert.pem: .*serial 1002" "SIGHUP: the log names the new serial"

out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -servername doh.dohgate.test -sess_in "$T/sess13.pem" </dev/null 2>&1)
assert_match 'Reused, TLSv1.3' "$out" "a TLS 1.3 ticket from before the reload still resumes"
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -servername doh.dohgate.test -tls1_2 -sess_in "$T/sess12.pem" </dev/null 2>&1)
assert_match 'Reused, TLSv1.2' "$out" "a TLS 1.2 session ticket from before the reload still resumes"

# ---- a changed file, no signal: picked up by the check (interval 1 s, settles one more check)
link_to 3
assert_eq 1003 "$(wait_serial 1003 8)" "file change: the new certificate is served without a signal"
assert_eq 2 "$(count 'certificates reloaded')" "file change: one more 'certificates reloaded' line"

wait "$KEEP"
untrack "$KEEP"
assert_eq 12 "$(grep -c '^200 ' "$T/keep.out")" "the HTTP/2 connection opened before both reloads answered all 12 queries ($(snip "$T/keep.err"))"
assert_eq "1 $(printf '0 %.0s' $(seq 1 11))" "$(awk '{printf "%s ", $2}' "$T/keep.out")" \
    "the 12 queries used one connection (num_connects 1, then 0s)"
assert_eq 12 "$(grep -c ' 2$' "$T/keep.out")" "... over HTTP/2"

# ---- broken new files keep the old certificate, with one error each
echo "not a certificate" >"$C/archive/broken.pem"
ln -sfn ../archive/broken.pem "$C/live/cert.pem"
sleep 3.5
assert_eq 1 "$(count 'certificate reload failed')" "a broken cert file: one error line, not one per check"
assert_file_match "$DG_LOG" "certificate reload failed, still serving the previous certificates: cannot load certificate chain $C/live/cert.pem" \
    "the error names the file"
assert_eq 1003 "$(served_serial)" "a broken cert file: the previous certificate is still served"
q_code=$(curl -s --http2 "${TRUST[@]}" -o /dev/null -w '%{http_code}' "$URL")
assert_eq 200 "$q_code" "a broken cert file: DoH still answers"
kill -HUP "$DG_PID"
sleep 0.5
assert_eq 2 "$(count 'certificate reload failed')" "SIGHUP with the broken file: reported again"

issue_cert doh.dohgate.test 0x1004 ec "$C/archive/c4" "$SANS"
ln -sfn ../archive/c4.full.pem "$C/live/cert.pem" # c4's cert with c3's key
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "reload failed.*key $C/live/key.pem does not match certificate $C/live/cert.pem" \
    "a key that does not match: refused, and the error says so"
assert_eq 1003 "$(served_serial)" "a mismatched key: the previous certificate is still served"

# ---- a renewal written in two steps (cert first, key 0.3 s later) is not tried half-way
fails=$(count 'certificate reload failed')
issue_cert doh.dohgate.test 0x1005 ec "$C/archive/c5" "$SANS"
link_to 3 # back to a good state first, then let it settle
sleep 2.5
ln -sfn ../archive/c5.full.pem "$C/live/cert.pem"
sleep 0.3
ln -sfn ../archive/c5.key "$C/live/key.pem"
assert_eq 1005 "$(wait_serial 1005 8)" "two-step renewal: the new pair is served"
assert_eq "$fails" "$(count 'certificate reload failed')" "two-step renewal: no error for the half-written state"

stop_dohgate

# ---- SNI and key types: three pairs, two of them for the same names
issue_cert other.dohgate.test 0x2001 ec "$C/other" "DNS:other.example,DNS:*.wild.example"
issue_cert doh.dohgate.test 0x3001 rsa "$C/rsa" "$SANS"
DG_NO_CERT=1 start_dohgate --cert "$C/archive/c1.full.pem" --key "$C/archive/c1.key" \
    --cert "$C/other.full.pem" --key "$C/other.key" --cert "$C/rsa.full.pem" --key "$C/rsa.key"
assert_eq 1001 "$(served_serial doh.dohgate.test)" "SNI doh.dohgate.test: its certificate"
assert_eq 2001 "$(served_serial other.example)" "SNI other.example: the second pair"
assert_eq 2001 "$(served_serial OTHER.Example)" "SNI is matched without regard to case"
assert_eq 2001 "$(served_serial a.wild.example)" "SNI a.wild.example: the wildcard *.wild.example"
assert_eq 1001 "$(served_serial a.b.wild.example)" "SNI a.b.wild.example: a wildcard covers one label only, default"
assert_eq 1001 "$(served_serial unknown.example)" "an unknown name gets the default certificate"
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -noservername </dev/null 2>/dev/null | openssl x509 -noout -serial)
assert_eq serial=1001 "$out" "no SNI at all: the default certificate"
assert_eq 3001 "$(served_serial doh.dohgate.test -sigalgs 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256')" \
    "a client that signs only with RSA gets the RSA certificate (TLS 1.3)"
assert_eq 1001 "$(served_serial doh.dohgate.test -sigalgs 'ecdsa_secp256r1_sha256')" \
    "a client that signs only with ECDSA gets the ECDSA certificate (TLS 1.3)"
assert_eq 3001 "$(served_serial doh.dohgate.test -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256)" \
    "a TLS 1.2 client with only RSA suites gets the RSA certificate"
out=$(curl -s --http2 --cacert "$CERTS/ca.pem" --resolve "x.wild.example:$DG_PORT:127.0.0.1" \
    -o "$T/sni.bin" -w '%{http_code} %{http_version}' \
    "https://x.wild.example:$DG_PORT/dns-query?dns=$(dnsmsg query "www.$ZONE" A --b64)")
assert_eq "200 2" "$out" "DoH over HTTP/2 through the SNI-chosen certificate (ALPN still h2)"
assert_match 'rcode=NOERROR' "$(dnsmsg show "$T/sni.bin" 2>&1)" "... with a NOERROR answer"
assert_eq 3 "$(awk '/^# /{n=0} /certificate .*expires/{n++} END{print n}' "$DG_LOG")" \
    "the start-up log lists the three certificates"
stop_dohgate

# ---- start-up refuses what reload refuses
out=$("$DOHGATE" --listen 127.0.0.1:1 --upstream 127.0.0.1:53 --cert "$C/archive/c4.full.pem" \
    --key "$C/archive/c3.key" 2>&1)
assert_match 'key .*c3.key does not match certificate .*c4.full.pem' "$out" "start-up: a mismatched pair is an error"
out=$("$DOHGATE" --listen 127.0.0.1:1 --upstream 127.0.0.1:53 --cert "$C/archive/c1.full.pem" \
    --key "$C/archive/c1.key" --cert "$C/archive/c2.full.pem" --key "$C/archive/c2.key" 2>&1)
assert_match 'certificate .*c2.full.pem has the same names and key type as an earlier cert' "$out" \
    "start-up: two pairs that could never both be used are an error"

out=$("$DOHGATE" --listen 127.0.0.1:1 --upstream 127.0.0.1:53 --cert "$C/rsa.full.pem" \
    --key "$C/rsa.key" --cert "$C/other.full.pem" --key "$C/rsa.key" 2>&1)
assert_match 'key .*rsa.key does not match certificate .*other.full.pem' "$out" \
    "start-up: a key is checked against its own certificate, not one of its type in the same set"

issue_cert doh.dohgate.test 0x4001 ec "$C/enc" "$SANS"
openssl pkey -in "$C/enc.key" -aes256 -passout pass:x -out "$C/enc.aes.key" 2>/dev/null
out=$(timeout 10 "$DOHGATE" --listen 127.0.0.1:1 --upstream 127.0.0.1:53 --cert "$C/enc.pem" \
    --key "$C/enc.aes.key" 2>&1 </dev/null)
assert_match 'cannot load private key .*enc.aes.key \(PEM, not encrypted\)' "$out" \
    "start-up: an encrypted key is an error at once, no passphrase prompt"

finish
