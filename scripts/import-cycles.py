#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a loop.

For each crate (default: every crate under crates/ with a src/ directory), every
module file under src/ is one node, nested ones included: `src/x.rs` and
`src/x/mod.rs` are `x`, `src/x/y.rs` is `x::y`. `lib.rs` (the root that declares the
modules) and binaries (`main.rs`, `src/bin/`) are not nodes; a module declared inline
(`mod tests { .. }`) belongs to its file's node. An edge a -> b is any path in a's code
that names b or an item of b: `crate::..`, `super::..` and `self::..` paths, and paths
that start with one of a's own child modules, whether written in a `use` (groups such
as `use super::{b::X, c}` included) or inline; the path goes to the deepest module it
names, so `crate::client::Channel` is an edge to `client` (the file that re-exports it)
and `crate::client::retry::Retry` one to `client::retry`. Declaring a child module
(`mod b;`) is not an edge. Comments and string literals are ignored. Test code counts
too, unless `--ignore-tests` is given (then items under `#[cfg(test)]` and files named
`tests.rs` are skipped).

Usage: scripts/import-cycles.py [--ignore-tests] [CRATE_DIR ...]
Exit status 0 when no crate has a cycle, 1 (printing each cycle) otherwise.
"""

import re
import sys
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")
RAW_STRING = re.compile(r'b?r(#*)"')
KEYWORD_PATH = re.compile(r"(?<![A-Za-z0-9_:$])(crate|self|super)\s*::\s*")
INLINE_MOD = re.compile(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{")


def strip_comments(text):
    """The code without comments and without the contents of string and char literals
    (a `"crate::x"` in a message is not an import)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        raw = RAW_STRING.match(text, i) if c in "br" and (i == 0 or not IDENT_CHAR.match(text[i - 1])) else None
        if raw:
            # r"..", r#".."#, br#".."#: no escapes, ends at the quote and as many #.
            end = text.find('"' + raw.group(1), raw.end())
            out.append('""')
            i = n if end < 0 else end + 1 + len(raw.group(1))
        elif c == '"':
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


def item_end(text, j, stop_at_semicolon=False):
    """Where the item from text[j] ends: just past the `}` closing its first `{` (or
    past its first `;` outside braces, with `stop_at_semicolon`); the text's end if never."""
    depth = 0
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        elif text[j] == ";" and depth == 0 and stop_at_semicolon:
            return j + 1
        j += 1
    return j


def without_tests(text):
    """The code without the item that follows each `#[cfg(test)]` (a `mod tests { .. }` or `use ..;`)."""
    out, i = [], 0
    for match in re.finditer(r"#\[cfg\(test\)\]", text):
        if match.start() < i:
            continue
        out.append(text[i : match.start()])
        # The item ends at its first `;` at depth 0 or at the `}` closing its first `{`.
        i = item_end(text, match.end(), stop_at_semicolon=True)
    out.append(text[i:])
    return "".join(out)


def skip_space(text, i):
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def path_tree(text, i):
    """The paths of the use tree (or plain path) starting at text[i], as segment lists:
    `a::{b::C, d}` is [[a, b, C], [a, d]], `*` and `self` end a path."""
    i = skip_space(text, i)
    if text.startswith("{", i):
        paths, i = [], i + 1
        while True:
            i = skip_space(text, i)
            if i >= len(text) or text[i] == "}":
                return paths, i + 1
            if text[i] == ",":
                i += 1
                continue
            inner, j = path_tree(text, i)
            paths.extend(inner)
            if j <= i:  # not a path: skip a character so the loop ends
                j = i + 1
            i = j
    ident = IDENT.match(text, i)
    if not ident:
        return [[]], i
    head, i = ident.group(), ident.end()
    j = skip_space(text, i)
    if head != "self" and text.startswith("::", j):
        rest, i = path_tree(text, j + 2)
        return [[head] + r for r in rest], i
    return [[] if head == "self" else [head]], i


def inline_mod_spans(text):
    """(start, end) of each inline `mod x { .. }` body."""
    spans = []
    for match in INLINE_MOD.finditer(text):
        spans.append((match.end(), item_end(text, match.end() - 1) - 1))
    return spans


def referenced_modules(text, module, modules):
    """Every module of `modules` (tuples of segments) that a path in `text`, the code of
    the file of `module`, names: the deepest one each path reaches."""
    spans = inline_mod_spans(text)
    children = {m[-1] for m in modules if len(m) == len(module) + 1 and m[: len(module)] == module}
    starts = [(m.start(), m.end(), m.group(1)) for m in KEYWORD_PATH.finditer(text)]
    if children:
        bare = re.compile(r"(?<![A-Za-z0-9_:$.])(" + "|".join(sorted(children)) + r")\s*::")
        starts += [(m.start(), m.start(), None) for m in bare.finditer(text)]
    found = set()
    for start, rest, keyword in starts:
        depth = sum(1 for s, e in spans if s <= start < e)
        if keyword is None:
            if depth:
                continue  # an inline module does not see its file's children by bare name
            base = module
        elif keyword == "crate":
            base = ()
        elif keyword == "self":
            base = module
        else:
            ups, j = 1, rest
            while True:
                more = re.compile(r"super\s*::\s*").match(text, j)
                if not more:
                    break
                ups, j = ups + 1, more.end()
            rest = j
            ups -= depth
            base = module if ups <= 0 else module[: max(len(module) - ups, 0)]
        paths, _ = path_tree(text, rest)
        for path in paths:
            full = base + tuple(path)
            for n in range(len(full), 0, -1):
                if full[:n] in modules:
                    if full[:n] != module:
                        found.add(full[:n])
                    break
    return found


def module_of(relative):
    """The module path of a file under src/: `x.rs` and `x/mod.rs` are (x,), `x/y.rs` is (x, y)."""
    parts = list(relative.parts)
    parts[-1] = parts[-1].removesuffix(".rs")
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def module_graph(crate, ignore_tests=False):
    """{module name (`a::b`): set of module names it references} for the crate at `crate`."""
    src = Path(crate) / "src"
    files = {}
    for path in sorted(src.rglob("*.rs")):
        relative = path.relative_to(src)
        if relative.parts[0] == "bin" or relative.as_posix() in ("lib.rs", "main.rs"):
            continue
        files[module_of(relative)] = path
    modules = set(files)
    graph = {}
    for module, path in files.items():
        name = "::".join(module)
        if ignore_tests and path.stem == "tests":
            graph[name] = set()  # `#[cfg(test)] mod tests;` in a file of its own
            continue
        code = strip_comments(path.read_text(encoding="utf-8"))
        if ignore_tests:
            code = without_tests(code)
        graph[name] = {"::".join(m) for m in referenced_modules(code, module, modules)}
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
    crates = [a for a in args if a != "--ignore-tests"] or sorted(
        str(path.parent) for path in Path("crates").glob("*/src")
    )
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
