#!/usr/bin/env python3
"""A DNS-over-TCP / DNS-over-TLS client for the integration tests (python3 stdlib only).

  dnsconn.py [options] HOST PORT [QUERY...]

Opens one connection (or --conns N), sends --raw bytes if given, then every QUERY framed with its
2-byte length in ONE write (pipelined, IDs 1, 2, ... in order), and prints one line per answer in
the order the answers arrive:
  ans id=N rcode=NAME an=N len=N [ka=N] [pad=N] at=MS
      (ka: the edns-tcp-keepalive value, RFC 7828; pad: the Padding option's length, RFC 7830;
       at: ms from the queries' write to the answer)
then, once every query is answered (or the server closed, or --timeout passed), with
--wait-close S it keeps reading for up to S seconds and prints "closed ms=N" (N: ms from the
last answer, or from the connection's start when nothing was sent) or "open"; without it, it
prints "closed" when the server closed before the answers were all in.

QUERY: NAME[/TYPE][+ka][+pad][+edns]   (+ka: an empty edns-tcp-keepalive option, +pad: a
Padding option so that the server pads its answer, +edns: an OPT record without options)

Options:
  --tls              TLS (no certificate check unless --ca)
  --ca FILE          verify the server's certificate with this CA; --sni NAME as server name
  --alpn A,B         ALPN protocols to offer; prints "alpn X" (X: selected, or "none")
  --raw HEX          bytes sent first, before the queries
  --timeout S        give up waiting for answers after S seconds (default 5)
  --half-close       shut down our sending side after the queries (the server must still answer)
  --conns N          open N connections first (all held open), then send the queries on each;
                     prints "conn I: answered" or "conn I: closed" per connection
  --again S          once every query is answered, wait S seconds with the connection idle,
                     print "again", and send the same queries once more on it (their answers
                     are printed the same way)

Exit status 0 (even when the server closed: the test judges the output), 2 on a client error
(connection refused, TLS handshake failure: the reason is printed as "error ...").
"""
import os
import select
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmsg  # noqa: E402

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def build(spec, qid):
    parts = spec.split("+")
    name, _, qtype = parts[0].partition("/")
    flags = set(parts[1:])
    msg = dnsmsg.build_query(name, qtype or "A", qid=qid,
                             edns=1232 if flags & {"ka", "pad", "edns"} else None)
    opts = b""
    if "ka" in flags:
        opts += struct.pack("!HH", 11, 0)
    if "pad" in flags:
        opts += struct.pack("!HH", 12, 16) + bytes(16)
    if opts:
        # dnsmsg ends the query with an empty OPT record: set its RDLENGTH, append the options
        msg = msg[:-2] + struct.pack("!H", len(opts)) + opts
    return struct.pack("!H", len(msg)) + msg


def edns_options(msg):
    """{code: value} of the OPT record, {} without one."""
    try:
        qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
        off = 12
        for _ in range(qd):
            off = skip_name(msg, off) + 4
        for i in range(an + ns + ar):
            off = skip_name(msg, off)
            rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            if rtype == 41 and i >= an + ns:
                out, p = {}, off
                while p + 4 <= off + rdlen:
                    code, olen = struct.unpack("!HH", msg[p:p + 4])
                    out[code] = msg[p + 4:p + 4 + olen]
                    p += 4 + olen
                return out
            off += rdlen
    except (IndexError, struct.error):
        pass
    return {}


def skip_name(msg, off):
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1
        if n == 0:
            return off
        off += n


def describe(msg):
    qid, flags, _, an = struct.unpack("!HHHH", msg[:8])
    line = "ans id=%d rcode=%s an=%d len=%d" % (qid, RCODES.get(flags & 15, str(flags & 15)), an,
                                                len(msg))
    opts = edns_options(msg)
    if 11 in opts:
        v = opts[11]
        line += " ka=%d" % struct.unpack("!H", v)[0] if len(v) == 2 else " ka=?"
    if 12 in opts:
        line += " pad=%d" % len(opts[12])
    return line


def connect(args):
    s = socket.create_connection((args["host"], args["port"]), timeout=args["timeout"])
    if not args["tls"]:
        return s
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args["ca"]:
        ctx.load_verify_locations(args["ca"])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args["alpn"]:
        ctx.set_alpn_protocols(args["alpn"].split(","))
    t = ctx.wrap_socket(s, server_hostname=args["sni"] or args["host"])
    if args["alpn"]:
        print("alpn %s" % (t.selected_alpn_protocol() or "none"))
    return t


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.closed = False

    def fill(self, deadline):
        """Read once; False at the deadline or when closed."""
        left = deadline - time.monotonic()
        if left <= 0 or self.closed:
            return False
        if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def message(self, deadline):
        while True:
            if len(self.buf) >= 2:
                n = struct.unpack("!H", self.buf[:2])[0]
                if len(self.buf) >= 2 + n:
                    msg, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
                    return msg
            if not self.fill(deadline):
                return None


def run_one(args, sock, queries):
    r = Reader(sock)
    start = time.monotonic()
    out = bytes.fromhex(args["raw"]) if args["raw"] else b""
    out += b"".join(build(q, i + 1) for i, q in enumerate(queries))
    if out:
        sock.sendall(out)
    if args["half_close"]:
        sock.shutdown(socket.SHUT_WR)
    deadline = start + args["timeout"]
    got = 0
    last = start
    while got < len(queries):
        msg = r.message(deadline)
        if msg is None:
            break
        got += 1
        last = time.monotonic()
        print("%s at=%d" % (describe(msg), (last - start) * 1000), flush=True)
    if args["wait_close"] is not None:
        end = time.monotonic() + args["wait_close"]
        while r.fill(end):
            pass
        print("closed ms=%d" % ((time.monotonic() - last) * 1000) if r.closed else "open")
    elif got < len(queries) and r.closed:
        print("closed")
    return got, r.closed


def main(argv):
    args = {"tls": False, "ca": None, "sni": None, "alpn": None, "raw": None, "timeout": 5.0,
            "wait_close": None, "conns": 0, "half_close": False, "again": None}
    pos = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--tls":
            args["tls"] = True
        elif a == "--half-close":
            args["half_close"] = True
        elif a in ("--ca", "--sni", "--alpn", "--raw"):
            args[a[2:]] = argv[i + 1]
            i += 1
        elif a in ("--timeout", "--wait-close", "--again"):
            args[a[2:].replace("-", "_")] = float(argv[i + 1])
            i += 1
        elif a == "--conns":
            args["conns"] = int(argv[i + 1])
            i += 1
        else:
            pos.append(a)
        i += 1
    if len(pos) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    args["host"], args["port"] = pos[0], int(pos[1])
    queries = pos[2:]
    try:
        if args["conns"]:
            socks = [connect(args) for _ in range(args["conns"])]
            time.sleep(0.3)  # let the server decide about each one
            for n, s in enumerate(socks):
                try:
                    got, _ = run_one(args, s, queries)
                except OSError:
                    got = 0
                print("conn %d: %s" % (n + 1, "answered" if got == len(queries) else "closed"))
            return 0
        sock = connect(args)
        got, closed = run_one(args, sock, queries)
        if args["again"] is not None and got == len(queries) and not closed:
            time.sleep(args["again"])
            print("again", flush=True)
            run_one(args, sock, queries)
    except (OSError, ssl.SSLError) as e:
        print("error %s" % e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
