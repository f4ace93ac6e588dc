"""Rotators: what makes a new version of a secret, and the registry of them.

A :class:`Rotator` has four steps, called by :func:`leaseline.rotation.rotate`: ``stage`` (make
the new version without making it current, when the store allows), ``promote`` (make it
current), ``retire`` (after the grace window, end the old one) and ``abort`` (undo a stage).

Most rotators only need to *mint* values: subclass :class:`ProviderRotator` and implement
``mint`` (and ``revoke`` to end the old key at the provider, e.g. an LLM vendor's key API); the
store side is chosen by what the reference's store can do (its capability protocols in
:mod:`leaseline.backends`; rotation calls only their public methods):

- :class:`~leaseline.backends.Versioned` (Vault KV v2, memory): KV has no pending state, so the staged value is held by the run (and the
  provider) until verified; promote writes it as a new version with check-and-set on the version
  current at stage time; the previous version stays readable (``?version=N``) through the grace
  window; retire soft-deletes it.
- :class:`~leaseline.backends.StagingLabels` (Secrets Manager): ``PutSecretValue`` labelled
  ``AWSPENDING``; promote moves ``AWSCURRENT`` (the
  old version becomes ``AWSPREVIOUS``); retire removes ``AWSPREVIOUS``; abort removes
  ``AWSPENDING``.

Built in: ``random-token``, ``random-password`` (provider rotators minting random values) and
``vault-db-static-role`` (:class:`~leaseline.backends.StaticRoles`, Vault database static roles:
``rotate-role`` changes the password in the database in place). Third parties register more through the ``leaseline.rotators``
entry-point group (``name = "module:Class"``) or :func:`register_rotator`.

Why ~430 lines: the built-in rotators, one per store capability (versions, staging labels,
static roles), and the entry-point registry for users' own.
"""

from __future__ import annotations

import importlib
import json
import re
import secrets
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .. import masking
from .._exceptions import ConfigError, LeaselineError
from .._refs import SecretRef
from .._secret import Secret
from ..backends import Backend, StagingLabels, StaticRoles, Version, Versioned
from ._policy import Policy, iso_time

if TYPE_CHECKING:
    from .._resolver import Resolver

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Job",
    "ProviderRotator",
    "RandomPassword",
    "RandomToken",
    "Rotator",
    "Staged",
    "VaultDatabaseStaticRole",
    "known_rotators",
    "make_rotator",
    "register_rotator",
]

ENTRY_POINT_GROUP = "leaseline.rotators"
BUILTIN: Mapping[str, str] = {
    "random-password": "leaseline.rotation._rotators:RandomPassword",
    "random-token": "leaseline.rotation._rotators:RandomToken",
    "vault-db-static-role": "leaseline.rotation._rotators:VaultDatabaseStaticRole",
}
#: kinds whose values only a provider can mint: no random default
_PROVIDER_KINDS = frozenset({"llm-api-key", "cloud-credential"})
_STATIC_CREDS = re.compile(r"(?P<mount>.+)/static-creds/(?P<role>[^/]+)")
_SECRETISH = ("password", "token", "api_key", "secret", "key")


@dataclass(frozen=True)
class Job:
    """One rotation: the resolver, the reference and its policy."""

    resolver: Resolver
    ref: SecretRef
    policy: Policy

    @property
    def backend(self) -> Backend:
        return self.resolver.backend(self.ref.store)

    @property
    def options(self) -> Mapping[str, Any]:
        return self.policy.options

    def fields_to_rotate(self, current: Mapping[str, str]) -> list[str]:
        """``options.fields``, else the reference's ``#field``, else the only field, else the
        secret-looking ones (password, token, api_key...)."""
        listed = self.options.get("fields")
        if listed:
            return [str(f) for f in listed]
        if self.ref.field:
            return [self.ref.field]
        if len(current) == 1:
            return list(current)
        found = [f for f in current if f.lower() in _SECRETISH]
        if not found:
            raise ConfigError(
                f"{self.ref.key} has fields {', '.join(sorted(current))}: say which to rotate "
                "with options = { fields = [...] } in its policy, or match REF#FIELD"
            )
        return found


@dataclass
class Staged:
    """A staged new version. ``secret`` holds its values, for the verify hook."""

    secret: Secret
    previous_version: str | None = None
    version: str | None = None
    #: the store replaced the credential in place (no pending state, nothing to roll back)
    in_place: bool = False
    previous: Secret | None = None
    state: dict[str, Any] = field(default_factory=dict)


class Rotator(Protocol):
    """Makes new versions of secrets. Instances are built with the policy's ``options``."""

    name: ClassVar[str]

    def stage(self, job: Job) -> Staged: ...
    def promote(self, job: Job, staged: Staged) -> None: ...
    def retire(self, job: Job, staged: Staged) -> None: ...
    def abort(self, job: Job, staged: Staged) -> None: ...


# -- provider rotators and the stores they write to -----------------------------------------------


class ProviderRotator:
    """A rotator that mints values (subclass: ``mint``, optionally ``revoke``/``discard``); the
    store side (KV v2 versions, Secrets Manager staging labels) is chosen by store type."""

    name: ClassVar[str] = "provider"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def mint(self, job: Job, current: Secret) -> dict[str, str]:
        """New values for ``job.fields_to_rotate(...)`` (the other fields are kept)."""
        raise NotImplementedError

    def revoke(self, job: Job, old: Secret) -> None:
        """End the old credential at the provider (called at retire, after the grace window)."""

    def discard(self, job: Job, new: Secret) -> None:
        """Undo a mint whose verification failed (e.g. delete the new key at the provider)."""

    def stage(self, job: Job) -> Staged:
        store = _store_for(job)
        fields, version, state = store.current(job)
        current = Secret(job.ref.key, fields, version=version)
        minted = self.mint(job, current)
        masking.masker().add_many(minted.values())
        new_fields = {**fields, **minted}
        staged = Staged(
            Secret(job.ref.key, new_fields),
            previous_version=version,
            previous=current,
            state=state,
        )
        store.stage(job, staged)
        return staged

    def promote(self, job: Job, staged: Staged) -> None:
        _store_for(job).promote(job, staged)

    def retire(self, job: Job, staged: Staged) -> None:
        if staged.previous is not None:
            self.revoke(job, staged.previous)
        _store_for(job).retire(job, staged)

    def abort(self, job: Job, staged: Staged) -> None:
        try:
            self.discard(job, staged.secret)
        finally:
            _store_for(job).abort(job, staged)


class RandomToken(ProviderRotator):
    """URL-safe random tokens (``options.bytes``, default 32): shared secrets you own."""

    name: ClassVar[str] = "random-token"

    def mint(self, job: Job, current: Secret) -> dict[str, str]:
        size = int(self.options.get("bytes", 32))
        fields = job.fields_to_rotate(_reveal_all(current))
        return {f: secrets.token_urlsafe(size) for f in fields}


class RandomPassword(ProviderRotator):
    """Random passwords of letters and digits (``options.length``, default 32)."""

    name: ClassVar[str] = "random-password"
    alphabet: ClassVar[str] = string.ascii_letters + string.digits

    def mint(self, job: Job, current: Secret) -> dict[str, str]:
        length = max(12, int(self.options.get("length", 32)))
        fields = job.fields_to_rotate(_reveal_all(current))
        return {f: self._password(length) for f in fields}

    def _password(self, length: int) -> str:
        while True:
            value = "".join(secrets.choice(self.alphabet) for _ in range(length))
            if (
                any(c.islower() for c in value)
                and any(c.isupper() for c in value)
                and any(c.isdigit() for c in value)
            ):
                return value


class _Store(Protocol):
    def current(self, job: Job) -> tuple[dict[str, str], str | None, dict[str, Any]]: ...
    def stage(self, job: Job, staged: Staged) -> None: ...
    def promote(self, job: Job, staged: Staged) -> None: ...
    def retire(self, job: Job, staged: Staged) -> None: ...
    def abort(self, job: Job, staged: Staged) -> None: ...


def _store_for(job: Job) -> _Store:
    backend = job.backend
    if isinstance(backend, StagingLabels):
        return _Staging(backend)
    if isinstance(backend, Versioned):
        return _Versions(backend)
    raise ConfigError(
        f"{job.ref.key}: rotators that mint values write new versions to stores that keep "
        f"versions or staging labels (vault KV v2, aws-sm, memory), not '{backend.type}' "
        f"(store '{backend.name}')"
    )


def _reveal_all(secret: Secret) -> dict[str, str]:
    return {f: secret.reveal(f) for f in secret.fields}


class _Versions:
    """Versioned stores (KV v2): promote writes a version (check-and-set on the version current
    at stage time), retire deletes the old one."""

    def __init__(self, backend: Versioned) -> None:
        self.backend = backend

    def current(self, job: Job) -> tuple[dict[str, str], str | None, dict[str, Any]]:
        now: Version = self.backend.read_version(job.ref)
        fields = dict(now.fields)
        return fields, now.version, {"raw": dict(now.raw), "read": fields}

    def stage(self, job: Job, staged: Staged) -> None:
        pass  # held in memory (and by the provider) until verified: KV has no pending state

    def promote(self, job: Job, staged: Staged) -> None:
        data = dict(staged.state.get("raw", {}))  # untouched fields keep their JSON types
        read = staged.state.get("read", {})
        for name, value in _reveal_all(staged.secret).items():
            if read.get(name) != value:
                data[name] = value
        staged.version = self.backend.write_version(job.ref, data, expected=staged.previous_version)

    def retire(self, job: Job, staged: Staged) -> None:
        if staged.previous_version is None:
            return
        self.backend.retire_version(
            job.ref, staged.previous_version, destroy=bool(job.options.get("destroy_previous"))
        )

    def abort(self, job: Job, staged: Staged) -> None:
        pass  # nothing was written


class _Staging:
    """Staging labels (Secrets Manager): AWSPENDING -> AWSCURRENT (old -> AWSPREVIOUS)."""

    def __init__(self, backend: StagingLabels) -> None:
        self.backend = backend

    def current(self, job: Job) -> tuple[dict[str, str], str | None, dict[str, Any]]:
        now = self.backend.read_version(job.ref)
        return dict(now.fields), now.version, {"json": now.json}

    def stage(self, job: Job, staged: Staged) -> None:
        values = _reveal_all(staged.secret)
        text = json.dumps(values) if staged.state.get("json", True) else values["value"]
        staged.version = token = self.backend.stage_version(job.ref, text)
        # verify what the store holds under AWSPENDING, not what we meant to write
        pending = self.backend.read_version(job.ref, "AWSPENDING")
        staged.secret = Secret(job.ref.key, pending.fields, version=token)

    def promote(self, job: Job, staged: Staged) -> None:
        assert staged.version is not None
        self.backend.promote_version(job.ref, staged.version, staged.previous_version)

    def retire(self, job: Job, staged: Staged) -> None:
        if not job.options.get("keep_previous") and staged.previous_version is not None:
            self.backend.unlabel_version(job.ref, "AWSPREVIOUS", staged.previous_version)

    def abort(self, job: Job, staged: Staged) -> None:
        if staged.version is not None:
            self.backend.unlabel_version(job.ref, "AWSPENDING", staged.version)


# -- Vault database static roles ------------------------------------------------------------------


class VaultDatabaseStaticRole:
    """``vault://MOUNT/static-creds/ROLE``: ``POST MOUNT/rotate-role/ROLE``, then read the new
    password. Vault changes it in the database at once, so there is no pending state and no
    grace window: readers ride through with ``retry_on_rotation``."""

    name: ClassVar[str] = "vault-db-static-role"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def stage(self, job: Job) -> Staged:
        backend = job.backend
        if not isinstance(backend, StaticRoles) or not _STATIC_CREDS.fullmatch(
            job.ref.locator.strip("/")
        ):
            raise ConfigError(
                f"{job.ref.key}: vault-db-static-role rotates vault://MOUNT/static-creds/ROLE"
            )
        before = backend.metadata(job.ref).updated_at
        backend.rotate_static_role(job.ref)
        result = backend.read(job.ref)
        masking.masker().add_many(result.fields.values())
        after = backend.metadata(job.ref).updated_at
        return Staged(
            Secret(job.ref.key, result.fields, version=_stamp(after)),
            previous_version=_stamp(before),
            version=_stamp(after),
            in_place=True,
        )

    def promote(self, job: Job, staged: Staged) -> None:
        pass  # current since rotate-role

    def retire(self, job: Job, staged: Staged) -> None:
        pass  # the old password stopped working at rotate-role

    def abort(self, job: Job, staged: Staged) -> None:
        pass  # rotate-role cannot be undone; the engine says so


def _stamp(ts: float | None) -> str | None:
    return iso_time(ts)


# -- the registry ---------------------------------------------------------------------------------

_lock = threading.Lock()
_registered: dict[str, str | type[Any]] = {}
_entry_points_loaded = False


def register_rotator(name: str, target: str | type[Any]) -> None:
    """Make rotator ``name`` available, from a class or a ``"module:Class"`` string."""
    with _lock:
        _registered[name] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registered.setdefault(ep.name, ep.value)
    _entry_points_loaded = True


def known_rotators() -> list[str]:
    """Built-in, registered and entry-point rotator names."""
    with _lock:
        _load_entry_points()
        return sorted(set(BUILTIN) | set(_registered))


def _rotator_class(name: str) -> type[Any]:
    with _lock:
        _load_entry_points()
        target = _registered.get(name) or BUILTIN.get(name)
    if target is None:
        raise ConfigError(
            f"unknown rotator '{name}'; known: {', '.join(known_rotators())} (third-party "
            f"rotators register in the '{ENTRY_POINT_GROUP}' entry-point group)"
        )
    if isinstance(target, type):
        return target
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise LeaselineError(
            f"rotator '{name}' ({target}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(cls, type):
        raise LeaselineError(f"rotator '{name}' ({target}) is not a class")
    return cls


def make_rotator(name: str | None, ref: SecretRef, policy: Policy, resolver: Resolver) -> Rotator:
    """The rotator for ``ref``: ``name``, else by reference (static roles) and kind."""
    if name is None:
        if _STATIC_CREDS.fullmatch(ref.locator.strip("/")):
            name = "vault-db-static-role"
        elif policy.kind.name in _PROVIDER_KINDS:
            raise ConfigError(
                f"{ref.key} is a {policy.kind.name}: only its provider can mint a new one; set "
                f'rotator = "..." in its policy (known: {", ".join(known_rotators())})'
            )
        else:
            name = "random-password"
    instance: Rotator = _rotator_class(name)(policy.options)
    return instance
