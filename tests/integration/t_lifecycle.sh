#!/bin/bash
# t_lifecycle: how connections end. An idle HTTP/2 connection gets GOAWAY (NO_ERROR) at
# idle-timeout, in two steps (the first with last-stream-ID 2^31-1 and a PING, the final one at
# the PING's ACK) and only then the close; SIGTERM with queries in flight on HTTP/2 (several streams
# on one connection) and HTTP/1.1 answers them all, tells the HTTP/1.1 client
# "Connection: close", and exits 0; a raw client (tools/h2drain.py) sees the two-step GOAWAY: a
# stream it opens after the first GOAWAY is served and named by the final one, which comes at
# the PING's ACK or after 1 s without one; shutdown-timeout bounds the drain.
. "$(dirname "$0")/lib.sh"
need_tools curl python3
H2RESET=$TOOLS_DIR/h2reset
[ -x "$H2RESET" ] || die "h2reset not built ($H2RESET)"

start_stub
S=$STUBZONE

# ---- idle timeout: GOAWAY first, then the close
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --idle-timeout 2
out=$("$H2RESET" "$DG_PORT" idle "idle.$S" 8 2>&1)
# h2reset reports the last GOAWAY its nghttp2 took: the first one (2^31-1); with no stream open,
# nghttp2 reads nothing after it, so the final one (last stream 1) shows only if it came along.
assert_match '^idle: response 200; GOAWAY NO_ERROR \(last stream (2147483647|1)\) after [0-9]+ ms; EOF after [0-9]+ ms$' \
    "$out" "an idle HTTP/2 connection gets GOAWAY (NO_ERROR) and then EOF ($out)"
g=$(echo "$out" | sed -n 's/.*GOAWAY .* after \([0-9]*\) ms;.*/\1/p')
e=$(echo "$out" | sed -n 's/.*EOF after \([0-9]*\) ms$/\1/p')
assert_range 1500 4500 "${g:-x}" "GOAWAY came at the idle timeout (2 s; got ${g:-none} ms)"
assert_range "${g:-0}" 8000 "${e:-x}" "the close came after the GOAWAY, never before"
stop_dohgate

# ---- SIGTERM with queries in flight
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 4000 --query-timeout 5000 \
    --shutdown-timeout 5
urls=()
for i in 1 2 3 4 5; do urls+=(-o "$T/h2-$i.bin" "$(dohgate_url)?dns=$(dnsmsg query "slow-1500.h2-$i.$S" A --b64)"); done
curl -s --no-progress-meter --http2 --parallel --parallel-max 5 --cacert "$CERTS/ca.pem" \
    -w '%{http_code} %{num_connects}\n' "${urls[@]}" >"$T/h2.out" 2>"$T/h2.err" &
H2=$!
track "$H2"
curl -s --http1.1 --cacert "$CERTS/ca.pem" -D "$T/h1.hdr" -o "$T/h1.bin" -w '%{http_code}\n' \
    "$(dohgate_url)?dns=$(dnsmsg query "slow-1500.h1.$S" A --b64)" >"$T/h1.out" 2>"$T/h1.err" &
H1=$!
track "$H1"
for i in $(seq 1 40); do [ "$(grep -c 'slow-1500' "$STUB_LOG")" -ge 6 ] && break; sleep 0.05; done
assert_eq 6 "$(grep -c 'slow-1500' "$STUB_LOG")" "6 queries are pending upstream when SIGTERM comes"
t0=$(now_ms)
signal_dohgate TERM || finish
wait "$H2"
wait "$H1"
untrack "$H2"
untrack "$H1"
# the exit first, the answers' checks (python, slow on a loaded machine) after, so that they do
# not count in the drain's time
reap_dohgate TERM
dt=$(($(now_ms) - t0))
assert_eq 5 "$(grep -c '^200 ' "$T/h2.out")" "the 5 HTTP/2 streams in flight were all answered ($(snip "$T/h2.err"))"
assert_eq 1 "$(awk '{s += $2} END {print s}' "$T/h2.out")" "... on one connection"
n=0
for i in 1 2 3 4 5; do
    dnsmsg show "$T/h2-$i.bin" 2>/dev/null | grep -q 'rcode=NOERROR' && n=$((n + 1))
done
assert_eq 5 "$n" "... each with a NOERROR answer"
assert_eq 200 "$(cat "$T/h1.out")" "the HTTP/1.1 query in flight was answered"
assert_match '[Cc]onnection: close' "$(cat "$T/h1.hdr")" "... with Connection: close"
assert_range 0 4500 "$dt" "dohgate exited once the drain was done ($dt ms after SIGTERM)"

# ---- SIGTERM, seen from a raw HTTP/2 client: the two-step GOAWAY (RFC 9113 §6.8). The client
# opens stream 3 when the first GOAWAY (2^31-1) arrives, before it answers the PING: the stream
# is served, and the final GOAWAY, at the PING's ACK, names it as the last stream processed.
# Without an ACK the final GOAWAY comes after 1 s (H2_GOAWAY_ACK_MS) all the same.
H2DRAIN=$SRC_DIR/tests/tools/h2drain.py
for mode in ack no-ack; do
    start_dohgate --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 4000 --query-timeout 5000 \
        --shutdown-timeout 5
    flag=()
    [ "$mode" = no-ack ] && flag=(--no-ack)
    python3 "$H2DRAIN" --port "$DG_PORT" --first "$(dnsmsg query "slow-1500.$mode.two.$S" A --b64)" \
        --late "$(dnsmsg query "late.$mode.two.$S" A --b64)" "${flag[@]}" >"$T/drain-$mode.out" 2>&1 &
    DR=$!
    track "$DR"
    wait_for 10 grep -q "slow-1500\.$mode\.two" "$STUB_LOG"
    assert_eq 1 "$(grep -c "slow-1500\.$mode\.two" "$STUB_LOG")" "($mode) the first stream's query is pending upstream when SIGTERM comes"
    signal_dohgate TERM || finish
    wait "$DR"
    untrack "$DR"
    reap_dohgate TERM
    out=$(cat "$T/drain-$mode.out")
    assert_match '^goaway1 2147483647; ping dg-drain; goaway2 3 after [0-9]+ ms; stream 1 200; stream 3 200; eof$' \
        "$out" "SIGTERM ($mode): GOAWAY 2^31-1 and a PING, the stream opened after it answered, the final GOAWAY names it ($out)"
    g=$(echo "$out" | sed -n 's/.*goaway2 [0-9]* after \([0-9]*\) ms.*/\1/p')
    if [ "$mode" = ack ]; then
        assert_range 0 900 "${g:-x}" "... the final GOAWAY came at the PING's ACK (${g:-none} ms after the first)"
    else
        assert_range 500 3000 "${g:-x}" "... with no ACK, the final GOAWAY came after about 1 s (${g:-none} ms)"
    fi
done

# ---- shutdown-timeout bounds the drain
start_dohgate --upstream "127.0.0.1:$STUB_PORT" --upstream-timeout 8000 --query-timeout 9000 \
    --shutdown-timeout 1
curl -s --http2 --max-time 15 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
    "$(dohgate_url)?dns=$(dnsmsg query "slow-6000.cut.$S" A --b64)" >"$T/cut.out" 2>&1 &
CUT=$!
track "$CUT"
for i in $(seq 1 40); do grep -q 'slow-6000' "$STUB_LOG" && break; sleep 0.05; done
t0=$(now_ms)
signal_dohgate TERM || finish
reap_dohgate TERM
dt=$(($(now_ms) - t0))
assert_range 700 3500 "$dt" "shutdown-timeout 1: a 6 s query does not hold the exit ($dt ms)"
wait "$CUT"
untrack "$CUT"

finish
