"""Leases scoped to a Prefect flow run, and the Prefect context of audit events.

A lease that a block takes inside a flow run is held through :meth:`Resolver.lease` on a
per-run exit stack; :func:`revoke_leases`, a flow state hook, closes the stack when the run
completes, fails, crashes or is cancelled. The hook is attached to the running flow the first
time a block takes a lease in it, so flows need no extra code. Where no hook can run in the
process (a runner kills a crashed flow run's process), the core revokes at interpreter exit and
on SIGTERM, and the per-task child token's TTL bounds the rest.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any

from leaseline import Resolver, SecretRef

__all__ = ["audit_context", "hold_for_flow_run", "revoke_leases"]

_HOOK_LISTS = (
    "on_completion_hooks",
    "on_failure_hooks",
    "on_crashed_hooks",
    "on_cancellation_hooks",
)


class _Run:
    __slots__ = ("held", "stack")

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.held: set[tuple[int, str]] = set()


_runs: dict[str, _Run] = {}
_lock = threading.Lock()


def _flow_run() -> tuple[str, Any] | None:
    """(flow-run id, flow) of the flow run this code runs in, or ``None``."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return str(ctx.flow_run.id), ctx.flow


def hold_for_flow_run(resolver: Resolver, ref: SecretRef) -> bool:
    """Hold ``ref``'s lease until the current flow run ends; ``False`` outside a flow run.

    Idempotent per (resolver, reference, flow run): a reference read ten times in one run is
    held once, so it is revoked once.
    """
    current = _flow_run()
    if current is None:
        return False
    run_id, flow = current
    key = (id(resolver), ref.key)
    with _lock:
        run = _runs.setdefault(run_id, _Run())
        if key in run.held:
            return True
        run.held.add(key)
    run.stack.enter_context(resolver.lease(ref))
    if flow is not None:
        _attach(flow)
    return True


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
    with _lock:
        run = _runs.pop(str(flow_run.id), None)
    if run is not None:
        run.stack.close()


def held_leases(flow_run_id: str) -> list[str]:
    """References whose leases are held for ``flow_run_id`` (tests and diagnostics)."""
    with _lock:
        run = _runs.get(str(flow_run_id))
        return sorted(key for _, key in run.held) if run else []


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
