"""The layout of docs/architecture.md holds: every folder ships, tests mirror the source, and a
module over ~400 lines says why in its docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
FOLDERS: dict[str, str] = CONFIG["package-dir"]  # package -> folder
LIMIT = 400
#: how a module says why it is long: "Why ~700 lines: ...", "Why one module of ~700 lines: ..."
REASON = re.compile(r"\bWhy\b[^.\n]{0,40}~?\d+ lines", re.IGNORECASE)


def _packages() -> dict[str, Path]:
    """Every package of the distribution, found on disk: name -> folder."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base)
            name = ".".join([package, *rel.parts]) if rel.parts else package
            found.setdefault(name, init.parent)
    return found


def _modules() -> list[Path]:
    seen: set[Path] = set()
    for folder in FOLDERS.values():
        seen |= {p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(seen)


def test_every_package_folder_ships() -> None:
    """``packages`` in pyproject is a list: a new folder missing from it works in the editable
    install the tests use and is absent from the wheel users get."""
    assert sorted(_packages()) == sorted(CONFIG["packages"])


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_says_why(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines <= LIMIT:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert REASON.search(doc), f"{lines} lines and no 'Why ~N lines: ...' in the docstring"


def test_tests_mirror_the_source() -> None:
    """Each subpackage of leaseline has its test folder, and each store type's module its file."""
    core = ROOT / FOLDERS["leaseline"]
    subpackages = sorted(
        p.name for p in core.iterdir() if (p / "__init__.py").exists() and p.name != "__pycache__"
    )
    missing = [name for name in subpackages if not (ROOT / "tests" / name).is_dir()]
    backends = sorted(
        p.stem for p in (core / "backends").glob("*.py") if not p.stem.startswith("_")
    )
    untested = [
        name
        for name in backends
        if name != "vault_auth" and not (ROOT / "tests" / "backends" / f"test_{name}.py").exists()
    ]
    assert (missing, untested) == ([], [])
