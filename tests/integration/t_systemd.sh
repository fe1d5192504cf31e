#!/bin/bash
# t_systemd: socket activation (LISTEN_FDS via systemd-socket-activate: a socket named "http" is
# the plain port-80 listener, others serve TLS; listen/http-listen are then unused) and the
# Type=notify protocol (READY=1 at start, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1 on
# SIGTERM, read from a NOTIFY_SOCKET of our own); contrib/systemd/ units pass systemd-analyze
# verify with no complaint.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3 systemd-socket-activate systemd-analyze

start_nsd
make_certs

# ---- socket activation
DG_PORT=$(free_port)
HTTP_PORT=$(free_port)
UNUSED_PORT=$(free_port)
echo "# systemd-socket-activate ... $DOHGATE" >>"$DG_LOG"
# it waits for the first connection, then execs dohgate with the sockets (same PID)
systemd-socket-activate -l "127.0.0.1:$DG_PORT" -l "127.0.0.1:$HTTP_PORT" --fdname=https:http \
    "$DOHGATE" --listen "127.0.0.1:$UNUSED_PORT" --upstream "127.0.0.1:$NSD_PORT" \
    --cert "$CERTS/server.pem" --key "$CERTS/server.key" --workers 2 >>"$DG_LOG" 2>&1 </dev/null &
DG_PID=$!
track "$DG_PID"
wait_dohgate
assert_eq 200 "$(curl -s --http2 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
    "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)")" "DoH on the socket systemd passed"
out=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$HTTP_PORT/page?x=1")
assert_eq "301 https://127.0.0.1:$DG_PORT/page?x=1" "$out" "the socket named 'http' serves plain HTTP: redirects to the activated TLS socket's port"
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$UNUSED_PORT/" 2>/dev/null
assert_eq 7 "$?" "the configured listen address is not bound when sockets come from systemd"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$DG_PORT from systemd \(TLS" "the log names the TLS socket from systemd"
assert_file_match "$DG_LOG" "listening on 127\.0\.0\.1:$HTTP_PORT from systemd \(plain HTTP" "the log names the plain socket from systemd"
assert_file_match "$DG_LOG" "socket activation: 2 sockets from systemd" "the log says listen is not used"
# with 2 workers both accept from the same sockets: several connections all get answers
n=0
for i in $(seq 1 8); do
    c=$(curl -s --http1.1 --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' \
        "$(dohgate_url)?dns=$(dnsmsg query "www.$ZONE" A --b64)")
    [ "$c" = 200 ] && n=$((n + 1))
done
assert_eq 8 "$n" "8 separate connections on the activated socket answered"
stop_dohgate

# ---- sd_notify
NS=$T/notify.sock
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a")
while True:
    msg = s.recv(4096).decode()
    out.write(msg.replace("\n", " ") + "\n")
    out.flush()
' "$NS" "$T/notify.log" &
track $!
for i in $(seq 1 50); do [ -S "$NS" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$NS start_dohgate --cert-check-interval 0
for i in $(seq 1 20); do grep -q READY=1 "$T/notify.log" 2>/dev/null && break; sleep 0.1; done
assert_eq "READY=1" "$(head -1 "$T/notify.log")" "READY=1 once listening"
kill -HUP "$DG_PID"
for i in $(seq 1 20); do [ "$(grep -c READY=1 "$T/notify.log")" -ge 2 ] && break; sleep 0.1; done
assert_eq "READY=1 RELOADING=1 READY=1" "$(head -3 "$T/notify.log" | tr '\n' ' ' | sed 's/ $//')" \
    "SIGHUP: RELOADING=1, then READY=1 when the certificates are loaded"
stop_dohgate
assert_eq "STOPPING=1" "$(sed -n 4p "$T/notify.log")" "SIGTERM: STOPPING=1"

# ---- the units: no unknown keys or bad values (systemd-analyze prints any complaint)
mkdir "$T/units"
sed "s|^ExecStart=/usr/local/bin/dohgate|ExecStart=$DOHGATE|" "$SRC_DIR/contrib/systemd/dohgate.service" \
    >"$T/units/dohgate.service"
cp "$SRC_DIR"/contrib/systemd/*.socket "$T/units/"
out=$(cd "$T/units" && systemd-analyze verify --man=no ./dohgate.service ./dohgate.socket ./dohgate-http.socket 2>&1)
assert_eq "0:" "$?:$out" "systemd-analyze verify: the service and socket units are clean"
for k in 'Type=notify' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
    'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' 'ExecReload=/bin/kill -HUP $MAINPID' 'SystemCallFilter=@system-service'; do
    assert_file_match "$SRC_DIR/contrib/systemd/dohgate.service" "^$(printf '%s' "$k" | sed 's/[$]/[$]/g')\$" "dohgate.service has $k"
done

finish
