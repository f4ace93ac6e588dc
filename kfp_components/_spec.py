"""Check a compiled pipeline spec for secrets; compile only specs that pass.

KFP writes environment variables, parameter defaults and constants into the spec in plain text
and treats parameters as public (kubeflow/pipelines#5913, #7851). :func:`check_spec` fails on:

- a literal that looks like a credential (the detectors of ``leaseline scan``) anywhere: env
  values, parameters, pod annotations, the components' code;
- a value this process has resolved (the process masker), in any encoded form;
- a non-reference value in an environment variable or parameter whose name says
  secret/token/key/password.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from leaseline import InvalidReference, LeaselineError, parse
from leaseline._scope import CREDENTIAL_PATTERNS, looks_like_credential
from leaseline.masking import masker

__all__ = ["Finding", "UnsafeSpec", "check_spec", "check_text", "compile"]

_SECRET_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "token",
        "tokens",
        "key",
        "keys",
        "apikey",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "credential",
        "credentials",
        "creds",
    }
)
#: a name part ending in one of these counts too (PGPASSWORD, HFTOKEN); plain "key" does not
#: (MONKEY), hence the separate list
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "token", "secret", "apikey", "privatekey")
_TEMPLATED = re.compile(r"[{}$%<>]")


@dataclass(frozen=True)
class Finding:
    """One problem: where (task and variable) and what, never the value."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


# mypy sees ``leaseline`` as Any from this folder (package-dir mapping), hence the ignore.
class UnsafeSpec(LeaselineError, ValueError):  # type: ignore[misc]
    """A compiled pipeline spec holds a secret value or a literal where a reference belongs."""

    def __init__(self, source: str, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "\n".join(f"  - {f}" for f in findings)
        super().__init__(
            f"pipeline spec {source} must hold references only, found {len(findings)} "
            f"problem(s):\n{lines}\nstore each value in a secret store and pass its reference "
            "with leaseline.kfp.use_secrets(task, {'VAR': 'vault://...'}) or "
            "leaseline.kfp.component(secrets=...)"
        )


def secret_name(name: str) -> bool:
    """True when a variable or parameter name says it holds a secret.

    >>> secret_name("OPENAI_API_KEY"), secret_name("PGPASSWORD"), secret_name("DATA_PATH")
    (True, True, False)
    """
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    parts = re.split(r"[^a-z0-9]+", snake.lower())
    return any(p in _SECRET_WORDS or p.endswith(_SECRET_SUFFIXES) for p in parts)


def _is_reference(value: str) -> bool:
    try:
        return parse(value).store not in {"http", "https"}
    except InvalidReference:
        return False


def _pattern_hit(text: str) -> str | None:
    """Name of a well-known credential format in ``text`` (templated strings excepted)."""
    for name, pattern in CREDENTIAL_PATTERNS:
        for match in pattern.finditer(text):
            if name.endswith("URL with a password") and _TEMPLATED.search(match.group()):
                continue  # f"postgresql://{user}:{password}@..." in code is not a credential
            return str(name)
    return None


def _walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, (*path, str(i)))
    elif isinstance(node, str):
        yield path, node


class _Names:
    """Executor label -> task names, from every DAG of the spec."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.tasks: dict[str, list[str]] = {}
        for doc in docs:
            components = doc.get("components") or {}
            dags = [(doc.get("root") or {}).get("dag") or {}]
            dags += [(c or {}).get("dag") or {} for c in components.values()]
            for dag in dags:
                for task_name, task in (dag.get("tasks") or {}).items():
                    ref = ((task or {}).get("componentRef") or {}).get("name", "")
                    label = (components.get(ref) or {}).get("executorLabel")
                    if label:
                        shown = ((task or {}).get("taskInfo") or {}).get("name") or task_name
                        self.tasks.setdefault(label, []).append(str(shown))

    def task(self, label: str) -> str:
        names = self.tasks.get(label)
        return f"task '{', '.join(names)}'" if names else f"executor '{label}'"


def _where(path: tuple[str, ...], names: _Names) -> str:
    if "executors" in path:
        i = path.index("executors")
        if i + 1 < len(path):
            return names.task(path[i + 1])
    if "tasks" in path:
        i = path.index("tasks")
        if i + 1 < len(path):
            return f"task '{path[i + 1]}'"
    if path[:1] == ("root",):
        return "the pipeline"
    return "the spec"


def _parameter(path: tuple[str, ...]) -> str | None:
    """The parameter a ``defaultValue`` or ``runtimeValue.constant`` string belongs to."""
    if "parameters" not in path:
        return None
    i = path.index("parameters")
    tail = path[i + 2 :]
    if i + 1 < len(path) and tail[:1] in {("defaultValue",), ("runtimeValue",)}:
        return path[i + 1]
    return None


def check_text(text: str, source: str = "<spec>") -> list[Finding]:
    """Every :class:`Finding` in the YAML/JSON pipeline spec ``text``."""
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    names = _Names(docs)
    resolved = masker()
    findings: list[Finding] = []
    for doc in docs:
        for path, value in _walk(doc):
            where = _where(path, names)
            env_name = None
            if len(path) >= 3 and path[-3] == "env" and path[-1] == "value":
                entry = _lookup(doc, path[:-1])
                env_name = str(entry.get("name", "?")) if isinstance(entry, dict) else "?"
            parameter = _parameter(path)
            if env_name is not None:
                label = f"{where}: environment variable {env_name}"
            elif parameter is not None:
                root_input = path[:1] == ("root",) and "dag" not in path
                role = "pipeline parameter" if root_input else "input parameter"
                label = f"{where}: {role} {parameter}"
            else:
                label = f"{where}: {'.'.join(path)}"
            scalar = env_name is not None or parameter is not None or "annotations" in path
            if resolved.contains_secret(value):
                findings.append(Finding(label, "holds a value this process resolved"))
                continue
            kind: str | None = looks_like_credential(value) if scalar else _pattern_hit(value)
            if kind:
                findings.append(
                    Finding(label, f"holds a literal that looks like a credential ({kind})")
                )
                continue
            named = env_name if env_name is not None else parameter
            if named and secret_name(named) and value and not _is_reference(value):
                findings.append(
                    Finding(
                        label,
                        "its name says it is a secret, but it holds a literal, not a reference",
                    )
                )
    return findings


def _lookup(doc: Any, path: tuple[str, ...]) -> Any:
    node = doc
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def check_spec(path: str | os.PathLike[str]) -> None:
    """Fail when the compiled spec at ``path`` holds a secret or a literal where a reference belongs.

    Raises :class:`UnsafeSpec` listing each finding with its task and variable (never a value).

    >>> leaseline.kfp.check_spec("pipeline.yaml")  # doctest: +SKIP
    """
    findings = check_text(Path(path).read_text(encoding="utf-8"), str(path))
    if findings:
        raise UnsafeSpec(str(path), findings)


def compile(pipeline: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``kfp.compiler.Compiler().compile(pipeline, path)``, then :func:`check_spec`.

    The spec is compiled to a temporary file next to ``path`` and moved into place only when it
    passes; a spec that fails is deleted, so no credential is left on disk. Extra keyword
    arguments go to the KFP compiler (``pipeline_parameters=``, ``pipeline_name=``...).

    Raises :class:`UnsafeSpec`.
    """
    from kfp import compiler

    target = Path(path)
    suffix = target.suffix if target.suffix in {".yaml", ".yml", ".json"} else ".yaml"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent or ".")
    os.close(fd)
    try:
        compiler.Compiler().compile(pipeline, package_path=tmp, **kwargs)
        findings = check_text(Path(tmp).read_text(encoding="utf-8"), str(target))
        if findings:
            raise UnsafeSpec(str(target), findings)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
