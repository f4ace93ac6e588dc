"""The backend contract as types: :class:`Backend`, and one protocol per optional capability.

Every store implements :class:`Backend`. What only some stores can do is a capability protocol
of its own; callers test it with ``isinstance(backend, Listable)`` (the protocols are
``runtime_checkable``) and then call typed methods, instead of probing attribute names:

=====================  ==============================================  ==========================
capability             what it adds                                    stores
=====================  ==============================================  ==========================
:class:`Reauthenticating`  ``reauthenticate()`` after a denial          vault, aws-*, azure-kv
:class:`RefreshDefault`    ``default_refresh_after`` for static secrets file, env
:class:`Listable`          ``list(prefix)`` for rotation's glob policies vault, aws-sm, memory
:class:`HealthChecked`     ``check()`` for ``leaseline doctor``         vault
:class:`PerTaskTokens`     the per-task token's accessor, revocation   vault
                           by accessor (``leases revoke --orphaned``)
:class:`StageTokens`      per-stage child tokens (``child_token.      vault
                           policies``): accessors for the ledger
:class:`ServedLeases`      leases a node's proxy owns: not recorded,   vault (``proxy = true``)
                           renewed or revoked by the process
:class:`Versioned`         read/write/retire versions (rotation)       vault (KV v2), memory
:class:`StagingLabels`     pending/current/previous labels (rotation)  aws-sm
:class:`StaticRoles`       rotate a credential in place (rotation)     vault (database)
=====================  ==============================================  ==========================

A store's own token renewal (Vault's login and per-task tokens) goes through the resolver's
renewal scheduler: see :attr:`BackendContext.renew_token <leaseline.backends.BackendContext>`.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._refs import SecretRef
from .._secret import Lease

__all__ = [
    "Backend",
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
    "Version",
    "Versioned",
]


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
class Version:
    """One version of a secret as rotation reads it: its fields as strings (as ``read`` gives
    them), the store's version id, and ``raw``: the stored document with its own JSON types, so
    a rewrite keeps the fields it does not change exactly as they were."""

    fields: Mapping[str, str]
    version: str | None
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: the stored text is a JSON object (Secrets Manager: a plain string has one field, value)
    json: bool = True


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


# -- capabilities the resolver and the CLI use ---------------------------------------------------


@runtime_checkable
class Reauthenticating(Protocol):
    """A store that can log in again: the resolver calls it once after a denial, then retries."""

    def reauthenticate(self) -> None: ...


@runtime_checkable
class RefreshDefault(Protocol):
    """A store whose static secrets change often enough to re-read them sooner than
    ``[resolver] refresh_after`` (files, the environment), unless the store sets its own."""

    default_refresh_after: ClassVar[float]


@runtime_checkable
class Listable(Protocol):
    """A store that lists its secrets (rotation checks enumerate glob policies with it)."""

    def list(self, prefix: str) -> builtins.list[str]:
        """Locators one level under ``prefix``; sub-folders end with ``/``."""
        ...


@runtime_checkable
class HealthChecked(Protocol):
    """A store that reports reachability, authentication and its token's TTL for ``doctor``."""

    def check(self) -> dict[str, Any]:
        """Keys ``reachable``, ``authenticated``, ``token_ttl`` (bool/None, text), optionally
        ``detail``, ``version``, ``policies``."""
        ...


@runtime_checkable
class PerTaskTokens(Protocol):
    """A store that reads under a per-task token: its accessor goes to the lease ledger, and
    ``leaseline leases revoke --orphaned`` revokes a killed run's token by accessor."""

    @property
    def child_token_accessor(self) -> str | None:
        """The accessor of the per-task token in use (``None``: none was made)."""
        ...

    @property
    def addr(self) -> str:
        """Where the store is, for the ledger (no credential in it)."""
        ...

    def revoke_accessor(self, accessor: str) -> None:
        """Revoke the token with ``accessor`` and every lease under it; gone is fine."""
        ...


@runtime_checkable
class StageTokens(Protocol):
    """A store that reads inside a pipeline stage under that stage's own child token
    (``leaseline._stage``): the resolver caches its reads per stage; the accessors go to the
    lease ledger like the per-task token's."""

    @property
    def per_stage(self) -> bool:
        """Reads inside a stage use the stage's token (``child_token.policies`` is set)."""
        ...

    @property
    def stage_token_accessors(self) -> dict[str, str]:
        """Stage -> accessor of each per-stage token this process made and has not revoked
        (after :meth:`close`: those whose revocation failed)."""
        ...


@runtime_checkable
class ServedLeases(Protocol):
    """A store that can be served leases owned by someone else (a node's ``leaseline proxy``):
    the lease ledger does not record them, so no cleanup revokes what other processes share."""

    @property
    def leases_served(self) -> bool:
        """Leases read now belong to the proxy, not to this process."""
        ...


# -- capabilities rotation uses ------------------------------------------------------------------


@runtime_checkable
class Versioned(Protocol):
    """A store that keeps versions: rotation writes the new value as the next version, the
    previous one stays readable through the grace window, then is retired."""

    def read_version(self, ref: SecretRef) -> Version:
        """The current version; :class:`~leaseline.ConfigError` when ``ref``'s path keeps no
        versions (e.g. a KV v1 mount)."""
        ...

    def write_version(
        self, ref: SecretRef, data: Mapping[str, Any], *, expected: str | None
    ) -> str | None:
        """Write ``data`` as the next version, only if ``expected`` is still the current one
        (check-and-set); returns the new version id."""
        ...

    def retire_version(self, ref: SecretRef, version: str, *, destroy: bool = False) -> None:
        """Make ``version`` unreadable (soft delete; ``destroy``: for good)."""
        ...


@runtime_checkable
class StagingLabels(Protocol):
    """A store with staging labels (Secrets Manager): a new version is written pending, verified,
    then labelled current; the old one keeps a previous label until retired."""

    def read_version(self, ref: SecretRef, stage: str = ...) -> Version:
        """The version labelled ``stage`` (default: current)."""
        ...

    def stage_version(self, ref: SecretRef, text: str) -> str:
        """Write ``text`` as a new pending version; returns its version id."""
        ...

    def promote_version(self, ref: SecretRef, version: str, previous: str | None) -> None:
        """Label ``version`` current (``previous`` becomes the previous one) and unlabel it
        pending."""
        ...

    def unlabel_version(self, ref: SecretRef, stage: str, version: str) -> None:
        """Remove label ``stage`` from ``version`` (abort: pending; retire: previous)."""
        ...


@runtime_checkable
class StaticRoles(Protocol):
    """A store that changes a credential in place (Vault database static roles)."""

    def rotate_static_role(self, ref: SecretRef) -> None:
        """Have the store change the credential ``ref`` names now (the old one stops working at
        once); :class:`~leaseline.ConfigError` when ``ref`` names no such credential."""
        ...
