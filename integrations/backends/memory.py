"""``memory://``: an in-process store for tests and examples, with optional dynamic leases.

Stores with the same name share one table per process::

    MemoryBackend.put("memory", "llm/openai", {"api_key": "..."})
    MemoryBackend.put("memory", "db/creds", {"username": "u"}, ttl=60, renewable=True, max_ttl=300)
"""

from __future__ import annotations

import builtins
import itertools
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._exceptions import AccessDenied, LeaseExpired, LeaselineError, SecretNotFound
from .._refs import SecretRef
from .._secret import Lease
from . import BackendContext, ReadResult, SecretMetadata, Version, options_of

__all__ = ["MemoryBackend"]


@dataclass
class _Item:
    fields: dict[str, str]
    ttl: float | None = None
    renewable: bool = False
    max_ttl: float | None = None
    denied: bool = False
    updated_at: float = 0.0
    version: int = 1
    #: for dynamic items: a function minting fresh fields per read
    mint: Callable[[], dict[str, str]] | None = None


@dataclass
class _Table:
    items: dict[str, _Item] = field(default_factory=dict)
    leases: dict[str, tuple[str, Lease]] = field(default_factory=dict)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryBackend:
    """A dict-backed store. Leases are tracked so tests can see what is still live."""

    type: ClassVar[str] = "memory"
    _tables: ClassVar[dict[str, _Table]] = {}
    _ids = itertools.count(1)

    def __init__(self, name: str, options: Mapping[str, Any], context: BackendContext) -> None:
        options_of(options, set(), f"[stores.{name}]")
        self.name = name
        self._clock = context.clock
        self._table = self._tables.setdefault(name, _Table())

    # -- test helpers -------------------------------------------------------------------------

    @classmethod
    def put(
        cls,
        store: str,
        locator: str,
        fields: Mapping[str, str] | None = None,
        *,
        ttl: float | None = None,
        renewable: bool = False,
        max_ttl: float | None = None,
        denied: bool = False,
        mint: Callable[[], dict[str, str]] | None = None,
        now: float = 0.0,
    ) -> None:
        table = cls._tables.setdefault(store, _Table())
        with table.lock:
            old = table.items.get(locator)
            table.items[locator] = _Item(
                dict(fields or {}),
                ttl,
                renewable,
                max_ttl,
                denied,
                now,
                (old.version + 1) if old else 1,
                mint,
            )

    @classmethod
    def delete(cls, store: str, locator: str) -> None:
        cls._tables.setdefault(store, _Table()).items.pop(locator, None)

    @classmethod
    def live_leases(cls, store: str) -> list[str]:
        return sorted(cls._tables.setdefault(store, _Table()).leases)

    @classmethod
    def reads(cls, store: str) -> int:
        return cls._tables.setdefault(store, _Table()).reads

    @classmethod
    def reset(cls, store: str | None = None) -> None:
        if store is None:
            cls._tables.clear()
        else:
            cls._tables.pop(store, None)

    # -- the backend protocol -----------------------------------------------------------------

    def read(self, ref: SecretRef) -> ReadResult:
        table = self._table
        with table.lock:
            table.reads += 1
            item = table.items.get(ref.locator)
            if item is None:
                raise SecretNotFound(
                    f"no secret at {ref.key} in memory store '{self.name}'", ref=ref.key
                )
            if item.denied:
                raise AccessDenied(
                    f"memory store '{self.name}' denies read on {ref.key}", ref=ref.key
                )
            fields = item.mint() if item.mint else dict(item.fields)
            lease = None
            if item.ttl is not None:
                lease_id = (
                    f"memory/{ref.locator}/{next(self._ids)}"
                    if item.renewable or item.mint
                    else None
                )
                lease = Lease.starting(
                    lease_id,
                    item.ttl,
                    renewable=item.renewable,
                    max_ttl=item.max_ttl,
                    now=self._clock(),
                )
                if lease_id:
                    table.leases[lease_id] = (ref.locator, lease)
            return ReadResult(fields, lease, version=str(item.version))

    def renew(self, lease: Lease) -> Lease:
        with self._table.lock:
            held = self._table.leases.get(lease.id or "")
            if held is None:
                raise LeaseExpired(f"lease {lease.id} is gone from memory store '{self.name}'")
            renewed = lease.renewed(lease.ttl if lease.ttl else 60.0, now=self._clock())
            self._table.leases[lease.id or ""] = (held[0], renewed)
            return renewed

    def revoke(self, lease: Lease) -> None:
        with self._table.lock:
            self._table.leases.pop(lease.id or "", None)

    def metadata(self, ref: SecretRef) -> SecretMetadata:
        item = self._table.items.get(ref.locator)
        if item is None:
            raise SecretNotFound(f"no secret at {ref.key}", ref=ref.key)
        return SecretMetadata(ref.key, updated_at=item.updated_at, version=str(item.version))

    # -- capabilities: Listable, Versioned (rotation) -------------------------------------------

    def list(self, prefix: str) -> builtins.list[str]:
        """Every locator under ``prefix`` (the table is flat: no sub-folders)."""
        with self._table.lock:
            return sorted(k for k in self._table.items if k.startswith(prefix))

    def read_version(self, ref: SecretRef) -> Version:
        result = self.read(ref)
        return Version(dict(result.fields), result.version, raw=dict(result.fields))

    def write_version(
        self, ref: SecretRef, data: Mapping[str, Any], *, expected: str | None
    ) -> str | None:
        """Replace the item with a static one holding ``data``, if its version is still
        ``expected`` (check-and-set)."""
        table = self._table
        with table.lock:
            old = table.items.get(ref.locator)
            current = str(old.version) if old else None
            if current != expected:
                raise LeaselineError(
                    f"{ref.key} changed while it was rotated (version {current}, expected "
                    f"{expected}); nothing was written",
                    ref=ref.key,
                )
            item = _Item(
                {str(k): str(v) for k, v in data.items()},
                updated_at=self._clock(),
                version=old.version + 1 if old else 1,
            )
            table.items[ref.locator] = item
            return str(item.version)

    def retire_version(self, ref: SecretRef, version: str, *, destroy: bool = False) -> None:
        pass  # the table keeps no previous versions

    def close(self) -> None:
        pass


def random_fields(*names: str) -> Callable[[], dict[str, str]]:
    """A ``mint`` function producing fresh random values (dynamic-credential stand-in)."""
    return lambda: {n: secrets.token_urlsafe(16) for n in names}
