#!/usr/bin/env python3
"""Plain-DNS-over-UDP client for dohgate's integration tests (python3 stdlib only).

  udpdns.py ask ADDR PORT FILE... [--src IP] [--timeout S] [--out PREFIX]
      Send each FILE (raw bytes: a query from `dnsmsg.py query --out`, or anything else) as one
      datagram from one socket (bound to --src, default 127.0.0.1), in order, all at once, then
      wait up to --timeout seconds (default 2) for answers. Prints one line per FILE, in order:
      "answer FROM-ADDR SIZE" (the answer whose ID is the FILE's first two bytes; its bytes go
      to PREFIX.N, N counting from 1) or "none". Answers whose ID matches no FILE, or that come
      from another address than ADDR, are printed as "stray FROM-ADDR SIZE".

  udpdns.py flood ADDR PORT FILE --count N --seconds S --src IP --other IP [--other-every MS]
                 [--ports K]
      Rate-limit test: send N copies of the query FILE (IDs 1..N) evenly over S seconds from
      --src, round robin over K sockets (source ports; default 1: SO_REUSEPORT hands each port
      to one worker, several reach several workers), and meanwhile, every --other-every ms
      (default 100), one copy from a socket on --other (IDs from 40000). Then wait 1 s for late
      answers and print one JSON object: sent, full (answers with TC=0 and records), tc (TC=1
      answers without records), bad (anything else), other_sent, other_full, other_bad, span
      (seconds from the first send to the last flood send), window (from the first send to the
      last answer received: the server handled every answered query within it).
"""
import json
import select
import socket
import struct
import sys
import time


def opt(args, name, default=None):
    if name in args:
        i = args.index(name)
        v = args[i + 1]
        del args[i:i + 2]
        return v
    return default


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def sock_on(src, dst):
    s = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((src, 0))
    s.setblocking(False)
    return s


def ask(args):
    src = opt(args, "--src", "127.0.0.1")
    timeout = float(opt(args, "--timeout", "2"))
    prefix = opt(args, "--out")
    addr, port, files = args[0], int(args[1]), args[2:]
    s = sock_on(src, addr)
    msgs = [open(f, "rb").read() for f in files]
    want = {}
    for i, m in enumerate(msgs):
        if len(m) >= 2:
            want.setdefault(m[:2], []).append(i)
        s.sendto(m, (addr, port))
    got = [None] * len(msgs)
    strays = []
    end = time.monotonic() + timeout
    while any(g is None for g in got) and time.monotonic() < end:
        r, _, _ = select.select([s], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        data, peer = s.recvfrom(65535)
        idx = want.get(data[:2], [])
        idx = [i for i in idx if got[i] is None]
        if peer[0] != addr or not idx:
            strays.append("stray %s %d" % (peer[0], len(data)))
            continue
        got[idx[0]] = (peer[0], data)
    for i, g in enumerate(got):
        if g is None:
            print("none")
            continue
        print("answer %s %d" % (g[0], len(g[1])))
        if prefix:
            with open("%s.%d" % (prefix, i + 1), "wb") as f:
                f.write(g[1])
    for line in strays:
        print(line)


def classify(data):
    """'full' (TC=0, answer records), 'tc' (TC=1, no records), or 'other'."""
    if len(data) < 12 or not data[2] & 0x80:
        return "other"
    an, ns = struct.unpack("!HH", data[6:10])
    if data[2] & 0x02:
        return "tc" if an == 0 and ns == 0 else "other"
    return "full" if an > 0 else "other"


def flood(args):
    count = int(opt(args, "--count"))
    seconds = float(opt(args, "--seconds"))
    src = opt(args, "--src")
    other = opt(args, "--other")
    every = float(opt(args, "--other-every", "100")) / 1000.0
    nports = int(opt(args, "--ports", "1"))
    addr, port, qfile = args[0], int(args[1]), args[2]
    q = open(qfile, "rb").read()
    flood_socks = [sock_on(src, addr) for _ in range(nports)]
    b = sock_on(other, addr)
    last_recv = [0.0]
    res = {"sent": 0, "full": 0, "tc": 0, "bad": 0, "other_sent": 0, "other_full": 0,
           "other_bad": 0}
    seen = set()

    def drain(timeout):
        r, _, _ = select.select(flood_socks + [b], [], [], timeout)
        for s in r:
            while True:
                try:
                    data, peer = s.recvfrom(65535)
                except BlockingIOError:
                    break
                qid = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else -1
                if (s, qid) in seen:
                    continue  # one answer per query counts
                seen.add((s, qid))
                last_recv[0] = time.monotonic()
                kind = classify(data)
                if s is not b:
                    res[kind if kind != "other" else "bad"] += 1
                else:
                    res["other_full" if kind == "full" else "other_bad"] += 1

    t0 = time.monotonic()
    next_other = t0
    for i in range(count):
        due = t0 + seconds * i / count
        while True:
            now = time.monotonic()
            if now >= next_other:
                res["other_sent"] += 1
                b.sendto(struct.pack("!H", 40000 + res["other_sent"]) + q[2:], (addr, port))
                next_other += every
            if now >= due:
                break
            drain(min(due, next_other) - now)
        flood_socks[i % nports].sendto(struct.pack("!H", i + 1) + q[2:], (addr, port))
        res["sent"] += 1
    res["span"] = round(time.monotonic() - t0, 3)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        drain(max(0.0, end - time.monotonic()))
    res["window"] = round(max(last_recv[0] - t0, 0.0), 3)
    print(json.dumps(res))


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__)
        sys.exit(2)
    cmd = args.pop(0)
    if cmd == "ask":
        ask(args)
    elif cmd == "flood":
        flood(args)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
