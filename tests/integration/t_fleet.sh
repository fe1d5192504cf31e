#!/bin/bash
# t_fleet: HAProxy (contrib/haproxy.cfg as written, ports replaced) in front of two dohgate
# instances (NSD upstream, metrics-listen for the health checks, one shared ticket-key-file).
# - client addresses: through send-proxy-v2, a curl bound to 127.0.0.10 shows as 127.0.0.10 in
#   the query log (a refused query is not logged, hence another address than the denied one),
#   and deny-client 127.0.0.9/32 gives 403 through HAProxy;
# - rolling restart: under h2load (-D 6 -c 8 -m 10) through HAProxy, SIGTERM to one instance:
#   no request h2load sent fails (the two-step GOAWAY), new connections made meanwhile all
#   succeed; the instance is started again and takes traffic (its own counters);
# - SIGKILL of one instance under load: only requests in flight on it fail (at most c x m + c),
#   new connections succeed right after;
# - TLS resumption across the two (a ticket from one resumes on the other);
# - socket activation on one machine (what systemd does, emulated: a holder keeps the listening
#   socket and starts dohgate with it as fd 3): under load, SIGTERM the running one and start a
#   new one on the same socket at once: no failed request, new connections queue in the kernel.
#
# h2load and GOAWAY: once a GOAWAY (any GOAWAY, even the first one with 2^31-1) is read, nghttp2
# starts no new stream on that connection: the requests h2load queued but had not sent yet
# (answers to several streams and the GOAWAY come in one read, and each answer queues the next
# request) fail without leaving, and h2load does not retry them on a new HTTP/2 connection (nor
# open one: that client stops, and adds one more failure, h2load.cc process_request_failure).
# Its summary's "failed" therefore counts up to m + 1 per connection that got a GOAWAY, none of
# them sent. The requests h2load did send are in its --log-file with their start time (0 for
# the never sent): those are what must all succeed; the summary is reported and bounded.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl h2load haproxy openssl python3

# PROXY protocol v2 from HAProxy (default 1); PROXY_V2=0 strips send-proxy-v2
# from the HAProxy file and skips the client-address checks.
PROXY_V2=${PROXY_V2:-1}

start_nsd
make_certs
openssl rand 80 >"$T/ticket.key"
FE=$(free_port)
A_PORT=$(free_port)
B_PORT=$(free_port)
A_M=$(free_port)
B_M=$(free_port)
Q=$(dnsmsg query "www.$ZONE" A --b64)

# start_inst a|b [FLAGS...]: that instance on its fixed ports (the HAProxy file names them),
# its log in $T/<name>.log; its pid in A_PID / B_PID. Ready once /healthz answers on its
# metrics port: with proxy-protocol-from 127.0.0.1/32 a direct DoH query from here (no PROXY
# header) is closed, so lib.sh's launch_dohgate, which waits for one, cannot be used.
start_inst() {
    local n=$1 port mport pp=() pid i
    shift
    if [ "$n" = a ]; then port=$A_PORT mport=$A_M; else port=$B_PORT mport=$B_M; fi
    [ "$PROXY_V2" = 1 ] && pp=(--proxy-protocol-from 127.0.0.1/32)
    local args=(--listen "127.0.0.1:$port" --cert "$CERTS/server.pem" --key "$CERTS/server.key"
        --upstream "127.0.0.1:$NSD_PORT" --metrics-listen "127.0.0.1:$mport"
        --ticket-key-file "$T/ticket.key" --query-log yes --query-log-client full
        --deny-client 127.0.0.9/32 --shutdown-timeout 5 "${pp[@]}" "$@")
    echo "# $DOHGATE ${args[*]}" >>"$T/$n.log"
    "${GUARD[@]}" "$DOHGATE" "${args[@]}" >>"$T/$n.log" 2>&1 </dev/null &
    pid=$!
    track "$pid"
    for i in $(seq 1 50); do
        [ "$(curl -s --max-time 1 "http://127.0.0.1:$mport/healthz")" = ok ] && break
        proc_alive "$pid" || die "instance $n exited during start-up ($(tail -3 "$T/$n.log"))"
        sleep 0.2
    done
    if [ "$n" = a ]; then A_PID=$pid; else B_PID=$pid; fi
}
# stop_inst a|b [SIGNAL]: the post checks of that instance (exit 0 after SIGTERM)
stop_inst() {
    local n=$1
    DG_LOG=$T/$n.log
    if [ "$n" = a ]; then DG_PID=$A_PID A_PID=; else DG_PID=$B_PID B_PID=; fi
    stop_dohgate "${2:-TERM}"
}
# msum PORT PREFIX: the sum of the metrics (of the instance whose metrics port is PORT) whose
# line starts with PREFIX
msum() {
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
        awk -v p="$2" 'index($0, p) == 1 { s += $NF } END { print s + 0 }'
}
reqs() { msum "$1" 'dohgate_http_requests_total{'; }

# HAProxy with the contrib file, only its ports replaced (and send-proxy-v2 until PROXY_V2)
sed -e "s/127\.0\.0\.1:8443 /127.0.0.1:$A_PORT /" -e "s/127\.0\.0\.1:8444 /127.0.0.1:$B_PORT /" \
    -e "s/check port 9153/check port $A_M/" -e "s/check port 9154/check port $B_M/" \
    -e "s/bind :443\$/bind 127.0.0.1:$FE/" "$SRC_DIR/contrib/haproxy.cfg" >"$T/haproxy.cfg"
[ "$PROXY_V2" = 1 ] || sed -i 's/ send-proxy-v2//' "$T/haproxy.cfg"
assert_eq 5 "$(grep -oE "127\.0\.0\.1:($FE|$A_PORT|$B_PORT)\b|port ($A_M|$B_M)\b" "$T/haproxy.cfg" | wc -l)" \
    "the HAProxy file's five ports were replaced"
haproxy -c -f "$T/haproxy.cfg" >"$T/haproxy-check.out" 2>&1
assert_eq 0 "$?" "haproxy -c accepts the file ($(snip "$T/haproxy-check.out"))"

start_inst a
start_inst b
haproxy -db -f "$T/haproxy.cfg" >>"$T/haproxy.log" 2>&1 </dev/null &
HA_PID=$!
track "$HA_PID"

# fe_get [CURL-OPTIONS...]: one DoH GET through HAProxy on a new connection, its HTTP code
fe_get() {
    curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" --resolve "localhost:$FE:127.0.0.1" \
        -o /dev/null -w '%{http_code}' "$@" "https://localhost:$FE/dns-query?dns=$Q" 2>/dev/null
}
# both instances up behind HAProxy: requests reach each (health checks: rise 2 x 500 ms)
A0=$(reqs "$A_M")
B0=$(reqs "$B_M")
both_served() {
    fe_get >/dev/null
    [ "$(reqs "$A_M")" -gt "$A0" ] && [ "$(reqs "$B_M")" -gt "$B0" ]
}
wait_for 15 both_served
assert_eq yes "$(both_served && echo yes)" "HAProxy sends connections to both instances"

# new_conns SECONDS OUT: a new connection (curl) every 50 ms for SECONDS, each code on a line
new_conns() {
    local end=$(($(now_ms) + $1 * 1000))
    while [ "$(now_ms)" -lt "$end" ]; do
        fe_get >>"$2"
        echo >>"$2"
        sleep 0.05
    done
}
# h2l_sum FILE: "STARTED DONE SUCCEEDED FAILED" from h2load's summary
h2l_sum() {
    sed -n 's/^requests: [0-9]* total, \([0-9]*\) started, \([0-9]*\) done, \([0-9]*\) succeeded, \([0-9]*\) failed.*/\1 \2 \3 \4/p' "$1"
}
# h2l_logfail FILE: requests h2load sent (a start time) that did not end with a 2xx
h2l_logfail() { awk -F'\t' '$1 != 0 && $2 !~ /^2/ { n++ } END { print n + 0 }' "$1"; }
# h2l_unsent FILE: requests h2load queued and never sent (start time 0: refused by its nghttp2)
h2l_unsent() { awk -F'\t' '$1 == 0 { n++ } END { print n + 0 }' "$1"; }

# ---- client addresses through the PROXY protocol
if [ "$PROXY_V2" = 1 ]; then
    code=$(fe_get --interface 127.0.0.10)
    assert_eq 200 "$code" "a query from 127.0.0.10 through HAProxy"
    wait_for 3 grep -qh 'query: 127\.0\.0\.10 ' "$T/a.log" "$T/b.log"
    assert_eq yes "$(grep -qh 'query: 127\.0\.0\.10 ' "$T/a.log" "$T/b.log" && echo yes)" \
        "the query log shows the client's own address 127.0.0.10, not HAProxy's 127.0.0.1"
    assert_eq "403 403" "$(fe_get --interface 127.0.0.9) $(fe_get --interface 127.0.0.9)" \
        "deny-client 127.0.0.9/32 (on both instances): 403 through HAProxy, two connections"
    assert_eq 200 "$(fe_get)" "... while 127.0.0.1 is served"
fi

# ---- rolling restart: SIGTERM to one instance under h2load
h2load -D 6 -c 8 -m 10 --log-file "$T/term.log" "https://127.0.0.1:$FE/dns-query?dns=$Q" \
    >"$T/term.out" 2>&1 &
LOAD=$!
track "$LOAD"
: >"$T/term-new.txt"
sleep 2
new_conns 3 "$T/term-new.txt" &
NEWC=$!
track "$NEWC"
a_before=$(reqs "$A_M")
t0=$(now_ms)
DG_LOG=$T/a.log DG_PID=$A_PID signal_dohgate TERM
DG_LOG=$T/a.log DG_PID=$A_PID reap_dohgate TERM
A_PID=
drain_ms=$(($(now_ms) - t0))
start_inst a
a_restart=$(reqs "$A_M")
wait "$LOAD"
untrack "$LOAD"
wait "$NEWC"
untrack "$NEWC"
read -r started done succeeded failed <<<"$(h2l_sum "$T/term.out")"
sent=$(awk -F'\t' '$1 != 0' "$T/term.log" | wc -l)
logfail=$(h2l_logfail "$T/term.log")
unsent=$(h2l_unsent "$T/term.log")
echo "# SIGTERM under load: h2load started=$started done=$done succeeded=$succeeded failed=$failed; log: $sent sent, $logfail of them failed, $unsent never sent; drain $drain_ms ms; instance A had served $a_before"
assert_range 1 100000000 "${sent:-0}" "SIGTERM under load: h2load's log holds the requests it sent ($sent)"
assert_eq 0 "${logfail:-x}" "SIGTERM under load: none of the $sent requests h2load sent failed"
assert_range 1000 100000000 "${succeeded:-0}" "... and h2load got answers ($succeeded)"
assert_range 0 88 "${failed:-x}" "... h2load's failed count ($failed: $unsent queued and never sent after the GOAWAY, one per stopped client) is at most c x (m + 1)"
assert_eq "" "$(grep -v '^200$' "$T/term-new.txt" | head -3 | tr '\n' ' ')" \
    "new connections through HAProxy during the drain all answered 200 ($(grep -c . "$T/term-new.txt") tried)"
assert_range 100 100000000 "${a_before:-0}" "instance A took its share before the SIGTERM ($a_before requests)"
# the restarted instance takes traffic again (its own counters: a new process starts at 0)
h2load -n 800 -c 8 -m 10 "https://127.0.0.1:$FE/dns-query?dns=$Q" >"$T/after.out" 2>&1
a_after=$(reqs "$A_M")
assert_range $((a_restart + 50)) 100000000 "${a_after:-0}" "the restarted instance takes traffic again ($a_restart -> $a_after requests)"

# ---- SIGKILL under load: only what was in flight on it is lost
# h2load counts nothing as failed when a connection dies under it: the requests in flight stay
# "started" and never "done" (started - done), as do those in flight on the surviving
# connections when the run ends; together at most c x m = 80.
sleep 1.5 # HAProxy's checks see A up again (rise 2 x 500 ms)
h2load -D 6 -c 8 -m 10 "https://127.0.0.1:$FE/dns-query?dns=$Q" >"$T/kill.out" 2>&1 &
LOAD=$!
track "$LOAD"
sleep 2
a_before=$(reqs "$A_M")
kill -KILL "$A_PID"
wait "$A_PID" 2>/dev/null
untrack "$A_PID"
A_PID=
b_kill=$(reqs "$B_M")
: >"$T/kill-new.txt"
new_conns 2 "$T/kill-new.txt"
wait "$LOAD"
untrack "$LOAD"
b_end=$(reqs "$B_M")
read -r started done succeeded failed <<<"$(h2l_sum "$T/kill.out")"
lost=$((${started:-0} - ${done:-0}))
echo "# SIGKILL under load: h2load started=$started done=$done succeeded=$succeeded failed=$failed; lost (started - done) $lost; A had served $a_before; B served $((b_end - b_kill)) after the kill"
assert_range 0 80 "$lost" "SIGKILL: requests lost ($lost) at most those in flight (c x m = 80)"
assert_eq "${done:-x}" "${succeeded:-y}" "... every request that ended succeeded ($succeeded)"
assert_range 1000 100000000 "$((b_end - b_kill))" "... the other instance kept serving after the kill"
assert_eq "" "$(grep -v '^200$' "$T/kill-new.txt" | head -3 | tr '\n' ' ')" \
    "new connections right after the SIGKILL all answered 200 ($(grep -c . "$T/kill-new.txt") tried)"
start_inst a

# ---- TLS resumption across the instances (shared ticket-key-file)
resumed_on() { msum "$1" 'dohgate_tls_handshakes_total{version="TLSv1.3",resumed="true"}'; }
sleep 1.5
a0=$(resumed_on "$A_M") b0=$(resumed_on "$B_M")
fa0=$(msum "$A_M" dohgate_tls_handshakes_total) fb0=$(msum "$B_M" dohgate_tls_handshakes_total)
sleep 1 | openssl s_client -connect "127.0.0.1:$FE" -servername localhost -sess_out "$T/sess" \
    >/dev/null 2>&1
if [ "$(msum "$A_M" dohgate_tls_handshakes_total)" -gt "$fa0" ]; then first=A other_m=$B_M; else first=B other_m=$A_M; fi
[ "$first" = B ] && [ "$(msum "$B_M" dohgate_tls_handshakes_total)" -le "$fb0" ] && first=none
o0=$(resumed_on "$other_m")
res=
for i in 1 2 3 4 5 6; do
    r=$(openssl s_client -connect "127.0.0.1:$FE" -servername localhost -sess_in "$T/sess" \
        </dev/null 2>/dev/null | grep -oE '^(Reused|New)' | head -1)
    if [ "$(resumed_on "$other_m")" -gt "$o0" ]; then res=$r; break; fi
done
assert_eq "Reused" "${res:-none}" "a TLS 1.3 ticket from instance $first resumes on the other instance"

# ---- socket activation on one machine: the holder keeps the socket, dohgate restarts on it
SA_PORT=$(free_port)
mkfifo "$T/ctl"
cat >"$T/holder.py" <<'EOF'
# What systemd does for a .socket unit: bind the socket once, keep it, and start the service
# with it as fd 3 (LISTEN_FDS=1, LISTEN_PID = the service's own pid). Each "start" line on the
# control FIFO starts one more dohgate on the same socket; "pid N" lines go to stdout.
import os, socket, subprocess, sys
port, ctl, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
argv = sys.argv[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(1024)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
n = 0
with open(ctl) as f:
    for line in f:
        if line.strip() != "start":
            continue
        n += 1
        env = dict(os.environ, LISTEN_FDS="1")
        log = open("%s/sa-%d.log" % (logdir, n), "ab")
        p = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'] + argv, env=env,
                             pass_fds=(3,), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        print("pid %d" % p.pid, flush=True)
EOF
python3 "$T/holder.py" "$SA_PORT" "$T/ctl" "$T" "$DOHGATE" --listen "127.0.0.1:$(free_port)" \
    --cert "$CERTS/server.pem" --key "$CERTS/server.key" --upstream "127.0.0.1:$NSD_PORT" \
    --query-log yes --workers 2 >"$T/holder.out" 2>&1 &
HOLDER=$!
track "$HOLDER"
exec 7<>"$T/ctl"
# sa_pid N: the pid of the Nth dohgate the holder started
sa_pid() { sed -n "${1}s/^pid //p" "$T/holder.out"; }
sa_get() {
    curl -s --http2 --max-time 5 --cacert "$CERTS/ca.pem" --resolve "localhost:$SA_PORT:127.0.0.1" \
        -o /dev/null -w '%{http_code}' "https://localhost:$SA_PORT/dns-query?dns=$Q" 2>/dev/null
}
echo start >&7
wait_for 10 test -n "$(sa_pid 1)"
SA1=$(sa_pid 1)
track "$SA1"
wait_for 10 test "$(sa_get)" = 200
assert_eq 200 "$(sa_get)" "socket activation: the first dohgate serves the holder's socket"
h2load -D 6 -c 8 -m 10 --log-file "$T/sa.log" "https://127.0.0.1:$SA_PORT/dns-query?dns=$Q" \
    >"$T/sa.out" 2>&1 &
LOAD=$!
track "$LOAD"
: >"$T/sa-new.txt"
sleep 2
(
    end=$(($(now_ms) + 3000))
    while [ "$(now_ms)" -lt "$end" ]; do sa_get >>"$T/sa-new.txt"; echo >>"$T/sa-new.txt"; sleep 0.05; done
) &
NEWC=$!
track "$NEWC"
sleep 0.3
kill -TERM "$SA1"
echo start >&7 # at once, as systemctl restart does
wait_for 10 test -n "$(sa_pid 2)"
SA2=$(sa_pid 2)
track "$SA2"
wait "$LOAD"
untrack "$LOAD"
wait "$NEWC"
untrack "$NEWC"
wait_gone "$SA1" 10
assert_eq no "$(proc_alive "$SA1" && echo yes || echo no)" "the first dohgate exited after SIGTERM"
read -r started done succeeded failed <<<"$(h2l_sum "$T/sa.out")"
logfail=$(h2l_logfail "$T/sa.log")
unsent=$(h2l_unsent "$T/sa.log")
echo "# socket activation restart: h2load started=$started done=$done succeeded=$succeeded failed=$failed; log: $logfail sent and failed, $unsent never sent; new connections: $(grep -c . "$T/sa-new.txt")"
assert_eq 0 "${logfail:-x}" "socket-activation restart under load: none of the $(awk -F'\t' '$1 != 0' "$T/sa.log" | wc -l) requests h2load sent failed"
assert_range 0 88 "${failed:-x}" "... h2load's failed count ($failed; $unsent never sent) is at most c x (m + 1)"
assert_eq "" "$(grep -v '^200$' "$T/sa-new.txt" | head -3 | tr '\n' ' ')" \
    "new connections during the restart all answered 200: queued in the kernel ($(grep -c . "$T/sa-new.txt") tried)"
assert_range 1 1000000 "$(grep -c 'query: ' "$T/sa-2.log")" "the new dohgate answers on the same socket (its query log)"
kill -TERM "$SA2"
wait_gone "$SA2" 10
exec 7>&-

stop_inst a
DG_LOG=$T/b.log
DG_PID=$B_PID
finish
