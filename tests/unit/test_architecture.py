"""The package's import graph keeps the layout of DESIGN.md: dependencies point inward and there
are no circles. Read from the source with ``ast`` (nothing is imported), so a wrong-way import
fails here, in the unit tests, whichever code path would have run it.

Layers, outermost first (a layer may import itself and anything listed for it):
functions, cli, local -> api, deploy -> services -> artifacts, store -> domain. ``settings`` is
the control plane's configuration, passed down from the entry points. The model server
(``serving``) imports only the domain: it runs in a pod with nothing else of modelport.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "modelport"

INNER = {"domain", "(root)"}  # the root package holds only __version__
ALLOWED: dict[str, set[str]] = {
    "(root)": set(),
    "domain": INNER,
    "settings": INNER,
    "store": INNER | {"settings"},
    "artifacts": INNER | {"settings"},
    "services": INNER | {"settings", "store", "artifacts"},
    "api": INNER | {"settings", "store", "artifacts", "services"},
    "deploy": INNER | {"settings", "store", "artifacts", "services"},
    "serving": INNER,
    "local": INNER | {"settings", "store", "artifacts", "services", "api", "deploy", "serving"},
    "cli": INNER | {"settings", "store", "artifacts", "services", "api", "deploy", "serving", "local"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def graph() -> dict[str, set[str]]:
    """module -> the modelport modules it imports (type-checking-only imports left out)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(child) for child in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                if target in modules and target != name:
                    edges[name].add(target)
    return edges


def test_imports_point_inward() -> None:
    wrong = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) != layer(source) and layer(target) not in ALLOWED[layer(source)]
    )
    assert wrong == [], "imports that point outward (see DESIGN.md, Layout):\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert cycles == [], "modules that import each other in a circle:\n" + "\n".join(map(str, cycles))


def test_the_checker_sees_a_wrong_way_import() -> None:
    """The graph is read right: known inward edges are present."""
    edges = graph()
    assert "modelport.store.repository" in edges["modelport.services.deployments"]
    assert "modelport.domain.errors" in edges["modelport.store.deployments"]
