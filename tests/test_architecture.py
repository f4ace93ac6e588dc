"""The package's shape: adapters import only the public surface, and no two modules import each
other in a cycle.

Both read the source with :mod:`ast` (nothing is imported, so no SDK is needed) through the
``[tool.setuptools.package-dir]`` map of ``pyproject.toml``.

- Adapters (``leaseline.airflow``, ``leaseline.prefect``, ``leaseline.kfp``, ``leaseline.mlflow``)
  may import, from the core: the names in ``leaseline.__all__``, public modules (no path part
  starting with ``_``: ``leaseline.masking``, ``leaseline.audit``, ``leaseline.aws``...) and the
  names in their ``__all__``, and ``leaseline._scope`` (the adapter interface) with the names in
  its ``__all__``. Every import counts, also one inside a function.
- Cycles: only imports that run when a module is imported count (for the adapters, every
  import: see the last test): module-level statements,
  including those inside module-level ``if``/``try``/``with`` blocks and class bodies. Imports under
  ``if TYPE_CHECKING:`` and inside functions do not (they run later, when the import system is
  done). ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
  ``pkg``; the implicit import of a module's parent packages is not an edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ("leaseline.airflow", "leaseline.prefect", "leaseline.kfp", "leaseline.mlflow")
INTERFACE = "leaseline._scope"


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return {package: root / folder for package, folder in mapping.items()}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the distribution: dotted name -> source file."""
    dirs = package_dirs(root)
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith(".") for part in parts):
                continue
            name = ".".join((package, *parts))
            if name.endswith(".__init__"):
                name = name[: -len(".__init__")]
            found[name] = path
    return found


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported (or the package a name is taken from)
    names: tuple[str, ...]  # for ``from target import a, b``; () for ``import target``
    line: int
    at_import_time: bool  # module level, not under TYPE_CHECKING, not in a function
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports(name: str, path: Path) -> Iterator[Import]:
    """Every import statement of one module, with whether it runs at import time."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"

    def walk(nodes: list[ast.stmt], eager: bool, typing: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(name, alias.name, (), node.lineno, eager, typing)
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(name, is_package, node.level, node.module)
                names = tuple(alias.name for alias in node.names)
                yield Import(name, target, names, node.lineno, eager, typing)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, False, typing)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.body, False, True)
                yield from walk(node.orelse, eager, typing)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        stmts = [c for c in children if isinstance(c, ast.stmt)]
                        handlers = [c for c in children if isinstance(c, ast.ExceptHandler)]
                        yield from walk(stmts, eager, typing)
                        for handler in handlers:
                            yield from walk(handler.body, eager, typing)
                for case in getattr(node, "cases", []):
                    yield from walk(case.body, eager, typing)

    yield from walk(tree.body, True, False)


def _all_of(path: Path) -> set[str] | None:
    """The literal ``__all__`` of a module, or ``None`` when it defines none."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert node.value is not None
            return {str(v) for v in ast.literal_eval(node.value)}
    return None


def _is_adapter(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ADAPTERS)


def _adapter_of(module: str) -> str:
    return next(a for a in ADAPTERS if module == a or module.startswith(a + "."))


def private_core_imports(root: Path = ROOT) -> list[str]:
    """``module:line imports what`` for every adapter import outside the allowed surface."""
    found = modules(root)
    bad: list[str] = []

    def check_names(imp: Import, target: str, where: str) -> None:
        exported = _all_of(found[target])
        for n in imp.names:
            module = f"{target}.{n}"
            if module in found:
                check_module(imp, module)
            elif n.startswith("_") or (exported is not None and n not in exported):
                bad.append(f"{where} imports {target}.{n} (not in {target}.__all__)")

    def check_module(imp: Import, target: str) -> None:
        where = f"{imp.module}:{imp.line}"
        if target == INTERFACE:
            return
        parts = target.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            bad.append(f"{where} imports private core module {target}")

    for name, path in found.items():
        if not _is_adapter(name):
            continue
        own = _adapter_of(name)
        for imp in imports(name, path):
            target = imp.target
            if not (target == "leaseline" or target.startswith("leaseline.")):
                continue
            if target == own or target.startswith(own + "."):
                continue  # the adapter's own modules
            where = f"{imp.module}:{imp.line}"
            if target not in found:
                bad.append(f"{where} imports {target}, which is not a module of the package")
                continue
            check_module(imp, target)
            if imp.names and not any(b.startswith(where) for b in bad):
                check_names(imp, target, where)
    return sorted(set(bad))


def import_graph(root: Path = ROOT, *, late: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules it imports at import time (``late``: also later, in a
    function; never what is imported for type checkers only)."""
    found = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, path in found.items():
        for imp in imports(name, path):
            if imp.type_only or not (imp.at_import_time or late):
                continue
            targets = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in found]
            if len(targets) < len(imp.names) or not imp.names:
                targets.append(imp.target)
            graph[name].update(t for t in targets if t in found and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_adapters_import_only_the_public_surface_and_the_scope() -> None:
    bad = private_core_imports()
    assert not bad, "adapters must use leaseline's public names or leaseline._scope:\n" + "\n".join(
        bad
    )


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (module-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_no_adapter_module_imports_another_that_imports_it_back() -> None:
    # stricter for the adapters, which are thin: not even through a function-level import (as
    # airflow's _backend and _task once did, one importing the other inside a function)
    graph = import_graph(late=True)
    adapters = {m: {t for t in ts if _is_adapter(t)} for m, ts in graph.items() if _is_adapter(m)}
    found = cycles(adapters)
    assert not found, "adapter modules importing each other:\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


# -- the checks themselves can fail ----------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.package-dir]\nleaseline = "core"\n"leaseline.kfp" = "kfp"\n',
        encoding="utf-8",
    )
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


CORE = {
    "core/__init__.py": '__all__ = ["Resolver"]\nfrom ._resolver import Resolver\n',
    "core/_resolver.py": "class Resolver: ...\n",
    "core/_scope.py": '__all__ = ["Scope"]\nclass Scope: ...\n',
    "core/masking.py": '__all__ = ["masker"]\ndef masker(): ...\ndef _private(): ...\n',
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from leaseline import Resolver\nfrom leaseline._scope import Scope\n", None),
        ("from leaseline.masking import masker\nfrom . import _other\n", None),
        ("from leaseline._resolver import Resolver\n", "private core module leaseline._resolver"),
        ("def f():\n    import leaseline._resolver\n", "private core module leaseline._resolver"),
        ("from leaseline import _resolver\n", "private core module leaseline._resolver"),
        ("from leaseline.masking import _private\n", "leaseline.masking._private"),
        ("from leaseline._scope import Resolver\n", "leaseline._scope.Resolver"),
        ("from leaseline import Unlisted\n", "leaseline.Unlisted"),
    ],
)
def test_the_adapter_check_fails_on_a_private_import(
    tmp_path: Path, source: str, expected: str | None
) -> None:
    files = {**CORE, "kfp/__init__.py": "", "kfp/_other.py": "", "kfp/_task.py": source}
    bad = private_core_imports(_tree(tmp_path, files))
    if expected is None:
        assert bad == []
    else:
        assert len(bad) == 1 and expected in bad[0] and bad[0].startswith("leaseline.kfp._task:")


def test_the_cycle_check_fails_on_a_cycle_and_ignores_late_imports(tmp_path: Path) -> None:
    late = {
        **CORE,
        "core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
        "core/b.py": "from . import a\ndef f():\n    from . import c\n",
        "core/c.py": "from .b import f\n",
    }
    assert cycles(import_graph(_tree(tmp_path, late))) == []
    eager = {**late, "core/a.py": "try:\n    from .b import f\nexcept ImportError:\n    pass\n"}
    assert cycles(import_graph(_tree(tmp_path, eager))) == [["leaseline.a", "leaseline.b"]]
    assert cycles(import_graph(_tree(tmp_path, late), late=True)) == [
        ["leaseline.b", "leaseline.c"]
    ]
