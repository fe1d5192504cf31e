#!/bin/bash
# t_tickets: session-ticket keys. In-memory keys are rotated (ticket-key-rotation): a ticket
# still resumes after one rotation and no longer after three. Key files (ticket-key-file) let two
# servers resume each other's sessions, a server with another file does not, a file of the
# wrong size is refused, and a SIGHUP with a new key file ends resumption of old tickets.
. "$(dirname "$0")/lib.sh"
need_tools nsd openssl

start_nsd
make_certs

# new_session FILE [TLS-OPTION]: a full handshake that saves its session/ticket to FILE
new_session() {
    sleep 1 | openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost ${2:-} \
        -sess_out "$1" >/dev/null 2>&1
}
# resumed FILE [TLS-OPTION]: "Reused" or "New"
resumed() {
    openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost ${2:-} -sess_in "$1" \
        </dev/null 2>/dev/null | grep -oE '^(Reused|New)' | head -1
}

# sleep_until MS: until MS milliseconds after t0
sleep_until() {
    local left=$(($1 - ($(now_ms) - t0)))
    [ "$left" -gt 0 ] && sleep "$(awk -v l="$left" 'BEGIN { print l / 1000 }')"
    return 0
}

# ---- rotation every 3 s: rotations at about 3, 6, 9 s after start; three keys kept
start_dohgate --ticket-key-rotation 3 --cert-check-interval 0
t0=$(now_ms)
new_session "$T/s13"
new_session "$T/s12" -tls1_2
hint=$(sleep 1 | openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -tls1_2 2>/dev/null |
    sed -n 's/.*lifetime hint: \([0-9]*\).*/\1/p' | head -1)
assert_eq 6 "$hint" "a ticket promises no more than two rotations of life (lifetime hint 6 s)"
assert_eq Reused "$(resumed "$T/s13")" "TLS 1.3: a fresh ticket resumes"
assert_eq Reused "$(resumed "$T/s12" -tls1_2)" "TLS 1.2: a fresh session ticket resumes"
sleep_until 4500
assert_eq Reused "$(resumed "$T/s12" -tls1_2)" "after one rotation the old key still decrypts"
sleep_until 13000
assert_eq New "$(resumed "$T/s12" -tls1_2)" "after three rotations the old key is gone: full handshake"
assert_eq New "$(resumed "$T/s13")" "... for TLS 1.3 too"
stop_dohgate

# ---- key files: two servers share one; a third has its own
openssl rand 80 >"$T/k1"
openssl rand 80 >"$T/k2"
start_dohgate --ticket-key-file "$T/k1" --cert-check-interval 0
A_PORT=$DG_PORT
A_PID=$DG_PID
new_session "$T/a12" -tls1_2
new_session "$T/a13"
DG_PID=
start_dohgate --ticket-key-file "$T/k1" --cert-check-interval 0
assert_eq Reused "$(resumed "$T/a12" -tls1_2)" "server B resumes server A's TLS 1.2 session (same key file)"
assert_eq Reused "$(resumed "$T/a13")" "server B resumes server A's TLS 1.3 ticket"
stop_dohgate
start_dohgate --ticket-key-file "$T/k2" --cert-check-interval 0
assert_eq New "$(resumed "$T/a12" -tls1_2)" "a server with another key file does not"
stop_dohgate

# ---- back to server A: a SIGHUP with unchanged files keeps its sessions
DG_PID=$A_PID
DG_PORT=$A_PORT
kill -HUP "$DG_PID"
sleep 0.5
assert_eq Reused "$(resumed "$T/a12" -tls1_2)" "SIGHUP with the same file: still resumes"
stop_dohgate

# ---- rotation across servers: a new first file, the old one second
openssl rand 80 >"$T/k0"
start_dohgate --ticket-key-file "$T/k0" --ticket-key-file "$T/k1" --cert-check-interval 0
assert_eq Reused "$(resumed "$T/a12" -tls1_2)" "a second key file still decrypts (rotation across servers)"
new_session "$T/b12" -tls1_2
cp "$T/k2" "$T/k0"
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "certificates reloaded" "SIGHUP reloads the key files"
assert_eq New "$(resumed "$T/b12" -tls1_2)" "after the first file changed, its old tickets no longer resume"
head -c 40 "$T/k1" >"$T/k1"
kill -HUP "$DG_PID"
sleep 0.5
assert_file_match "$DG_LOG" "reload failed.*ticket-key-file $T/k1: must hold exactly 80 bytes" \
    "a key file of the wrong size: the reload is refused, naming the file"
stop_dohgate

out=$("$DOHGATE" --listen "127.0.0.1:$(free_port)" --upstream 127.0.0.1:53 \
    --ticket-key-file "$T/k1" 2>&1)
assert_match "ticket-key-file $T/k1: must hold exactly 80 bytes" "$out" "start-up: a short key file is an error"

finish
