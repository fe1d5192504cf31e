#!/bin/bash
# t_connhold: tests/tools/connhold (the client of tests/bench/hold.sh) against dohgate with its
# default per-client limits (256 connections, 100 new per second per address), on a small scale.
# No speed is asserted; the point is that the tool's counts are true, so that the benchmark's are.
# - hold: 400 connections from 8 source addresses (127.77.0.1-8, 50 each) all come up (one GET
#   each answered 200); dohgate's /metrics shows them open; after SIGTERM the tool says that the
#   server closed none of them, and dohgate sees them go.
# - hold from one address: 300 connections exceed the per-client limits; the tool counts the
#   refused ones as failed (up + failed = 300, up <= 256, a reason on stderr) and exits 1,
#   and dohgate counts refusals too.
# - handshake: 30 full handshakes, none resumed; 60 with --resume: 59 resumed, as many as
#   dohgate's dohgate_tls_handshakes_total{version="TLSv1.3",resumed="true"} grew by; with a ticket gone stale
#   (--ticket-key-rotation 1, the later connections 4 s after it: --resume-delay) none is
#   resumed and the tool fails (fewer than 95%).
. "$(dirname "$0")/lib.sh"
need_tools nsd curl
CH=$TOOLS_DIR/connhold
[ -x "$CH" ] || die "$CH not built"

start_nsd
M_PORT=$(free_port)
start_dohgate --metrics-listen "127.0.0.1:$M_PORT"
name=www.$ZONE
# msum PREFIX: the sum over the /metrics lines that start with PREFIX
msum() { curl -s --max-time 5 "http://127.0.0.1:$M_PORT/metrics" | awk -v p="$1" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'; }

# ---- hold: 400 from 8 addresses
"$CH" hold --port "$DG_PORT" -n 400 --src 127.77.0.1 --src-count 8 --concurrency 64 --name "$name" \
    --ca "$CERTS/ca.pem" >"$T/hold.out" 2>"$T/hold.err" &
CHPID=$!
track "$CHPID"
wait_for 60 grep -qs '^up ' "$T/hold.out" || ko "hold: connhold printed no 'up' line within 60 s ($(snip "$T/hold.err" 300))"
read -r _ up _ setup _ failed < <(grep '^up ' "$T/hold.out")
assert_eq "400 0" "${up:-} ${failed:-}" "hold: 400 connections from 8 addresses up, none failed (set-up ${setup:-?} s)"
open=$(msum 'dohgate_connections_open{listener="https"}')
assert_range 400 410 "$open" "hold: dohgate counts them open (dohgate_connections_open)"
kill -TERM "$CHPID"
wait "$CHPID"
rc=$?
untrack "$CHPID"
assert_eq 0 "$rc" "hold: connhold exits 0 after SIGTERM with all up"
assert_file_match "$T/hold.out" '^closed_by_server 0$' "hold: the server closed none of the idle connections"
open_le2() { [ "$(msum 'dohgate_connections_open{listener="https"}')" -le 2 ]; }
wait_for 10 open_le2 ||
    ko "hold: dohgate still counts $(msum 'dohgate_connections_open{listener="https"}') open connections 10 s after the client left"

# ---- hold from one address: the per-client limits refuse some, and the tool says so
refused0=$(msum 'dohgate_connections_refused_total')
"$CH" hold --port "$DG_PORT" -n 300 --src 127.77.1.1 --src-count 1 --concurrency 64 --name "$name" \
    --hold 0.1 --timeout 10 >"$T/one.out" 2>"$T/one.err"
rc=$?
read -r _ up _ _ _ failed < <(grep '^up ' "$T/one.out")
assert_eq 1 "$rc" "one address: connhold exits 1 when connections failed"
assert_eq 300 "$((${up:-0} + ${failed:-0}))" "one address: up ($up) + failed ($failed) = 300"
assert_range 1 256 "${up:-0}" "one address: at most 256 (max-connections-per-client) came up"
assert_file_match "$T/one.err" '^connhold: +[0-9]+ x ' "one address: the failures' reasons are printed"
refused=$(($(msum 'dohgate_connections_refused_total') - refused0))
assert_range 1 300 "$refused" "one address: dohgate counted refusals (dohgate_connections_refused_total +$refused)"
sleep 2 # the rate limiter's bucket refills before the next part

# ---- handshakes
hs0=$(msum 'dohgate_tls_handshakes_total{version="TLSv1.3",resumed="true"}')
"$CH" handshake --port "$DG_PORT" -n 30 --src 127.77.2.1 --src-count 30 --name "$name" >"$T/full.out" 2>"$T/full.err"
assert_eq 0 "$?" "handshake: 30 full handshakes succeed"
assert_file_match "$T/full.out" '^handshakes 30 resumed 0 wall_s [0-9.]+ failed 0$' "handshake: none resumed without --resume"
"$CH" handshake --port "$DG_PORT" -n 60 --resume --concurrency 4 --src 127.77.3.1 --src-count 60 --name "$name" \
    --ca "$CERTS/ca.pem" >"$T/res.out" 2>"$T/res.err"
assert_eq 0 "$?" "handshake --resume: succeeds ($(snip "$T/res.err" 200))"
assert_file_match "$T/res.out" '^handshakes 60 resumed 59 wall_s [0-9.]+ failed 0$' "handshake --resume: 59 of 60 resumed"
hs1=$(msum 'dohgate_tls_handshakes_total{version="TLSv1.3",resumed="true"}')
assert_eq 59 "$((hs1 - hs0))" "handshake --resume: dohgate resumed as many (dohgate_tls_handshakes_total)"
stop_dohgate

# ---- a ticket that has gone stale (its key rotated away, its lifetime over): the tool must fail,
# not count the connections as resumed
start_dohgate --ticket-key-rotation 1
"$CH" handshake --port "$DG_PORT" -n 10 --resume --resume-delay 4 --src 127.77.4.1 --src-count 10 \
    --name "$name" >"$T/rot.out" 2>"$T/rot.err"
assert_eq 1 "$?" "handshake --resume with a stale ticket: connhold fails"
assert_file_match "$T/rot.out" '^handshakes 10 resumed 0 wall_s [0-9.]+ failed 0$' "handshake --resume with a stale ticket: none resumed"
assert_file_match "$T/rot.err" 'only 0 of 9 later connections were resumed' "handshake --resume with a stale ticket: says why"
finish
