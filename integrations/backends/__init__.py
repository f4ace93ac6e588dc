"""The backend contract: what a store type implements for the resolver.

A backend reads, renews, revokes and describes secrets; the resolver does caching, single
flight, retries, renewal scheduling, masking and audit. Backend modules import their SDK at the
top; only the registry (``leaseline._registry``) imports them, lazily.

:class:`Backend` is the protocol every store implements; what only some stores can do is a
capability protocol (:class:`Listable`, :class:`Versioned`, :class:`PerTaskTokens`...), tested
with ``isinstance`` (the table is in ``leaseline.backends._protocols``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._protocols import (
    Backend,
    HealthChecked,
    Listable,
    PerTaskTokens,
    ReadResult,
    Reauthenticating,
    RefreshDefault,
    SecretMetadata,
    ServedLeases,
    StageTokens,
    StagingLabels,
    StaticRoles,
    Version,
    Versioned,
)

__all__ = [
    "Backend",
    "BackendClass",
    "BackendContext",
    "HealthChecked",
    "Listable",
    "PerTaskTokens",
    "ReadResult",
    "Reauthenticating",
    "RefreshDefault",
    "SecretMetadata",
    "ServedLeases",
    "StageTokens",
    "StagingLabels",
    "StaticRoles",
    "TokenRenewal",
    "Version",
    "Versioned",
]


class TokenRenewal(Protocol):
    """Schedules the renewal of a store's own token like a lease (``BackendContext.renew_token``).

    ``renew_token(key, issued_at, ttl, renew)``: the resolver calls ``renew()`` inside the
    renewal window of a ``ttl``-second token issued at ``issued_at`` (at 2/3 of its TTL at the
    latest), again on the TTL ``renew()`` returns, and 10 s later when it raises a
    :class:`~leaseline.LeaselineError`; ``renew()`` returning ``None`` ends it (the token was
    replaced). Scheduling ``key`` again replaces the job. A forked child does not inherit the
    jobs: it never renews its parent's tokens.
    """

    def __call__(
        self, key: str, issued_at: float, ttl: float, renew: Callable[[], float | None]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What the resolver hands a backend: its clock and a way to resolve credential references
    in the store's own config (``secret_id = "env://APPROLE_SECRET_ID"``)."""

    clock: Callable[[], float]
    resolve: Callable[[str], str]
    #: the task's expected life, for per-task child tokens
    task_ttl: float | None = None
    #: the resolver's renewal scheduler, for the store's login and per-task tokens. A store
    #: built outside a resolver (``None``) does not renew them: they live their TTL.
    renew_token: TokenRenewal | None = None


#: what the registry holds per store type: a backend class, called as ``cls(name, options,
#: context)`` with the ``[stores.NAME]`` table (less ``type`` and ``refresh_after``)
BackendClass = Callable[[str, Mapping[str, Any], BackendContext], Backend]


def options_of(table: Mapping[str, Any], allowed: set[str], where: str) -> dict[str, Any]:
    """Check a store's config keys against ``allowed``; unknown keys are config errors."""
    from .._exceptions import ConfigError

    unknown = sorted(set(table) - allowed - {"type", "refresh_after"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(unknown)}; "
            f"known options: {', '.join(sorted(allowed | {'type', 'refresh_after'}))}"
        )
    return dict(table)
