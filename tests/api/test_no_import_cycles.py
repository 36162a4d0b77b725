"""No module of the hoshikage package imports itself back, directly or through others.

The graph is read from the source with `ast`, so it covers every module whether or not a
test imports it. Imports inside functions count too: they hide a cycle rather than remove it.
Only `if TYPE_CHECKING:` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "hoshikage"

# Cycles there already, to untangle: none may be added. cli.app imports its subcommands (in
# _register_subcommands) and they import its options and settings_from_flags back.
KNOWN_TANGLES = [
    frozenset(
        {
            "hoshikage.cli.app",
            "hoshikage.cli.batch_cmd",
            "hoshikage.cli.memory_cmd",
            "hoshikage.cli.models_cmd",
            "hoshikage.cli.serve_cmd",
        }
    ),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that `tree` imports: `from x import y` imports x.y when that is
    a module (so `from hoshikage.api import app` does not count as importing the package)."""
    names: set[str] = set()
    nodes: list[ast.AST] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            nodes.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Level 1 is the module's package; a package's __init__ is its own.
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + int(is_package)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
        nodes.extend(ast.iter_child_nodes(node))
    return {name for name in names if name in modules and name != module}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = _imported(tree, module, path.name == "__init__.py", set(files))
    return graph


def _tangles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The groups of modules that import each other round (Tarjan's strongly connected
    components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _path_through(graph: dict[str, set[str]], group: frozenset[str]) -> list[str]:
    """A shortest cycle from the group's first module back to itself, for the message."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def test_the_package_has_no_import_cycles() -> None:
    graph = _graph()
    tangles = [group for group in _tangles(graph) if group not in KNOWN_TANGLES]
    assert not tangles, "import cycles:\n" + "\n".join(
        " -> ".join(_path_through(graph, group)) + f"  (group: {', '.join(sorted(group))})"
        for group in tangles
    )


def test_the_known_tangles_are_still_there() -> None:
    """Once one is untangled, it leaves KNOWN_TANGLES, so that it cannot come back."""
    tangles = _tangles(_graph())
    assert [group for group in KNOWN_TANGLES if group not in tangles] == []


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _tangles(graph) == [frozenset({"a", "b", "c"})]
    assert _path_through(graph, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]
