#!/usr/bin/env python3
"""Connections that wait in a listener's backlog while dohgate is stopped (SIGSTOP), for
t_stop_backlog: open N connections to PORT and send each a whole request at once (MODE h1: an
HTTP/1.1 DoH GET; pp-h1: a PROXY v1 header, then the same GET; dns: a DNS query over TCP), print
"ready", wait for a line on stdin (the test sends SIGTERM and SIGCONT meanwhile), then read every
answer (up to 10 s) and print "answered K of N" (an HTTP 200 with a DNS answer, or a DNS
answer with the query's ID)."""
import os, socket, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dnsmsg  # noqa: E402


def request(mode, name, qid):
    q = dnsmsg.build_query(name, "A", qid=qid)
    if mode == "dns":
        return struct.pack(">H", len(q)) + q
    get = ("GET /dns-query?dns=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % dnsmsg.b64url(q)).encode()
    if mode == "pp-h1":
        return b"PROXY TCP4 192.0.2.5 127.0.0.1 40000 443\r\n" + get
    return get


def answered(mode, data, qid):
    if mode == "dns":
        if len(data) < 4:
            return False
        n = struct.unpack(">H", data[:2])[0]
        return len(data) >= 2 + n and struct.unpack(">H", data[2:4])[0] == qid
    return data.startswith(b"HTTP/1.1 200") and b"application/dns-message" in data


def main():
    port, n, mode, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    socks = []
    for i in range(n):
        # the load balancer's address in pp-h1 (proxy-protocol-from 127.0.0.2/32), so that the
        # test's own readiness checks from 127.0.0.1 need no header
        src = ("127.0.0.2", 0) if mode == "pp-h1" else None
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=src)
        s.sendall(request(mode, name, 1000 + i))
        socks.append(s)
    print("ready", flush=True)
    sys.stdin.readline()
    ok = 0
    deadline = time.time() + 10
    for i, s in enumerate(socks):
        data = b""
        try:
            while time.time() < deadline and not answered(mode, data, 1000 + i):
                s.settimeout(max(0.1, deadline - time.time()))
                c = s.recv(65536)
                if not c:
                    break
                data += c
        except OSError:
            pass
        ok += answered(mode, data, 1000 + i)
        s.close()
    print("answered %d of %d" % (ok, n), flush=True)


if __name__ == "__main__":
    main()
