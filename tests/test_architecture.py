"""Facts about the package's structure, read from its source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lightning_grok"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Cycles that run through modules a change did not own, each with what would break it. The test fails on
# any other cycle, and on an entry here that no longer exists (delete it then): the list only shrinks. It is
# empty now (experiment <-> trainer_checks was broken by moving make_trainer to trainer_factory.py and
# quiet_third_party to quiet.py); keep it so, and break a new cycle instead of listing it.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(target: str, modules: set[str]) -> str | None:
    """The longest package module that ``target`` names or lies in (``a.b.f`` -> ``a.b``), else None."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (never executed)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at module level or inside a function (lazy imports count);
    imports under ``if TYPE_CHECKING:`` do not (they never run).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``; relative
    imports are resolved against the importing module."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                found = _resolve(target, modules)
                if found is not None and found != name:
                    edges.add(found)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list: a group is
    a set of modules each of which imports, directly or not, every other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def _a_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One closed path through ``group`` from its first module, for the failure message."""
    members, start = set(group), group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return group


def test_import_graph_sees_lazy_imports():
    graph = import_graph()
    assert "lightning_grok.config" in graph["lightning_grok.commands"]  # module level
    assert "lightning_grok.experiment" in graph["lightning_grok.commands"]  # inside main()
    assert "lightning_grok.sweep.agent" in graph["lightning_grok.reproduce.sweeps"]  # inside a function
    assert "lightning_grok.data.regression" not in graph["lightning_grok.data.base"]  # TYPE_CHECKING only


def test_no_import_cycles():
    """No group of package modules imports each other, directly or through others, at module level or
    inside functions (``KNOWN_CYCLES`` aside, which may only shrink and is empty)."""
    graph = import_graph()
    groups = import_cycles(graph)
    new = [" -> ".join(_a_cycle(graph, g)) for g in groups if tuple(g) not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(new)
    gone = KNOWN_CYCLES - {tuple(g) for g in groups}
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES: {sorted(gone)}"
    assert not KNOWN_CYCLES and groups == [], f"the package has import cycles: {groups}"


def test_the_cli_is_imported_by_nothing_in_the_package():
    """The CLI sits on top: the sweep worker and the batch child call ``commands``, below it."""
    graph = import_graph()
    assert [m for m, edges in graph.items() if "lightning_grok.cli" in edges] == ["lightning_grok.__main__"]


def test_exit_codes_are_defined_once():
    """Only ``exit_codes`` assigns an ``EXIT_*`` name; every other module imports it from there."""
    defined = []
    for path in ROOT.rglob("*.py"):
        if path.name == "exit_codes.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                for name in ast.walk(target) if target is not None else ():
                    if isinstance(name, ast.Name) and name.id.startswith("EXIT_"):
                        defined.append(f"{_module_name(path)}.{name.id}")
    assert not defined, f"exit codes defined outside lightning_grok/exit_codes.py: {defined}"
