"""The layering docs/architecture.md describes, checked on the code: no two modules import
each other in a loop (at module level or inside functions), nothing below cli/ imports Typer
or the CLI, and the files a new family, format, source or command touches are the ones the
document names."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "sam_cli"


def modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the package's modules it imports, anywhere in its code (a package importing
    its own __init__ is not counted)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rpartition(".")[0]
                if t in mods and t != m and not m.startswith(t + "."):
                    graph[m].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_modules_import_each_other_in_a_loop():
    graph = imports(modules())
    assert len(graph) > 50 and graph["sam_cli.cli.auto"]  # the graph is read
    assert cycles(graph) == []
    # the finder finds one: a loop put in on purpose
    graph["sam_cli.masks"].add("sam_cli.cli.auto")
    assert cycles(graph)


def test_nothing_below_cli_imports_typer_or_the_cli():
    graph = imports(modules())
    for name, path in modules().items():
        if name.startswith("sam_cli.cli") or name == "sam_cli.__main__":  # `python -m sam_cli` runs the CLI
            continue
        text = path.read_text()
        assert "import typer" not in text and "from typer" not in text, name
        assert not any(t.startswith("sam_cli.cli") for t in graph[name]), name


def test_the_architecture_document_names_files_that_exist():
    import re

    doc = (REPO / "docs/architecture.md").read_text()
    named = {n for n in re.findall(r"`((?:sam_cli|tests)/[\w/]+\.py)`", doc) if "NAME" not in n}
    assert len(named) >= 8
    for rel in named:
        assert (REPO / rel).is_file(), rel
    # each registry the recipes name holds what they say
    from sam_cli import engines, models
    from sam_cli.io import formats, sources

    assert {"sam1", "sam2", "sam3"} <= set(models.FAMILY_MODULES) and "FAMILY_MODULES" in doc
    assert set(engines.MODES) == {"automatic", "prompts", "edges", "eval", "text"} and "MODES" in doc
    assert "coco" in formats.FORMATS and "FORMATS" in doc and "jsonl" in sources.SOURCES and "SOURCES" in doc
