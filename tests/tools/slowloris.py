#!/usr/bin/env python3
"""Slow clients against a TLS server (stress tests; stdlib only).

  slowloris.py --port P --kind K --count N [--sources K] [--every S] [--max S]

Opens N connections of one kind (run one process per kind: a Python event loop busy with TLS
handshakes would notice the others' closes late), spread over source addresses 127.0.2.1 .. 127.0.2.K:
  half-open: TCP connected, nothing sent (a TLS handshake that never starts)
  slow-tls:  TCP connected, the first 10 bytes of a ClientHello, then one byte every S seconds
  slowloris: TLS done (ALPN http/1.1), "GET / HTTP/1.1\\r\\nHost: x\\r\\n" then one header byte
             every S seconds, never the end of the headers
and records for each when the server closed it. After --max seconds (or when all are closed)
prints one line per kind: "KIND count=N closed=C max_s=T median_s=M".
"""
import argparse
import asyncio
import ssl
import statistics
import time

HELLO_START = bytes.fromhex("16030100f4010000f00303")  # record header + ClientHello start


async def watch(reader, t0, deadline):
    try:
        while time.monotonic() < deadline:
            data = await asyncio.wait_for(reader.read(4096), max(0.05, deadline - time.monotonic()))
            if not data:
                return time.monotonic() - t0
    except (asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
        if time.monotonic() < deadline:
            return time.monotonic() - t0
    return None


async def drip(writer, every, deadline, byte):
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(every)
            writer.write(byte)
            await writer.drain()
    except Exception:
        pass


async def one(kind, i, args, deadline):
    src = ("127.0.2.%d" % (1 + i % args.sources), 0)
    t0 = time.monotonic()
    try:
        if kind == "slowloris":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["http/1.1"])
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port, ssl=ctx,
                                                           server_hostname="localhost",
                                                           local_addr=src)
            t0 = time.monotonic()  # the request timeout runs from here
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port, local_addr=src)
            if kind == "slow-tls":
                writer.write(HELLO_START)
    except Exception:
        return kind, 0.0  # refused at once counts as closed
    dripper = None
    if kind != "half-open":
        dripper = asyncio.ensure_future(drip(writer, args.every, deadline,
                                             b"a" if kind == "slowloris" else b"\x00"))
    closed = await watch(reader, t0, deadline)
    if dripper:
        dripper.cancel()
    writer.close()
    return kind, closed


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["half-open", "slow-tls", "slowloris"], required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--sources", type=int, default=20)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--max", type=float, default=30.0)
    args = ap.parse_args()
    deadline = time.monotonic() + args.max
    kinds = [args.kind]
    res = await asyncio.gather(*(one(k, i, args, deadline) for k in kinds for i in range(args.count)))
    for k in kinds:
        times = [t for kind, t in res if kind == k]
        closed = [t for t in times if t is not None]
        print("%s count=%d closed=%d max_s=%.2f median_s=%.2f" % (
            k, len(times), len(closed), max(closed) if closed else -1,
            statistics.median(closed) if closed else -1), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
