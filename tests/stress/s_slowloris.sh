#!/bin/bash
# s_slowloris: connections that never finish: TCP with no TLS handshake, a ClientHello dripped
# a byte a second, and HTTP/1.1 headers dripped a byte a second (slowloris), 100 of each (500
# long) from 20 addresses. The handshake timeout (2 s here) and the request timeout (3 s here)
# close them all; a legitimate query is answered during the attack. A connection that sends
# nothing is not even accepted for up to 5 s (TCP_DEFER_ACCEPT: the kernel holds it, no file
# descriptor or memory of ours), then meets the handshake timeout.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
N=$(by_mode 100 500)

start_nsd
start_dohgate --handshake-timeout 2 --request-timeout 3 --workers 2
pids=()
for k in half-open slow-tls slowloris; do
    python3 "$SRC_DIR/tests/tools/slowloris.py" --port "$DG_PORT" --kind $k --count "$N" --sources 20 \
        --every 1 --max 20 >"$T/slow.$k" 2>>"$T/slow.err" &
    pids+=($!)
    track $!
done
sleep 1
read -r code ms <<<"$(legit)"
figure "legit_query_ms=$ms during the attack"
assert_eq 200 "$code" "a legitimate query is answered during the attack (${ms} ms)"
for p in "${pids[@]}"; do wait "$p"; untrack "$p"; done
cat "$T"/slow.half-open "$T"/slow.slow-tls "$T"/slow.slowloris >"$T/slow.out"
while read -r l; do figure "$l"; done <"$T/slow.out"
val() { sed -n "s/^$1 .*$2=\\([0-9.-]*\\).*/\\1/p" "$T/slow.out"; }
assert_eq "$N" "$(val half-open closed)" "every half-open connection was closed ($(snip "$T/slow.err"))"
assert_eq "$N" "$(val slow-tls closed)" "every dripped handshake was closed"
assert_eq "$N" "$(val slowloris closed)" "every slowloris request was closed"
max_ho=$(val half-open max_s)
max_st=$(val slow-tls max_s)
max_sl=$(val slowloris max_s)
assert_eq 1 "$(awk -v m="$max_ho" 'BEGIN { print (m >= 1.5 && m <= 13) }')" "half-open ones closed after the kernel's deferral and the 2 s handshake timeout (max ${max_ho} s)"
assert_eq 1 "$(awk -v m="$max_st" 'BEGIN { print (m >= 1.5 && m <= 5) }')" "dripped handshakes closed at the 2 s handshake timeout (max ${max_st} s)"
assert_eq 1 "$(awk -v m="$max_sl" 'BEGIN { print (m >= 2.5 && m <= 8) }')" "slowloris closed at the 3 s request timeout (max ${max_sl} s)"
finish
