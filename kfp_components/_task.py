"""What runs inside a KFP task built by :func:`leaseline.kfp.component` (the task's runtime).

The component's generated code calls :func:`run` around the user's function (compiled specs
import this module by name, ``leaseline.kfp._task``: keep it). The task is one
:class:`leaseline._scope.Scope`:

1. every environment variable whose value is a reference (``vault://...``, any configured store),
   plus the component's ``secrets=`` mapping, is resolved and the variable set to the value;
2. each lease is held (renewed by the resolver) while the function runs;
3. ``sys.stdout``/``sys.stderr`` are masked, so a printed value shows as ``***`` (logging is
   masked by the core);
4. a return value or output file holding a resolved value is refused;
5. at the scope's end the variables are put back to their references and the resolver is
   closed, which revokes every lease and the per-task child token.

The task runs as the pipeline stage ``PIPELINE/TASK`` (as ``leaseline plan`` names it from the
compiled spec; :func:`kfp_stage`), so a store with ``child_token = { policies = "per-stage" }``
reads with that stage's own token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from leaseline import LeaselineError, Resolver, audit, masking
from leaseline._scope import Scope, references_in_env, stage
from leaseline.masking import Masker

__all__ = ["SecretOutputRefused", "kfp_stage", "run"]

log = logging.getLogger("leaseline.kfp")

#: output files larger than this are not scanned for resolved values
MAX_SCAN_BYTES = 64 * 1024 * 1024


# mypy sees ``leaseline`` as Any from this folder (package-dir mapping), hence the ignore.
class SecretOutputRefused(LeaselineError, ValueError):  # type: ignore[misc]
    """A component tried to return (or write as an output) a value it resolved."""


def _output_texts(result: Any) -> Iterable[tuple[str, str]]:
    """(output name, text) for each value a function returned."""
    fields = getattr(result, "_fields", None)
    if isinstance(result, tuple) and fields:
        for name, value in zip(fields, result, strict=False):
            yield name, _as_text(value)
    elif result is not None:
        yield "Output", _as_text(result)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        import json

        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _output_files(kwargs: Mapping[str, Any], annotations: Mapping[str, Any]) -> list[Path]:
    """Files the function was asked to write: ``OutputPath`` arguments and ``Output[...]`` paths."""
    try:
        from kfp.dsl.types import type_annotations
    except ImportError:  # not inside a KFP task
        return []
    paths: list[Path] = []
    for name, value in kwargs.items():
        annotation = annotations.get(name)
        if annotation is None:
            continue
        if isinstance(annotation, type_annotations.OutputPath):
            raw = value
        elif type_annotations.is_artifact_wrapped_in_Output(annotation):
            raw = getattr(value, "path", None)
        else:
            continue
        if isinstance(raw, str) and raw:
            paths.append(Path(raw))
    return paths


def _files_under(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _check_outputs(
    fn_name: str,
    result: Any,
    kwargs: Mapping[str, Any],
    annotations: Mapping[str, Any],
    resolved: Masker,
) -> None:
    for output, text in _output_texts(result):
        if resolved.contains_secret(text):
            raise SecretOutputRefused(
                f"component '{fn_name}' returned a resolved secret value as output '{output}'; "
                "outputs are stored in plain text in the pipeline root and metadata store. "
                "Return a reference (vault://...) or a derived non-secret value instead"
            )
    for name, value in kwargs.items():
        metadata = getattr(value, "metadata", None)
        if isinstance(metadata, dict) and resolved.contains_secret(_as_text(metadata)):
            raise SecretOutputRefused(
                f"component '{fn_name}' put a resolved secret value into the metadata of "
                f"artifact '{name}'; artifact metadata is stored in plain text"
            )
    for root in _output_files(kwargs, annotations):
        for file in _files_under(root):
            try:
                if file.stat().st_size > MAX_SCAN_BYTES:
                    continue
                text = file.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            if resolved.contains_secret(text):
                file.unlink()  # do not leave the value in the pipeline root
                raise SecretOutputRefused(
                    f"component '{fn_name}' wrote a resolved secret value to output file "
                    f"{file} (removed); outputs are stored in plain text in the pipeline root"
                )


def kfp_context(argv: list[str] | None = None) -> dict[str, Any]:
    """The pipeline, run and task of this KFP task, for audit events (``{}`` if unknown).

    A local run (``kfp.local``) sets no environment for this; its executor input names the
    output file ``<pipeline_root>/<pipeline>-<timestamp>/<task>/executor_output.json``.
    """
    import json
    import re

    args = sys.argv if argv is None else argv
    try:
        spec = json.loads(args[args.index("--executor_input") + 1])
        task_root = Path(spec["outputs"]["outputFile"]).parent
    except (ValueError, IndexError, KeyError, TypeError):
        return {}
    run_name = task_root.parent.name
    pipeline = re.sub(r"-\d{4}(-\d{2}){5}-\d{6}$", "", run_name)
    if pipeline == run_name:  # not a local run's layout (a cluster writes /tmp/kfp_outputs)
        return {}
    return {"kfp": {"pipeline": pipeline, "run_id": run_name, "task": task_root.name}}


def kfp_stage(argv: list[str] | None = None) -> str | None:
    """This task as a pipeline stage, ``PIPELINE/TASK``: ``LEASELINE_STAGE`` when set (on a
    cluster: ``task.set_env_variable("LEASELINE_STAGE", ...)``), else a local run's names."""
    explicit = os.environ.get("LEASELINE_STAGE")
    if explicit:
        return explicit
    info = kfp_context(argv).get("kfp") or {}
    pipeline, task = info.get("pipeline"), info.get("task")
    return f"{pipeline}/{task}" if pipeline and task else None


def run(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    secrets: Mapping[str, str] | None = None,
    resolver_factory: Callable[[], Resolver] = Resolver,
) -> Any:
    """Call ``fn`` with every referenced environment variable resolved (see the module doc).

    Raises whatever resolution raises (the reference is named, never a value), and
    :class:`SecretOutputRefused` when ``fn`` returns or writes a resolved value.
    """
    masking.mask_std_streams()  # for the rest of the process: a late traceback is masked too
    audit.add_context_provider(kfp_context)
    resolver = resolver_factory()
    name = kfp_stage()
    with stage(name) if name else contextlib.nullcontext(), Scope("kfp task") as task:
        task.own(resolver)
        wanted = references_in_env(os.environ, resolver)
        wanted.update(secrets or {})
        task.set_env(resolver, wanted)
        if wanted:
            log.info(
                "leaseline: resolved %d reference(s) for this task: %s",
                len(wanted),
                ", ".join(f"{n} <- {r}" for n, r in sorted(wanted.items())),
            )
        result = fn(*args, **kwargs)
        annotations = dict(getattr(fn, "__annotations__", {}))
        name = getattr(fn, "__name__", "component")
        _check_outputs(name, result, kwargs, annotations, task.resolved)
        return result
