#!/bin/bash
# t_acme_hook: the external-client way (certbot/lego), kept beside the built-in client of
# t_acme: a real ACME issuance and renewal on loopback, with no restart of dohgate. pebble (the
# test CA) validates HTTP-01 through dohgate's port-80 listener and its acme-webroot, lego
# obtains the certificate, contrib/dohgate-cert-hook installs it; dohgate serves it, and the
# renewal's new serial, while an HTTP/2 connection opened before the renewal keeps answering.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl curl pebble lego

start_nsd
make_certs
NAME=acme.$ZONE # an A record to 127.0.0.1 in zone/test.zone
mkdir -p "$T/tls" "$T/webroot" "$T/lego"
cp "$CERTS/server.pem" "$T/tls/fullchain.pem" # the test CA's certificate to begin with
cp "$CERTS/server.key" "$T/tls/privkey.pem"

HTTP_PORT=$(free_port)
DG_PORT=$(free_port)
launch_dohgate --listen "127.0.0.1:$DG_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --acme-webroot "$T/webroot" --cert "$T/tls/fullchain.pem" --key "$T/tls/privkey.pem" \
    --cert-check-interval 1 --upstream "127.0.0.1:$NSD_PORT"

# ---- pebble: its API on a test-CA certificate, HTTP-01 checks go to dohgate's plain port
PEBBLE_PORT=$(free_port)
MGMT_PORT=$(free_port)
cat >"$T/pebble.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
 "certificate": "$CERTS/server.pem", "privateKey": "$CERTS/server.key",
 "httpPort": $HTTP_PORT, "tlsPort": $(free_port), "ocspResponderURL": "",
 "externalAccountBindingRequired": false}}
EOF
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config "$T/pebble.json" \
    -dnsserver "127.0.0.1:$NSD_PORT" >"$T/pebble.log" 2>&1 &
track $!
for i in $(seq 1 50); do
    curl -s --cacert "$CERTS/ca.pem" -o /dev/null "https://127.0.0.1:$PEBBLE_PORT/dir" && break
    sleep 0.2
done
curl -s --cacert "$CERTS/ca.pem" -o "$T/root.pem" "https://127.0.0.1:$MGMT_PORT/roots/0" ||
    die "pebble did not start: $(tail -5 "$T/pebble.log")"

export LEGO_CA_CERTIFICATES=$CERTS/ca.pem
export DOHGATE_CERT=$T/tls/fullchain.pem DOHGATE_KEY=$T/tls/privkey.pem
export DOHGATE_GROUP=dohgate-test-no-such-group
LEGO=(lego --server "https://127.0.0.1:$PEBBLE_PORT/dir" --email admin@example.test --accept-tos
    --domains "$NAME" --http --http.webroot "$T/webroot" --path "$T/lego")

presented() { # the certificate dohgate presents for $NAME: "serial=... issuer=..."
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$NAME" </dev/null 2>/dev/null |
        openssl x509 -noout -serial -issuer 2>/dev/null | tr '\n' ' '
}
old=$(presented)
assert_match 'issuer=CN = dohgate test CA' "$old" "before: the test CA's certificate is served"

# ---- issuance: the hook installs the files and sends SIGHUP
DOHGATE_RELOAD="kill -HUP $DG_PID" timeout 120 "${LEGO[@]}" run \
    --run-hook "$SRC_DIR/contrib/dohgate-cert-hook" >"$T/lego-run.log" 2>&1
assert_eq 0 "$?" "lego run: a certificate was issued through dohgate's webroot ($(tail -3 "$T/lego-run.log" | tr '\n' ' '))"
assert_file_match "$T/pebble.log" "acme-challenge|validat" "pebble fetched the challenge over HTTP"
assert_file_match "$T/lego-run.log" "dohgate-cert-hook: installed" "the deploy hook ran"
for i in $(seq 1 50); do # the SIGHUP reload is quick, but not instant (slower under valgrind)
    first=$(presented)
    [[ $first =~ Pebble ]] && break
    sleep 0.2
done
assert_match 'issuer=CN = Pebble Intermediate CA' "$first" "after issuance: pebble's certificate is served (no restart)"
out=$(openssl s_client -connect "127.0.0.1:$DG_PORT" -servername "$NAME" -CAfile "$T/root.pem" \
    -verify_return_error </dev/null 2>&1)
assert_match 'Verify return code: 0 \(ok\)' "$out" "the served chain verifies against pebble's root"
assert_eq "$(stat -c %a "$T/tls/privkey.pem")" 640 "the hook installs the key mode 0640"

# ---- an HTTP/2 connection opened before the renewal: 20 queries, one every 0.5 s
URL="https://$NAME:$DG_PORT/dns-query?dns=$(dnsmsg query "www.$ZONE" A --b64)"
args=()
for i in $(seq 1 20); do args+=(-o /dev/null "$URL&n=$i"); done
curl -s --http2 --cacert "$T/root.pem" --resolve "$NAME:$DG_PORT:127.0.0.1" --rate 2/s \
    -w '%{http_code} %{num_connects} %{http_version}\n' "${args[@]}" >"$T/keep.out" 2>"$T/keep.err" &
KEEP=$!
track "$KEEP"
sleep 1

# ---- renewal: this time no signal; dohgate notices the changed files
DOHGATE_RELOAD="" timeout 120 "${LEGO[@]}" renew --days 9999 --no-random-sleep \
    --renew-hook "$SRC_DIR/contrib/dohgate-cert-hook" >"$T/lego-renew.log" 2>&1
assert_eq 0 "$?" "lego renew: a new certificate was issued ($(tail -3 "$T/lego-renew.log" | tr '\n' ' '))"
second=$first
for i in $(seq 1 40); do
    second=$(presented)
    [ "$second" != "$first" ] && break
    sleep 0.2
done
assert_ne "$first" "$second" "after renewal: a new serial is served without a restart or a signal"
assert_match 'issuer=CN = Pebble Intermediate CA' "$second" "... issued by pebble"
proc_alive "$KEEP" && alive=yes || alive=no
assert_eq yes "$alive" "the HTTP/2 connection opened before the renewal is still in use after it"

wait "$KEEP"
untrack "$KEEP"
assert_eq 20 "$(grep -c '^200 1 2$\|^200 0 2$' "$T/keep.out")" "the HTTP/2 connection opened before the renewal answered all 20 queries ($(snip "$T/keep.err"))"
assert_eq 1 "$(awk '{s += $2} END {print s}' "$T/keep.out")" "... over that one connection"
assert_eq 2 "$(grep -c 'certificates reloaded' "$DG_LOG")" "dohgate logged two reloads (issuance, renewal)"

finish
