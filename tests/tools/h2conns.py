#!/usr/bin/env python3
"""Hold many idle TLS + HTTP/2 connections to a DoH server (stress tests; stdlib only).

  h2conns.py --port P --count N [--sources K] [--hold S] [--query B64] [--cafile F]

Opens N connections to 127.0.0.1:P, spread over K source addresses 127.0.1.1 .. 127.0.1.K (so
per-client limits see K clients), each: TLS with ALPN h2, the client preface and SETTINGS, one
GET /dns-query?dns=B64, the response's HEADERS awaited; then the connection stays open with no
further requests (SETTINGS are acknowledged) for S seconds, and everything is closed.
Prints "up N" (connections whose query was answered 200) once all have tried, then
"done" at the end. Lines on stdout only, so that a test can wait for them.
"""
import argparse
import asyncio
import ssl
import struct
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    # HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2)
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name) + s(value)


async def one(i, args, ctx, results):
    src = "127.0.1.%d" % (1 + i % args.sources)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", args.port, ssl=ctx, server_hostname="localhost",
                                    local_addr=(src, 0)), 30)
    except Exception:
        results.append(0)
        return None
    path = b"/dns-query?dns=" + args.query.encode()
    block = (literal(b":method", b"GET") + literal(b":scheme", b"https") +
             literal(b":authority", b"localhost") + b"\x00" + bytes([5]) + b":path" +
             (bytes([len(path)]) if len(path) < 127 else b"\x7f" + bytes([len(path) - 127])) + path)
    writer.write(PREFACE + frame(4, 0, 0) + frame(1, 0x5, 1, block))  # SETTINGS, HEADERS(END_STREAM|END_HEADERS)
    ok = 0
    try:
        while True:
            hdr = await asyncio.wait_for(reader.readexactly(9), 30)
            length = int.from_bytes(hdr[:3], "big")
            ftype, flags = hdr[3], hdr[4]
            payload = await reader.readexactly(length)
            if ftype == 4 and not flags & 1:
                writer.write(frame(4, 1, 0))  # SETTINGS ACK
            if ftype == 1:  # HEADERS of our stream: :status 200 is index 8 (0x88)
                ok = 1 if payload[:1] == b"\x88" else 0
                break
            if ftype == 7:  # GOAWAY
                break
    except Exception:
        ok = 0
    results.append(ok)
    return writer, reader


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--sources", type=int, default=1)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--query", default="AAABAAABAAAAAAAAA3d3dwdkb2hnYXRlBHRlc3QAAAEAAQ")
    ap.add_argument("--cafile")
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.cafile)
    if not args.cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    results = []
    conns = []
    batch = 200  # handshakes in flight at once
    for start in range(0, args.count, batch):
        got = await asyncio.gather(*(one(i, args, ctx, results)
                                     for i in range(start, min(start + batch, args.count))))
        conns.extend(c for c in got if c)
    print("up %d" % sum(results), flush=True)

    async def drain(reader):  # keep reading (PING/SETTINGS) so the server's writes never stall
        try:
            while await reader.read(4096):
                pass
        except Exception:
            pass
    tasks = [asyncio.ensure_future(drain(r)) for _, r in conns]
    await asyncio.sleep(args.hold)
    for w, _ in conns:
        w.close()
    for t in tasks:
        t.cancel()
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
