"""No circular import inside `gateway/`: each module sits in a room below the ones that use it.

The graph is read statically (ast), without importing anything. An edge is every import of a
`gateway` module: at module level, under `if TYPE_CHECKING:` (a cycle of type names is the same
knot for a reader as a cycle of runtime imports: health reading the lifecycle's internals, and
the lifecycle importing health, was one), and inside functions. A deferred import ties the same
knot too: config validation asked Home Assistant's tables, which imported every family, which
imported the links and decoders, which imported the config: 36 modules in one knot that this
test could not see while it left function-local imports out.

An import inside a function is allowed only for what `DEFERRED` lists, each with its reason:
the optional extras and the heavy libraries a part loads only when it is configured (and the
gateway modules that are their one door), and the CLI's commands. An entry nothing uses any
more fails a test, so the list stays true.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gateway"

#: What a function may import (a module and everything under it) -> why it is not imported at
#: the top of the module.
DEFERRED: dict[str, str] = {
    # Bluetooth LE: bleak, dbus-fast and cryptography cost about half a second of start-up and
    # 10 MB; loaded only once a BLE device is configured (tests/test_lazy_imports.py).
    "bleak": "the BLE stack, only with a BLE device",
    "gateway.ble": "the door to bleak and dbus-fast, only with a BLE device",
    "gateway.decoders.ble": "cryptography (BTHome) and the BLE parser libraries",
    # The `ble-parsers` extra: Home Assistant's parser libraries, only for a device using one.
    "habluetooth": "the ble-parsers extra, only for a device whose decoder uses it",
    # The `modbus` extra.
    "gateway.modbus": "the door to pymodbus (the modbus extra), only with a Modbus device",
    # google-re2 comes prebuilt for x86_64 and aarch64 only.
    "re2": "not installed on 32-bit ARM: a regex decoder is then a config error",
    # The HTTP endpoint (h11): only with metrics.enabled; its page on the first view.
    "gateway.http": "the endpoint (h11), only with metrics.enabled",
    "gateway.statuspage.render": "the status page, rendered on its first view",
    # The command line: each command loads what it runs (`gateway check-config` no daemon).
    "gateway.lifecycle": "`gateway run` only",
    "gateway.logs": "`gateway run` only",
    "gateway.decode_cli": "`gateway decode` only",
    "gateway.simulate": "`gateway simulate` only",
    "gateway.ports_cli": "`gateway ports` only",
}
#: Modules that do their deferring for the command line (nothing imports them: no knot).
ENTRY_POINTS = ("gateway.cli",)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, and whether it is at module level."""
    top = {id(node) for node in _module_level_imports(tree.body)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, id(node) in top


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The dotted names an import statement imports (`pkg.name` for `from pkg import name` when
    that is a module of ours, else `pkg`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0, "relative import"
    base = node.module or ""
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
    ]


def _module_level_imports(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports at module level, also inside `if` (TYPE_CHECKING or not) and `try` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            found += _module_level_imports(node.body) + _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level_imports(node.body)
            for handler in node.handlers:
                found += _module_level_imports(handler.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the gateway modules it imports, anywhere in it (a package's `__init__` for
    `from pkg import name` unless `pkg.name` is itself a module)."""
    known = modules()

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        deps: set[str] = set()
        for node, _ in _imports(ast.parse(path.read_text())):
            deps |= {t for name in _targets(node, known) if (t := owner(name)) is not None}
        deps.discard(module)
        graph[module] = deps
    return graph


def deferred_imports() -> list[tuple[str, int, str]]:
    """(module, line, what) of every import inside a function, of a gateway module or of a
    library outside the standard library."""
    known = modules()
    found = []
    for module, path in known.items():
        for node, at_top in _imports(ast.parse(path.read_text())):
            if at_top:
                continue
            for name in _targets(node, known):
                if name.partition(".")[0] not in sys.stdlib_module_names:
                    found.append((module, node.lineno, name))
    return found


def _allowed(module: str, name: str) -> str | None:
    """The DEFERRED entry that allows `module` to import `name` in a function, if any."""
    for entry, why in DEFERRED.items():
        if name == entry or name.startswith(entry + "."):
            is_cli_entry = why.startswith("`gateway ")
            if not is_cli_entry or module in ENTRY_POINTS:
                return entry
    return None


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_gateway_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk sees the package
    found = [sorted(c) for c in cycles(graph)]
    assert not found, f"import cycles: {found}"


def test_the_walk_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_imports_inside_functions_are_only_the_listed_deferrals() -> None:
    found = deferred_imports()
    unlisted = [f"{m}:{line} imports {name}" for m, line, name in found if not _allowed(m, name)]
    assert not unlisted, f"import these at the top of the module, or list why not: {unlisted}"
    used = {_allowed(m, name) for m, _, name in found}
    assert set(DEFERRED) <= used, f"nothing defers these any more: {set(DEFERRED) - used}"


def test_the_walk_counts_imports_inside_functions() -> None:
    graph, known = import_graph(), modules()
    deferred = [(m, name) for m, _, name in deferred_imports() if name.startswith("gateway.")]
    assert deferred  # the endpoint, the BLE and Modbus links are made in functions
    for module, name in deferred:
        target = name
        while target not in known:
            target = target.rpartition(".")[0]
        assert target in graph[module], f"{module} -> {target}"
