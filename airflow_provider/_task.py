"""A task's life in the core's terms: its :class:`leaseline._scope.Scope`, masking, audit context.

- In a task process, the task is one scope (:data:`tasks`): what the backend reads there is held
  until the task ends; an Airflow listener ends the scope when the task succeeds, fails or skips,
  which also closes the backend's resolvers (every lease and the per-task child token revoked).
  The core's SIGTERM handler is chained in front of the task runner's own (Airflow's task runner
  replaces it when the task starts).
- Every value the resolver hands out is forwarded to ``airflow.sdk.log.mask_secret`` (no name,
  so Airflow masks it whatever the variable or field is called), in every encoded form leaseline
  masks (base64, hex, URL- and JSON-escaped), since Airflow's masker only knows what it is given.
- In a task process, ``sys.stdout`` and ``sys.stderr`` are masked at the source: ``print()``
  output is masked before Airflow's supervisor, its log files or any console sees it.
- Audit events carry the running task's dag_id, task_id, run_id, try number and map index.
- The running task is the pipeline stage (``DAG_ID/TASK_ID``, as ``leaseline plan`` names it):
  a store with ``child_token = { policies = "per-stage" }`` reads with that stage's own token.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from leaseline import audit, masking
from leaseline._scope import Scope, Scopes, add_stage_provider, restore_signal_handlers

__all__ = [
    "airflow_context",
    "airflow_stage",
    "end_task",
    "in_task_process",
    "install",
    "on_lookup",
    "tasks",
]

#: the running task's scope (a task process runs one task at a time; `dags test` runs them
#: one after another, each its own scope)
tasks = Scopes("airflow task")
TASK = "task"

_installed = False
_listening = False
_lock = threading.Lock()
#: the task instance being finalised, for audit events emitted while its leases are revoked
_finishing: Any = None

_TASK_RUNNER = "airflow.sdk.execution_time.task_runner"


def _to_airflow_masker(value: str) -> None:
    from airflow.sdk.log import mask_secret

    for form in sorted(masking.encoded_forms(value)):
        mask_secret(form)  # no name: masked whatever it is called
    _longest_first()


def _longest_first() -> None:
    """Airflow joins its patterns (a set) into one alternation in set order, and ``re`` takes
    the first alternative that matches: an unpadded base64 form could win over the padded one
    and leave its ``==`` behind, depending on the hash seed. Recompile it longest first."""
    import re

    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker

        target = _secrets_masker()
        if target.patterns:
            target.replacer = re.compile("|".join(sorted(target.patterns, key=len, reverse=True)))
    except Exception:  # another Airflow layout: its own order stands
        pass


def airflow_context() -> dict[str, Any]:
    """The running task's identity for audit events (``{}`` outside a task)."""
    ti = _finishing
    if ti is None:
        if _TASK_RUNNER not in sys.modules:
            return {}
        try:
            from airflow.sdk import get_current_context

            ti = get_current_context().get("ti")
        except Exception:  # no task is executing: AIRFLOW_CTX_* (read by the core) stand in
            return {}
    if ti is None:
        return {}
    info = {
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
    }
    map_index = getattr(ti, "map_index", -1)
    if isinstance(map_index, int) and map_index >= 0:
        info["map_index"] = map_index
    return {"airflow": {k: v for k, v in info.items() if v is not None}}


def airflow_stage() -> str | None:
    """The running task as a pipeline stage, ``DAG_ID/TASK_ID`` (``None`` outside a task)."""
    info = airflow_context().get("airflow") or {}
    dag_id, task_id = info.get("dag_id"), info.get("task_id")
    return f"{dag_id}/{task_id}" if dag_id and task_id else None


def install() -> None:
    """Forward values to Airflow's masker, add the audit context and stage providers (once)."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        masking.masker().on_add(_to_airflow_masker)
        audit.add_context_provider(airflow_context)
        add_stage_provider(airflow_stage)
        _installed = True


#: (id of the SUPERVISOR_COMMS object last seen, whether it is a task runner's)
_role: tuple[int, bool] = (0, False)


def in_task_process() -> bool:
    """True in a task process (``airflow tasks run``'s child, ``dags test``/``tasks test``).

    The DAG processor's parsing process and the triggerer also set the task runner's
    ``SUPERVISOR_COMMS``, with decoders for their own messages; a task runner's decodes the
    messages sent to a task (``ToTask``), and `dags test`'s in-process one decodes nothing.
    """
    global _role
    runner = sys.modules.get(_TASK_RUNNER)
    # vars(), not getattr(): a missing module attribute costs a module __getattr__ call
    comms = vars(runner).get("SUPERVISOR_COMMS") if runner is not None else None
    if comms is None:
        return False
    if _role[0] == id(comms):
        return _role[1]
    is_task = True  # the in-process supervisor of `dags test` has no decoder at all
    decoder = getattr(comms, "body_decoder", None)
    if decoder is not None:
        try:
            from airflow.sdk.execution_time.comms import ToTask

            is_task = getattr(decoder, "_type", ToTask) is ToTask
        except ImportError:  # an older task-sdk: SUPERVISOR_COMMS alone marks a task process
            pass
    _role = (id(comms), is_task)
    return is_task


def on_lookup() -> Scope | None:
    """Called before each lookup. In a task process, make sure the task's end is observed and
    its output is masked, and return the task's scope; ``None`` elsewhere."""
    if in_task_process():
        _listen()
        restore_signal_handlers()
        masking.mask_std_streams()
        return tasks.open(TASK)
    return None


def end_task(ti: Any = None) -> None:
    """End the task's scope: every lease it holds (and, through the backend's resolvers it
    owns, every per-task token) is revoked; audit events of it name ``ti``."""
    global _finishing
    _finishing = ti
    try:
        tasks.end(TASK)
    finally:
        _finishing = None


class _Listener:
    """Airflow listener (pluggy hook implementations) revoking a task's leases at its end."""

    def __init__(self) -> None:
        from airflow.sdk._shared.listeners import hookimpl

        def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
            end_task(task_instance)

        def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
            end_task(task_instance)

        def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
            end_task(task_instance)

        hooks: dict[str, Callable[..., None]] = {
            "on_task_instance_success": on_task_instance_success,
            "on_task_instance_failed": on_task_instance_failed,
            "on_task_instance_skipped": on_task_instance_skipped,
        }
        for name, fn in hooks.items():
            setattr(self, name, hookimpl(fn))


_listener: _Listener | None = None


def _listen() -> None:
    global _listening, _listener
    if _listening:
        return
    with _lock:
        if _listening:
            return
        try:
            from airflow.sdk.listener import get_listener_manager

            _listener = _Listener()
            manager: Any = get_listener_manager()
            manager.add_listener(_listener)
        except Exception:  # an older task-sdk: leases are still revoked at process exit
            pass
        _listening = True
