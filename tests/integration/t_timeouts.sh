#!/bin/bash
# t_timeouts: connections that do nothing do not stay forever. A TCP connection that stops in the
# middle of its ClientHello is closed after --handshake-timeout, one that sends nothing is closed
# too (later: TCP_DEFER_ACCEPT); a TLS connection with ALPN h2 that stays
# silent is closed after --idle-timeout; an HTTP/2 connection that finished its request and then
# idles is closed too. The server answers normally meanwhile.
. "$(dirname "$0")/lib.sh"
need_tools nsd dig curl openssl python3

# ---- pre
start_nsd
start_dohgate --workers 1 --handshake-timeout 1 --idle-timeout 2

# ---- a partial ClientHello, then nothing (slowloris)
t0=$(now_ms)
exec 3<>"/dev/tcp/127.0.0.1/$DG_PORT" || die "cannot connect to port $DG_PORT"
printf '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' >&3
timeout 8 cat <&3 >/dev/null
rc=$?
exec 3<&-
dt=$(($(now_ms) - t0))
assert_ne 124 "$rc" "a connection stuck in the middle of its ClientHello is closed by the server"
assert_range 500 3500 "$dt" "... after about --handshake-timeout 1 s (took $dt ms)"

# ---- no byte at all. The listener may use TCP_DEFER_ACCEPT, so the kernel holds such a
# connection for some seconds before dohgate sees it; the bound is therefore loose.
t0=$(now_ms)
exec 3<>"/dev/tcp/127.0.0.1/$DG_PORT" || die "cannot connect to port $DG_PORT"
timeout 20 cat <&3 >/dev/null
rc=$?
exec 3<&-
dt=$(($(now_ms) - t0))
assert_ne 124 "$rc" "a TCP connection that sends nothing is closed within 20 s (took $dt ms)"

# ---- TLS done, ALPN h2, then silence (not even the HTTP/2 preface)
t0=$(now_ms)
timeout 9 openssl s_client -connect "127.0.0.1:$DG_PORT" -servername localhost -alpn h2 -quiet \
    < <(sleep 10) >/dev/null 2>"$T/sc.err"
rc=$?
dt=$(($(now_ms) - t0))
assert_ne 124 "$rc" "a silent TLS connection (ALPN h2, no preface) is closed by the server"
assert_range 500 6000 "$dt" "... within a few seconds (idle-timeout 2 s; took $dt ms)"

# ---- an HTTP/2 connection that made one request and then idles
python3 - "$DG_PORT" "$(dnsmsg query "www.$ZONE" A --b64)" >"$T/idle.out" 2>&1 <<'PYEOF'
# one request over h2 (hand-made frames), then wait for the server to close the connection
import socket, ssl, struct, sys, time
port, q = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
def frame(t, flags, sid, payload):
    return struct.pack("!I", len(payload))[1:] + bytes([t, flags]) + struct.pack("!I", sid) + payload
def lit(name, value):  # HPACK literal without indexing, new name
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value if len(value) < 127 else \
        b"\x00" + bytes([len(name)]) + name + b"\x7f" + hpack_int(len(value) - 127) + value
def hpack_int(n):
    out = b""
    while n >= 128:
        out += bytes([(n & 0x7f) | 0x80]); n >>= 7
    return out + bytes([n])
path = ("/dns-query?dns=" + q).encode()
hdrs = b"\x82\x87" + lit(b":authority", b"localhost") + lit(b":path", path)  # GET, https
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x05, 1, hdrs))
t0 = time.time()
got = b""
s.settimeout(15)
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
except (socket.timeout, ssl.SSLError, OSError) as e:
    print("recv ended:", type(e).__name__)
print("bytes=%d closed_after=%.1f" % (len(got), time.time() - t0))
PYEOF
out=$(cat "$T/idle.out")
assert_match 'bytes=[1-9][0-9]* closed_after=' "$out" "an idle HTTP/2 connection got its answer and was closed ($out)"
secs=$(sed -n 's/.*closed_after=\([0-9]*\).*/\1/p' "$T/idle.out")
assert_range 1 6 "$secs" "... about --idle-timeout 2 s after the last activity"

# ---- still answering
doh_get "www.$ZONE" A
assert_eq NOERROR "$(rcode)" "a normal query answers"

# ---- a slow reader is not a stalled one (send-timeout counts progress, issue 14): a client
# reading at 400 KB/s keeps a 6 MB download's socket full for its whole 15 s. Linux reports a full
# socket writable only after about half of its (autotuned, megabytes) send buffer drained, so
# no write of ours succeeds for seconds at a time; the kernel's send queue shrinking
# (SIOCOUTQ) is the progress. With send-timeout 3 the old code closed both downloads midway.
stop_dohgate
mkdir -p "$T/www"
head -c 6000000 /dev/urandom >"$T/www/six.bin"
start_dohgate --workers 1 --site-root "$T/www" --send-timeout 3
# Not curl --limit-rate: it reads whatever its socket holds (up to 100 reads in a row), then
# sleeps until its average is back under the limit. strace showed 4 s pauses between its bursts,
# over send-timeout: a client that takes nothing for that long is stalled by definition, and CI
# saw dohgate close such a download 135 KB short. slowread.py takes 20 KB every 50 ms with a
# 64 KB receive buffer, over HTTP/1.1 and HTTP/2.
for proto in --http1.1 --http2; do
    out=$(slowread "$proto" --path /six.bin --rate 400000 --timeout 40)
    assert_match '"status": "200", "bytes": 6000000, "end": "eof"' "$out" \
        "${proto#--} read steadily at 400 KB/s: the whole 6 MB with send-timeout 3 ($out)"
done

# ---- post
finish
