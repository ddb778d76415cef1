#!/usr/bin/env python3
"""Module-level import cycles inside each crate.

A top-level module of a crate is a `mod` declared in its lib.rs (or main.rs). An arrow
A -> B exists when a file of A names `crate::B` (in a `use` or a path). Cycles are the
strongly connected components with more than one module.

Usage: module-cycles.py   (prints each cycle and exits 1 if there is one)
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["base", "protocol", "store", "core", "client", "chat", "federation", "node", "bench"]
USE = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)
MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def modules(src: Path) -> list[str]:
    lib = src / "lib.rs"
    if not lib.exists():
        lib = src / "main.rs"
    return MOD.findall(lib.read_text())


def files_of(src: Path, module: str) -> list[Path]:
    files = []
    single = src / f"{module}.rs"
    if single.exists():
        files.append(single)
    folder = src / module
    if folder.is_dir():
        files.extend(sorted(folder.rglob("*.rs")))
    return files


def strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", text)


def graph(src: Path) -> dict[str, set[str]]:
    mods = modules(src)
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m in mods:
        for f in files_of(src, m):
            text = strip_comments(f.read_text())
            targets = set(USE.findall(text))
            for group in USE_GROUP.findall(text):
                targets.update(re.findall(r"(?:^|[,{\s])([a-z_][a-z0-9_]*)(?=\s*(?:::|,|\}|$))", group))
            edges[m].update(t for t in targets if t in known and t != m)
    return edges


def sccs(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    found = False
    for krate in CRATES:
        src = ROOT / krate / "src"
        if not src.is_dir():
            continue
        for comp in sccs(graph(src)):
            print(f"module cycle in {krate}: {' -> '.join(comp)} (each reaches the others)")
            found = True
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
