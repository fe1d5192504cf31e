#!/usr/bin/env python3
"""dohgate against its peers, as markdown tables, from the lab's RESULT lines.

usage: tests/bench/table.py results.txt [more results.txt ...]

Reads the results.txt files written by ../shared/lab/bench/run-all.sh (tests/bench/run.sh calls
this at the end). Several files may be given: their rounds are pooled, so a peer measured in one run
and dohgate in another land in the same table. Every figure is the median over the rounds;
lower is better for all rows of the first table. Standard library only.
"""
import re
import statistics
import sys
from collections import defaultdict

PEERS = ["unbound", "dnsdist", "kresd", "bind"]
SERVERS = PEERS + ["dohgate"]
DASH = "–"

# (label, short name for the per-round line, test, metric, divisor, digits, target)
# target: a number (dohgate must be <= it) or "peer" (<= the best peer's median)
ROWS = [
    ("cached, 100 hot GET URIs, 4×50 streams, µs/req", "cached", "cached", "server_us_per_op", 1, 1, 2.9),
    ("one URL, 4×100 streams, µs/req", "h2load", "h2load", "server_us_per_op", 1, 1, 2.6),
    ("cache miss, each name once, µs/query", "miss", "miss", "server_us_per_op", 1, 1, 6),
    ("RSS per idle TLS+h2 connection at 10,000, KiB", "idle10000", "idle10000", "rss_per_conn_bytes", 1024, 1, 6.5),
    ("full TLS 1.3 handshake + one GET, µs", "handshake", "handshake", "server_us_per_op", 1, 1, 150),
    ("p99 at 5,000 req/s, µs", "p99", "latency_at_5000qps", "p99_us", 1, 0, "peer"),
]

# (label, test, metric, divisor, digits): context for the first table, no targets
OTHER = [
    ("cached, req/s", "cached", "qps", 1, 0),
    ("one URL (h2load), req/s", "h2load", "req_per_s", 1, 0),
    ("cache miss, queries/s", "miss", "qps", 1, 0),
    ("cache miss, upstream CPU %", "miss", "upstream_cpu_pct", 1, 0),
    ("RSS per idle connection at 2,000, KiB", "idle2000", "rss_per_conn_bytes", 1024, 1),
    ("idle connections held of 10,000", "idle10000", "conns_held", 1, 0),
    ("handshakes/s (client-bound)", "handshake", "per_s", 1, 0),
    ("p50 at 5,000 req/s, µs", "latency_at_5000qps", "p50_us", 1, 0),
    ("p99.9 at 5,000 req/s, µs", "latency_at_5000qps", "p999_us", 1, 0),
    ("RSS at start, KiB", "info", "rss_kib", 1, 0),
]


def load(paths):
    """(server, test, metric) -> numeric values in file order; server -> set of (file, round)."""
    vals = defaultdict(list)
    rounds = defaultdict(set)
    for i, path in enumerate(paths):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith("RESULT "):
                    continue  # '#' notes, h2load chatter
                kv = dict(re.findall(r"(\w+)=(\S+)", line))
                s, t, m = kv.get("server"), kv.get("test"), kv.get("metric")
                if not (s and t and m):
                    continue
                rounds[s].add((i, kv.get("round", "1")))
                try:
                    v = float(kv.get("value", ""))
                except ValueError:
                    continue  # e.g. test=h2load metric=tls value=TLS_AES_128_GCM_SHA256
                # idleconns.py writes -1 when no connection was held: not a figure
                if m == "rss_per_conn_bytes" and v < 0:
                    continue
                vals[(s, t, m)].append(v)
    return vals, rounds


def fmt(x, digits):
    return DASH if x is None else f"{x:,.{digits}f}"


def main(paths):
    vals, rounds = load(paths)
    servers = [s for s in SERVERS if s in rounds]
    peers = [s for s in servers if s in PEERS]
    if not servers:
        sys.exit(f"no RESULT lines for {', '.join(SERVERS)} in {', '.join(paths)}")

    def med(s, t, m, div):
        xs = vals.get((s, t, m))
        return statistics.median(xs) / div if xs else None

    def tnum(x, digits):
        # compare what is printed: a cell showing 6.5 meets a target of 6.5 even if the median
        # was 6.54 (targets are given to the same precision as the figures)
        return round(x, digits)

    print("| figure | " + " | ".join(servers) + " | dohgate target | best peer | dohgate / best peer |")
    print("|---|" + "---:|" * len(servers) + "---|---|---:|")
    for label, _, t, m, div, digits, target in ROWS:
        meds = {s: med(s, t, m, div) for s in servers}
        # a zero CPU time or RSS is a failed measurement, never the best peer
        cands = {s: meds[s] for s in peers if meds[s] is not None and meds[s] > 0}
        best = min(cands, key=cands.get) if cands else None
        cells = []
        for s in servers:
            cell = fmt(meds[s], digits)
            if s == "dohgate" and meds[s] is not None:
                if target == "peer":
                    ok = best is not None and tnum(meds[s], digits) <= tnum(cands[best], digits)
                else:
                    ok = tnum(meds[s], digits) <= target
                if ok:
                    cell += " ✓"
            cells.append(cell)
        tgt = "≤ best peer" if target == "peer" else f"≤ {target:g}"
        bp = f"{best} {fmt(cands[best], digits)}" if best else DASH
        d = meds.get("dohgate")
        ratio = f"{d / cands[best]:.2f}" if best and d is not None else DASH
        print(f"| {label} | " + " | ".join(cells) + f" | {tgt} | {bp} | {ratio} |")

    print()
    print("| other figures | " + " | ".join(servers) + " |")
    print("|---|" + "---:|" * len(servers))
    for label, t, m, div, digits in OTHER:
        print(f"| {label} | " + " | ".join(fmt(med(s, t, m, div), digits) for s in servers) + " |")

    print()
    print("rounds: " + ", ".join(f"{s} {len(rounds[s])}" for s in servers))
    if "dohgate" in servers:
        parts = []
        for _, short, t, m, div, digits, _ in ROWS:
            xs = vals.get(("dohgate", t, m))
            parts.append(f"{short} " + (" / ".join(fmt(x / div, digits) for x in xs) if xs else DASH))
        print("dohgate per round: " + "; ".join(parts))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__.strip())
    main(sys.argv[1:])
