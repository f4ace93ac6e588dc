"""Every store declares what it can do as capability protocols; nothing probes attribute names.

The resolver, the CLI and rotation test ``isinstance(backend, Capability)`` and call typed
public methods; rotation never reaches into a store's private parts.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest
from leaseline import LeaselineError, backends
from leaseline._refs import parse
from leaseline.backends import BackendContext
from leaseline.backends.memory import MemoryBackend

PACKAGE = Path(__file__).resolve().parents[2] / "integrations"

CAPABILITIES = {
    "Reauthenticating": backends.Reauthenticating,
    "RefreshDefault": backends.RefreshDefault,
    "Listable": backends.Listable,
    "HealthChecked": backends.HealthChecked,
    "PerTaskTokens": backends.PerTaskTokens,
    "StageTokens": backends.StageTokens,
    "Versioned": backends.Versioned,
    "StagingLabels": backends.StagingLabels,
    "StaticRoles": backends.StaticRoles,
}

#: store type -> the capabilities it declares (and no others)
EXPECTED = {
    "vault": {
        "Reauthenticating",
        "Listable",
        "HealthChecked",
        "PerTaskTokens",
        "StageTokens",
        "Versioned",
        "StaticRoles",
    },
    "aws-sm": {"Reauthenticating", "Listable", "StagingLabels"},
    "aws-ssm": {"Reauthenticating"},
    "aws-sts": {"Reauthenticating"},
    "azure-kv": {"Reauthenticating"},
    "env": {"RefreshDefault"},
    "file": {"RefreshDefault"},
    "memory": {"Listable", "Versioned"},
}


def _context() -> BackendContext:
    return BackendContext(clock=time.time, resolve=lambda ref: "unused")


def _store(kind: str) -> Any:
    from leaseline._registry import backend_class

    options: dict[str, Any] = {}
    if kind == "vault":  # nothing is contacted until a read
        options = {"addr": "http://127.0.0.1:1", "child_token": False}
    elif kind.startswith("aws-"):
        options = {"region": "eu-west-1"}
    return backend_class(kind)(kind, options, _context())


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_store_declares_its_capabilities(kind: str) -> None:
    store = _store(kind)
    assert isinstance(store, backends.Backend)
    declared = {name for name, proto in CAPABILITIES.items() if isinstance(store, proto)}
    assert declared == EXPECTED[kind]


def _calls_on_backends(tree: ast.AST) -> list[str]:
    """``getattr(backend, ...)``/``hasattr(backend, ...)`` with a backend-ish first argument."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "hasattr"}
            and node.args
        ):
            target = ast.unparse(node.args[0])
            if "backend" in target:
                found.append(f"{node.func.id}({target}, ...) line {node.lineno}")
    return found


def test_nothing_probes_a_backend_by_attribute_name() -> None:
    probes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        hits = _calls_on_backends(ast.parse(path.read_text(encoding="utf-8")))
        if hits:
            probes[str(path.relative_to(PACKAGE))] = hits
    assert probes == {}


ROTATION = [
    "rotation/__init__.py",
    "rotation/_rotators.py",
    "rotation/_policy.py",
    "rotators.py",
    "cli/rotation.py",
]


@pytest.mark.parametrize("name", ROTATION)
def test_rotation_uses_no_private_part_of_a_store(name: str) -> None:
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = ast.unparse(node.value)
            if owner != "self" and not node.attr.startswith("__"):
                private.append(f"{owner}.{node.attr} line {node.lineno}")
        if isinstance(node, ast.ImportFrom) and "backends" in (node.module or ""):
            private += [f"import {a.name}" for a in node.names if a.name.startswith("_")]
    assert private == []


def _imports(name: str) -> set[str]:
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):  # every import, also the lazy and the TYPE_CHECKING ones
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.add(node.module or "")
            out.update(a.name for a in node.names if not node.module)
    return out


def test_rotation_and_its_rotators_import_each_other_one_way_only() -> None:
    """The engine (``rotation/__init__``) imports its rotators and policies; they import
    neither it (``from . import NAME`` would be its names) nor each other backwards."""
    assert "_rotators" in _imports("rotation/__init__.py")
    assert _imports("rotation/_rotators.py") <= {"_policy"}
    assert _imports("rotation/_policy.py") == set()


def test_memory_versions_check_and_set() -> None:
    MemoryBackend.reset("caps")
    MemoryBackend.put("caps", "app/key", {"k": "one"})
    store = MemoryBackend("caps", {}, _context())
    ref = parse("caps://app/key")
    current = store.read_version(ref)
    assert current.version == "1" and dict(current.fields) == {"k": "one"}
    assert store.write_version(ref, {"k": "two"}, expected="1") == "2"
    with pytest.raises(LeaselineError, match="changed while it was rotated") as info:
        store.write_version(ref, {"k": "three"}, expected="1")  # someone else wrote version 2
    assert "three" not in str(info.value)
    assert dict(store.read_version(ref).fields) == {"k": "two"}
    assert store.list("app/") == ["app/key"] and store.list("other/") == []
    MemoryBackend.reset("caps")
