#!/usr/bin/env python3
"""Check the generated manual pages (ctest lint.manpages).

usage: check_manpages.py DOHGATE MAN_DIR

MAN_DIR holds dohgate.8 and dohgate.conf.5 as the build generates them (docs/man/). Fails
(exit 1, one line per problem) when
  - a page is missing or empty, or mandoc is not installed (a missing tool is a failure);
  - `mandoc -T lint -W style` reports anything on a page: every message at WARNING level or
    above, and every STYLE message except "referenced manual not found", which depends on
    the pages installed on the machine that builds, not on ours;
  - an option that `DOHGATE --help` lists ("  --NAME METAVAR" after the "Options" line that
    config_print_help() prints) is not an `.It Cm NAME` entry of dohgate.conf.5's OPTIONS
    section, or that section has an entry --help does not list (a page out of step);
  - a flag of main's own ("  -c, --config", "  --check-config", ... before that line) is not
    an `.It Fl` entry of dohgate.8's OPTIONS section.
"""
import os
import re
import shutil
import subprocess
import sys

PAGES = ("dohgate.8", "dohgate.conf.5")
MSG = re.compile(r"^mandoc: (?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<level>[A-Z]+): (?P<text>.*)$")


def section(text, name):
    """The lines of section .Sh NAME, up to the next .Sh."""
    m = re.search(r"^\.Sh %s\n(.*?)(?=^\.Sh |\Z)" % re.escape(name), text, re.S | re.M)
    return m.group(1) if m else ""


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    dohgate, man_dir = sys.argv[1], sys.argv[2]
    problems = []
    pages = {}
    for p in PAGES:
        path = os.path.join(man_dir, p)
        try:
            with open(path, encoding="ascii") as f:
                pages[p] = f.read()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"{path}: cannot read as ASCII: {e}")
            continue
        if not pages[p].strip():
            problems.append(f"{path}: empty")
    if problems:
        return report(problems)

    if shutil.which("mandoc") is None:
        return report(["mandoc is not installed (contrib/deps.sh --test installs it)"])
    paths = [os.path.join(man_dir, p) for p in PAGES]
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style"] + paths,
                       capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines():
        m = MSG.match(line)
        if m is None:
            # mandoc's notes about its own database (makewhatis) name no file of ours
            if "mandoc.db" in line or not line.strip():
                continue
            problems.append(f"mandoc: {line}")
        elif m.group("level") == "STYLE" and m.group("text").startswith("referenced manual not found"):
            continue
        else:
            problems.append(line)

    h = subprocess.run([dohgate, "--help"], capture_output=True, text=True)
    if h.returncode != 0:
        problems.append(f"{dohgate} --help exited {h.returncode}")
    lines = h.stdout.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("Options (")), None)
    if start is None:
        return report(problems + [f"{dohgate} --help: no 'Options (' line"])
    options = [re.match(r"  --([a-z0-9-]+)", l).group(1) for l in lines[start + 1:]
               if re.match(r"  --[a-z0-9-]+", l)]
    main_flags = [re.match(r"  (-[-a-zA-Z]+)", l).group(1) for l in lines[:start]
                  if re.match(r"  -[-a-zA-Z]", l)]
    if len(options) < 50:
        problems.append(f"{dohgate} --help lists only {len(options)} options")

    conf = section(pages["dohgate.conf.5"], "OPTIONS")
    entries = re.findall(r"^\.It Cm (\S+)", conf, re.M)
    for o in options:
        if o not in entries:
            problems.append(f"dohgate.conf.5: option {o} (in --help) has no '.It Cm {o}' entry")
    for e in entries:
        if e not in options:
            problems.append(f"dohgate.conf.5: entry {e} is not an option of --help")
    if len(entries) != len(set(entries)):
        problems.append("dohgate.conf.5: an option has two entries")

    eight = section(pages["dohgate.8"], "OPTIONS")
    items = " ".join(re.findall(r"^\.It (.*)$", eight, re.M))
    for flag in main_flags:
        # mdoc writes --check-config as "Fl -check-config", -c as "Fl c"
        if not re.search(r"\bFl %s(?:\s|$)" % re.escape(flag[1:]), items):
            problems.append(f"dohgate.8: flag {flag} (in --help) has no '.It Fl {flag[1:]}' entry")
    if not main_flags:
        problems.append(f"{dohgate} --help: no flags of its own before 'Options ('")
    if problems:
        return report(problems)
    print(f"ok: {len(PAGES)} pages lint clean; {len(entries)} options in dohgate.conf.5, "
          f"{len(main_flags)} flags in dohgate.8")
    return 0


def report(problems):
    for p in problems:
        print(p)
    return 1


if __name__ == "__main__":
    sys.exit(main())
