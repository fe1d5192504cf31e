#!/bin/bash
# t_reset: clients that go away while their queries are pending upstream (design.md "Object
# lifetimes"). tests/tools/h2reset opens 50 streams whose queries the stub never answers (or
# answers late, after the reset), cancels them with RST_STREAM, opens 50 more and drops the TCP
# connection; also the rapid-reset pattern (CVE-2023-44487) and several such clients at once.
# Afterwards dohgate must still answer, and exit 0 on SIGTERM (under ASan: no use-after-free, no
# leak).
. "$(dirname "$0")/lib.sh"
need_tools dig curl python3 openssl

H2RESET=$TOOLS_DIR/h2reset
[ -x "$H2RESET" ] || die "h2reset not built: $H2RESET (build the tests/tools targets)"

# ---- pre
start_stub
start_dohgate --workers 2 --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 400 --query-timeout 1200
S=$STUBZONE

alive() {
    if proc_alive "$DG_PID"; then ok "$1: dohgate is alive"; else die "$1: dohgate died (see its log)"; fi
}

# ---- reset while pending: silent (never answered) and slow (answered after the reset)
for round in 1 2 3 4 5; do
    out=$("$H2RESET" "$DG_PORT" reset 50 "silent.r$round.$S" 2>&1)
    assert_match '^reset: 50 streams opened, 50 reset,' "$out" "round $round: h2reset reset 50 silent.r$round ($out)"
    out=$("$H2RESET" --delay 100 "$DG_PORT" reset 50 "slow-250.r$round.$S" 2>&1)
    assert_match '^reset: 50 streams opened, 50 reset,' "$out" "round $round: h2reset reset 50 slow-250.r$round ($out)"
done
alive "after 5 rounds of reset"
n=$(grep -c 'silent\.r' "$STUB_LOG")
assert_range 1 100000 "$n" "the reset queries did reach the upstream ($n queries): they were pending when cancelled"

# answers arriving for streams that are gone, and timeouts firing for them
sleep 1.5
alive "after the late answers and timeouts of the cancelled queries"

# ---- several misbehaving clients at once
pids=()
for i in 1 2 3 4 5; do
    "$H2RESET" --delay 50 "$DG_PORT" reset 40 "silent.par$i.$S" >"$T/par.$i" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
good=$(cat "$T"/par.* | grep -c '^reset: 40 streams opened, 40 reset,')
assert_eq 5 "$good" "5 parallel h2reset clients ran"
alive "after 5 parallel reset clients"

# ---- rapid reset: HEADERS + RST_STREAM, 1000 times, no waiting
out=$("$H2RESET" "$DG_PORT" rapid 1000 "silent.rapid.$S" 2>&1)
rc=$?
assert_eq 0 "$rc" "h2reset rapid 1000 ran ($out)"
alive "after rapid reset"

# ---- normal queries still answer
out=$("$H2RESET" "$DG_PORT" query "ok.after.$S" 2>&1)
assert_eq "200 NOERROR" "$out" "h2reset query after the resets"
for i in 1 2 3; do
    doh_get "ok$i.after.$S" A
    assert_eq NOERROR "$(rcode)" "curl query $i after the resets: NOERROR"
done
doh_get "silent.after.$S" A
assert_eq SERVFAIL "$(rcode)" "a silent query after the resets still times out into SERVFAIL"

# ---- SIGTERM with queries pending (post checks exit 0 and no sanitizer report)
"$H2RESET" --delay 50 "$DG_PORT" reset 30 "silent.atexit.$S" >/dev/null 2>&1
curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" -o /dev/null \
    "$(dohgate_url)?dns=$(dnsmsg query "silent.pending.$S" A --b64)" 2>/dev/null &
track $!
sleep 0.2

# ---- post
finish
