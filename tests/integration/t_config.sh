#!/bin/bash
# t_config: the command line and the config file. --check-config on good and bad files (bad:
# `file:line: message`, non-zero exit), --version, --help (every option), unknown flags, missing
# values, start-up failures with a clear message (address in use, unreadable or mismatched key),
# running from a config file with flags overriding it, the ephemeral self-signed ECDSA
# certificate, and a clean exit on SIGINT.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig curl openssl python3

[ -x "$DOHGATE" ] || die "DOHGATE=$DOHGATE is not an executable"
make_certs

# run_dg ARGS...: run dohgate in the foreground (timeout 10 s); sets RC, OUT (stdout+stderr)
run_dg() {
    timeout 10 "$DOHGATE" "$@" >"$T/run.out" 2>&1 </dev/null
    RC=$?
    OUT=$(cat "$T/run.out")
}

# ---- --check-config, good
cat >"$T/good.conf" <<EOF
# a good configuration
listen 127.0.0.1:18443

upstream 127.0.0.1:53     
upstream 127.0.0.2
workers 2
doh-path /dns-query
upstream-timeout 700
query-timeout 2000
log-level warn
EOF
run_dg -c "$T/good.conf" --check-config
assert_eq 0 "$RC" "--check-config on a good file: exit 0 ($(printf '%s' "$OUT" | tail -1))"
assert_match '127\.0\.0\.1:18443' "$OUT" "--check-config prints the effective listen address"
# the file named by --config=FILE and -cFILE too (both used to be skipped silently: the defaults
# were checked instead of the file)
for form in "--config=$T/good.conf" "-c$T/good.conf" "--config $T/good.conf"; do
    # shellcheck disable=SC2086
    run_dg $form --check-config
    assert_eq 0 "$RC" "--check-config with $form: exit 0"
    assert_match '127\.0\.0\.1:18443' "$OUT" "$form: the file's listen address is in effect"
done
run_dg --config= --check-config
assert_eq 2 "$RC" "--config= without a file: exit 2"
assert_match 'needs a file name' "$OUT" "--config= says it needs a file name"
run_dg --check-config --listen 127.0.0.1:18443 --upstream 127.0.0.1:53 --workers=1
assert_eq 0 "$RC" "--check-config with flags only (and the --name=value form): exit 0"

# ---- --check-config, bad: one error each, reported as file:line
check_bad() { # check_bad LINE WHAT CONTENT...
    local line=$1 what=$2
    shift 2
    printf '%s\n' "$@" >"$T/bad.conf"
    run_dg -c "$T/bad.conf" --check-config
    assert_ne 0 "$RC" "bad config ($what): non-zero exit"
    assert_match "bad\\.conf:$line:" "$OUT" "bad config ($what): the message names bad.conf:$line"
}
check_bad 3 "unknown option" "# comment" "listen 127.0.0.1:18443" "no-such-option 1"
check_bad 2 "not a number" "listen 127.0.0.1:18443" "workers many"
check_bad 1 "out of range" "upstream-timeout 5"
check_bad 2 "bad address" "upstream 127.0.0.1" "listen 999.1.1.1:80"
check_bad 2 "bad log level" "" "log-level loud"
check_bad 1 "doh-path without /" "doh-path dns-query"
check_bad 1 "missing value" "workers"

run_dg -c "$T/does-not-exist.conf" --check-config
assert_ne 0 "$RC" "missing config file: non-zero exit"
assert_match 'does-not-exist\.conf' "$OUT" "missing config file: the message names the file"

run_dg --check-config --listen 127.0.0.1:18443 --upstream 127.0.0.1 --cert "$CERTS/server.pem"
assert_ne 0 "$RC" "cert without key: non-zero exit"
assert_match 'key' "$OUT" "cert without key: the message says so ($OUT)"

# ---- --version, --help
run_dg --version
assert_eq 0 "$RC" "--version: exit 0"
ver=$(sed -n 's/^project(dohgate VERSION \([0-9.]*\).*/\1/p' "$SRC_DIR/CMakeLists.txt")
assert_match "dohgate.*${ver//./\\.}" "$OUT" "--version prints 'dohgate $ver'"
run_dg --help
assert_eq 0 "$RC" "--help: exit 0"
for opt in -c --listen --cert --key --upstream --workers --doh-path --upstream-timeout \
    --query-timeout --idle-timeout --max-concurrent-streams --log-level --check-config \
    --version --help; do
    assert_match "(^|[^a-z-])$opt([^a-z-]|$)" "$OUT" "--help mentions $opt"
done

# ---- bad flags
run_dg --no-such-flag 1
assert_ne 0 "$RC" "unknown flag: non-zero exit"
assert_match 'no-such-flag' "$OUT" "unknown flag: the message names it"
run_dg --listen 127.0.0.1:18443 --workers
assert_ne 0 "$RC" "flag without its value: non-zero exit"
assert_match 'workers' "$OUT" "flag without its value: the message names it"
run_dg --listen 127.0.0.1:18443 --workers 1000 --check-config
assert_ne 0 "$RC" "--workers 1000 (out of range): non-zero exit"

# ---- start-up failures
# address in use: a plain listener (no SO_REUSEPORT) holds the port
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(5)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
time.sleep(120)' "$T/busy.port" &
track $!
for i in $(seq 1 50); do [ -s "$T/busy.port" ] && break; sleep 0.1; done
BUSY=$(cat "$T/busy.port")
run_dg --listen "127.0.0.1:$BUSY" --upstream 127.0.0.1 --cert "$CERTS/server.pem" --key "$CERTS/server.key" --workers 1
assert_ne 124 "$RC" "listen on a port in use: dohgate exits (no hang)"
assert_ne 0 "$RC" "listen on a port in use: non-zero exit"
assert_match '[Ii]n use' "$OUT" "listen on a port in use: the message says the address is in use"
assert_match "127\\.0\\.0\\.1:$BUSY" "$OUT" "listen on a port in use: the message names the address"

P=$(free_port)
run_dg --listen "127.0.0.1:$P" --upstream 127.0.0.1 --cert "$CERTS/server.pem" --key "$T/no-such.key" --workers 1
assert_ne 124 "$RC" "unreadable key: dohgate exits (no hang)"
assert_ne 0 "$RC" "unreadable key: non-zero exit"
assert_match 'no-such\.key' "$OUT" "unreadable key: the message names the file"

run_dg --listen "127.0.0.1:$P" --upstream 127.0.0.1 --cert "$CERTS/server.pem" --key "$CERTS/ca.key" --workers 1
assert_ne 124 "$RC" "key that does not match the certificate: dohgate exits (no hang)"
assert_ne 0 "$RC" "key that does not match the certificate: non-zero exit ($(printf '%s' "$OUT" | tail -1))"

# ---- running from a config file; flags override it
start_nsd
DG_PORT=$(free_port)
cat >"$T/run.conf" <<EOF
# run from a file
listen 127.0.0.1:$DG_PORT
upstream 127.0.0.1:$NSD_PORT
cert $CERTS/server.pem
key $CERTS/server.key
workers 1
log-level info
EOF
launch_dohgate -c "$T/run.conf"
doh_get "www.$ZONE" A
assert_eq NOERROR "$(rcode)" "-c run.conf: answers"
stop_dohgate

DG_PORT=$(free_port)
sed -i "s/^listen .*/listen 127.0.0.1:$DG_PORT/" "$T/run.conf"
DG_READY_PATH=/override launch_dohgate -c "$T/run.conf" --doh-path /override
dcurl "$(dohgate_url /override)?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq 200 "$HTTP_CODE" "-c run.conf --doh-path /override: /override answers"
dcurl "$(dohgate_url /dns-query)?dns=$(dnsmsg query "www.$ZONE" A --b64)"
assert_eq 404 "$HTTP_CODE" "-c run.conf --doh-path /override: the flag replaced the default /dns-query"
stop_dohgate

# ---- ephemeral self-signed certificate (ECDSA), and SIGINT
DG_NO_CERT=1 start_dohgate --workers 1
DG_NO_CERT=1 doh_get "www.$ZONE" A
assert_eq NOERROR "$(rcode)" "self-signed: answers (curl -k)"
echo | timeout 10 openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -alpn h2 >"$T/sc.out" 2>&1
openssl x509 -in "$T/sc.out" -noout -text >"$T/cert.txt" 2>&1
assert_file_match "$T/cert.txt" 'Public Key Algorithm: id-ecPublicKey' "self-signed: the certificate has an ECDSA key"
assert_file_match "$T/sc.out" 'ALPN protocol: h2' "self-signed: ALPN h2 selected"
stop_dohgate INT

# ---- post
finish
