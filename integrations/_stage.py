"""Which pipeline stage is running: the identity a per-stage child token is made for.

A stage is named as ``leaseline plan`` prints it (``DAG_ID/TASK_ID``, ``PIPELINE/TASK``,
``FLOW/TASK``). It comes from :func:`stage` (a context manager setting a context variable, so
it follows the code into ``asyncio`` tasks and ``contextvars.copy_context()``), else from the
providers the adapters add (Airflow's running task instance, Prefect's task run), else there is
none.

For a store with ``child_token = { policies = "per-stage" }`` the resolver reads a reference
made inside a stage as a :class:`StagedRef`: the same reference plus the stage, cached apart
(a value read under stage A is never served to stage B, which the server would have refused),
and read by the store with that stage's own token, whose only policy is :func:`policy_name`
of the stage (the one ``leaseline plan --apply`` writes).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._refs import SecretRef

__all__ = [
    "StagedRef",
    "add_stage_provider",
    "base_key",
    "current_stage",
    "policy_name",
    "stage",
    "staged",
]

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "leaseline_stage", default=None
)
_providers: list[Callable[[], str | None]] = []
_MARK = " (stage "


def policy_name(stage: str) -> str:
    """``leaseline-STAGE`` with every character a policy name may not hold turned into ``-``.

    >>> policy_name("llm_training/train")
    'leaseline-llm_training-train'
    """
    safe = "".join(c if c.isalnum() or c in "_-" else "-" for c in stage)
    return "leaseline-" + safe.strip("-")


def _check(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValueError(
            "leaseline.stage: expected a stage name such as 'DAG_ID/TASK_ID' (as `leaseline "
            "plan` prints it), 1 to 200 characters"
        )
    if any(not c.isprintable() for c in name) or _MARK in name:
        raise ValueError("leaseline.stage: a stage name holds no control characters")
    return name


@contextlib.contextmanager
def stage(name: str) -> Iterator[str]:
    """Run the block as pipeline stage ``name`` (``DAG_ID/TASK_ID``, ``PIPELINE/TASK``...).

    Reads from a store with ``child_token = { policies = "per-stage" }`` made inside the block
    use that stage's own child token. The adapters (Airflow, Prefect, KFP) set it themselves.
    Raises :class:`ValueError` for an empty name or one with control characters.

    >>> with leaseline.stage("llm_training/train"):  # doctest: +SKIP
    ...     key = leaseline.resolve("vault://secret/llm/openai#api_key")
    """
    token = _current.set(_check(name))
    try:
        yield name
    finally:
        _current.reset(token)


def add_stage_provider(provider: Callable[[], str | None]) -> None:
    """Ask ``provider()`` for the stage when no :func:`stage` block is open (adapters: the
    orchestrator's running task); a provider that raises or returns ``None`` is skipped."""
    if provider not in _providers:
        _providers.append(provider)


def current_stage() -> str | None:
    """The running stage: the innermost :func:`stage` block, else a provider's, else ``None``."""
    name = _current.get()
    if name is not None:
        return name
    for provider in _providers:
        try:
            found = provider()
        except Exception:  # an orchestrator's context that is not there: no stage from it
            continue
        if found:
            return found
    return None


@dataclass(frozen=True, slots=True)
class StagedRef(SecretRef):
    """A reference read inside ``stage``: cached apart from the same reference elsewhere."""

    stage: str = ""

    def __post_init__(self) -> None:
        SecretRef.__post_init__(self)
        object.__setattr__(self, "_key", f"{self._key}{_MARK}{self.stage})")

    def without_field(self) -> StagedRef:
        return StagedRef(self.store, self.locator, self.options, None, self.stage)

    def with_field(self, name: str | None) -> StagedRef:
        return StagedRef(self.store, self.locator, self.options, name, self.stage)


def staged(ref: SecretRef, name: str) -> StagedRef:
    """``ref`` as read inside stage ``name``."""
    return StagedRef(ref.store, ref.locator, ref.options, ref.field, name)


def base_key(key: str) -> str:
    """A cache key without its stage: the reference's own key (``vault://PATH?OPTIONS``)."""
    return key.split(_MARK, 1)[0]
