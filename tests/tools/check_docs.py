#!/usr/bin/env python3
"""Check that README.md documents every configuration option and every metric series.

Options come from the option table of src/config.c (`.name = "..."` rows); the README must
name each as a flag, `--NAME`. Metric series come from the string literals of src/*.c that
start with `dohgate_` (today all in src/metrics.c) (a histogram's `_bucket`, `_sum` and `_count` samples count as the
histogram itself); the README must name each. The README may group names with braces, as in
`dohgate_cache_{hits,misses}_total`: a brace group right after `_` is expanded, a brace group
after a name (`dohgate_x_total{upstream}`) is its label list.

The include graph against docs/design.md's layers is checked by check_includes.py.

Usage: check_docs.py [SOURCE_DIR]   (default: the repository holding this script)
Exit status 0 when nothing is wrong, 1 with one line per problem otherwise.
"""
import glob
import itertools
import os
import re
import sys


def options(src):
    text = open(os.path.join(src, "src", "config.c"), encoding="utf-8").read()
    names = re.findall(r'\.name\s*=\s*"([a-z0-9-]+)"', text)
    if not names:
        sys.exit("check_docs: no option table found in src/config.c")
    return names


def metrics(src):
    names = set()
    for path in sorted(glob.glob(os.path.join(src, "src", "*.c"))):
        names |= set(re.findall(r'"(dohgate_[a-z0-9_]+)', open(path, encoding="utf-8").read()))
    if not names:
        sys.exit("check_docs: no metric names found in src/*.c")
    for n in list(names):
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and n[: -len(suffix)] in names:
                names.discard(n)
    return sorted(names)


def expand(token):
    """dohgate_a_{b,c}_total{label} -> {dohgate_a_b_total, dohgate_a_c_total}"""
    parts = []
    pos = 0
    for m in re.finditer(r"\{([^{}]*)\}", token):
        if m.start() == 0 or token[m.start() - 1] != "_":
            token = token[: m.start()]  # a label list ends the name
            break
        parts.append([token[pos : m.start()]])
        parts.append(m.group(1).split(","))
        pos = m.end()
    parts.append([token[pos:]])
    return {"".join(p) for p in itertools.product(*parts)}


def readme_metrics(readme):
    found = set()
    for token in re.findall(r"dohgate_[a-z0-9_{},]*(?:\{[a-z0-9_,]*\})?", readme):
        found |= expand(token)
    return found


def main():
    args = sys.argv[1:]
    src = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "..")
    readme = open(os.path.join(src, "README.md"), encoding="utf-8").read()
    missing = []
    for name in options(src):
        if not re.search(r"--" + re.escape(name) + r"(?![a-z0-9-])", readme):
            missing.append(f"option --{name} (src/config.c) is not in README.md")
    documented = readme_metrics(readme)
    for name in metrics(src):
        if name not in documented:
            missing.append(f"metric {name} (src/) is not in README.md")
    for line in missing:
        print(line)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
