#!/bin/bash
# s_idle: many concurrent idle TLS + HTTP/2 connections (2,000 short, 10,000 long), each having
# served one query, spread over 100 client addresses: all are held, server RSS per connection
# is printed, and a legitimate query is still answered quickly.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
N=$(by_mode 2000 10000)
ulimit -n "$(ulimit -Hn)" 2>/dev/null
[ "$(ulimit -n)" -gt $((N + 200)) ] || skip "fd limit $(ulimit -n) too low for $N connections"

start_nsd
start_dohgate --workers 2 --idle-timeout 300 --max-connections $((N + 100))
rss0=$(rss_kib "$DG_PID")
t0=$(now_ms)
python3 "$H2CONNS" --port "$DG_PORT" --count "$N" --sources 100 --hold 30 --cafile "$CERTS/ca.pem" \
    >"$T/conns.out" 2>"$T/conns.err" &
C=$!
track "$C"
for i in $(seq 1 600); do grep -q '^up' "$T/conns.out" && break; sleep 0.2; done
up=$(sed -n 's/^up //p' "$T/conns.out")
dt=$(($(now_ms) - t0))
sleep 3 # idle sessions give their pages back after 2 s (h2_session_trim())
rss1=$(rss_kib "$DG_PID")
per=$(((rss1 - rss0) * 1024 / N))
figure "connections=$N up=${up:-0} setup_ms=$dt rss_before_kib=$rss0 rss_after_kib=$rss1 bytes_per_connection=$per"
assert_eq "$N" "${up:-0}" "$N idle HTTP/2 connections up, each answered once ($(snip "$T/conns.err"))"
# measured 22 KB at 10,000 (docs/benchmarks.md); two workers and the first connections'
# heap growth add a little
assert_range 0 32768 "$per" "server memory per idle connection is bounded: $per bytes (< 32 KiB)"
read -r code ms <<<"$(legit)"
figure "legit_query_ms=$ms with $N idle connections open"
assert_eq 200 "$code" "a legitimate query is answered while they are open (${ms} ms)"
kill "$C" 2>/dev/null
wait "$C" 2>/dev/null
untrack "$C"
finish
