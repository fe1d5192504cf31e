#!/usr/bin/env python3
"""A small HTTP/1.1 backend for the reverse-proxy tests (keep-alive, as real apps are).

  backend.py PORT [LOGFILE]

GET /echo     -> JSON of the method, path and request headers the backend received
POST /echo    -> JSON with the same plus the body's length and SHA-256 (a body with
                 Content-Length or Transfer-Encoding: chunked; "chunked": true for the latter)
POST /echo?wait=S&rate=B -> the same, but a slow reader: the body is read only after S seconds,
                 then at B bytes per second (16 KiB at a time; 0: at once), which is what a
                 proxy's back-pressure must absorb. With the environment BACKEND_RCVBUF=N the
                 listening socket's SO_RCVBUF is N, so the kernel buffers little in front of it.
POST /early   -> 413 at once, without reading the body (a backend's early answer)
GET /chunked  -> a body sent with Transfer-Encoding: chunked (no length)
GET /big?n=N  -> N bytes (Content-Length), pattern bytes
GET /slow?s=S -> answers after S seconds
GET /drop-reused?on=1 (or 0) -> from now on, a request that arrives on a kept-alive connection
                 that already served one is not answered: the connection is closed (the race of a
                 backend closing an idle connection just as the proxy reuses it); logged as
                 "DROPPED METHOD PATH"
GET /status?code=TEXT[&line=FIELD-LINE] -> a response whose status line is "HTTP/1.1 TEXT Test"
                 as given (99, 600, 2000, abc...), with FIELD-LINE (raw, e.g. "X-A : b") among
                 its fields; the connection is closed after it
anything else -> 404 from the backend (with a marker header)
Each request line is appended to LOGFILE when given ("METHOD PATH"), after the request's head as
it arrived, byte for byte, one line each: "> " + the line without its CRLF, control characters
and backslashes escaped (\\r, \\t, \\x01, \\\\), then ">" for the empty line that ends it.
"""
import hashlib
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOG = sys.argv[2] if len(sys.argv) > 2 else None
DROP_REUSED = False


class TeeReader:
    """The connection's input, keeping the lines read with readline(): the request line and the
    field lines, which is how http.server reads a head (bodies are read with read())."""

    def __init__(self, f):
        self.f = f
        self.lines = []

    def readline(self, *a):
        line = self.f.readline(*a)
        self.lines.append(line)
        return line

    def __getattr__(self, name):
        return getattr(self.f, name)


def escape(line):
    out = []
    for ch in line.decode("latin-1"):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.rfile = TeeReader(self.rfile)

    def parse_request(self):
        ok = super().parse_request()
        lines, self.rfile.lines = self.rfile.lines, []
        if LOG and lines:
            with open(LOG, "a") as f:
                for line in lines:
                    if line.endswith(b"\n"):
                        line = line[:-1]
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    f.write("> %s\n" % escape(line) if line else ">\n")
        return ok

    def log_message(self, fmt, *args):
        if LOG:
            with open(LOG, "a") as f:
                f.write("%s %s\n" % (self.command, self.path))

    def _send(self, code, body, ctype="application/json", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", "yes")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dropped(self):
        """True when this request is to be dropped with its connection (see /drop-reused)."""
        served = getattr(self, "served", 0)  # one handler object per connection
        self.served = served + 1
        if not (DROP_REUSED and served > 0):
            return False
        if LOG:
            with open(LOG, "a") as f:
                f.write("DROPPED %s %s\n" % (self.command, self.path))
        self.close_connection = True
        return True

    def _echo(self, body=b""):
        d = {"method": self.command, "path": self.path,
             "headers": {k.lower(): v for k, v in self.headers.items()},
             "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
             "chunked": getattr(self, "chunked", False)}
        self._send(200, json.dumps(d).encode())

    def do_GET(self):
        global DROP_REUSED
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/drop-reused":
            DROP_REUSED = q.get("on", ["1"])[0] == "1"
            self.served = getattr(self, "served", 0) + 1  # never dropped itself, but counts
            self._send(200, b"ok\n", "text/plain")
            return
        if self._dropped():
            return
        if u.path == "/echo":
            self._echo()
        elif u.path == "/status":
            code = q.get("code", ["200"])[0]
            head = "HTTP/1.1 %s Test\r\n" % code
            for line in q.get("line", []):
                head += line + "\r\n"
            head += "Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
            self.log_request()
            self.wfile.write(head.encode("latin-1") + b"ok\n")
            self.close_connection = True
        elif u.path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(10):
                chunk = ("line %d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif u.path == "/big":
            n = int(q.get("n", ["1000000"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 256
            left = n
            while left > 0:
                k = min(left, len(block))
                self.wfile.write(block[:k])
                left -= k
        elif u.path == "/slow":
            time.sleep(float(q.get("s", ["5"])[0]))
            self._send(200, b"slow\n", "text/plain")
        else:
            self._send(404, b"backend: not found\n", "text/plain")

    do_HEAD = do_GET

    def _read_body(self, wait=0.0, rate=0):
        """The request body (Content-Length or chunked), after WAIT seconds, at RATE bytes/s."""
        if wait:
            time.sleep(wait)
        step = 16384

        def take(n):
            out = b""
            while len(out) < n:
                k = min(n - len(out), step) if rate else n - len(out)
                got = self.rfile.read(k)
                if not got:
                    break
                out += got
                if rate:
                    time.sleep(len(got) / rate)
            return out

        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.chunked = True
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self.rfile.lines = []  # body lines are not the next request's head
                    return body
                body += take(size)
                self.rfile.readline()  # the CRLF after the chunk
        n = int(self.headers.get("Content-Length", "0"))
        return take(n) if n else b""

    def _early(self):
        """POST /early: 413 before reading any of the body, then the connection ends: the
        write side at once, the read side once the proxy closed (or after 5 s), so that the
        unread body does not turn the close into a reset that could lose the answer."""
        body = b"backend: too large\n"
        self.wfile.write(b"HTTP/1.1 413 Too Large\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\nX-Backend: early\r\n\r\n%s"
                         % (len(body), body))
        self.wfile.flush()
        self.log_request(413)
        self.close_connection = True
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def do_POST(self):
        if self._dropped():
            return
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/early":
            self._early()
            return
        self.chunked = False
        body = self._read_body(float(q.get("wait", ["0"])[0]), int(q.get("rate", ["0"])[0]))
        if u.path == "/echo":
            self._echo(body)
        else:
            self._send(404, b"backend: not found\n", "text/plain")


    def do_PUT(self):
        if self._dropped():
            return
        self.chunked = False
        self._echo(self._read_body())

    def do_DELETE(self):
        if self._dropped():
            return
        self._echo()


if __name__ == "__main__":
    ThreadingHTTPServer.daemon_threads = True
    # hundreds of connections at once: a proxy that streams request bodies connects for each
    # request at its head (t_bodies), and t_hold opens a hundred; socketserver's backlog is 5
    ThreadingHTTPServer.request_queue_size = 1024
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H, bind_and_activate=False)
    srv.allow_reuse_address = True
    if os.environ.get("BACKEND_RCVBUF"):
        # before listen(): accepted sockets inherit it, and so does the window they announce
        srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(os.environ["BACKEND_RCVBUF"]))
    srv.server_bind()
    srv.server_activate()
    srv.serve_forever()
