"""The packages stand in layers, and imports only run down them.

cli (the application) drives graph (the round and the daemon), which uses trainer,
which uses agents, which call models and use prompts, store and text; store counts
by text alone. An import back up, or two modules
importing each other (also inside a function), is a shape that no longer fits:
these tests name the file and the import so the move is made whole, not patched.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a package may import the ones before it and itself.
LAYERS = ("text", "store", "prompts", "models", "agents", "trainer", "graph", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return "evoinstruct." + ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The evoinstruct modules a file imports, at the top or inside a function.

    `from evoinstruct.store import stats` imports the module `store.stats`;
    `from evoinstruct.store import Store` imports the package `store` itself.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("evoinstruct.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("evoinstruct."):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module or "")
    return found


def _sources() -> dict[str, tuple[Path, set[str]]]:
    paths = [path for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))]
    known = {_module_name(path) for path in paths}
    return {_module_name(path): (path, _imports(path, known)) for path in paths}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_the_layers_cover_every_package() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)


def test_no_import_runs_back_up_the_layers() -> None:
    upward = [
        f"{path.relative_to(ROOT)} imports {target}"
        for module, (path, targets) in _sources().items()
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_two_modules_import_each_other() -> None:
    graph = {module: targets - {module} for module, (_, targets) in _sources().items()}
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of more than one module that reach each other by imports."""
    import networkx  # torch's own dependency

    digraph = networkx.DiGraph([(a, b) for a, targets in graph.items() for b in targets])
    components = networkx.strongly_connected_components(digraph)
    return sorted(sorted(c) for c in components if len(c) > 1)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_says_its_job_in_one_line(layer: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / layer / "__init__.py").read_text(encoding="utf-8")))
    assert doc and doc.splitlines()[0].strip()


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
