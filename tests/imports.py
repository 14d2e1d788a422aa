"""The project's own import graph, read from source (every import, module-level or inside a function)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tasks.common import paths

PACKAGES = ("tasks", "flows")


def module_file(module: str) -> Path | None:
    """The file of a dotted project module (`tasks.common.io` -> tasks/common/io.py), None when it is not ours."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = paths.ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(file: Path) -> str:
    rel = file.resolve().relative_to(paths.ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> list[str]:
    return sorted(module_name(f) for pkg in PACKAGES for f in (paths.ROOT / pkg).rglob("*.py"))


@cache
def imports_of(module: str) -> frozenset[str]:
    """Project modules `module` imports (a `from pkg import name` counts name when it is a module, else pkg)."""
    file = module_file(module)
    if file is None:
        return frozenset()
    out: set[str] = set()
    is_pkg = file.name == "__init__.py"
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if module_file(a.name)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if not module_file(src):
                continue
            subs = [f"{src}.{a.name}" for a in node.names if module_file(f"{src}.{a.name}")]
            out |= set(subs) if subs else {src}
            if len(subs) < len(node.names):
                out.add(src)
    out.discard(module)
    # a package's __init__ runs with any of its modules; one that imports nothing adds no edge worth following
    return frozenset(m for m in out if not _is_empty_package(m))


def _is_empty_package(module: str) -> bool:
    file = module_file(module)
    if file is None or file.name != "__init__.py":
        return False
    return not any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(ast.parse(file.read_text("utf-8"))))


def closure(module: str, stop: frozenset[str] = frozenset()) -> set[str]:
    """`module` and every project module reachable from it, not following into `stop`."""
    seen, todo = {module}, [module]
    while todo:
        for m in imports_of(todo.pop()):
            if m not in seen and m not in stop:
                seen.add(m)
                todo.append(m)
    return seen


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in imports_of(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in all_modules():
        if m not in index:
            visit(m)
    return out
