#!/bin/bash
# s_nonreader: clients that send requests and never read the answers: 20 HTTP/1.1 connections
# (long: 200), each pipelining DoH GETs until the server stops reading them. The server keeps
# at most a bounded buffer per connection (it stops reading a client whose answers pile up:
# backpressure, not growth); its memory growth per connection is printed and bounded, and a
# legitimate query is answered meanwhile.
. "$(dirname "$0")/lib.sh"
need_tools nsd curl python3
N=$(by_mode 20 200)

start_nsd
start_dohgate --workers 2
rss0=$(rss_kib "$DG_PID")
python3 - "$DG_PORT" "$N" "$(dnsmsg query "www.$ZONE" A --b64)" >"$T/nr.out" 2>"$T/nr.err" <<'PY' &
import socket, ssl, sys, time
port, n, q = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
req = ("GET /dns-query?dns=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % q).encode()
conns, sent = [], 0
for i in range(n):
    raw = socket.create_connection(("127.0.0.1", port), source_address=("127.0.3.%d" % (1 + i % 50), 0))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(0.5)
    k = 0
    while True:  # until the server stops reading us (our send blocks)
        try:
            s.sendall(req * 64)
            k += 64
        except (socket.timeout, ssl.SSLWantWriteError):
            break
        except OSError:
            break
    sent += k
    conns.append(s)
print("sent %d requests on %d connections, never reading" % (sent, n), flush=True)
time.sleep(8)
PY
P=$!
track "$P"
# each connection takes about a second to fill (the kernel's buffers, then a 0.5 s send timeout)
for i in $(seq 1 $((N * 20 + 300))); do grep -q '^sent' "$T/nr.out" && break; sleep 0.1; done
sleep 1
rss1=$(rss_kib "$DG_PID")
sent=$(sed -n 's/^sent \([0-9]*\) .*/\1/p' "$T/nr.out")
per=$(((rss1 - rss0) * 1024 / N))
figure "connections=$N requests_sent=${sent:-0} rss_before_kib=$rss0 rss_after_kib=$rss1 bytes_per_connection=$per"
assert_range 1000 100000000 "${sent:-0}" "the clients pipelined requests until the server stopped reading ($(snip "$T/nr.err"))"
assert_range 0 $((512 * 1024)) "$per" "server memory per non-reading client stays bounded: $per bytes (< 512 KiB)"
read -r code ms <<<"$(legit)"
assert_eq 200 "$code" "a legitimate query is answered meanwhile (${ms} ms)"
kill "$P" 2>/dev/null
wait "$P" 2>/dev/null
untrack "$P"
finish
