#!/usr/bin/env python3
"""Checks the include graph of src/ and include/dohgate/ against the layers of docs/design.md.

The layers are the one fenced block with the info string `layers` in docs/design.md: one line per
layer, lowest first, each a space-separated list of module names (the file stems of src/*.c and
include/dohgate/*.h; a private header src/<m>_int.h belongs to module <m>). A module may include
the headers of its own layer and of lower ones; the module graph must have no cycle.

Fails (exit 1) with one line per offence, `file:line: message`, when
  - a module includes a module of a higher layer,
  - the module graph has a cycle (the cycle is printed with the include that closes it),
  - a module is in no layer, or a layer names a module that does not exist.

usage: check_includes.py [SOURCE_ROOT]       (default: the repository this file is in)
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"(?:dohgate/)?([A-Za-z0-9_]+)\.h"')


def module_of(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem[:-4] if stem.endswith("_int") else stem


def read_layers(design):
    with open(design, encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"^```layers[ \t]*\n(.*?)^```", text, re.S | re.M)
    if len(blocks) != 1:
        sys.exit(f"{design}: expected exactly one ```layers block, found {len(blocks)}")
    layer = {}
    for i, line in enumerate(l for l in blocks[0].splitlines() if l.strip() and not l.strip().startswith("#")):
        for m in line.split():
            if m in layer:
                sys.exit(f"{design}: module {m} is in two layers")
            layer[m] = i
    return layer


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    root = os.path.abspath(root)
    design = os.path.join(root, "docs", "design.md")
    layer = read_layers(design)
    files = []
    for d, ext in (("src", (".c", ".h")), (os.path.join("include", "dohgate"), (".h",))):
        full = os.path.join(root, d)
        files += [os.path.join(full, n) for n in sorted(os.listdir(full)) if n.endswith(ext)]
    errors = []
    modules = {module_of(p) for p in files}
    for m in sorted(modules - layer.keys()):
        errors.append(f"{design}: module {m} is in no layer of the ```layers block")
    for m in sorted(layer.keys() - modules):
        errors.append(f"{design}: the ```layers block names {m}, which has no source file")
    edges = {}  # module -> {included module: "file:line"}
    for p in files:
        m = module_of(p)
        with open(p, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                hit = INCLUDE.match(line)
                if not hit or hit.group(1) not in modules:
                    continue
                dep = module_of(hit.group(1))
                if dep == m:
                    continue
                where = f"{os.path.relpath(p, root)}:{n}"
                edges.setdefault(m, {}).setdefault(dep, where)
                if m in layer and dep in layer and layer[dep] > layer[m]:
                    errors.append(f"{where}: {m} (layer {layer[m]}) includes {dep} (layer {layer[dep]}): "
                                  "a lower layer may not include a higher one")
    # cycles: depth-first search, reporting each back edge once
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for dep, where in sorted(edges.get(m, {}).items()):
            if state.get(dep) == 1:
                cyc = stack[stack.index(dep):] + [dep]
                errors.append(f"{where}: include cycle {' -> '.join(cyc)}")
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m)
    for e in errors:
        print(e)
    if errors:
        print(f"include graph: {len(errors)} problem(s)")
        return 1
    print(f"include graph: {len(modules)} modules, {sum(len(v) for v in edges.values())} module "
          f"dependencies, {max(layer.values()) + 1} layers, no cycle, no upward include")
    return 0


if __name__ == "__main__":
    sys.exit(main())
