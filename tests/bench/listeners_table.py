#!/usr/bin/env python3
"""Markdown tables from tests/bench/listeners.sh's results.txt (several files are pooled).

  listeners_table.py results.txt [...]

Per test (plain DNS over UDP, DoT, DoH wire and JSON on dohgate) and server: the server's CPU µs per
answered query (median over rounds, and per round), queries/s, lost queries, answers, then the
issue-16 targets: dohgate UDP <= 0.5x dnsdist and <= 1x unbound, dohgate DoT <= 0.5x dnsdist,
JSON <= 2x wire. Rows that failed (FAIL lines: the server did not start or answered nothing) are
listed with their reason and have no figure.
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^RESULT (?:round=(\d+) )?server=(\S+) test=(\S+) metric=(\S+) value=(\S*)")
FAIL = re.compile(r"^FAIL round=(\d+) server=(\S+) test=(\S+) reason=(.*)$")
TESTS = [("dns-udp", "plain DNS, UDP"), ("dot", "DoT"), ("doh-wire", "DoH wire (GET ?dns=)"),
         ("doh-json", "DoH JSON (GET ?name=)")]
ORDER = ["dohgate", "dnsdist", "unbound", "kresd", "bind"]
# (test, server, reference test, reference server, limit, what)
TARGETS = [("dns-udp", "dohgate", "dns-udp", "dnsdist", 0.5, "dohgate UDP / dnsdist UDP"),
           ("dns-udp", "dohgate", "dns-udp", "unbound", 1.0, "dohgate UDP / unbound UDP"),
           ("dot", "dohgate", "dot", "dnsdist", 0.5, "dohgate DoT / dnsdist DoT"),
           ("dot", "dohgate", "dot", "unbound", None, "dohgate DoT / unbound DoT"),
           ("doh-json", "dohgate", "doh-wire", "dohgate", 2.0, "dohgate JSON / dohgate wire")]


def load(paths):
    res = defaultdict(lambda: defaultdict(list))   # (test, server) -> metric -> [values by round]
    fails = defaultdict(list)                      # (test, server) -> ["round N: reason"]
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                m = FAIL.match(line)
                if m:
                    rnd, server, test, reason = m.groups()
                    fails[(test, server)].append(f"round {rnd}: {reason}")
                    continue
                m = LINE.match(line)
                if not m:
                    continue
                _, server, test, metric, value = m.groups()
                try:
                    res[(test, server)][metric].append(float(value))
                except ValueError:
                    continue
    return res, fails


def med(vals):
    return statistics.median(vals) if vals else None


def fmt(v, nd=1):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}" if nd else f"{v:,.0f}"


def lost(m):
    """Lost (dnsperf: no answer within its timeout; h2load: not 2xx) with its share of the
    queries; over 1% the figure is marked: the server's CPU went to fewer answers than were asked."""
    if "lost" not in m:
        return "–"
    n, done = sum(m["lost"]), sum(m.get("queries", [])) + sum(m["lost"])
    pct = 100 * n / done if done else 0
    return f"{n:,.0f} ({pct:.2f}%)" + (" ⚠" if pct > 1 else "")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    res, fails = load(sys.argv[1:])
    us = {k: med(m.get("server_us_per_op", [])) for k, m in res.items()}
    print("### Server CPU µs per answered query (cached answers, medians over rounds)\n")
    print("| test | server | µs/query | per round | queries/s | server CPU % | answers | lost "
          "| answer bytes | mean latency µs | notes (failed rounds) |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    keys = set(res) | set(fails)
    for test, tname in TESTS + [(t, t) for t in sorted({k[0] for k in keys} - {t for t, _ in TESTS})]:
        servers = {s for t, s in keys if t == test}
        for s in [x for x in ORDER if x in servers] + sorted(servers - set(ORDER)):
            m = res.get((test, s), {})
            per = " / ".join(fmt(x, 2) for x in m.get("server_us_per_op", []))
            notes = list(fails.get((test, s), []))
            if sum(m.get("reconnections", [])):
                notes.append(f"dnsperf reconnected {sum(m['reconnections']):,.0f} times")
            fl = "; ".join(notes)
            print(f"| {tname} | {s} | {fmt(us.get((test, s)), 2)} | {per or '–'} "
                  f"| {fmt(med(m.get('qps', [])), 0)} | {fmt(med(m.get('server_cpu_pct', [])), 0)} "
                  f"| {fmt(sum(m['queries']), 0) if 'queries' in m else '–'} "
                  f"| {lost(m)} "
                  f"| {fmt(med(m.get('resp_bytes', [])), 0)} | {fmt(med(m.get('avg_latency_us', [])), 0)} "
                  f"| {fl} |")
    print()
    print("### Ratios (issue 16 targets)\n")
    for test, s, rtest, rs, lim, what in TARGETS:
        a, b = us.get((test, s)), us.get((rtest, rs))
        if (test, s) not in keys or (rtest, rs) not in keys:
            continue   # one side was not run (LS_PARTS, LS_*_SERVERS)
        if a is None or b is None:
            missing = [f"{x[1]} {x[0]}" for x, v in (((test, s), a), ((rtest, rs), b)) if v is None]
            print(f"- {what}: no figure ({', '.join(missing)} measured nothing)")
            continue
        r = a / b
        verdict = "" if lim is None else f" (target ≤ {lim}: {'met' if r <= lim else 'missed'})"
        print(f"- {what}: {fmt(a, 2)} / {fmt(b, 2)} µs = **{r:.2f}×**{verdict}")
    print()


if __name__ == "__main__":
    main()
