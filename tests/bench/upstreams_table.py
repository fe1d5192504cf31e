#!/usr/bin/env python3
"""Markdown tables from tests/bench/upstreams.sh's results.txt (several files are pooled).

  upstreams_table.py results.txt [...]

Cache-miss cost per front server and upstream transport (medians over rounds of the server's CPU
µs per answered query), its ratio to dohgate's own UDP figure and to dnsdist's with the same
encrypted transport, the issue-15 targets (dohgate DoT <= 1.3x its UDP, <= 0.5x dnsdist DoT; the
same for DoH), then the burst figures (handshakes and connections to the upstream against the
pool bound workers x 4).
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^RESULT (?:round=(\d+) )?server=(\S+) test=(\S+) metric=(\S+) value=(\S*)")
TNAME = {"udp": "UDP (NSD)", "dot": "DoT", "doh": "DoH"}


def load(paths):
    miss = defaultdict(lambda: defaultdict(list))   # server -> metric -> [values by round]
    burst = defaultdict(dict)                       # server -> metric -> value
    for p in paths:
        with open(p) as f:
            for line in f:
                m = LINE.match(line.strip())
                if not m:
                    continue
                _, server, test, metric, value = m.groups()
                try:
                    v = float(value)
                except ValueError:
                    continue
                if test == "miss":
                    miss[server][metric].append(v)
                elif test == "burst":
                    burst[server][metric] = v
    return miss, burst


def med(vals):
    return statistics.median(vals) if vals else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}" if nd else f"{v:,.0f}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    miss, burst = load(sys.argv[1:])
    us = {s: med(m.get("server_us_per_op", [])) for s, m in miss.items()}
    order = [f"{s}/{t}" for s in ("dohgate", "dnsdist", "unbound") for t in ("udp", "dot", "doh")]
    order = [s for s in order if s in miss] + sorted(s for s in miss if s not in order)
    base = us.get("dohgate/udp")
    if miss:
        print("### Cache miss by upstream transport (server CPU µs per answered query, medians)\n")
        print("| server | upstream | µs/query | per round | × dohgate UDP | × dnsdist, same transport "
              "| queries/s | answer bytes | failed (HTTP) | SERVFAIL | upstream CPU % |")
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in order:
            m = miss[s]
            name, _, t = s.partition("/")
            v = us[s]
            ref = us.get(f"dnsdist/{t}") if t in ("dot", "doh") else us.get("dnsdist/udp")
            r1 = fmt(v / base, 2) if v and base else "–"
            r2 = fmt(v / ref, 2) if v and ref else "–"
            per = " / ".join(fmt(x) for x in m.get("server_us_per_op", []))
            print(f"| {name} | {TNAME.get(t, t)} | {fmt(v)} | {per} | {r1} | {r2} "
                  f"| {fmt(med(m.get('qps', [])), 0)} | {fmt(med(m.get('resp_bytes', [])), 0)} "
                  f"| {fmt(sum(m.get('failed', [])), 0)} | {fmt(sum(m['servfail']), 0) if 'servfail' in m else '–'} | {fmt(med(m.get('upstream_cpu_pct', [])), 0)} |")
        print()
        for t, lim_own, lim_dd in (("dot", 1.3, 0.5), ("doh", 1.3, 0.5)):
            v, d = us.get(f"dohgate/{t}"), us.get(f"dnsdist/{t}")
            if v is None:
                continue
            parts = []
            if base:
                r = v / base
                parts.append(f"{r:.2f}× its UDP (target ≤ {lim_own}: {'met' if r <= lim_own else 'missed'})")
            if d:
                r = v / d
                parts.append(f"{r:.2f}× dnsdist {TNAME[t]} (target ≤ {lim_dd}: {'met' if r <= lim_dd else 'missed'})")
            print(f"- dohgate {TNAME[t]}: " + "; ".join(parts))
        print()
    if burst:
        print("### Burst of distinct names at once: connections to the upstream\n")
        cols = ["workers", "queries", "http_failed", "servfail", "rejected", "upstream_queries",
                "upstream_timeouts", "upstream_errors", "connections", "handshakes", "resumed",
                "connection_failures", "reused", "pool_bound"]
        print("| server | " + " | ".join(c.replace("_", " ") for c in cols) + " | one handshake per connection, connections ≤ bound |")
        print("|---|" + "---:|" * len(cols) + "---|")
        for s in sorted(burst):
            b = burst[s]
            ok = (b.get("handshakes") == b.get("connections")
                  and b.get("connections", 1e9) <= b.get("pool_bound", -1))
            verdict = "–" if s.endswith("/udp") else ("yes" if ok else "no")
            print(f"| {s} | " + " | ".join(fmt(b.get(c), 0) for c in cols) + f" | {verdict} |")
        print()


if __name__ == "__main__":
    main()
