"""Where a pipeline names its secrets: found by reading files, never by reading a secret.

One function per source: Python code (Airflow DAGs, Prefect flows, any literal reference, grouped
by the stage it appears in: :mod:`._python`), compiled KFP pipeline specs (YAML),
``leaseline.toml`` aliases and ``leaseline run`` manifests. Each gives :class:`Stage` objects.
Prefect blocks saved in the API are :mod:`._prefect`'s.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, InvalidReference
from .._refs import environment_references, is_reference, parse
from .._registry import known_types

__all__ = ["AirflowMapping", "Stage", "airflow_lookup", "find_stages", "reference"]

#: a quoted reference inside code text (a KFP component's embedded ``secrets={...}``)
_QUOTED = re.compile(r"""(['"])([a-z][a-z0-9-]*://[^'"\s]+)\1""")
_SKIP_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "__pycache__", ".tox"})
_AIRFLOW_VARIABLE = {("Variable", "get")}
_AIRFLOW_CONNECTION = {("Connection", "get"), ("BaseHook", "get_connection")}


@dataclass
class Stage:
    """One unit of work and the references it uses: a DAG's task, a pipeline's component..."""

    name: str  #: ``DAG/TASK``, ``PIPELINE/TASK``, ``FLOW/TASK``, ``FLOW``, ``manifest``...
    kind: str  #: ``dag/task``, ``pipeline/component``, ``flow/task``, ``flow``, ``manifest``...
    source: str
    references: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    #: Prefect blocks its code loads by name: ``(block type slug, document name)``
    blocks: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class AirflowMapping:
    """The parts of a ``LeaselineBackend``'s ``backend_kwargs`` that map keys to references."""

    variables_ref: str | None = None
    connections_ref: str | None = None
    connections: Mapping[str, Any] = field(default_factory=dict)
    variables_lookup_pattern: str | None = None
    connections_lookup_pattern: str | None = None

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> AirflowMapping:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in kwargs.items() if k in known})

    def variable(self, key: str) -> list[str]:
        return self._templated(self.variables_ref, "key", key, self.variables_lookup_pattern)

    def connection(self, conn_id: str) -> list[str]:
        spec = self.connections.get(conn_id)
        if isinstance(spec, str):
            return [spec]
        if isinstance(spec, Mapping):
            return [v for v in spec.values() if isinstance(v, str) and is_reference(v)]
        return self._templated(
            self.connections_ref, "conn_id", conn_id, self.connections_lookup_pattern
        )

    @staticmethod
    def _templated(template: str | None, name: str, key: str, pattern: str | None) -> list[str]:
        if template is None or (pattern is not None and re.match(pattern, key) is None):
            return []
        return [template.replace("{" + name + "}", key)]


def find_stages(
    paths: Iterable[str | Path],
    *,
    airflow: AirflowMapping | None = None,
    stores: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
) -> list[Stage]:
    """Every stage found under ``paths`` (files or folders), in a stable order.

    ``stores``: the configured store names; ``aliases``: the config's, for manifests' values.
    """
    from ._python import python_stages  # it imports Stage and reference from here

    known = set(stores)
    stages: list[Stage] = []
    code: list[Path] = []
    for path in _files(paths):
        suffix = path.suffix
        if suffix == ".py":
            code.append(path)
        elif suffix in {".yaml", ".yml"}:
            stages += _kfp_spec(path, known)
        elif suffix in {".toml", ".json"}:
            stages += _toml_or_manifest(path, known, aliases or {})
    stages = python_stages(code, airflow or AirflowMapping(), known) + stages
    return [s for s in stages if s.references or s.notes or s.blocks]


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise ConfigError(f"plan: {path}: no such file or folder")
        if path.is_file():
            yield path
            continue
        for child in sorted(path.rglob("*")):
            parts = child.relative_to(path).parts
            if child.is_file() and not any(p in _SKIP_DIRS or p.startswith(".") for p in parts):
                yield child


def reference(text: str, known: set[str]) -> str | None:
    """``text`` when it is a valid reference to a store, by the rule ``leaseline run`` applies to
    the environment (:func:`leaseline._refs.environment_references`): a configured store or a
    store type, never a URL (``https://``, ``redis://:PASSWORD@host``...), which may hold a
    password this command must not print."""
    if "://" not in text or not environment_references(
        {"ref": text}, configured=known, store_names=known_types
    ):
        return None
    try:
        ref = parse(text)
    except InvalidReference:
        return None
    if "@" in ref.locator.split("/", 1)[0]:
        return None  # user:password@host: a URL shape, not a path in a store
    return str(ref)


def airflow_lookup(call: ast.Call, stage: Stage, airflow: AirflowMapping) -> None:
    """``Variable.get("k")`` / ``Connection.get("c")`` / ``BaseHook.get_connection("c")`` in
    ``call``: the references ``airflow`` maps it to, on ``stage`` (else a note)."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
        return
    pair = (func.value.id, func.attr)
    if pair not in _AIRFLOW_VARIABLE | _AIRFLOW_CONNECTION:
        return
    arg = call.args[0] if call.args else None
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        stage.notes.append(f"line {call.lineno}: {func.value.id}.{func.attr} with a computed key")
        return
    what = "Variable" if pair in _AIRFLOW_VARIABLE else "Connection"
    refs = airflow.variable(arg.value) if what == "Variable" else airflow.connection(arg.value)
    if not refs:
        stage.notes.append(
            f"{what} '{arg.value}' maps to no reference: pass the LeaselineBackend's "
            "backend_kwargs (--airflow-backend-kwargs) or it is not served by leaseline"
        )
    for ref in refs:
        try:
            stage.references.add(str(parse(ref)))
        except InvalidReference as exc:
            stage.notes.append(f"{what} '{arg.value}': {str(exc).splitlines()[0]}")


# -- compiled KFP pipeline specs ---------------------------------------------------------------


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _refs_in(node: Any, known: set[str]) -> set[str]:
    found: set[str] = set()
    for text in _strings(node):
        whole = reference(text, known)
        if whole:
            found.add(whole)
            continue
        for match in _QUOTED.finditer(text):
            ref = reference(match.group(2), known)
            if ref:
                found.add(ref)
    return found


def _kfp_spec(path: Path, known: set[str]) -> list[Stage]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except (yaml.YAMLError, UnicodeDecodeError):
        return []
    stages: list[Stage] = []
    for doc in docs:
        if not isinstance(doc, dict) or "deploymentSpec" not in doc:
            continue
        pipeline = str((doc.get("pipelineInfo") or {}).get("name") or path.stem)
        components = doc.get("components") or {}
        label_tasks: dict[str, list[str]] = {}
        dags = [(doc.get("root") or {}).get("dag") or {}]
        dags += [(c or {}).get("dag") or {} for c in components.values()]
        for dag in dags:
            for task_name, task in (dag.get("tasks") or {}).items():
                ref = ((task or {}).get("componentRef") or {}).get("name", "")
                label = (components.get(ref) or {}).get("executorLabel")
                if label:
                    label_tasks.setdefault(label, []).append(str(task_name))
        executors = (doc.get("deploymentSpec") or {}).get("executors") or {}
        for label, executor in executors.items():
            refs = _refs_in(executor, known)
            for task_name in label_tasks.get(label, [label]):
                stage = Stage(f"{pipeline}/{task_name}", "pipeline/component", str(path))
                stage.references |= refs
                stages.append(stage)
        rest = {k: v for k, v in doc.items() if k != "deploymentSpec"}
        refs = _refs_in(rest, known)
        if refs:
            stage = Stage(pipeline, "pipeline", str(path), refs)
            stage.notes.append("references outside any component (parameters?)")
            stages.append(stage)
    return stages


# -- leaseline.toml aliases and `leaseline run` manifests ---------------------------------------


def _toml_or_manifest(path: Path, known: set[str], aliases: Mapping[str, str]) -> list[Stage]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        raw = path.read_bytes()
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError, OSError):
        return []
    if not isinstance(data, dict):
        return []
    if path.name == "pyproject.toml":
        data = (data.get("tool") or {}).get("leaseline") or {}
    if isinstance(data.get("aliases"), dict):
        stage = Stage(f"{path.stem}.aliases", "aliases", str(path))
        for name, target in data["aliases"].items():
            ref = reference(str(target), known)
            if ref:
                stage.references.add(ref)
            else:
                stage.notes.append(f"alias {name}: not a reference")
        return [stage]
    if set(data) & {"env", "files"} and not set(data) - {"env", "files", "on_change"}:
        from ..runtime.run import load_manifest

        plan = load_manifest(str(path))
        stage = Stage(path.stem, "manifest", str(path))
        for name, ref in [*plan.env.items(), *plan.files.items()]:
            target = aliases.get(ref.partition("#")[0]) if "://" not in ref else None
            if target is not None:  # an alias: what `leaseline run` would resolve
                with contextlib.suppress(InvalidReference):
                    ref = str(parse(ref, aliases=aliases))
            parsed = reference(ref, known | {"file", "env"})
            if parsed:
                stage.references.add(parsed)
            else:
                stage.notes.append(f"{name}: not a reference to a store, nor a configured alias")
        return [stage]
    return []
