"""Values and leases. A :class:`Secret` never shows its values except through ``reveal``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from ._exceptions import LeaselineError, SecretNotFound

__all__ = ["Lease", "Secret"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A store's promise about how long a credential lives.

    ``id`` is the store's lease id (``None`` when the store has no revocable lease, e.g. STS);
    times are wall-clock seconds (``time.time()``). ``max_expires_at`` is when renewal stops
    and a fresh credential must be issued.
    """

    id: str | None
    renewable: bool
    ttl: float
    issued_at: float
    expires_at: float
    max_expires_at: float | None = None

    @classmethod
    def starting(
        cls,
        id: str | None,
        ttl: float,
        *,
        renewable: bool = False,
        max_ttl: float | None = None,
        now: float | None = None,
    ) -> Lease:
        now = time.time() if now is None else now
        return cls(
            id=id,
            renewable=renewable,
            ttl=float(ttl),
            issued_at=now,
            expires_at=now + ttl,
            max_expires_at=None if max_ttl is None else now + max_ttl,
        )

    def renewed(self, ttl: float, *, now: float) -> Lease:
        """The lease after a renewal granted ``ttl`` more seconds (capped at ``max_expires_at``)."""
        expires = now + ttl
        if self.max_expires_at is not None:
            expires = min(expires, self.max_expires_at)
        return replace(self, ttl=float(ttl), expires_at=expires)

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


class Secret:
    """The fields of one read, plus its :class:`Lease` (``None`` for static secrets).

    ``repr``, ``str``, ``format``, logging and pickling never show a value::

        Secret(ref='vault://database/creds/reader', fields=['password', 'username'], expires_in=3540s)

    ``reveal()`` is the one way to a value.
    """

    __slots__ = ("_fields", "_ref", "lease", "version")

    def __init__(
        self,
        ref: str,
        fields: Mapping[str, str],
        lease: Lease | None = None,
        *,
        version: str | None = None,
    ) -> None:
        self._ref = ref
        self._fields = dict(fields)
        self.lease = lease
        self.version = version

    @property
    def ref(self) -> str:
        """The reference this secret was read from (without field)."""
        return self._ref

    @property
    def fields(self) -> list[str]:
        """The field names, sorted."""
        return sorted(self._fields)

    def reveal(self, field: str | None = None) -> str:
        """The value of ``field``; with no field, the value of a one-field secret.

        Raises :class:`SecretNotFound` for an unknown field, and :class:`LeaselineError` when
        ``field`` is omitted on a secret with several fields.
        """
        if field is None:
            if len(self._fields) == 1:
                return next(iter(self._fields.values()))
            raise LeaselineError(
                f"{self._ref} has {len(self._fields)} fields ({', '.join(self.fields)}); "
                f"pick one: {self._ref}#{self.fields[0] if self._fields else 'FIELD'}",
                ref=self._ref,
            )
        try:
            return self._fields[field]
        except KeyError:
            raise SecretNotFound(
                f"{self._ref} has no field '{field}'; its fields are: {', '.join(self.fields)}",
                ref=f"{self._ref}#{field}",
            ) from None

    def values(self) -> Iterator[str]:
        """Every field's value (for maskers and auditors; not for display)."""
        return iter(self._fields.values())

    def expires_in(self, now: float | None = None) -> float | None:
        return None if self.lease is None else self.lease.remaining(now)

    def __contains__(self, field: object) -> bool:
        return field in self._fields

    def __repr__(self) -> str:
        extra = ""
        remaining = self.expires_in()
        if remaining is not None:
            extra = f", expires_in={max(0, int(remaining))}s"
        return f"Secret(ref={self._ref!r}, fields={self.fields!r}{extra})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled; pass its reference and resolve it again")

    def __getstate__(self) -> Any:
        raise TypeError("a Secret cannot be pickled; pass its reference and resolve it again")

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __copy__(self) -> Secret:
        return self
