#!/usr/bin/env python3
"""One HTTP/2 connection kept in use across a certificate swap (stdlib only; t_acme).

  h2keep.py --port P --sni NAME --cert-out FILE [--interval 0.5] [--max 240]
            [--query B64] [--cafile F]

Opens one TLS connection to 127.0.0.1:P with SNI NAME and ALPN h2 (the certificate is not
verified unless --cafile: it is the self-signed one before the swap), writes the certificate
the server presented on this connection to FILE (PEM, so that the test can show the connection
began before the swap), then sends a GET /dns-query?dns=B64 on a new stream every --interval
seconds and prints one line per answer: "resp N STATUS" (N counts from 1). Runs until SIGUSR1
(or --max seconds), then prints "summary sent=S ok=K" (K: answers with :status 200) and exits
0 when every request it sent was answered 200 on this one connection. A connection the server
closes, a GOAWAY or a reset stream prints "broken WHY" and exits 1 at once: the client never
reconnects, so that a swap that broke open connections cannot pass. Lines on stdout only,
flushed, so that a test can wait for them.
"""
import argparse
import asyncio
import signal
import ssl
import sys

from h2conns import PREFACE, frame, literal

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7


def say(line):
    print(line, flush=True)


def request_block(authority, path):
    path = path.encode()
    # :path as a literal with a 7-bit length prefix that may continue (RFC 7541 §5.1)
    n = len(path)
    if n < 127:
        plen = bytes([n])
    else:
        n -= 127
        plen = b"\x7f"
        while n >= 128:
            plen += bytes([n % 128 + 128])
            n //= 128
        plen += bytes([n])
    return (literal(b":method", b"GET") + literal(b":scheme", b"https") +
            literal(b":authority", authority.encode()) + b"\x00" + bytes([5]) + b":path" +
            plen + path + literal(b"accept", b"application/dns-message"))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni", required=True)
    ap.add_argument("--cert-out", required=True)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--max", type=float, default=240)
    ap.add_argument("--query", default="AAABAAABAAAAAAAAA3d3dwdkb2hnYXRlBHRlc3QAAAEAAQ")
    ap.add_argument("--cafile")
    args = ap.parse_args()
    ctx = ssl.create_default_context(cafile=args.cafile)
    if not args.cafile:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", args.port, ssl=ctx, server_hostname=args.sni), 30)
    sslobj = writer.get_extra_info("ssl_object")
    if sslobj.selected_alpn_protocol() != "h2":
        say("broken no-h2")
        return 1
    with open(args.cert_out, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(sslobj.getpeercert(binary_form=True)))
    writer.write(PREFACE + frame(SETTINGS, 0, 0))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, stop.set)
    loop.call_later(args.max, stop.set)
    state = {"sent": 0, "ok": 0, "answered": 0, "broken": None}
    pending = {}  # stream id -> request number

    async def read_frames():
        try:
            while True:
                hdr = await reader.readexactly(9)
                length = int.from_bytes(hdr[:3], "big")
                ftype, flags = hdr[3], hdr[4]
                sid = int.from_bytes(hdr[5:9], "big") & 0x7FFFFFFF
                payload = await reader.readexactly(length)
                if ftype == SETTINGS and not flags & 1:
                    writer.write(frame(SETTINGS, 1, 0))
                elif ftype == PING and not flags & 1:
                    writer.write(frame(PING, 1, 0, payload))
                elif ftype == GOAWAY:
                    state["broken"] = "goaway"
                    break
                elif ftype == RST:
                    state["broken"] = "rst_stream %d" % sid
                    break
                elif ftype == HEADERS and sid in pending:
                    block = payload
                    if flags & 0x8:  # PADDED
                        block = block[1:len(block) - block[0]]
                    if flags & 0x20:  # PRIORITY
                        block = block[5:]
                    # nghttp2 sends :status 200 as the static index 8 (0x88); others as a
                    # literal: report 200 or "other"
                    status = "200" if block[:1] == b"\x88" else "other"
                    n = pending.pop(sid)
                    state["answered"] += 1
                    if status == "200":
                        state["ok"] += 1
                    say("resp %d %s" % (n, status))
                elif ftype == DATA and length:
                    # give back what the body took, for the connection and the stream
                    writer.write(frame(8, 0, 0, length.to_bytes(4, "big")))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as e:
            state["broken"] = "closed (%s)" % type(e).__name__
        stop.set()

    rtask = asyncio.ensure_future(read_frames())
    sid = 1
    while not stop.is_set():
        state["sent"] += 1
        pending[sid] = state["sent"]
        path = "/dns-query?dns=%s&n=%d" % (args.query, state["sent"])
        writer.write(frame(HEADERS, 0x5, sid, request_block(args.sni, path)))
        sid += 2
        try:
            await asyncio.wait_for(stop.wait(), args.interval)
        except asyncio.TimeoutError:
            pass
    # the last requests' answers: a second at most
    for _ in range(20):
        if not pending or state["broken"]:
            break
        await asyncio.sleep(0.05)
    if state["broken"]:
        say("broken %s" % state["broken"])
    say("summary sent=%d ok=%d" % (state["sent"], state["ok"]))
    rtask.cancel()
    writer.close()
    return 0 if not state["broken"] and state["ok"] == state["sent"] else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
