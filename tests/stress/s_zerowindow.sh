#!/bin/bash
# s_zerowindow: the zero-window attack of issue 14 at scale. HTTP/2 connections that set
# SETTINGS_INITIAL_WINDOW_SIZE=0, open 100 streams each for a 1 MiB static file and keep the
# connection "alive" with a PING every second (tests/tools/h2hold.py): today every stream holds
# an open file for as long as the attacker stays. Two waves: A, many connections of one address
# (40; long: 200); B, one connection from each of many addresses (300 over two /24s; long: 1000
# over four). dohgate runs under an open-file limit of 2048 (long: 16384), so the attack, unbounded,
# takes every descriptor (accept and the upstream sockets fail: legitimate queries fail).
# The reserve (768; long: 4,096) is larger than the connections of a wave, so that the bound
# on descriptors (limit - reserve + connections) stays below the limit itself.
# Must hold: descriptors bounded by the source budgets and the descriptor reserve (computed below
# from the options passed), given back within send-timeout + a margin while the attackers are still
# connected and PINGing, back to baseline once they leave; RSS bounded; every legitimate DoH GET
# and POST (another address, a new connection each, 10 a second) answered; their latency printed.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
SEND_TIMEOUT=$(by_mode 3 10)
MARGIN=2
HOLD=$((SEND_TIMEOUT + MARGIN + 2))
NOFILE=$(by_mode 2048 16384)
RESERVE=$(by_mode 768 4096)
PER_CONN=$(by_mode 8 100)
PER_CLIENT=$(by_mode 32 1024)
CONNS_A=$(by_mode 40 200)
ADDRS_B=$(by_mode 300 1000)
ulimit -n "$NOFILE" || die "cannot set the open-file limit to $NOFILE"

W=$T/www
mkdir -p "$W"
head -c 1048576 /dev/zero >"$W/big.bin"
echo '<html>hello</html>' >"$W/index.html"
start_nsd
start_dohgate --workers 2 --site-root "$W" --send-timeout "$SEND_TIMEOUT" \
    --max-sources-per-connection "$PER_CONN" --max-sources-per-client "$PER_CLIENT" \
    --descriptor-reserve "$RESERVE" --max-connections $((NOFILE / 2)) \
    --connection-rate-limit 1000 --idle-timeout 300
figure "options: nofile=$NOFILE send-timeout=$SEND_TIMEOUT max-sources-per-connection=$PER_CONN max-sources-per-client=$PER_CLIENT descriptor-reserve=$RESERVE"
# warm up (the first queries allocate the cache, TLS and session state that stays)
python3 "$DOHPROBE" --port "$DG_PORT" --cafile "$CERTS/ca.pem" --kinds get,post,site --count 20 \
    --interval 0 >/dev/null 2>&1

min() { local m=$1 x; for x in "$@"; do [ "$x" -lt "$m" ] && m=$x; done; echo "$m"; }
# open files at once: per connection x connections, per client x addresses, and only below
# (open-file limit - reserve) at all; zero-window holds no body: what memory it takes is TLS and
# HTTP/2 state, up to 100 streams a connection with their responses (REFUSED_STREAM past the budgets)
# queued behind the closed window: 256 KiB a connection (measured: about 60 KiB today, about
# 175 KiB with the source budgets refusing 97 of the 100 streams) plus 16 MiB for the rest
RSS_WHY="256 KiB a connection + 16 MiB"

# A: many connections, one address
FD_BOUND=$(($(min $((CONNS_A * PER_CONN)) "$PER_CLIENT" $((NOFILE - RESERVE))) + 32))
FD_WHY="open files <= min($CONNS_A x $PER_CONN per connection, $PER_CLIENT per client, $NOFILE - $RESERVE reserve) + 32"
RSS_BOUND_KIB=$((CONNS_A * 256 + 16384))
hold_attack one_address --mode zero-window --path /big.bin --conns "$CONNS_A" --streams 100 \
    --sources 1 --source-prefix 127.0.4.

# B: one connection from each of many addresses
FD_BOUND=$(($(min $((ADDRS_B * PER_CONN)) $((ADDRS_B * PER_CLIENT)) $((NOFILE - RESERVE))) + 32))
FD_WHY="open files <= min($ADDRS_B x $PER_CONN per connection, $ADDRS_B x $PER_CLIENT per client, $NOFILE - $RESERVE reserve) + 32"
RSS_BOUND_KIB=$((ADDRS_B * 256 + 16384))
hold_attack many_addresses --mode zero-window --path /big.bin --conns "$ADDRS_B" --streams 100 \
    --sources "$ADDRS_B" --source-prefix 127.0.8.
finish
