#!/usr/bin/env python3
"""Watch a DoH server's graceful HTTP/2 shutdown (RFC 9113 §6.8) from the client side (stdlib).

  h2drain.py --port P --first B64 --late B64 [--no-ack] [--wait S]

Connects to 127.0.0.1:P (TLS, ALPN h2, no certificate check), sends GET /dns-query?dns=<first>
on stream 1 and waits (up to S seconds, default 20) for the server's shutdown: the test sends
SIGTERM meanwhile. When the first GOAWAY arrives it opens stream 3 (GET ?dns=<late>) at once,
as a client does that sent a request before it read the GOAWAY, and only then answers the
server's PING (never with --no-ack). Raw frames, so that nothing in a client library refuses the
late stream. Prints one line:

  goaway1 LAST; ping DATA; goaway2 LAST after MS ms; stream 1 STATUS; stream 3 STATUS; eof

(STATUS: 200, "other" for another status, "reset CODE", or "none"; "goaway2 none" when no
second GOAWAY came; times from the first GOAWAY).
"""
import argparse
import os
import socket
import ssl
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first):
    # RFC 7541 §5.1
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    # literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)
    return b"\x00" + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


def get(stream, b64):
    block = (literal(b":method", b"GET") + literal(b":scheme", b"https") +
             literal(b":authority", b"localhost") +
             literal(b":path", b"/dns-query?dns=" + b64.encode()) +
             literal(b"accept", b"application/dns-message"))
    return frame(1, 0x5, stream, block)  # HEADERS, END_STREAM | END_HEADERS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--first", required=True)
    ap.add_argument("--late", required=True)
    ap.add_argument("--no-ack", action="store_true")
    ap.add_argument("--wait", type=float, default=20)
    args = ap.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.wait)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(PREFACE + frame(4, 0, 0) + get(1, args.first))
    status = {1: "none", 3: "none"}
    goaways = []  # (last stream id, time)
    ping = None
    eof = False
    buf = b""
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        try:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = s.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            break
        if not data:
            eof = True
            break
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = buf[9:9 + length]
            buf = buf[9 + length:]
            if os.environ.get("H2DRAIN_DEBUG"):
                sys.stderr.write("frame type %d flags %d stream %d %s\n" % (ftype, flags, sid, payload[:8].hex()))
            if ftype == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0))  # SETTINGS ACK
            elif ftype == 1 and sid in status:  # HEADERS: :status 200 is static index 8 (0x88)
                if status[sid] == "none":
                    status[sid] = "200" if payload[:1] == b"\x88" else "other"
            elif ftype == 3 and sid in status:  # RST_STREAM
                status[sid] = "reset %d" % int.from_bytes(payload[:4], "big")
            elif ftype == 7:  # GOAWAY
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                goaways.append((last, time.monotonic()))
                if len(goaways) == 1:
                    s.sendall(get(3, args.late))  # sent before this client "read" the GOAWAY
            elif ftype == 6 and not flags & 1:  # PING
                ping = payload
                if not args.no_ack:
                    s.sendall(frame(6, 1, 0, payload))
    parts = []
    if goaways:
        parts.append("goaway1 %d" % goaways[0][0])
    else:
        parts.append("goaway1 none")
    parts.append("ping %s" % (ping.decode("ascii", "replace") if ping is not None else "none"))
    if len(goaways) > 1:
        parts.append("goaway2 %d after %d ms" % (goaways[1][0], (goaways[1][1] - goaways[0][1]) * 1000))
    else:
        parts.append("goaway2 none")
    parts.append("stream 1 %s" % status[1])
    parts.append("stream 3 %s" % status[3])
    parts.append("eof" if eof else "no eof")
    print("; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
