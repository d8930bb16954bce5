"""The package's layers import one way (README "Layout", STYLE), lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrsvqa"
# Lowest first; a module may import its own layer or any lower one, never a higher one.
LAYERS = ["errors", "io", "pyramid", "models", "focus", "prune", "pipeline", "bench", "cli"]
TOP_LEVEL = {
    "__init__": "bench",
    "testing": "models",
    "micro": "bench",
}  # lrsvqa/__init__.py, testing, micro


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lrsvqa" or len(parts) == 1:
        return None
    name = parts[1]
    return TOP_LEVEL.get(name, name)


def _imports() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        out[module] = {m for m in found if m.startswith("lrsvqa")}
    return out


def test_imports_go_down_the_layers() -> None:
    bad = []
    for module, targets in _imports().items():
        here = _layer(module)
        if here is None or here not in LAYERS:
            continue
        for target in targets:
            there = _layer(target)
            if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_no_import_cycles_between_modules() -> None:
    graph = _imports()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    # Package __init__ re-exports are not cycles of their own: skip edges into packages.
    packages = {
        m for m in modules if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()
    }
    edges = {m: {t for t in ts if t not in packages} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend([*path, node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, [*path, node]):
                return True
        state[node] = 2
        return False

    for node in sorted(edges):
        if state.get(node) is None and visit(node, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_readme_layout_names_the_layers_in_import_order() -> None:
    text = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    order = [name for name in LAYERS[1:] if f"`{name}`" in section]
    positions = [section.index(f"`{name}`") for name in order]
    assert order == LAYERS[1:] and positions == sorted(positions)
