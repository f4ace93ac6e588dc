"""Leases scoped to a Prefect flow run, and the Prefect context of audit events.

Each flow run is one :class:`leaseline._scope.Scope` (:data:`runs`, keyed by flow-run id): a
lease a block takes inside the run is held in it, and :func:`revoke_leases`, a flow state hook,
ends it when the run completes, fails, crashes or is cancelled. The hook is attached to the
running flow the first time a block reads in it, so flows need no extra code. Where no
hook can run in the process (a runner kills a crashed flow run's process), the core revokes at
interpreter exit and on SIGTERM, and the per-task child token's TTL bounds the rest.

The running task is the pipeline stage (``FLOW_NAME/TASK_NAME``, or ``FLOW_NAME`` for a read in
the flow itself, as ``leaseline plan`` names it): a store with ``child_token = { policies =
"per-stage" }`` reads with that stage's own token (:func:`prefect_stage`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from leaseline._scope import Scope, Scopes, add_stage_provider

__all__ = [
    "audit_context",
    "held_leases",
    "prefect_stage",
    "revoke_leases",
    "run_scope",
    "runs",
]

_HOOK_LISTS = (
    "on_completion_hooks",
    "on_failure_hooks",
    "on_crashed_hooks",
    "on_cancellation_hooks",
)

#: the open flow runs of this process, by flow-run id
runs = Scopes("prefect flow run")


def _flow_run() -> tuple[str, Any] | None:
    """(flow-run id, flow) of the flow run this code runs in, or ``None``."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return str(ctx.flow_run.id), ctx.flow


def run_scope() -> Scope | None:
    """The scope of the flow run this code runs in (its end hook attached), or ``None``."""
    current = _flow_run()
    if current is None:
        return None
    run_id, flow = current
    if flow is not None:
        _attach(flow)
    return runs.open(run_id)


def _attach(flow: Any) -> None:
    for name in _HOOK_LISTS:
        hooks = getattr(flow, name, None)
        if isinstance(hooks, list) and revoke_leases not in hooks:
            hooks.append(revoke_leases)


def revoke_leases(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect state hook: revoke every lease blocks took in ``flow_run``.

    Attached automatically; it can also be named explicitly, e.g. for a runner that fires
    ``on_crashed`` hooks itself::

        @flow(on_crashed=[revoke_leases])
    """
    runs.end(str(flow_run.id))


def held_leases(flow_run_id: str) -> list[str]:
    """References whose leases are held for ``flow_run_id`` (tests and diagnostics)."""
    scope = runs.get(str(flow_run_id))
    return scope.held() if scope is not None else []


def audit_context() -> Mapping[str, Any]:
    """The Prefect flow run and task run an audit event happens in (an audit context provider)."""
    from prefect.context import FlowRunContext, TaskRunContext

    info: dict[str, Any] = {}
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        info["flow_run_id"] = str(flow_ctx.flow_run.id)
        info["flow_run_name"] = flow_ctx.flow_run.name
        if flow_ctx.flow is not None:
            info["flow_name"] = flow_ctx.flow.name
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        info["task_run_id"] = str(task_ctx.task_run.id)
        info["task_name"] = task_ctx.task.name
        if "flow_run_id" not in info and task_ctx.task_run.flow_run_id is not None:
            info["flow_run_id"] = str(task_ctx.task_run.flow_run_id)
    return {"prefect": info} if info else {}


def prefect_stage() -> str | None:
    """The running Prefect task as a pipeline stage: ``FLOW_NAME/TASK_NAME``, ``FLOW_NAME`` in
    the flow's own code, ``None`` outside a flow run (Prefect is not imported for this)."""
    context = sys.modules.get("prefect.context")
    if context is None:
        return None
    flow_ctx = context.FlowRunContext.get()
    if flow_ctx is None or flow_ctx.flow is None:
        return None
    task_ctx = context.TaskRunContext.get()
    flow = str(flow_ctx.flow.name)
    return f"{flow}/{task_ctx.task.name}" if task_ctx is not None else flow


add_stage_provider(prefect_stage)  # a list append: reads made in a flow run know their stage
