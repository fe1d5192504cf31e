#!/usr/bin/env python3
"""A fault-injecting encrypted DNS server: the upstream end of dohgate's DoT / DoH upstream tests
(python3 stdlib; HTTP/2 frames by hand, HPACK request headers decoded by the system libnghttp2
through ctypes, since HPACK's Huffman code is not in the stdlib and clients always use it).

  tlsstub.py --port P --cert C --key K --proto dot|doh --mode MODE [--answers N] [--log F]
             [--idle S] [--bad 500|ctype] [--rst-code N] [--close-late] [--delay S]
  tlsstub.py summary LOG        one JSON object summing up a --log file (see below)

Answers A (and ANY) queries for any name with 192.0.2.1 (TTL 300), any other type NOERROR with
no answer; the question is echoed; an OPT record in the query gets one in the answer.
Prints "ready" on stdout once listening.

DoT (RFC 7858: TLS, 2-byte length prefix; ALPN "dot" offered, not required). MODE:
  ok               pipelined: each query answered as soon as it is read, in order
  reorder          collects up to 8 queries (those that arrive within 50 ms of each other), then
                   answers them in reverse order
  close-after      closes the connection after --answers N answers (queries past N unanswered);
                   with --close-late, only once the next query has arrived: that query is in
                   flight when the connection dies (the client must send it again elsewhere)
  stall-handshake  accepts TCP, reads and discards, never says a TLS byte (also for --proto doh)
  garbage          answers each query with random bytes under a plausible length prefix (12..100
                   bytes, first two never the query's ID)
  silent           reads queries, never answers
  wrong-id         answers with ID = query ID ^ 0x5555
DoH (RFC 8484: ALPN h2, POST /dns-query application/dns-message, GET /dns-query?dns=). MODE:
  ok               every stream answered (:status 200, application/dns-message)
  goaway-after     after --answers N answers on a connection: GOAWAY (NO_ERROR, last-stream-id
                   = the Nth answered stream); streams above it are ignored; the connection is
                   closed once the streams up to it are done, or 1 s later
  rst              RST_STREAM (--rst-code, default 2 INTERNAL_ERROR) for every Nth stream of a
                   connection (--answers N), the others answered
  status           every stream answered :status 500 (--bad 500, default) or :status 200 with
                   content-type text/html (--bad ctype)
  silent           reads requests, never answers
--idle S: the server closes a connection that had no query for S seconds (default: never).
--delay S: (dot ok) every answer leaves S seconds after its query, so that queries pile up in
  flight (the pool-overflow burst of t_upstream_tls).

--log F: one JSON object per line, flushed as it happens:
  {"ev": "conn", "c": N, "peer": "127.0.0.1:P"}                      TCP accepted
  {"ev": "handshake", "c": N, "resumed": bool, "alpn": "h2"|null, "sni": NAME|null,
   "version": "TLSv1.3"}                                              TLS completed
  {"ev": "handshake-failed", "c": N, "error": "..."}                 TLS failed (e.g. the client
                                                                      refused our certificate)
  {"ev": "query", "c": N, "id": ID, "name": "x.", "type": T, "len": L, "padding": P|null,
   "method": "POST"|"GET"|null, "stream": S|null}                     P: option 12's data length
  {"ev": "answer"|"reset"|"goaway"|"garbage"|"dropped", "c": N, ...}
  {"ev": "close", "c": N, "queries": K, "by": "server"|"client"}
summary: {"connections", "handshakes", "resumed", "handshake_failures", "queries", "answers",
  "resets", "goaways", "sni": [...], "alpn": [...], "padded": K (queries with option 12),
  "lengths": [distinct query lengths of padded queries], "failures": [errors]}
"""
import argparse
import asyncio
import base64
import ctypes
import ctypes.util
import json
import os
import random
import socket
import ssl
import struct
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2conns import PREFACE, frame, literal  # noqa: E402  (the HTTP/2 frame writer of the tools)
from stubdns import a_rr, answer, edns_option, parse_question  # noqa: E402

DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINUP, CONT = range(10)
F_END_STREAM, F_ACK, F_END_HEADERS, F_PADDED, F_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20

LOG = None
ARGS = None  # the command line (read by dns_answer)
CONN_IDS = iter(range(1, 1 << 30))


def log(**ev):
    ev["t"] = round(time.monotonic(), 3)  # seconds, for intervals (idle closes)
    if LOG:
        LOG.write(json.dumps(ev) + "\n")
        LOG.flush()


# ---------------------------------------------------------------------------------------------
# DNS

def dns_answer(msg, c, extra):
    """Log the query and return (its ID, the answer bytes); None for what does not parse."""
    q = parse_question(msg)
    if q is None:
        log(ev="bad-query", c=c, len=len(msg), **extra)
        return None
    qid, qflags, qname, question = q
    qtype = struct.unpack("!H", question[-4:-2])[0]
    has_opt, pad = edns_option(msg, 12)
    ka = edns_option(msg, 11)[1]  # edns-tcp-keepalive (RFC 7828) asked for: its length (0)
    log(ev="query", c=c, id=qid, name=qname, type=qtype, len=len(msg), padding=pad, keepalive=ka,
        **extra)
    an = [a_rr("192.0.2.1", 300)] if qtype in (1, 255) else []
    out = answer(qid, qflags, question, an=an)
    if has_opt:
        opts = b""
        if ARGS.keepalive is not None and ka is not None:
            # RFC 7828 §3.3.2: the server's idle timeout, in units of 100 ms
            opts = struct.pack("!HHH", 11, 2, int(ARGS.keepalive * 10))
        out = (out[:10] + b"\x00\x01" + out[12:] + b"\x00" +
               struct.pack("!HHIH", 41, 1232, 0, len(opts)) + opts)
    return qid, out


# ---------------------------------------------------------------------------------------------
# TLS

def server_context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"] if args.proto == "doh" else ["dot"])

    def on_sni(sslobj, name, _ctx):
        sslobj.dg_sni = name  # read back once the handshake is done
        return None
    ctx.sni_callback = on_sni
    return ctx


async def handshake(sock, ctx, c):
    """TLS server side over the accepted socket: (reader, writer), or None (logged either way).
    Not StreamWriter.start_tls(): a StreamReader already reading the plain socket can swallow
    the ClientHello before TLS starts (the handshake then hangs)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    proto = asyncio.StreamReaderProtocol(reader)
    try:
        transport, _ = await loop.connect_accepted_socket(lambda: proto, sock, ssl=ctx,
                                                          ssl_handshake_timeout=30)
    except Exception as e:  # noqa: BLE001  (any failure is what the log is for)
        log(ev="handshake-failed", c=c, error=("%s: %s" % (type(e).__name__, e))[:300])
        sock.close()
        return None
    writer = asyncio.StreamWriter(transport, proto, reader, loop)
    so = transport.get_extra_info("ssl_object")
    log(ev="handshake", c=c, resumed=bool(so.session_reused), alpn=so.selected_alpn_protocol(),
        sni=getattr(so, "dg_sni", None), version=so.version())
    return reader, writer


# ---------------------------------------------------------------------------------------------
# DoT

async def dot_conn(reader, writer, args, c, st):
    mode = args.mode
    pending = []  # reorder: (id, answer) collected

    def send(msg):
        writer.write(struct.pack("!H", len(msg)) + msg)

    while True:
        timeout = 0.05 if pending else (args.idle or None)
        try:
            hdr = await asyncio.wait_for(reader.readexactly(2), timeout)
            msg = await reader.readexactly(struct.unpack("!H", hdr)[0])
        except asyncio.TimeoutError:
            if pending:
                for qid, out in reversed(pending):
                    send(out)
                    log(ev="answer", c=c, id=qid)
                st["answers"] += len(pending)
                pending = []
                continue
            st["by"] = "server"  # --idle
            return
        st["queries"] += 1
        r = dns_answer(msg, c, {})
        if r is None:
            continue
        qid, out = r
        if mode == "close-after" and st["answers"] >= args.answers:  # --close-late
            log(ev="dropped", c=c, id=qid)
            st["by"] = "server"
            return
        if mode == "silent":
            continue
        if mode == "garbage":
            n = random.randint(12, 100)
            junk = bytearray(os.urandom(n))
            if junk[0:2] == struct.pack("!H", qid):
                junk[0] ^= 0xFF
            send(bytes(junk))
            log(ev="garbage", c=c, id=qid, len=n)
            continue
        if mode == "wrong-id":
            out = struct.pack("!H", qid ^ 0x5555) + out[2:]
        if mode == "reorder":
            pending.append((qid, out))
            if len(pending) >= 8:
                for pid, pout in reversed(pending):
                    send(pout)
                    log(ev="answer", c=c, id=pid)
                st["answers"] += len(pending)
                pending = []
            continue
        if args.delay:
            # every answer late by --delay s, each on its own: queries pile up in flight
            async def later(qid=qid, out=out):
                await asyncio.sleep(args.delay)
                send(out)
                st["answers"] += 1
                log(ev="answer", c=c, id=qid)
                st["peak"] = max(st.get("peak", 0), st["queries"] - st["answers"])
            asyncio.ensure_future(later())
            st["peak"] = max(st.get("peak", 0), st["queries"] - st["answers"])
            continue
        send(out)
        st["answers"] += 1
        log(ev="answer", c=c, id=qid)
        if mode == "close-after" and st["answers"] >= args.answers and not args.close_late:
            await writer.drain()
            st["by"] = "server"
            return


# ---------------------------------------------------------------------------------------------
# DoH: HTTP/2 server side

class Inflater:
    """HPACK decoder of one connection: nghttp2_hd_inflate_* of the system libnghttp2."""

    class NV(ctypes.Structure):
        _fields_ = [("name", ctypes.POINTER(ctypes.c_uint8)), ("value", ctypes.POINTER(ctypes.c_uint8)),
                    ("namelen", ctypes.c_size_t), ("valuelen", ctypes.c_size_t), ("flags", ctypes.c_uint8)]

    lib = None

    def __init__(self):
        if Inflater.lib is None:
            name = ctypes.util.find_library("nghttp2") or "libnghttp2.so.14"
            lib = ctypes.CDLL(name)
            lib.nghttp2_hd_inflate_new.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
            lib.nghttp2_hd_inflate_hd2.argtypes = [ctypes.c_void_p, ctypes.POINTER(Inflater.NV),
                                                   ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                                                   ctypes.c_size_t, ctypes.c_int]
            lib.nghttp2_hd_inflate_hd2.restype = ctypes.c_ssize_t
            lib.nghttp2_hd_inflate_end_headers.argtypes = [ctypes.c_void_p]
            lib.nghttp2_hd_inflate_del.argtypes = [ctypes.c_void_p]
            Inflater.lib = lib
        self.h = ctypes.c_void_p()
        if Inflater.lib.nghttp2_hd_inflate_new(ctypes.byref(self.h)) != 0:
            raise MemoryError("nghttp2_hd_inflate_new")

    def decode(self, block):
        """The header list of a complete header block: [(name, value)] as bytes."""
        out, nv, flags, off = [], Inflater.NV(), ctypes.c_int(0), 0
        buf = bytes(block)
        while True:
            rest = buf[off:]
            n = Inflater.lib.nghttp2_hd_inflate_hd2(self.h, ctypes.byref(nv), ctypes.byref(flags),
                                                    rest, len(rest), 1)
            if n < 0:
                raise ValueError("HPACK decoding error %d" % n)
            off += n
            if flags.value & 0x02:  # EMIT
                out.append((ctypes.string_at(nv.name, nv.namelen), ctypes.string_at(nv.value, nv.valuelen)))
            if flags.value & 0x01:  # FINAL
                Inflater.lib.nghttp2_hd_inflate_end_headers(self.h)
                return out
            if not flags.value & 0x02 and off >= len(buf):
                return out

    def close(self):
        if self.h:
            Inflater.lib.nghttp2_hd_inflate_del(self.h)
            self.h = ctypes.c_void_p()


def response_headers(status, ctype, length):
    # :status as an indexed field where the static table has it (RFC 7541 Appendix A), the rest
    # literal, never indexed, no Huffman: nothing for the client's decoder to track
    idx = {200: 8, 204: 9, 206: 10, 304: 11, 400: 12, 404: 13, 500: 14}
    block = bytes([0x80 | idx[status]]) if status in idx else literal(b":status", str(status).encode())
    return block + literal(b"content-type", ctype) + literal(b"content-length", str(length).encode())


async def doh_conn(reader, writer, args, c, st):
    mode = args.mode
    preface = await reader.readexactly(len(PREFACE))
    if preface != PREFACE:
        log(ev="bad-preface", c=c)
        st["by"] = "server"
        return
    # our SETTINGS: 100 concurrent streams; and a large connection window for the client's bodies
    writer.write(frame(SETTINGS, 0, 0, struct.pack("!HI", 3, 100)) +
                 frame(WINUP, 0, 0, struct.pack("!I", (1 << 30))))
    hp = Inflater()
    streams = {}  # id -> {"hdrs": [...], "body": bytearray}
    cont = None  # (stream id, end_stream, header block so far) while CONTINUATION frames come
    nth = 0  # streams seen complete on this connection
    goaway_last = None
    closer = None

    def reply(sid, status, ctype, body):
        writer.write(frame(HEADERS, F_END_HEADERS, sid, response_headers(status, ctype, len(body))) +
                     frame(DATA, F_END_STREAM, sid, body))

    def request_done(sid):
        nonlocal nth, goaway_last, closer
        s = streams.pop(sid)
        if goaway_last is not None and sid > goaway_last:
            log(ev="ignored", c=c, stream=sid)
            return
        h = {}
        for k, v in s["hdrs"]:
            h.setdefault(k.decode("latin-1"), v.decode("latin-1"))
        method, path = h.get(":method"), h.get(":path", "")
        st["queries"] += 1
        nth += 1
        u = urllib.parse.urlsplit(path)
        msg = None
        if u.path != "/dns-query":
            log(ev="bad-path", c=c, stream=sid, path=path[:100])
            reply(sid, 404, b"text/plain", b"not found\n")
            return
        if method == "POST":
            msg = bytes(s["body"])
        elif method == "GET":
            b64 = urllib.parse.parse_qs(u.query).get("dns", [""])[0]
            try:
                msg = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            except ValueError:
                msg = b""
        r = dns_answer(msg or b"", c, {"method": method, "stream": sid})
        if r is None:
            reply(sid, 400, b"text/plain", b"bad query\n")
            return
        qid, out = r
        if mode == "silent":
            return
        if mode == "rst" and nth % args.answers == 0:
            writer.write(frame(RST, 0, sid, struct.pack("!I", args.rst_code)))
            st["resets"] += 1
            log(ev="reset", c=c, stream=sid, id=qid, code=args.rst_code)
            return
        if mode == "status":
            if args.bad == "ctype":
                reply(sid, 200, b"text/html", b"<html>not dns</html>\n")
            else:
                reply(sid, 500, b"text/plain", b"internal error\n")
            log(ev="answer", c=c, stream=sid, id=qid, bad=args.bad)
            st["answers"] += 1
            return
        reply(sid, 200, b"application/dns-message", out)
        st["answers"] += 1
        log(ev="answer", c=c, stream=sid, id=qid)
        if mode == "goaway-after" and goaway_last is None and st["answers"] >= args.answers:
            goaway_last = sid
            writer.write(frame(GOAWAY, 0, 0, struct.pack("!II", sid, 0)))
            log(ev="goaway", c=c, last=sid)
            closer = asyncio.get_running_loop().time() + 1.0

    while True:
        if goaway_last is not None and not any(k <= goaway_last for k in streams):
            st["by"] = "server"
            await writer.drain()
            return
        if closer is not None:
            timeout = max(0.0, closer - asyncio.get_running_loop().time())
        else:
            timeout = args.idle or None
        try:
            hdr = await asyncio.wait_for(reader.readexactly(9), timeout)
        except asyncio.TimeoutError:
            st["by"] = "server"
            return
        length = int.from_bytes(hdr[:3], "big")
        ftype, flags = hdr[3], hdr[4]
        sid = struct.unpack("!I", hdr[5:9])[0] & 0x7FFFFFFF
        payload = await reader.readexactly(length)
        if cont is not None and ftype != CONT:
            log(ev="protocol-error", c=c, why="frame inside a header block")
            st["by"] = "server"
            return
        if ftype == SETTINGS:
            if not flags & F_ACK:
                writer.write(frame(SETTINGS, F_ACK, 0))
        elif ftype == PING:
            if not flags & F_ACK:
                writer.write(frame(PING, F_ACK, 0, payload))
        elif ftype in (HEADERS, CONT):
            if ftype == HEADERS:
                p = payload
                if flags & F_PADDED:
                    p = p[1:len(p) - p[0]]
                if flags & F_PRIORITY:
                    p = p[5:]
                cont = (sid, bool(flags & F_END_STREAM), bytearray(p))
            else:
                cont[2].extend(payload)
            if flags & F_END_HEADERS:
                s_id, end, block = cont
                cont = None
                streams[s_id] = {"hdrs": hp.decode(block), "body": bytearray()}
                if end:
                    request_done(s_id)
        elif ftype == DATA:
            p = payload
            if flags & F_PADDED:
                p = p[1:len(p) - p[0]]
            if length:
                # give the client its connection window back (the stream's first 64 KB are
                # more than any DNS query)
                writer.write(frame(WINUP, 0, 0, struct.pack("!I", length)))
            if sid in streams:
                streams[sid]["body"].extend(p)
                if flags & F_END_STREAM:
                    request_done(sid)
        elif ftype == RST:
            streams.pop(sid, None)
            log(ev="client-reset", c=c, stream=sid)
        elif ftype == GOAWAY:
            log(ev="client-goaway", c=c)
        await writer.drain()


# ---------------------------------------------------------------------------------------------

async def on_conn(sock, peer, args, ctx):
    c = next(CONN_IDS)
    log(ev="conn", c=c, peer="%s:%d" % peer[:2])
    st = {"queries": 0, "answers": 0, "resets": 0, "by": "client"}
    writer = None
    try:
        if args.mode == "stall-handshake":
            loop = asyncio.get_running_loop()
            while await loop.sock_recv(sock, 4096):
                pass
            return
        rw = await handshake(sock, ctx, c)
        if rw is None:
            return
        reader, writer = rw
        if args.proto == "dot":
            await dot_conn(reader, writer, args, c, st)
        else:
            await doh_conn(reader, writer, args, c, st)
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        log(ev="close", c=c, queries=st["queries"], by=st["by"])
        try:
            if writer is not None:
                writer.close()
            else:
                sock.close()
        except Exception:  # noqa: BLE001
            pass


async def serve(args):
    ctx = server_context(args)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(256)
    lsock.setblocking(False)
    loop = asyncio.get_running_loop()
    tasks = set()  # strong references: the loop keeps only weak ones
    print("ready", flush=True)
    while True:
        sock, peer = await loop.sock_accept(lsock)
        sock.setblocking(False)
        t = asyncio.create_task(on_conn(sock, peer, args, ctx))
        tasks.add(t)
        t.add_done_callback(tasks.discard)


def summary(path):
    s = {"connections": 0, "handshakes": 0, "resumed": 0, "handshake_failures": 0, "queries": 0,
         "answers": 0, "resets": 0, "goaways": 0, "sni": [], "alpn": [], "padded": 0,
         "lengths": [], "failures": []}
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ev = e.get("ev")
            if ev == "conn":
                s["connections"] += 1
            elif ev == "handshake":
                s["handshakes"] += 1
                s["resumed"] += 1 if e["resumed"] else 0
                for k in ("sni", "alpn"):
                    if e[k] not in s[k]:
                        s[k].append(e[k])
            elif ev == "handshake-failed":
                s["handshake_failures"] += 1
                s["failures"].append(e["error"])
            elif ev == "query":
                s["queries"] += 1
                if e["padding"] is not None:
                    s["padded"] += 1
                    if e["len"] not in s["lengths"]:
                        s["lengths"].append(e["len"])
            elif ev == "answer":
                s["answers"] += 1
            elif ev == "reset":
                s["resets"] += 1
            elif ev == "goaway":
                s["goaways"] += 1
    s["lengths"].sort()
    return s


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "summary":
        print(json.dumps(summary(sys.argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--proto", choices=["dot", "doh"], required=True)
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--answers", type=int, default=3)
    ap.add_argument("--log")
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--bad", choices=["500", "ctype"], default="500")
    ap.add_argument("--rst-code", type=int, default=2)
    ap.add_argument("--close-late", action="store_true")
    ap.add_argument("--delay", type=float, default=0, help="dot ok: answer each query this late")
    ap.add_argument("--keepalive", type=float, help="answer edns-tcp-keepalive with this timeout (s)")
    args = ap.parse_args()
    modes = {"dot": ["ok", "reorder", "close-after", "stall-handshake", "garbage", "silent", "wrong-id"],
             "doh": ["ok", "goaway-after", "rst", "status", "silent", "stall-handshake"]}
    if args.mode not in modes[args.proto]:
        ap.error("--mode for %s: one of %s" % (args.proto, ", ".join(modes[args.proto])))
    if args.answers < 1:
        ap.error("--answers must be at least 1")
    global LOG, ARGS
    ARGS = args
    if args.log:
        LOG = open(args.log, "a")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
