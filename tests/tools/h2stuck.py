#!/usr/bin/env python3
"""An HTTP/2 client that stops reading, fills the server's socket, then commits a protocol error
(stdlib only). For the goodbye-timer test: the server's GOAWAY cannot leave, and the server must
still close the connection soon, not at its idle timeout.

  h2stuck.py --port P --metrics-port M --path /big.bin [--cafile F] [--wait S]

TLS with ALPN h2, SO_RCVBUF small; the preface, SETTINGS with INITIAL_WINDOW_SIZE 0 and a large
connection window, then GET PATH. From then on nothing is read. The stream's window is opened
16 KiB at a time until the server wrote less than it was allowed to (dohgate_sent_bytes_total on
the metrics listener falls behind the window granted): its socket is full and the rest of the
last grant (at most 16 KiB and framing, below the server's read-pause threshold) waits in its
output buffer. Then a DATA frame on stream 0 (a connection error, RFC 9113 §6.1), and the time
until dohgate_connections_open{listener="https"} is 0 is measured.
Prints "stuck GRANTED SENT" and then "closed SECONDS" or "open after S s"; exits 0 when closed.
"""
import argparse
import os
import re
import socket
import ssl
import struct
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2conns import PREFACE, frame, literal  # noqa: E402  (the one HTTP/2 frame writer of the tools)

CHUNK = 16384


def metric(mport, name):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
    m = re.search(r"^%s (\d+)" % re.escape(name), body, re.M)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--cafile")
    ap.add_argument("--wait", type=float, default=10)
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.cafile)
    if not args.cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", args.port))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    if s.selected_alpn_protocol() != "h2":
        print("no h2 (ALPN %r)" % s.selected_alpn_protocol())
        return 2
    sent0 = metric(args.metrics_port, "dohgate_sent_bytes_total")
    settings = struct.pack(">HI", 4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE 0: DATA only as granted
    block = (literal(b":method", b"GET") + literal(b":scheme", b"https") +
             literal(b":authority", b"localhost") + literal(b":path", args.path.encode()))
    s.sendall(PREFACE + frame(4, 0, 0, settings) +
              frame(8, 0, 0, struct.pack(">I", (1 << 30))) +  # connection window
              frame(1, 0x5, 1, block))
    granted = 0
    for _ in range(2000):  # up to 32 MiB
        s.sendall(frame(8, 0, 1, struct.pack(">I", CHUNK)))
        granted += CHUNK
        time.sleep(0.05)
        sent = metric(args.metrics_port, "dohgate_sent_bytes_total") - sent0
        if sent < granted:
            break
    else:
        print("the server's socket never filled (granted %d)" % granted)
        return 2
    print("stuck %d %d" % (granted, sent), flush=True)
    s.sendall(frame(0, 0, 0, b"x"))  # DATA on stream 0: PROTOCOL_ERROR, GOAWAY queued
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.wait:
        if metric(args.metrics_port, 'dohgate_connections_open{listener="https"}') == 0:
            print("closed %.1f" % (time.monotonic() - t0), flush=True)
            return 0
        time.sleep(0.2)
    print("open after %.0f s" % args.wait, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
