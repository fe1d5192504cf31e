#!/usr/bin/env python3
"""PROXY protocol client for t_proxyproto (python3 stdlib): connect from --src, send a PROXY v1/v2
header (or --raw bytes after it), possibly in --pieces with --pause between them, then speak
--then: doh (TLS, an HTTP/1.1 DoH GET: "http STATUS"), dot / dns (a length-prefixed query over
TLS / TCP: "rcode NAME id=N"), http (plain GET /: "http STATUS"), hello (TLS handshake: "tls
ok"), wait (until the server closes: "closed ms=N" or "open after N ms"). A connection the
server closes instead prints "closed (Error)"."""
import argparse, socket, ssl, struct, sys, time, os, ipaddress

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmsg  # noqa: E402

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, dst="127.0.0.1", sport=40000, dport=443, cmd=1, tlv=b""):
    if cmd == 0:
        return SIG + bytes([0x20, 0x00]) + struct.pack(">H", len(tlv)) + tlv
    a = ipaddress.ip_address(src)
    if a.version == 4:
        body = a.packed + ipaddress.ip_address(dst).packed + struct.pack(">HH", sport, dport)
        fam = 0x11
    else:
        body = a.packed + ipaddress.IPv6Address("::1").packed + struct.pack(">HH", sport, dport)
        fam = 0x21
    body += tlv
    return SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


def v1(src, dst="127.0.0.1"):
    fam = "TCP4" if ipaddress.ip_address(src).version == 4 else "TCP6"
    if fam == "TCP6":
        dst = "::1"
    return ("PROXY %s %s %s 40000 443\r\n" % (fam, src, dst)).encode()


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def wait_closed(s, limit):
    t0 = time.monotonic()
    s.settimeout(limit)
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
    except socket.timeout:
        return "open after %d ms" % ((time.monotonic() - t0) * 1000)
    except OSError:
        pass
    return "closed ms=%d" % ((time.monotonic() - t0) * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--v1")
    ap.add_argument("--v2")
    ap.add_argument("--local", action="store_true")
    ap.add_argument("--raw", help="hex bytes to send first")
    ap.add_argument("--pieces", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.3)
    ap.add_argument("--then", default="doh",
                    choices=["doh", "dot", "dns", "http", "wait", "hello"])
    ap.add_argument("--name", default="www.dohgate.test")
    ap.add_argument("--ca")
    ap.add_argument("--wait", type=float, default=10)
    a = ap.parse_args()
    head = b""
    if a.v1:
        head = v1(a.v1)
    elif a.v2:
        head = v2(a.v2)
    elif a.local:
        head = v2(None, cmd=0)
    if a.raw:
        head += bytes.fromhex(a.raw)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((a.src, 0))
    s.settimeout(a.wait)
    s.connect(("127.0.0.1", a.port))
    if head:
        n = max(1, a.pieces)
        step = (len(head) + n - 1) // n
        for i in range(0, len(head), step):
            s.sendall(head[i:i + step])
            if i + step < len(head):
                time.sleep(a.pause)
    try:
        if a.then == "wait":
            print(wait_closed(s, a.wait))
            return
        if a.then in ("doh", "dot", "hello"):
            ctx = ssl.create_default_context(cafile=a.ca)
            ctx.check_hostname = False
            if a.then == "dot":
                ctx.set_alpn_protocols(["dot"])
            s = ctx.wrap_socket(s, server_hostname="localhost")
            if a.then == "hello":
                print("tls ok")
                return
        if a.then == "doh":
            q = dnsmsg.build_query(a.name, "A")
            b64 = __import__("base64").urlsafe_b64encode(q).rstrip(b"=").decode()
            s.sendall(("GET /dns-query?dns=%s HTTP/1.1\r\nHost: localhost\r\n"
                       "Connection: close\r\n\r\n" % b64).encode())
            r = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                r += d
            print("http " + r.split(b" ", 2)[1].decode())
        elif a.then == "http":
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            r = s.recv(4096)
            print("http " + r.split(b" ", 2)[1].decode())
        else:  # dns, dot: one length-prefixed query
            q = dnsmsg.build_query(a.name, "A", qid=4242)
            s.sendall(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", recv_exact(s, 2))[0]
            ans = recv_exact(s, n)
            qid, flags = struct.unpack(">HH", ans[:4])
            print("rcode %s id=%d" % (dnsmsg.RCODES.get(flags & 15, flags & 15), qid))
    except (EOFError, ConnectionError, ssl.SSLError, socket.timeout) as e:
        print("closed (%s)" % type(e).__name__)


main()
