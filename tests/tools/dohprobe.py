#!/usr/bin/env python3
"""A legitimate client for the stress tests (stdlib only): DoH queries and website requests, one
at a time, each on a new TLS + HTTP/2 connection (a new client: what accept() and descriptor
exhaustion hurt first), each checked and timed.

  dohprobe.py --port P --cafile F [--source 127.0.0.9] [--kinds get,post,site]
              [--name www.dohgate.test] [--expect 192.0.2.10] [--site-path /]
              [--interval 0.1] [--duration S] [--count N] [--stop-file F] [--timeout 5]
              [--log FILE]

Kinds, taken in rotation: get (GET /dns-query?dns=), post (POST /dns-query), site (GET
--site-path). A DoH request succeeds when it gets :status 200 and a DNS answer that parses, is
NOERROR, and holds A --expect; a site request when it gets :status 200 and its whole body.
Anything else (refused or reset connection, handshake failure, GOAWAY, RST_STREAM, another
status, a bad answer, no answer within --timeout) is a failure, with its reason.

Stops after --duration seconds, --count requests or once --stop-file exists (whichever comes
first; at least one of them is needed). --log FILE gets one line per request as it is done:
  EPOCH_S KIND ok|FAIL MS [REASON]
At the end one JSON line on stdout:
  {"n": N, "ok": K, "failed": F, "reasons": {"...": count}, "by_kind": {"get": [ok, n], ...},
   "p50_ms": .., "p99_ms": .., "max_ms": ..}
(latencies of the successful requests, from the start of the TCP connect to the last byte).
Exit status 0 whatever the outcome: the caller asserts on the figures.
"""
import argparse
import asyncio
import io
import json
import os
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnsmsg import b64url, build_query, show  # noqa: E402
from h2hold import status_of  # noqa: E402
from h2conns import PREFACE, frame, literal  # noqa: E402

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7


class Failed(Exception):
    pass


def headers(method, path, extra=()):
    block = (literal(b":method", method) + literal(b":scheme", b"https") +
             literal(b":authority", b"localhost") + literal(b":path", path.encode()))
    for name, value in extra:
        block += literal(name, value)
    return block


async def one(args, ctx, kind, query):
    """One request on a new connection: returns its latency in ms, or raises Failed(reason)."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", args.port, ssl=ctx, server_hostname="localhost",
            local_addr=(args.source, 0))
    except ssl.SSLError as e:
        raise Failed("tls: %s" % (e.reason or e.__class__.__name__))
    except OSError as e:
        raise Failed("connect: %s" % (os.strerror(e.errno) if e.errno else e.__class__.__name__))
    try:
        if writer.get_extra_info("ssl_object").selected_alpn_protocol() != "h2":
            raise Failed("alpn: no h2")
        out = PREFACE + frame(SETTINGS, 0, 0)
        if kind == "get":
            out += frame(HEADERS, 0x5, 1, headers(b"GET", "/dns-query?dns=" + b64url(query),
                                                  [(b"accept", b"application/dns-message")]))
        elif kind == "post":
            out += frame(HEADERS, 0x4, 1, headers(b"POST", "/dns-query", [
                (b"content-type", b"application/dns-message"),
                (b"accept", b"application/dns-message"),
                (b"content-length", str(len(query)).encode())]))
            out += frame(DATA, 0x1, 1, query)
        else:
            out += frame(HEADERS, 0x5, 1, headers(b"GET", args.site_path))
        writer.write(out)
        status, body, hpack = None, b"", []
        while True:
            try:
                hdr = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(hdr[:3], "big"))
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
                raise Failed("closed by the server" + ("" if status is None else " mid-response"))
            ftype, flags, sid = hdr[3], hdr[4], struct.unpack(">I", hdr[5:9])[0] & 0x7fffffff
            if ftype == SETTINGS and not flags & 1:
                writer.write(frame(SETTINGS, 1, 0))
            elif ftype == PING and not flags & 1:
                writer.write(frame(PING, 1, 0, payload))
            elif ftype == GOAWAY:
                raise Failed("goaway %d" % struct.unpack(">I", payload[4:8])[0])
            elif sid == 1 and ftype == RST:
                raise Failed("rst_stream %d" % struct.unpack(">I", payload[:4])[0])
            elif sid == 1 and ftype == HEADERS:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if flags & 0x20:  # PRIORITY
                    payload = payload[5:]
                st = status_of(payload, hpack)
                if status is None:
                    status = st
            elif sid == 1 and ftype == DATA:
                body += payload
            if sid == 1 and ftype in (HEADERS, DATA) and flags & 1:
                break
        ms = (time.monotonic() - t0) * 1000
        if status != "200":
            raise Failed("status %s" % status)
        if kind != "site":
            text = io.StringIO()
            try:
                show(body, text)
            except (ValueError, struct.error, IndexError) as e:
                raise Failed("bad dns answer: %s" % e)
            text = text.getvalue()
            if "rcode=NOERROR" not in text or (" A %s\n" % args.expect) not in text:
                raise Failed("wrong dns answer: %s" % text.split("\n")[0])
        return ms
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--source", default="127.0.0.9")
    ap.add_argument("--kinds", default="get,post")
    ap.add_argument("--name", default="www.dohgate.test")
    ap.add_argument("--expect", default="192.0.2.10")
    ap.add_argument("--site-path", default="/")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--count", type=int)
    ap.add_argument("--stop-file")
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--log")
    args = ap.parse_args()
    if args.duration is None and args.count is None and args.stop_file is None:
        ap.error("one of --duration, --count or --stop-file is needed")
    kinds = args.kinds.split(",")
    for k in kinds:
        if k not in ("get", "post", "site"):
            ap.error("unknown kind %s" % k)
    ctx = ssl.create_default_context(cafile=args.cafile)
    ctx.check_hostname = False  # the test certificate is for localhost and 127.0.0.1 anyway
    ctx.set_alpn_protocols(["h2"])
    query = build_query(args.name, "A")
    log = open(args.log, "a", buffering=1) if args.log else None
    n, ok, reasons, by_kind, lat = 0, 0, {}, {}, []
    start = time.monotonic()
    while True:
        if args.count is not None and n >= args.count:
            break
        if args.duration is not None and time.monotonic() - start >= args.duration:
            break
        if args.stop_file and os.path.exists(args.stop_file):
            break
        kind = kinds[n % len(kinds)]
        t_next = time.monotonic() + args.interval
        t_req = time.monotonic()
        try:
            ms = await asyncio.wait_for(one(args, ctx, kind, query), args.timeout)
            ok += 1
            lat.append(ms)
            line = "%.3f %s ok %.1f" % (time.time(), kind, ms)
        except (Failed, asyncio.TimeoutError) as e:
            reason = str(e) if isinstance(e, Failed) else "no answer within %g s" % args.timeout
            reasons[reason] = reasons.get(reason, 0) + 1
            line = "%.3f %s FAIL %.1f %s" % (time.time(), kind, (time.monotonic() - t_req) * 1000,
                                             reason)
        n += 1
        k = by_kind.setdefault(kind, [0, 0])
        k[0] += line.split()[2] == "ok"
        k[1] += 1
        if log:
            log.write(line + "\n")
        await asyncio.sleep(max(0.0, t_next - time.monotonic()))
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(len(lat) * p))], 1) if lat else None
    print(json.dumps({"n": n, "ok": ok, "failed": n - ok, "reasons": reasons, "by_kind": by_kind,
                      "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "max_ms": round(lat[-1], 1) if lat else None}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
