#!/usr/bin/env python3
"""Fault-injecting DNS stub upstream for dohgate's integration tests (python3 stdlib only).

  stubdns.py PORT LOGFILE [ADDR [MODE]]  (ADDR default 127.0.0.1; UDP and TCP on the same port)

MODE makes every query behave as if its first label were MODE (e.g. "garbage", "wrongid",
"silent", "slow-300"): a whole upstream that is broken in one way, for upstream-health tests.

It appends one line per received query to LOGFILE, "udp NAME" or "tcp NAME" (NAME lower-cased,
with the trailing dot), so that a test can count the queries that reached the upstream. When the
query's OPT record carries an EDNS Client Subnet option (code 8), " ecs" is appended to the line
("udp NAME ecs"): a forwarder that strips ECS never causes such a line.

The behaviour is chosen by the first label of the query name:
  silent.*          no answer at all (TCP: the connection stays open, nothing is sent)
  garbage.*         random bytes that are no DNS answer (the first two never equal the query ID)
  wrongid.*         an answer with a wrong ID only, never the right one
  wrongid-then-ok.* an answer with a wrong ID, then the correct answer
  wrongq.*          the right ID but a different question (other.<name>)
  tc.*              UDP: TC=1 and no records; TCP: NOERROR with A 192.0.2.53
  slow-N.*          the normal answer after N milliseconds
  nxdomain.*        NXDOMAIN, authority SOA with TTL 3600 and MINIMUM 300 (RFC 2308: 300)
  nxlow.*           NXDOMAIN, authority SOA with TTL 100 and MINIMUM 300 (RFC 2308: 100)
  servfail.*        SERVFAIL
  ttl-N.*           NOERROR, A 192.0.2.1 with TTL N
  once-N.*          the first query for the name: as ttl-N; every later one: no answer (silent),
                    an upstream that stops answering while the process stays up
  anything else     NOERROR, A 192.0.2.1 TTL 60 for type A (other types: NODATA with a SOA)
The answers carry no OPT record. Queries that do not parse are logged as "udp ?" and dropped.
"""
import os
import random
import socket
import struct
import sys
import threading

ZONE_SOA_OWNER = b"\x04stub\x04test\x00"
log_lock = threading.Lock()
log_file = None
once_seen = set()  # once-N names already answered (guarded by log_lock)
forced_mode = None  # MODE: the behaviour of every query


def log(transport, name):
    with log_lock:
        log_file.write("%s %s\n" % (transport, name))
        log_file.flush()


def parse_question(msg):
    """Return (id, flags, qname text, question bytes) or None."""
    if len(msg) < 12:
        return None
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    if qd < 1:
        return None
    off, labels = 12, []
    while True:
        if off >= len(msg):
            return None
        n = msg[off]
        if n & 0xC0:
            return None
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace").lower())
        off += n
    if off + 4 > len(msg):
        return None
    qname = ".".join(labels) + "." if labels else "."
    return qid, flags, qname, msg[12:off + 4]


def skip_name(msg, off):
    """Offset after the (possibly compressed) name at @off; raises IndexError/ValueError."""
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n & 0xC0:
            raise ValueError("bad label type")
        off += 1 + n
        if n == 0:
            return off


def edns_option(msg, code_wanted):
    """(the message has an OPT record in its additional section, the data length of its option
    code_wanted, or None when it has none)."""
    try:
        qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
        off = 12
        for _ in range(qd):
            off = skip_name(msg, off) + 4
        for i in range(an + ns + ar):
            off = skip_name(msg, off)
            rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            if i >= an + ns and rtype == 41:
                o, end = off, off + rdlen
                while o + 4 <= end:
                    code, olen = struct.unpack("!HH", msg[o:o + 4])
                    if code == code_wanted:
                        return True, olen
                    o += 4 + olen
                return True, None
            off += rdlen
    except (IndexError, ValueError, struct.error):
        pass
    return False, None


def has_ecs(msg):
    """True when the message's OPT record (additional section) carries option code 8 (ECS)."""
    return edns_option(msg, 8)[1] is not None


def soa_rr(ttl, minimum):
    rdata = (b"\x02ns" + ZONE_SOA_OWNER + b"\x0ahostmaster" + ZONE_SOA_OWNER
             + struct.pack("!IIIII", 1, 3600, 600, 86400, minimum))
    return ZONE_SOA_OWNER + struct.pack("!HHIH", 6, 1, ttl, len(rdata)) + rdata


def a_rr(ip, ttl):
    # owner: a pointer to the question name at offset 12
    return b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)


def answer(qid, qflags, question, rcode=0, an=(), ns=(), tc=False):
    flags = 0x8000 | (qflags & 0x7800) | 0x0400 | (qflags & 0x0100) | 0x0080 | (rcode & 0xF)
    if tc:
        flags |= 0x0200
    hdr = struct.pack("!HHHHHH", qid, flags, 1, len(an), len(ns), 0)
    return hdr + question + b"".join(an) + b"".join(ns)


def normal(qid, qflags, qname, question, ttl=60, ip="192.0.2.1"):
    qtype = struct.unpack("!H", question[-4:-2])[0]
    if qtype in (1, 255):
        return answer(qid, qflags, question, an=[a_rr(ip, ttl)])
    return answer(qid, qflags, question, ns=[soa_rr(60, 60)])


def responses(transport, msg):
    """The list of (delay_ms, bytes) to send back for one query."""
    q = parse_question(msg)
    if q is None:
        log(transport, "?")
        return []
    qid, qflags, qname, question = q
    log(transport, qname + (" ecs" if has_ecs(msg) else ""))
    first = forced_mode or qname.split(".", 1)[0]
    if first == "silent":
        return []
    if first == "garbage":
        n = random.randint(12, 80)
        junk = bytearray(os.urandom(n))
        bad_id = (qid ^ random.randint(1, 0xFFFF)) & 0xFFFF
        junk[0:2] = struct.pack("!H", bad_id)
        return [(0, bytes(junk)), (0, os.urandom(5))]
    if first == "wrongid":
        return [(0, normal((qid ^ 0x5A5A) & 0xFFFF, qflags, qname, question))]
    if first == "wrongid-then-ok":
        return [(0, normal((qid ^ 0x5A5A) & 0xFFFF, qflags, qname, question)),
                (0, normal(qid, qflags, qname, question))]
    if first == "wrongq":
        other = b"\x05other" + question
        return [(0, answer(qid, qflags, other, an=[a_rr("192.0.2.66", 60)]))]
    if first == "tc":
        if transport == "udp":
            return [(0, answer(qid, qflags, question, tc=True))]
        return [(0, normal(qid, qflags, qname, question, ip="192.0.2.53"))]
    if first.startswith("slow-") and first[5:].isdigit():
        return [(int(first[5:]), normal(qid, qflags, qname, question))]
    if first.startswith("once-") and first[5:].isdigit():
        with log_lock:
            seen = qname in once_seen
            once_seen.add(qname)
        if seen:
            return []
        return [(0, normal(qid, qflags, qname, question, ttl=int(first[5:])))]
    if first.startswith("ttl-") and first[4:].isdigit():
        return [(0, normal(qid, qflags, qname, question, ttl=int(first[4:])))]
    if first == "nxdomain":
        return [(0, answer(qid, qflags, question, rcode=3, ns=[soa_rr(3600, 300)]))]
    if first == "nxlow":
        return [(0, answer(qid, qflags, question, rcode=3, ns=[soa_rr(100, 300)]))]
    if first == "servfail":
        return [(0, answer(qid, qflags, question, rcode=2))]
    return [(0, normal(qid, qflags, qname, question))]


def schedule(delay_ms, fn):
    if delay_ms <= 0:
        fn()
    else:
        t = threading.Timer(delay_ms / 1000.0, fn)
        t.daemon = True
        t.start()


def serve_udp(sock):
    while True:
        msg, peer = sock.recvfrom(65535)
        for delay, data in responses("udp", msg):
            schedule(delay, lambda d=data, p=peer: sock.sendto(d, p))


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_tcp_conn(conn):
    send_lock = threading.Lock()

    def send(data):
        with send_lock:
            try:
                conn.sendall(struct.pack("!H", len(data)) + data)
            except OSError:
                pass

    try:
        while True:
            hdr = recv_exact(conn, 2)
            if hdr is None:
                break
            msg = recv_exact(conn, struct.unpack("!H", hdr)[0])
            if msg is None:
                break
            for delay, data in responses("tcp", msg):
                schedule(delay, lambda d=data: send(d))
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def serve_tcp(lsock):
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=serve_tcp_conn, args=(conn,), daemon=True).start()


def main():
    global log_file, forced_mode
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    port = int(sys.argv[1])
    addr = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    log_file = open(sys.argv[2], "a")
    forced_mode = sys.argv[4] if len(sys.argv) > 4 else None
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((addr, port))
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, port))
    t.listen(128)
    threading.Thread(target=serve_tcp, args=(t,), daemon=True).start()
    sys.stderr.write("stubdns: listening on %s port %d (udp+tcp)\n" % (addr, port))
    sys.stderr.flush()
    try:
        serve_udp(u)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
