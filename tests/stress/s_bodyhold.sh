#!/bin/bash
# s_bodyhold: the body-hold attack of issue 14 at scale. HTTP/2 connections open streams that
# POST a large body (content-length given), send it as far as the server's flow-control windows
# allow but its last byte, never end it, and PING every second (tests/tools/h2hold.py): today
# every stream buffers up to site-max-body before dispatch, for as long as the attacker stays.
# Two site modes, each hit by two waves: A, many connections of one address (16; long: 64);
# B, one connection from each of many addresses (300 over two /24s, 64 in proxy mode; long:
# 1000 and 256):
#   static  (--site-root): no handler takes a body, the request must be refused at its HEADERS;
#   proxy   (--site-backend tests/tools/backend.py, POST /echo): the body goes to the backend
#           with back-pressure, each stream holding a backend connection (a source).
# Must hold: RSS bounded by the body budgets (max-body-buffer-per-connection/-client/process,
# computed below from the options passed), descriptors by the source budgets and the descriptor
# reserve; what the attackers held given back within send-timeout + a margin while they are
# still connected, all of it once they leave; every legitimate DoH GET and POST (another address,
# a new connection each, 10 a second) answered; their latency printed.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
SEND_TIMEOUT=$(by_mode 3 10)
MARGIN=2
HOLD=$((SEND_TIMEOUT + MARGIN + 2))
NOFILE=$(by_mode 2048 16384)
RESERVE=$(by_mode 768 4096)
PER_CONN=$(by_mode 8 32)
PER_CLIENT=$(by_mode 32 256)
BODY_CONN=$((256 * 1024))
BODY_CLIENT=$((1024 * 1024))
BODY_TOTAL=$(by_mode $((16 * 1024 * 1024)) $((64 * 1024 * 1024)))
MAX_BODY=$((256 * 1024))
CONNS_A=$(by_mode 16 64)
ADDRS_B=$(by_mode 300 1000)
ADDRS_PROXY_B=$(by_mode 64 256)
ulimit -n "$NOFILE" || die "cannot set the open-file limit to $NOFILE"
min() { local m=$1 x; for x in "$@"; do [ "$x" -lt "$m" ] && m=$x; done; echo "$m"; }
BUDGETS=(--send-timeout "$SEND_TIMEOUT" --max-sources-per-connection "$PER_CONN"
    --max-sources-per-client "$PER_CLIENT" --descriptor-reserve "$RESERVE"
    --max-body-buffer-per-connection "$BODY_CONN" --max-body-buffer-per-client "$BODY_CLIENT"
    --max-body-buffer "$BODY_TOTAL" --site-max-body "$MAX_BODY" --max-connections $((NOFILE / 2))
    --connection-rate-limit 1000 --idle-timeout 300 --workers 2)
figure "options: nofile=$NOFILE send-timeout=$SEND_TIMEOUT max-sources-per-connection=$PER_CONN max-sources-per-client=$PER_CLIENT descriptor-reserve=$RESERVE max-body-buffer-per-connection=$BODY_CONN per-client=$BODY_CLIENT process=$BODY_TOTAL site-max-body=$MAX_BODY"

# body_bound CONNS ADDRS: the body bytes (KiB) the budgets let CONNS connections from ADDRS
# addresses hold at once
body_bound_kib() { echo $(($(min $(($1 * BODY_CONN)) $(($2 * BODY_CLIENT)) "$BODY_TOTAL") / 1024)); }
# wave LABEL CONNS ADDRS STREAMS SOURCES_HELD PATH PREFIX: the bounds, then the attack.
# Memory: the bodies the budgets allow, 128 KiB a connection (TLS and HTTP/2 state with streams
# open: today's code takes about 60 KiB with 20 streams), 64 KiB a source (a backend
# connection's buffers), 16 MiB for the rest.
wave() {
    local label=$1 conns=$2 addrs=$3 streams=$4 srcs=$5 path=$6 prefix=$7 body
    body=$(body_bound_kib "$conns" "$addrs")
    FD_BOUND=$((srcs + 32))
    FD_WHY="$srcs sources at most + 32"
    RSS_BOUND_KIB=$((body + conns * 128 + srcs * 64 + 16384))
    RSS_WHY="bodies <= min($conns x $BODY_CONN, $addrs x $BODY_CLIENT, $BODY_TOTAL) = $body KiB, + 128 KiB a connection + 64 KiB a source + 16 MiB"
    hold_attack "$label" --mode body-hold --path "$path" --conns "$conns" --streams "$streams" \
        --sources "$addrs" --source-prefix "$prefix" --body "$MAX_BODY" --withhold 1
}

# static: bodies are refused at HEADERS, nothing is opened for them
W=$T/www
mkdir -p "$W"
echo '<html>hello</html>' >"$W/index.html"
start_nsd
start_dohgate --site-root "$W" "${BUDGETS[@]}"
python3 "$DOHPROBE" --port "$DG_PORT" --cafile "$CERTS/ca.pem" --kinds get,post,site --count 20 \
    --interval 0 >/dev/null 2>&1
wave static_one_address "$CONNS_A" 1 100 0 /upload 127.0.4.
wave static_many_addresses "$ADDRS_B" "$ADDRS_B" 10 0 /upload 127.0.8.
stop_dohgate

# proxy: each stream that is let through holds a backend connection
BP=$(free_port)
"${GUARD[@]}" python3 "$SRC_DIR/tests/tools/backend.py" "$BP" >"$T/backend.out" 2>&1 </dev/null &
track $!
for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$BP/echo" && break
    sleep 0.1
done
start_dohgate --site-backend "http://127.0.0.1:$BP" "${BUDGETS[@]}"
python3 "$DOHPROBE" --port "$DG_PORT" --cafile "$CERTS/ca.pem" --kinds get,post --count 20 \
    --interval 0 >/dev/null 2>&1
wave proxy_one_address "$CONNS_A" 1 100 \
    "$(min $((CONNS_A * PER_CONN)) "$PER_CLIENT" $((NOFILE - RESERVE)))" /echo 127.0.5.
wave proxy_many_addresses "$ADDRS_PROXY_B" "$ADDRS_PROXY_B" 20 \
    "$(min $((ADDRS_PROXY_B * PER_CONN)) $((ADDRS_PROXY_B * PER_CLIENT)) $((NOFILE - RESERVE)))" \
    /echo 127.0.12.
finish
