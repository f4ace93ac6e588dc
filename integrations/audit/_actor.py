"""Who is acting, for audit events: user, host, pid, source address, orchestrator context.

Static parts are computed once per process (again after a fork). Orchestrator adapters add
context providers; the core also reads the orchestrators' environment variables.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["actor", "add_context_provider", "context_of", "source_address", "static_actor"]

_context_providers: list[Callable[[], Mapping[str, Any]]] = []


def add_context_provider(fn: Callable[[], Mapping[str, Any]]) -> None:
    """Orchestrator adapters add a function returning their run context (dag/task/run ids...).

    The function returns e.g. ``{"airflow": {"dag_id": ..., "task_id": ...}}`` or ``{}``; it is
    called for every event (not for cache hits), and an exception in it is ignored.
    """
    if fn not in _context_providers:
        _context_providers.append(fn)


def _env_context() -> dict[str, Any]:
    env = os.environ
    ctx: dict[str, Any] = {}
    airflow = {
        "dag_id": env.get("AIRFLOW_CTX_DAG_ID"),
        "task_id": env.get("AIRFLOW_CTX_TASK_ID"),
        "run_id": env.get("AIRFLOW_CTX_DAG_RUN_ID"),
        "try_number": env.get("AIRFLOW_CTX_TRY_NUMBER"),
    }
    if any(airflow.values()):
        ctx["airflow"] = {k: v for k, v in airflow.items() if v}
    prefect = {
        "flow_run_id": env.get("PREFECT__FLOW_RUN_ID"),
    }
    if any(prefect.values()):
        ctx["prefect"] = {k: v for k, v in prefect.items() if v}
    kfp = {
        "pipeline": env.get("KFP_PIPELINE_NAME"),
        "run_id": env.get("KFP_RUN_ID"),
        "task": env.get("KFP_TASK_NAME") or env.get("KFP_POD_NAME"),
    }
    if any(kfp.values()):
        ctx["kfp"] = {k: v for k, v in kfp.items() if v}
    return ctx


_static: tuple[int, dict[str, Any]] | None = None


def static_actor() -> dict[str, Any]:
    """user, host, pid and the source address: computed once per process (again after fork)."""
    global _static
    pid = os.getpid()
    if _static is None or _static[0] != pid:
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
        _static = (pid, {"user": user, "host": socket.gethostname(), "pid": pid})
    return _static[1]


_address: str | bool | None = False  # False: not looked up yet


def source_address() -> str | None:
    """The host's primary non-loopback address (the one the default route uses), or ``None``.

    Found by "connecting" a UDP socket to a TEST-NET address: no packet is sent.
    """
    global _address
    if _address is False:
        found: str | None = None
        for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.connect((target, 9))
                    addr = str(s.getsockname()[0])
            except OSError:
                continue
            if not addr.startswith(("127.", "::1")) and addr not in {"0.0.0.0", "::"}:
                found = addr
                break
        _address = found
    return _address if isinstance(_address, str) else None


def actor() -> dict[str, Any]:
    """Who is acting: user, host, pid, plus whatever orchestrator context is present."""
    info: dict[str, Any] = dict(static_actor())
    info.update(_env_context())
    for provider in _context_providers:
        try:
            info.update(provider())
        except Exception:  # context is best effort; an event is never lost for it
            pass
    return info


def context_of(who: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The orchestrator part of an actor, hashable: a change of it flushes pending hits."""
    return tuple(
        (k, json.dumps(v, sort_keys=True, default=str))
        for k, v in sorted(who.items())
        if k not in {"user", "host", "pid"}
    )
