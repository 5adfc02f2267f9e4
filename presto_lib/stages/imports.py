"""The static import closure of a Python file within presto_lib (ast-based): the code deps of a stage.

Every `import presto_lib.x` / `from presto_lib.x import y` counts, at module level or inside a function (a lazy
import still runs), and so does every package `__init__.py` on the way (Python executes them on import). A
package that loads names lazily declares them in an `_EXPORTS = {name: submodule}` dict literal, which is read.
"""
from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["module_file", "direct_imports", "import_closure"]

PACKAGE = "presto_lib"


def module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` (a dotted presto_lib name) under root, or None if it is not a module."""
    base = root / Path(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _packages(root: Path, name: str) -> list[Path]:
    """The __init__.py of every package containing `name` (presto_lib, presto_lib.eval, ...)."""
    parts = name.split(".")
    return [p for i in range(1, len(parts)) if (p := root / Path(*parts[:i]) / "__init__.py").is_file()]


def _absolute(root: Path, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module name of a (possibly relative) `from ... import` in file `path`."""
    if node.level == 0:
        return node.module
    pkg = path.resolve().relative_to(root).parent.parts
    if node.level > 1:
        pkg = pkg[:len(pkg) - (node.level - 1)]
    return ".".join([*pkg, *([node.module] if node.module else [])]) or None


def lazy_exports(init: Path) -> dict[str, str]:
    """{name: submodule} of a package __init__.py that loads names lazily through an `_EXPORTS` dict literal."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def direct_imports(root: Path, path: Path) -> set[Path]:
    """The presto_lib files that `path` imports directly (with their packages' __init__.py)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(root, path, node)
            if module is None or module.split(".")[0] != PACKAGE:
                continue
            node.module = module
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)     # `from pkg import submodule`
            init = module_file(root, node.module)
            if init is not None and init.name == "__init__.py":               # `from pkg import lazy_name`
                lazy = lazy_exports(init)
                names.update(f"{node.module}.{lazy[a.name]}" for a in node.names if a.name in lazy)
    out: set[Path] = set()
    for n in names:
        f = module_file(root, n)
        if f is not None:
            out.add(f)
            out.update(_packages(root, n))
    return out


def import_closure(root: str | Path, path: str | Path) -> list[str]:
    """Every presto_lib file reachable by imports from `path` (itself included if inside presto_lib), sorted,
    as paths relative to root."""
    root = Path(root).resolve()
    start = (root / path).resolve()
    seen: set[Path] = set()
    todo = [start]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(direct_imports(root, f) - seen)
    pkg = root / PACKAGE
    return sorted(str(f.relative_to(root)) for f in seen if pkg in f.parents)
