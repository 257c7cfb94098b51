"""The shape of xdt's code: lines of the training-loop modules, the longest functions, and import circles.

    python scripts/module_map.py                       # this checkout
    python scripts/module_map.py --root /other/checkout --loop xdt/train.py xdt/pretrain.py

Reads the source with ``ast``, imports nothing of it. Import circles are found among xdt's own modules,
counting every import statement that runs (at module level or inside a function: a lazy import still ties two
modules), but not those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

LOOP = ("xdt/engine.py", "xdt/train.py", "xdt/pretrain.py")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The xdt modules ``path`` imports (``from xdt.a import b`` counts ``xdt.a.b`` when that is a module)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for n in ast.walk(block)}  # ``if TYPE_CHECKING:`` imports never run
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return {name for name in found if name in modules and name != module_name(path, root)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def functions(path: Path) -> list[tuple[int, str]]:
    """(lines, name) of every function and method in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.end_lineno - node.lineno + 1, node.name) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--loop", nargs="*", default=list(LOOP), help="the training-loop modules to count")
    args = parser.parse_args()
    root = args.root.resolve()
    files = sorted((root / "xdt").rglob("*.py"))
    modules = {module_name(p, root) for p in files}

    print("training-loop modules (lines):")
    total = 0
    for name in args.loop:
        path = root / name
        if path.is_file():
            lines = len(path.read_text(encoding="utf-8").splitlines())
            total += lines
            print(f"  {name:28s} {lines:5d}")
    print(f"  {'total':28s} {total:5d}")

    longest = sorted(((n, f"{p.relative_to(root)}:{name}") for p in files for n, name in functions(p)), reverse=True)
    print("longest functions (lines):")
    for lines, where in longest[:5]:
        print(f"  {lines:4d}  {where}")

    graph = {module_name(p, root): imports_of(p, root, modules) for p in files}
    found = cycles(graph)
    print(f"import circles among xdt's modules: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))


if __name__ == "__main__":
    main()
