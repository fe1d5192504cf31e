#!/usr/bin/env python3
"""A slow but steady HTTP/2 or HTTP/1.1 reader (stdlib only): one GET over TLS whose response is
read at a fixed rate, a little every tick, as a client on a slow link does.

  slowread.py --port P --cafile F --path PATH [--http2 | --http1.1] [--rate 400000] [--tick 0.05]
              [--rcvbuf 65536] [--timeout 60]

Flow control never holds the server back (SETTINGS_INITIAL_WINDOW_SIZE and the connection window
are raised to 16 MiB): the TCP socket is what does, as it does for a real client behind a slow
link. The receive buffer is kept small (--rcvbuf) so that the server's socket fills and stays full.

Why not curl --limit-rate --http2: curl 7.88 reads all its socket holds into nghttp2 in one go and
then sleeps until its average is back under the limit, which is a pause of several seconds with a
large receive buffer: a client that takes nothing for that long is stalled by definition, so a
test of "slow but steady" needs a reader that is steady.

Prints one JSON line: {"status": "200", "bytes": N, "end": "eof|rst N|goaway N|closed|timeout",
"seconds": S} and exits 0; the caller asserts on it.
"""
import argparse
import json
import socket
import ssl
import struct
import sys
import time
import os
import select

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2conns import PREFACE, frame, literal  # noqa: E402
from h2hold import status_of  # noqa: E402

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
WINDOW = 16 << 20


def ticks(args):
    """Once per tick until --timeout: the caller reads at most per_tick bytes each time, the rate
    the link allows."""
    t0 = time.monotonic()
    next_tick = t0
    while time.monotonic() - t0 < args.timeout:
        now = time.monotonic()
        if now < next_tick:
            time.sleep(next_tick - now)
        next_tick += args.tick
        yield


def take(tls, n):
    """Up to n bytes: waits for the first, then takes what is already there (one recv returns one
    TLS record, 16 KB at most, which alone would cap the rate at 16 KB per tick). b"" at the end
    of the stream; raises OSError on a reset."""
    out = tls.recv(n)
    while out and len(out) < n and (tls.pending() or select.select([tls], [], [], 0)[0]):
        more = tls.recv(n - len(out))
        if not more:
            break
        out += more
    return out


def read_h1(tls, args, r):
    """HTTP/1.1: the status line, the headers, then Content-Length bytes of body. Fills r."""
    tls.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % args.path).encode())
    per_tick = max(1, int(args.rate * args.tick))
    buf, length = b"", None
    for _ in ticks(args):
        chunk = take(tls, per_tick)
        if not chunk:
            r["end"] = "closed"
            return
        if r["status"] is None:
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                continue
            lines = head.decode("latin-1").split("\r\n")
            r["status"] = lines[0].split(" ")[1]
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            chunk = rest
        r["bytes"] += len(chunk)
        if length is not None and r["bytes"] >= length:
            r["end"] = "eof"
            return


def read_h2(tls, args, r):
    """HTTP/2: one GET on stream 1, both windows kept wide open. Fills r."""
    if tls.selected_alpn_protocol() != "h2":
        r["end"] = "no h2"
        return
    block = (literal(b":method", b"GET") + literal(b":scheme", b"https") +
             literal(b":authority", b"localhost") + literal(b":path", args.path.encode()))
    tls.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, WINDOW)) +
                frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - 65535)) +
                frame(HEADERS, 0x5, 1, block))
    per_tick = max(1, int(args.rate * args.tick))
    buf, hpack = b"", []
    for _ in ticks(args):
        chunk = take(tls, per_tick)
        if not chunk:
            r["end"] = "closed"
            return
        buf += chunk
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            hdr, payload, buf = buf[:9], buf[9:9 + length], buf[9 + length:]
            ftype, flags = hdr[3], hdr[4]
            sid = struct.unpack(">I", hdr[5:9])[0] & 0x7fffffff
            if ftype == SETTINGS and not flags & 1:
                tls.sendall(frame(SETTINGS, 1, 0))
            elif ftype == PING and not flags & 1:
                tls.sendall(frame(PING, 1, 0, payload))
            elif ftype == GOAWAY:
                r["end"] = "goaway %d" % struct.unpack(">I", payload[4:8])[0]
                return
            elif sid == 1 and ftype == RST:
                r["end"] = "rst %d" % struct.unpack(">I", payload[:4])[0]
                return
            elif sid == 1 and ftype == HEADERS:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:  # PRIORITY
                    payload = payload[5:]
                if r["status"] is None:
                    r["status"] = status_of(payload, hpack)
            elif sid == 1 and ftype == DATA:
                pad = payload[0] + 1 if flags & 0x8 else 0
                r["bytes"] += len(payload) - pad
                if len(payload):  # keep both windows open: the socket is the only limit
                    inc = struct.pack(">I", len(payload))
                    tls.sendall(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, 1, inc))
            if sid == 1 and ftype in (HEADERS, DATA) and flags & 1:
                r["end"] = "eof"
                return


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--rate", type=int, default=400000)
    ap.add_argument("--tick", type=float, default=0.05)
    ap.add_argument("--rcvbuf", type=int, default=65536)
    ap.add_argument("--timeout", type=float, default=60)
    proto = ap.add_mutually_exclusive_group()
    proto.add_argument("--http2", dest="h1", action="store_false")
    proto.add_argument("--http1.1", dest="h1", action="store_true")
    ap.set_defaults(h1=False)
    args = ap.parse_args()

    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.set_alpn_protocols(["http/1.1" if args.h1 else "h2"])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    raw.settimeout(args.timeout)
    raw.connect(("127.0.0.1", args.port))
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    t0 = time.monotonic()
    r = {"status": None, "bytes": 0, "end": "timeout"}  # what a reader got so far
    try:
        (read_h1 if args.h1 else read_h2)(tls, args, r)
    except OSError:  # a reset, or a write after the server closed (SSLError is one too)
        r["end"] = "closed"
    r["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(r))
    tls.close()


if __name__ == "__main__":
    main()
