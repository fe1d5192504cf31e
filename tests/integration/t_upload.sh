#!/bin/bash
# t_upload: in reverse-proxy mode request bodies stream to the backend with back-pressure
# instead of being buffered whole (issue 14).
#   A  a 20 MiB upload (--site-max-body 32M) over HTTP/2 and HTTP/1.1 (curl, Content-Length),
#      and over HTTP/1.1 with Transfer-Encoding: chunked, reaches tests/tools/backend.py whole
#      (length and SHA-256), while dohgate's peak RSS (VmHWM) grows by far less than 20 MiB.
#      The body budgets are set to 64M so that buffering whole would be allowed: the bound is
#      the streaming's, not a refusal's.
#   B  a backend that reads nothing for 4 s (POST /echo?wait=4, SO_RCVBUF 64K): an HTTP/2
#      client (tests/tools/h2hold.py, one stream of 16 MiB) is granted flow-control window for
#      little more than what the sockets in between hold, not for its whole body; afterwards
#      nothing is held (dohgate_budget_in_use{resource="body"} 0). A backend that answers 413
#      before reading any of an 8 MiB body (POST /early): the client gets it while uploading.
#   C  site-max-body still bounds the total: a 2 MiB body over --site-max-body 1M gets 413, over
#      HTTP/2 and HTTP/1.1; the backend's 404 to a POST reaches the client; an HTTP/1.1 body
#      that stalls gets 408 at request-timeout, as before; DoH POST is answered as before.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3 openssl

# Under ASan freed blocks wait in a quarantine (256 MB by default) before reuse: the RSS bound
# would measure it, not dohgate; a 1 MB one keeps it meaningful (no effect on other builds).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1

HOLD_PY=$SRC_DIR/tests/tools/h2hold.py
MIB=1048576

hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$DG_PID/status"; }
# echo_of JSON: "LEN SHA256" of a backend /echo answer
echo_of() {
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(d["body_len"], d["body_sha256"])' "$1" 2>&1
}

start_nsd
M_PORT=$(free_port)
BP=$(free_port)
BACKEND_RCVBUF=65536 start_backend "$BP" "$T/backend.log"
head -c $((20 * MIB)) /dev/urandom >"$T/big.bin"
BIG_SHA=$(sha256sum "$T/big.bin" | cut -d' ' -f1)

# ============================================================================================
# A: 20 MiB uploads stream through
start_dohgate --workers 1 --metrics-listen "127.0.0.1:$M_PORT" --site-backend "http://127.0.0.1:$BP" \
    --site-max-body 32M --max-body-buffer-per-connection 64M --max-body-buffer-per-client 64M \
    --max-body-buffer 64M
sleep 0.3
# warm up (TLS, the backend connection, allocator arenas) with a small upload first
head -c 100000 /dev/urandom >"$T/small.bin"
curl -s -o /dev/null --max-time 10 --http2 --cacert "$CERTS/ca.pem" --data-binary "@$T/small.bin" \
    "$(dohgate_url /echo)"
hwm0=$(hwm_kb)
for v in 2 1.1; do
    t0=$(now_ms)
    out=$(curl -s --max-time 60 --http"$v" --cacert "$CERTS/ca.pem" -H 'content-type: application/octet-stream' \
        --data-binary "@$T/big.bin" "$(dohgate_url /echo)")
    assert_eq "$((20 * MIB)) $BIG_SHA" "$(echo_of "$out")" \
        "A: a 20 MiB POST over HTTP/$v reaches the backend whole ($(($(now_ms) - t0)) ms)"
done
out=$(curl -s --max-time 60 --http1.1 --cacert "$CERTS/ca.pem" -H 'transfer-encoding: chunked' \
    --data-binary "@$T/big.bin" "$(dohgate_url /echo)")
assert_eq "$((20 * MIB)) $BIG_SHA" "$(echo_of "$out")" \
    "A: a 20 MiB chunked POST over HTTP/1.1 reaches the backend whole"
assert_match '"chunked": true' "$out" "A: ... sent to the backend with chunked coding"
hwm1=$(hwm_kb)
echo "# A: VmHWM ${hwm0} kB before, ${hwm1} kB after three 20 MiB uploads"
assert_range 0 6144 "$((hwm1 - hwm0))" "A: peak RSS grows by less than 6 MiB (not by the 20 MiB body)"
assert_eq 0 "$(metric_of 'dohgate_budget_in_use{resource="body"}')" "A: no body bytes held afterwards"

# ============================================================================================
# B: a backend that does not read: the client is not granted window for its whole body
python3 "$HOLD_PY" --port "$DG_PORT" --mode body-hold --path "/echo?wait=4" --conns 1 \
    --streams 1 --body $((16 * MIB)) --hold 3 >"$T/hold.out" 2>"$T/hold.err"
J=$(sed -n 2p "$T/hold.out")
echo "# B: $J"
granted=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["window_granted"])' "$J" 2>&1)
# The old code granted the whole body (conn + stream: 32 MiB) as it buffered it.
assert_range 0 $((2 * MIB)) "$granted" "B: window granted to the client stays far below its 16 MiB body ($granted)"
sleep 1
assert_eq 0 "$(metric_of 'dohgate_budget_in_use{resource="body"}')" "B: no body bytes held after the client left"
# the connection and the backend still work
out=$(curl -s --max-time 20 --http2 --cacert "$CERTS/ca.pem" --data-binary "@$T/small.bin" "$(dohgate_url /echo)")
assert_eq "100000 $(sha256sum "$T/small.bin" | cut -d' ' -f1)" "$(echo_of "$out")" "B: a POST after it reaches the backend whole"
# a backend that answers 413 before reading anything (POST /early): the answer reaches the client
# while it is uploading 8 MiB; the old code sent the answer only after buffering the whole body
head -c $((8 * MIB)) /dev/zero >"$T/8m.bin"
for v in 2 1.1; do
    code=$(curl -s -o "$T/early.out" -w '%{http_code}' --max-time 20 --http"$v" --cacert "$CERTS/ca.pem" \
        --data-binary "@$T/8m.bin" "$(dohgate_url /early)")
    assert_eq "413 backend: too large" "$code $(cat "$T/early.out")" \
        "B: a backend's 413 before it read the body reaches an HTTP/$v client uploading 8 MiB"
done

stop_dohgate

# ============================================================================================
# C: limits, early answers, DoH
start_dohgate --workers 1 --metrics-listen "127.0.0.1:$M_PORT" --site-backend "http://127.0.0.1:$BP" \
    --site-max-body 1M --request-timeout 2
head -c $((2 * MIB)) /dev/urandom >"$T/2m.bin"
for v in 2 1.1; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 --http"$v" --cacert "$CERTS/ca.pem" \
        --data-binary "@$T/2m.bin" "$(dohgate_url /echo)")
    assert_eq 413 "$code" "C: a 2 MiB POST over HTTP/$v with site-max-body 1M: 413"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 --http"$v" --cacert "$CERTS/ca.pem" \
        -H 'transfer-encoding: chunked' --data-binary "@$T/2m.bin" "$(dohgate_url /echo)")
    [ "$v" = 2 ] || assert_eq 413 "$code" "C: a 2 MiB chunked POST over HTTP/1.1 with site-max-body 1M: 413"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 --http"$v" --cacert "$CERTS/ca.pem" \
        --data-binary "@$T/small.bin" "$(dohgate_url /nothere)")
    assert_eq 404 "$code" "C: the backend's 404 to a POST over HTTP/$v reaches the client"
done
# HTTP/1.1: head and body must still arrive within request-timeout (2 s here), streamed or not
cat >"$T/stall.py" <<'PYEOF'
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n" + b"z" * 1000)
t0, data = time.time(), b""
s.settimeout(8)
try:
    while b"\r\n" not in data:
        b = s.recv(4096)
        if not b:
            break
        data += b
except OSError:
    pass
line = data.split(b"\r\n")[0].decode("latin-1").split()
print("%s %.1f" % (line[1] if len(line) > 1 else "-", time.time() - t0))
PYEOF
read -r code secs <<<"$(python3 "$T/stall.py" "$DG_PORT" "$CERTS/ca.pem" 2>&1)"
assert_eq 408 "$code" "C: an HTTP/1.1 body that stalls past request-timeout: 408 ($secs s)"
doh_post "www.$ZONE" A
assert_eq "200 NOERROR" "$HTTP_CODE $(rcode)" "C: a DoH POST is answered"
sleep 0.5
assert_eq 0 "$(metric_of 'dohgate_budget_in_use{resource="body"}')" "C: no body bytes held afterwards"
stop_dohgate

finish
