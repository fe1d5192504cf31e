#!/bin/bash
# t_stop_backlog: connections still in a listener's backlog when SIGTERM arrives (issue 18).
# dohgate is frozen (SIGSTOP) while N clients connect and send a whole request each (the kernel
# completes the handshakes and queues them), then gets SIGTERM and SIGCONT: a stopping worker
# takes what its backlog holds before closing its listeners (a load balancer that already sent
# on such a connection cannot retry it elsewhere) and serves one request on each, the sessions
# started in the stop's mode: HTTP/1.1 on plain-listen, the same behind a PROXY v1 header
# (proxy-protocol-from), and DNS over TCP. Without that each would be reset or dropped.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
BL=$SRC_DIR/tests/tools/backlogclient.py
start_nsd

# backlog_round MODE PORT: the freeze, the connections, SIGTERM, SIGCONT; sets ROUND to the
# client's last line ("answered K of N"); dohgate must then exit 0 (reap_dohgate)
backlog_round() {
    local mode=$1 port=$2 line=
    kill -STOP "$DG_PID"
    coproc CL { python3 "$BL" "$port" 5 "$mode" "www.$ZONE" 2>&1; }
    read -r -t 20 line <&"${CL[0]}"
    [ "$line" = ready ] || ko "$mode: the client did not get ready ('$line')"
    kill -TERM "$DG_PID"
    sleep 0.3
    kill -CONT "$DG_PID"
    echo go >&"${CL[1]}"
    line=
    read -r -t 30 line <&"${CL[0]}"
    ROUND=$line
    reap_dohgate TERM
}

limits=(--workers 1 --connection-rate-limit 0 --max-connections-per-client 0)

P=$(free_port)
start_dohgate --plain-listen "127.0.0.1:$P" "${limits[@]}"
backlog_round h1 "$P"
assert_eq "answered 5 of 5" "$ROUND" \
    "HTTP/1.1 requests waiting in the backlog at SIGTERM: each answered (200), then closed"

P=$(free_port)
start_dohgate --plain-listen "127.0.0.1:$P" --proxy-protocol-from 127.0.0.2/32 "${limits[@]}"
backlog_round pp-h1 "$P"
assert_eq "answered 5 of 5" "$ROUND" \
    "PROXY v1 header and request waiting in the backlog at SIGTERM: each answered"

D=$(free_port)
start_dohgate --dns-listen "127.0.0.1:$D" "${limits[@]}"
backlog_round dns "$D"
assert_eq "answered 5 of 5" "$ROUND" \
    "DNS-over-TCP queries waiting in the backlog at SIGTERM: each answered"

finish
