"""The package's structure, checked from its source with ``ast`` (docs/architecture.md).

- no import circle between xldensf modules, function-level imports included (imports under
  ``if TYPE_CHECKING:`` are type hints only and do not count);
- no ``_private`` name imported from another xldensf module;
- the tensor layers (filters, the simulators' case modules, the surrogate's networks) do not
  import xarray;
- the library never prints (the CLI does);
- no module over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xldensf"
MAX_LINES = 600
#: Modules that work on plain tensors only (layer 1 of the design).
TENSOR_ONLY = (
    "xldensf.filters",
    "xldensf.simulators.tsunami",
    "xldensf.simulators.sphere",
    "xldensf.simulators.kolmogorov",
    "xldensf.simulators.lorenz96",
    "xldensf.simulators.base",
    "xldensf.surrogate.networks",
    "xldensf.surrogate.encoder",
    "xldensf.surrogate.normalization",
    "xldensf.surrogate.decoder",
    "xldensf.surrogate.vae_networks",
)
#: The one module allowed to print.
PRINTERS = ("xldensf.cli",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import node of the tree outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges(module: str) -> dict[str, list[tuple[str, str]]]:
    """Internal imports of ``module``: target module -> [(imported name, line)]."""
    tree = ast.parse(MODULES[module].read_text())
    edges: dict[str, list[tuple[str, str]]] = {}
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "xldensf" and alias.name in MODULES:
                    edges.setdefault(alias.name, []).append(("", f"line {node.lineno}"))
            continue
        target = _resolve(module, node)
        if target.split(".")[0] != "xldensf":
            continue
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            destination = submodule if submodule in MODULES else target
            name = "" if submodule in MODULES else alias.name
            edges.setdefault(destination, []).append((name, f"line {node.lineno}"))
    return edges


GRAPH = {module: _edges(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, {}):
            if target not in MODULES or target == node:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    return found


def test_the_checker_sees_the_package():
    # a checker that parses nothing would pass everything
    assert len(MODULES) > 40 and "xldensf.assimilation" in MODULES
    assert "xldensf.filters.base" in GRAPH["xldensf.filters.ensf"]


def test_no_import_circles():
    assert _cycles() == []


def test_no_private_names_imported_across_modules():
    offenders = [(module, target, name, where)
                 for module, edges in GRAPH.items() for target, names in edges.items()
                 for name, where in names
                 if name.startswith("_") and not name.startswith("__") and target != module]
    assert offenders == []


@pytest.mark.parametrize("prefix", TENSOR_ONLY)
def test_tensor_layers_do_not_import_xarray(prefix):
    for module, path in MODULES.items():
        if module != prefix and not module.startswith(prefix + "."):
            continue
        for node in _imports(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            assert not any(name.split(".")[0] in ("xarray", "cf_xarray") for name in names), (
                module, node.lineno)


def test_the_library_never_prints():
    offenders = []
    for module, path in MODULES.items():
        if module in PRINTERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "print":
                offenders.append((module, node.lineno))
    assert offenders == []


def test_no_module_over_the_size_limit():
    sizes = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert {module: size for module, size in sizes.items() if size > MAX_LINES} == {}
