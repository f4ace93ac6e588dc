"""The backend contract: what a store type implements for the resolver.

A backend reads, renews, revokes and describes secrets; the resolver does caching, single
flight, retries, renewal scheduling, masking and audit. Backend modules import their SDK at the
top; only the registry (``leaseline._registry``) imports them, lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._refs import SecretRef
from .._secret import Lease

__all__ = ["Backend", "BackendContext", "ReadResult", "SecretMetadata"]


@dataclass(frozen=True, slots=True)
class ReadResult:
    """The outcome of one store read.

    ``lease`` is ``None`` for static secrets (KV, Secrets Manager...): the resolver then applies the
    store's refresh deadline. ``version`` identifies what was read (KV version, AWS version id).
    """

    fields: Mapping[str, str]
    lease: Lease | None = None
    version: str | None = None
    #: who the store says we are (Vault accessor, AWS caller), for audit.
    identity: str | None = None


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    """What rotation needs to know about a secret, from the store's own records."""

    ref: str
    updated_at: float | None = None
    created_at: float | None = None
    version: str | None = None
    expires_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendContext:
    """What the resolver hands a backend: its clock and a way to resolve credential references
    in the store's own config (``secret_id = "env://APPROLE_SECRET_ID"``)."""

    clock: Callable[[], float]
    resolve: Callable[[str], str]
    #: the task's expected life, for per-task child tokens
    task_ttl: float | None = None


@runtime_checkable
class Backend(Protocol):
    """A store type. Implementations translate SDK errors into leaseline's exceptions."""

    #: the store type, e.g. ``"vault"``.
    type: ClassVar[str]
    #: the configured store name, e.g. ``"vault"`` or ``"prod-aws"``.
    name: str

    def read(self, ref: SecretRef) -> ReadResult:
        """Read the secret ``ref`` points at (the field is ignored: all fields are returned)."""
        ...

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease``; returns the lease as the store now sees it."""
        ...

    def revoke(self, lease: Lease) -> None:
        """End ``lease`` now. Revoking an already-gone lease is not an error."""
        ...

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        """Ages and versions for rotation checks."""
        ...

    def close(self) -> None:
        """Release clients and any per-task token (revoking what it still holds)."""
        ...


# Optional methods a backend may add (looked up with getattr, never required):
#   reauthenticate()            log in again; the resolver calls it once after a denial
#   default_refresh_after       class attribute: refresh interval for static secrets of this type
#   list(prefix) -> list[str]   references under a prefix (rotation checks of glob policies)
#   check() -> dict             reachability/auth/TTL for `leaseline doctor`
#   revoke_accessor(accessor)   revoke a per-task token by accessor (`leases revoke --orphaned`)


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
