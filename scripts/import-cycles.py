#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a loop.

For each crate (default: crates/orders, crates/users, crates/platform), every module
under src/ is one node: `src/x.rs` is `x`, and a directory module `src/x/` (with
`src/x.rs` or `src/x/mod.rs`) is also the single node `x`. `lib.rs` (the root that
declares the modules) and binaries (`main.rs`, `src/bin/`) are not nodes. An edge
x -> y is any `crate::y` path in x's code, whether written `use crate::y::..`,
`use crate::{y, ..}` or inline; comments are ignored. Test code counts too, unless
`--ignore-tests` is given (then items under `#[cfg(test)]` and files named `tests.rs`
are skipped).

Usage: scripts/import-cycles.py [--ignore-tests] [CRATE_DIR ...]
Exit status 0 when no crate has a cycle, 1 (printing each cycle) otherwise.
"""

import re
import sys
from pathlib import Path

DEFAULT_CRATES = ["crates/orders", "crates/users", "crates/platform"]
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip_comments(text):
    """The code without comments and without the contents of string and char literals
    (a `"crate::x"` in a message is not an import)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            # Skip to the closing quote, honouring escapes; keep an empty literal.
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and (text.startswith("\\", i + 1) or text[i + 2 : i + 3] == "'"):
            # A char literal ('"', '\n', '\''), not a lifetime.
            end = text.find("'", i + 3 if text.startswith("\\", i + 1) else i + 2)
            out.append("' '")
            i = n if end < 0 else end + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_tests(text):
    """The code without the item that follows each `#[cfg(test)]` (a `mod tests { .. }` or `use ..;`)."""
    out, i = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]", text):
        if match.start() < i:
            continue
        out.append(text[i : match.start()])
        j = match.end()
        # The item ends at its first `;` at depth 0 or at the `}` closing its first `{`.
        depth = 0
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif text[j] == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def group_heads(text, start):
    """The first path segment of each item in the `{...}` group opening at text[start]."""
    heads, depth, expect_head, i = [], 0, True, start
    while i < len(text):
        c = text[i]
        if c == "{":
            depth += 1
            expect_head = depth == 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            expect_head = True
        elif expect_head and depth == 1:
            match = IDENT.match(text, i)
            if match:
                heads.append(match.group())
                expect_head = False
                i = match.end()
                continue
        i += 1
    return heads


def referenced_modules(text):
    """Every top-level module named after `crate::` in `text`."""
    names = set()
    for match in re.finditer(r"\bcrate\s*::\s*", text):
        rest = match.end()
        if text.startswith("{", rest):
            names.update(group_heads(text, rest))
        else:
            ident = IDENT.match(text, rest)
            if ident:
                names.add(ident.group())
    return names


def module_graph(crate, ignore_tests=False):
    """{module: set of modules it references} for the crate at `crate`."""
    src = Path(crate) / "src"
    files = {}
    for path in sorted(src.rglob("*.rs")):
        relative = path.relative_to(src)
        if relative.parts[0] == "bin" or relative.as_posix() in ("lib.rs", "main.rs"):
            continue
        node = relative.parts[0].removesuffix(".rs")
        if ignore_tests and path.stem == "tests":
            files.setdefault(node, [])  # `#[cfg(test)] mod tests;` in a file of its own
            continue
        files.setdefault(node, []).append(path)
    graph = {}
    for node, paths in files.items():
        code = "".join(strip_comments(p.read_text(encoding="utf-8")) for p in paths)
        if ignore_tests:
            code = without_tests(code)
        graph[node] = {m for m in referenced_modules(code) if m in files and m != node}
    return graph


def cycles(graph):
    """Per strongly connected component larger than one node: its modules, one cycle
    through them (first == last) and every import among them."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for component in components:
        # A shortest path back to the start, inside the component.
        start = min(component)
        paths, seen, queue = {start: [start]}, {start}, [start]
        cycle = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(graph[v] & component):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w not in seen:
                    seen.add(w)
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        edges = [f"{v} -> {w}" for v in sorted(component) for w in sorted(graph[v] & component)]
        found.append((sorted(component), cycle, edges))
    return found


def main(argv):
    args = argv[1:]
    ignore_tests = "--ignore-tests" in args
    crates = [a for a in args if a != "--ignore-tests"] or DEFAULT_CRATES
    failed = False
    for crate in crates:
        if not (Path(crate) / "src").is_dir():
            print(f"{crate}: no src/ directory", file=sys.stderr)
            return 2
        for component, cycle, edges in cycles(module_graph(crate, ignore_tests)):
            failed = True
            print(f"{crate}: import cycle {' -> '.join(cycle)} (modules in the loop: {', '.join(component)})")
            print(f"  imports among them: {'; '.join(edges)}")
    if not failed:
        print(f"no import cycles in {', '.join(crates)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
