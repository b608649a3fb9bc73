"""The package's import graph: no cycles, evaluation independent of the training pipeline,
training independent of the download code. Read from the source (every `from . import`,
at the top of a module or inside a function), so nothing has to be imported."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llm_jepa"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):   # import llm_jepa.x
                edges[name] |= {a.name for a in node.names if a.name in modules}
                continue
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:                     # from .x import y
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("llm_jepa"):   # from llm_jepa.x import y
                target = node.module
            else:
                continue
            targets = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            edges[name] |= {t for t in targets if t in modules}
        edges[name].discard(name)   # `python -m` entry points import their own module by name
    return edges


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_cycle():
    edges = import_graph()
    cycles = sorted(m for m in edges if m in reachable(edges, m))
    assert cycles == []


@pytest.mark.parametrize("module,forbidden", [
    ("llm_jepa.evaluation", "llm_jepa.train"),
    ("llm_jepa.evaluation", "llm_jepa.trainer"),
    ("llm_jepa.train", "llm_jepa.corpora.prepare"),
    ("llm_jepa.report", "llm_jepa.train"),
])
def test_layers(module, forbidden):
    assert forbidden not in reachable(import_graph(), module)


def test_the_graph_is_read():
    # the check above means something only if the graph holds the package's real imports
    edges = import_graph()
    assert "llm_jepa.trainer" in edges["llm_jepa.train"] and "llm_jepa.splits" in edges["llm_jepa.evaluation"]


def test_published_behaviour_is_decided_in_one_module():
    """Only the switches' module and the configurations read --paper_compat; everything
    else asks a named switch."""
    readers = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                     if "paper_compat" in p.read_text())
    assert readers == ["behaviour.py", "config.py"]
