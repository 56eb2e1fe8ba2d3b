"""Package layering: no import cycle inside src/seglab, and no import from a lower layer into a higher one.

The table below is the one drawn in README.md ("Where things live"); a package may import its own layer
and the layers below it. Imports inside functions count too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "seglab"

# Bottom to top. Packages on one line may import each other only one way (the cycle test forbids both ways).
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("config", "choices"),
    ("runtime",),
    ("models", "losses", "metrics", "data"),
    ("engine", "inference"),
    ("evaluation", "report", "explain", "measure", "export", "classify"),
    ("demo", "cli", "__main__"),
]
LAYER_OF = {pkg: i for i, names in enumerate(LAYERS) for pkg in names}


def module_name(path: Path) -> str:
    """``src/seglab/data/io.py`` -> ``seglab.data.io``; a package's ``__init__`` is the package itself."""
    parts = ("seglab",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every seglab module ``path`` imports (relative imports resolved; module-level and inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("seglab"):
                # ``from pkg import module`` imports the submodule
                subs = [f"{target}.{a.name}" for a in node.names if (SRC.parent / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                        or (SRC.parent / f"{target}.{a.name}".replace(".", "/")).is_dir()]
                found.update(subs or [target])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("seglab"))
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the seglab modules it imports."""
    return {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def top_package(module: str) -> str:
    """``seglab.data.io`` -> ``data``; ``seglab`` itself -> ``seglab``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "seglab"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle in a directed graph as a list of nodes, or None (iterative depth-first search)."""
    colour: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    for start in sorted(edges):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(edges.get(start, ()))))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[child] == 1:
                return path[path.index(child):] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(edges.get(child, ())))))
                path.append(child)
    return None


def test_every_package_has_a_layer():
    packages = {top_package(m) for m in graph()} - {"seglab"}
    assert packages <= set(LAYER_OF), f"add {sorted(packages - set(LAYER_OF))} to LAYERS (and to README.md)"


def test_no_module_import_cycle():
    edges = {m: {t for t in targets if t != m} for m, targets in graph().items() if m != "seglab"}
    edges = {m: {t for t in targets if t != "seglab"} for m, targets in edges.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_import_cycle():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph().items():
        for target in targets:
            a, b = top_package(module), top_package(target)
            if a != b and "seglab" not in (a, b):
                edges[a].add(b)
    cycle = find_cycle(edges)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle)


def test_imports_point_down():
    upward = []
    for module, targets in graph().items():
        a = top_package(module)
        if a == "seglab":
            continue  # the package's front door re-exports the model registry
        for target in targets:
            b = top_package(target)
            if b == "seglab":
                if a != "cli":  # only the command line reads the version from the front door
                    upward.append(f"{module} imports the package root")
            elif LAYER_OF[b] > LAYER_OF[a]:
                upward.append(f"{module} ({a}, layer {LAYER_OF[a]}) imports {target} ({b}, layer {LAYER_OF[b]})")
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(sorted(upward))


def test_relative_imports_only():
    absolute = [f"{p.relative_to(SRC)}:{n.lineno}" for p in SRC.rglob("*.py") for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, ast.ImportFrom) and not n.level and (n.module or "").startswith("seglab")]
    assert not absolute, f"use relative imports inside the package: {absolute}"


@pytest.mark.parametrize("edges, cycle", [({"a": {"b"}, "b": {"a"}}, True), ({"a": {"b"}, "b": {"c"}}, False)])
def test_cycle_finder_finds_cycles(edges, cycle):
    assert (find_cycle(edges) is not None) == cycle
