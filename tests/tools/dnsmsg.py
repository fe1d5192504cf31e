#!/usr/bin/env python3
"""DNS wire-format helper for the integration tests (python3 stdlib only).

  dnsmsg.py query NAME [TYPE] [options]   build a query; write it to --out FILE (binary) or print
                                          it as unpadded base64url (--b64, the DoH GET form)
      --id N          DNS ID (default 0, as RFC 8484 recommends)
      --opcode N      opcode (default 0 = QUERY)
      --qr            set the QR bit (a "response" sent as a query: must be refused)
      --qdcount N     QDCOUNT written in the header (default 1); N questions are written
      --truncate N    cut the message to its first N bytes
      --no-rd         clear RD
      --edns SIZE     add an OPT record with this UDP size
      --ecs ADDR/LEN  put an EDNS Client Subnet option (RFC 7871) in the OPT record (implies
                      --edns 1232 unless --edns is given); e.g. 192.0.2.0/24 or 2001:db8::/56
      --pad N         put an EDNS Padding option (RFC 7830) of N zero bytes in the OPT record
                      (implies --edns 1232 unless --edns is given)
  dnsmsg.py show FILE|-                   parse a message and print one line per item:
      hdr id=N qr=N opcode=N aa=N tc=N rd=N ra=N rcode=NAME qd=N an=N ns=N ar=N
      qd NAME TYPE
      an|ns|ar NAME TTL TYPE RDATA
      ar . OPT udp=N [pad=N]...  (pad=N: a Padding option of N bytes; pad=N!: not all zero)
  dnsmsg.py b64 FILE                      print the base64url of a file's bytes

Exit status 0, or 2 for bad input / a message that does not parse (the reason goes to stderr).
"""
import base64
import struct
import sys

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "SRV": 33, "OPT": 41, "DS": 43, "RRSIG": 46, "DNSKEY": 48, "HTTPS": 65, "AXFR": 252,
         "IXFR": 251, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def encode_name(name):
    out = b""
    name = name.rstrip(".")
    if name:
        for label in name.split("."):
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError("bad label in %r" % name)
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def ecs_option(subnet):
    """The EDNS Client Subnet option (code 8, RFC 7871) for "ADDR/LEN", source scope 0."""
    import ipaddress
    net = ipaddress.ip_network(subnet, strict=False)
    family = 1 if net.version == 4 else 2
    plen = net.prefixlen
    addr = net.network_address.packed[:(plen + 7) // 8]
    data = struct.pack("!HBB", family, plen, 0) + addr
    return struct.pack("!HH", 8, len(data)) + data


def build_query(name, qtype="A", qid=0, opcode=0, qr=False, qdcount=1, rd=True, edns=None,
                ecs=None, pad=None):
    t = TYPES[qtype.upper()] if not qtype.isdigit() else int(qtype)
    if (ecs or pad is not None) and not edns:
        edns = 1232
    flags = (0x8000 if qr else 0) | ((opcode & 0xF) << 11) | (0x0100 if rd else 0)
    arcount = 1 if edns else 0
    msg = struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, arcount)
    for _ in range(max(qdcount, 0)):
        msg += encode_name(name) + struct.pack("!HH", t, 1)
    if edns:
        opts = ecs_option(ecs) if ecs else b""
        if pad is not None:
            opts += struct.pack("!HH", 12, pad) + b"\0" * pad
        msg += b"\0" + struct.pack("!HHIH", 41, int(edns), 0, len(opts)) + opts
    return msg


def b64url(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


class Parser:
    def __init__(self, data):
        self.d = data

    def name(self, off):
        labels = []
        jumps = 0
        end = None
        while True:
            if off >= len(self.d):
                raise ValueError("name runs past the end")
            n = self.d[off]
            if n & 0xC0 == 0xC0:
                if off + 1 >= len(self.d):
                    raise ValueError("truncated pointer")
                if end is None:
                    end = off + 2
                off = ((n & 0x3F) << 8) | self.d[off + 1]
                jumps += 1
                if jumps > 64:
                    raise ValueError("pointer loop")
                continue
            if n & 0xC0:
                raise ValueError("bad label type")
            off += 1
            if n == 0:
                break
            labels.append(self.d[off:off + n].decode("ascii", "backslashreplace"))
            off += n
        return (".".join(labels) + ".").lower() if labels else ".", (end if end is not None else off)

    def rdata(self, t, off, rdlen):
        d = self.d[off:off + rdlen]
        if t == 1 and rdlen == 4:
            return ".".join(str(b) for b in d)
        if t == 28 and rdlen == 16:
            import ipaddress
            return str(ipaddress.IPv6Address(d))
        if t in (2, 5, 12):
            return self.name(off)[0]
        if t == 15:
            return "%d %s" % (struct.unpack("!H", d[:2])[0], self.name(off + 2)[0])
        if t == 16:
            parts, i = [], 0
            while i < len(d):
                n = d[i]
                parts.append('"%s"' % d[i + 1:i + 1 + n].decode("ascii", "backslashreplace"))
                i += 1 + n
            return " ".join(parts)
        if t == 6:
            mname, o = self.name(off)
            rname, o = self.name(o)
            serial, refresh, retry, expire, minimum = struct.unpack("!IIIII", self.d[o:o + 20])
            return "%s %s %d %d %d %d %d" % (mname, rname, serial, refresh, retry, expire, minimum)
        return "\\# %d %s" % (rdlen, d.hex())


def show(data, out):
    if len(data) < 12:
        raise ValueError("message shorter than a header (%d bytes)" % len(data))
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
    p = Parser(data)
    rcode = flags & 0xF
    out.write("hdr id=%d qr=%d opcode=%d aa=%d tc=%d rd=%d ra=%d rcode=%s qd=%d an=%d ns=%d ar=%d size=%d\n"
              % (qid, flags >> 15, (flags >> 11) & 0xF, (flags >> 10) & 1, (flags >> 9) & 1,
                 (flags >> 8) & 1, (flags >> 7) & 1, RCODES.get(rcode, str(rcode)), qd, an, ns, ar,
                 len(data)))
    off = 12
    for _ in range(qd):
        name, off = p.name(off)
        t, c = struct.unpack("!HH", data[off:off + 4])
        off += 4
        out.write("qd %s %s\n" % (name, TYPE_NAMES.get(t, str(t))))
    for sect, count in (("an", an), ("ns", ns), ("ar", ar)):
        for _ in range(count):
            name, off = p.name(off)
            if off + 10 > len(data):
                raise ValueError("truncated resource record")
            t, c, ttl, rdlen = struct.unpack("!HHIH", data[off:off + 10])
            off += 10
            if off + rdlen > len(data):
                raise ValueError("truncated rdata")
            if t == 41:
                pads, o = "", off
                while o + 4 <= off + rdlen:
                    code, olen = struct.unpack("!HH", data[o:o + 4])
                    if code == 12:
                        body = data[o + 4:o + 4 + olen]
                        pads += " pad=%d%s" % (olen, "!" if body.strip(b"\0") else "")
                    o += 4 + olen
                out.write("%s . OPT udp=%d%s\n" % (sect, c, pads))
            else:
                out.write("%s %s %d %s %s\n" % (sect, name, ttl, TYPE_NAMES.get(t, str(t)),
                                                p.rdata(t, off, rdlen)))
            off += rdlen
    if off != len(data):
        out.write("trailing %d\n" % (len(data) - off))


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "query":
        args = argv[2:]
        opts = {"id": 0, "opcode": 0, "qr": False, "qdcount": 1, "truncate": None, "rd": True,
                "edns": None, "ecs": None, "pad": None, "out": None, "b64": False}
        pos = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--qr":
                opts["qr"] = True
            elif a == "--no-rd":
                opts["rd"] = False
            elif a == "--b64":
                opts["b64"] = True
            elif a in ("--id", "--opcode", "--qdcount", "--truncate", "--edns", "--out", "--ecs",
                       "--pad"):
                i += 1
                v = args[i]
                opts[a[2:]] = v if a in ("--out", "--ecs") else int(v, 0)
            else:
                pos.append(a)
            i += 1
        if not pos:
            sys.stderr.write("query: NAME missing\n")
            return 2
        msg = build_query(pos[0], pos[1] if len(pos) > 1 else "A", opts["id"], opts["opcode"],
                          opts["qr"], opts["qdcount"], opts["rd"], opts["edns"], opts["ecs"],
                          opts["pad"])
        if opts["truncate"] is not None:
            msg = msg[:opts["truncate"]]
        if opts["b64"]:
            print(b64url(msg))
        elif opts["out"] and opts["out"] != "-":
            with open(opts["out"], "wb") as f:
                f.write(msg)
        else:
            sys.stdout.buffer.write(msg)
        return 0
    if cmd == "show":
        src = argv[2] if len(argv) > 2 else "-"
        data = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read()
        try:
            show(data, sys.stdout)
        except (ValueError, struct.error, IndexError) as e:
            sys.stdout.flush()
            sys.stderr.write("dnsmsg: cannot parse %d bytes: %s\n" % (len(data), e))
            return 2
        return 0
    if cmd == "b64":
        print(b64url(open(argv[2], "rb").read()))
        return 0
    sys.stderr.write("unknown command %r\n%s" % (cmd, __doc__))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
