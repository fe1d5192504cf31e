#!/usr/bin/env python3
"""promrefs.py SCRAPE FILE... : every dohgate series the PromQL in FILEs names is in SCRAPE.

SCRAPE is a Prometheus text exposition (dohgate's /metrics). Each FILE is a Prometheus rules
file (.yml: every `expr`) or a Grafana dashboard (.json: every `expr`, and the `query` and
`definition` of template variables). The PromQL is parsed roughly, which is enough for what we
write ourselves:

  - every identifier `dohgate_[a-z0-9_]+` must be the name of at least one sample in SCRAPE
    (so a histogram is referenced as NAME_bucket / NAME_sum / NAME_count, the names its samples
    carry; a bare family name with no samples, or a made-up name, is missing);
  - every label matcher in `name{label="v", label=~"re"}` must name a label that one of that
    name's samples carries, and an `=` value must be one some sample has (unless listed in
    --sparse NAME:LABEL=VALUE: a value that appears only after an event the test does not cause);
  - every label in `by (...)` must be carried by a sample of one of the dohgate names inside the
    aggregation's argument.

`instance` and `job` are skipped everywhere: Prometheus adds them at scrape time, and
`$instance`-style dashboard variables are not PromQL. Recording-rule names (`dohgate:...`) are
not dohgate's series and are skipped. Prints one line per problem and exits 1 if there is any;
prints a summary line and exits 0 otherwise.
"""
import argparse
import json
import re
import sys

import yaml

TARGET_LABELS = {"instance", "job"}
NAME_RE = re.compile(r"\bdohgate_[a-z0-9_]+\b")
MATCHER_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_scrape(text):
    """{sample name: {label: set(values)}}"""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = series.setdefault(m.group(1), {})
        for k, v in LABEL_RE.findall(m.group(3) or ""):
            labels.setdefault(k, set()).add(v)
    return series


def exprs_of(path):
    """(where, PromQL) pairs of a rules file or a Grafana dashboard"""
    out = []
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)

        def walk(node, where):
            if isinstance(node, dict):
                title = node.get("title") or node.get("name") or where
                for k, v in node.items():
                    if k == "expr" and isinstance(v, str):
                        out.append((f"{path}: panel '{title}'", v))
                    elif k in ("query", "definition") and isinstance(v, str) and "dohgate_" in v:
                        out.append((f"{path}: variable '{title}'", v))
                    else:
                        walk(v, title)
            elif isinstance(node, list):
                for v in node:
                    walk(v, where)

        walk(dash, path)
    else:
        with open(path, encoding="utf-8") as f:
            rules = yaml.safe_load(f)
        for g in rules.get("groups", []):
            for r in g.get("rules", []):
                name = r.get("alert") or r.get("record")
                out.append((f"{path}: rule '{name}'", r["expr"]))
    return out


def balanced(s, i):
    """the text of the parenthesised group starting at s[i] == '(' (without the parens)"""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "(":
            depth += 1
        elif s[j] == ")":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j]
    return s[i + 1 :]


def check(series, where, expr, sparse, problems, used):
    for m in NAME_RE.finditer(expr):
        name = m.group(0)
        used.add(name)
        if name not in series:
            problems.append(f"{where}: series {name} is not in the scrape")
            continue
        rest = expr[m.end() :]
        if rest.startswith("{"):
            body = rest[1 : rest.index("}")]
            for label, op, value in MATCHER_RE.findall(body):
                if label in TARGET_LABELS:
                    continue
                if label not in series[name]:
                    problems.append(
                        f"{where}: {name} has no label '{label}' (it has: "
                        f"{', '.join(sorted(series[name])) or 'none'})"
                    )
                elif op == "=" and value not in series[name][label]:
                    if f"{name}:{label}={value}" not in sparse:
                        problems.append(
                            f"{where}: {name}{{{label}=\"{value}\"}}: no sample has that value "
                            f"(values: {', '.join(sorted(series[name][label]))})"
                        )
    for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*", expr):
        labels = [x.strip() for x in m.group(1).split(",") if x.strip()]
        after = expr[m.end() :]
        arg = balanced(after, 0) if after.startswith("(") else ""
        if not arg:  # `sum(...) by (x)`: the argument is before
            before = expr[: m.start()].rstrip()
            k = before.rfind("(")
            arg = before[k:]
        names = [n for n in NAME_RE.findall(arg) if n in series]
        if not names:
            continue  # over recorded series only, or the names are missing (reported above)
        # labels the argument makes itself: label_replace(v, "dst", ...)
        made = set(re.findall(r'label_replace\s*\(.*?,\s*"([a-zA-Z_][a-zA-Z0-9_]*)"', arg, re.S))
        for label in labels:
            if label in TARGET_LABELS or label in made:
                continue
            if not any(label in series[n] for n in names):
                problems.append(
                    f"{where}: by ({label}) over {', '.join(sorted(set(names)))}: no such label"
                )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scrape")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sparse", action="append", default=[], metavar="NAME:LABEL=VALUE")
    a = ap.parse_args()
    with open(a.scrape, encoding="utf-8") as f:
        series = parse_scrape(f.read())
    problems, used, n = [], set(), 0
    for path in a.files:
        for where, expr in exprs_of(path):
            n += 1
            check(series, where, expr, set(a.sparse), problems, used)
    for p in problems:
        print("MISSING", p)
    if problems:
        return 1
    print(f"ok: {n} expressions, {len(used)} dohgate series names, all in the scrape")
    return 0


if __name__ == "__main__":
    sys.exit(main())
