"""docs/architecture.md's layering, checked: each layer imports only from layers below it.

The order is the picture in docs/architecture.md, bottom to top. A module may import from
its own layer and any layer below; importing from a layer above is a failure, so the
document and the code cannot drift apart. Imports under ``if TYPE_CHECKING:`` count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "cometp2p"

# Bottom to top, as in docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "types", "fileio", "config", "metrics", "unsupported"),
    ("wire",),
    ("crypto",),
    ("sansio",),
    ("aio",),
    ("switch",),
    ("pex",),
    ("crawler", "upnp", "trust"),
    ("node", "testing"),
    ("seed",),
    ("cli",),
)
_RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "cometp2p" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "proto" not in p.relative_to(SRC).parts)


def test_every_top_level_module_has_a_layer() -> None:
    names = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in _modules()}
    assert names - {"__init__", "__main__"} <= set(_RANK), sorted(names - set(_RANK))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_goes_up_a_layer(path: Path) -> None:
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    if own not in _RANK:
        return  # the package's __init__ / __main__
    upward = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if (layer := _layer_of(module)) is not None and layer in _RANK and _RANK[layer] > _RANK[own]
    ]
    assert not upward, f"{path.relative_to(SRC)} imports from a layer above it: {upward}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_import_cycle_between_modules() -> None:
    """No module imports one that imports it back, even only for type checking."""
    paths = {_module_name(p): p for p in _modules()}
    graph = {
        name: {m for _, m in _imports(path) if m in paths and m != name}
        for name, path in paths.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, cycles
