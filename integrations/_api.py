"""Module-level conveniences on a default resolver, and ``retry_on_rotation``."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from ._refs import SecretRef
from ._resolver import LeaseHandle, Resolver, RotateCallback
from ._retry import Backoff
from ._scope import Resolvers
from ._secret import Secret

__all__ = [
    "aget",
    "aresolve",
    "default_resolver",
    "get",
    "lease",
    "resolve",
    "retry_on_rotation",
]

F = TypeVar("F", bound=Callable[..., Any])

#: the process's one default resolver (key ``None``: environment and config file)
_default: Resolvers[None] = Resolvers(lambda _: Resolver())


def default_resolver() -> Resolver:
    """The process's shared resolver, built from the environment and config on first use."""
    return _default.get(None)


def _reset_default() -> None:
    """Close and forget the default resolver (tests; after a config change)."""
    _default.close()


def resolve(ref: str | SecretRef) -> str:
    """Resolve ``ref`` with the default resolver. See :meth:`Resolver.resolve`."""
    return default_resolver().resolve(ref)


def get(ref: str | SecretRef) -> Secret:
    """The :class:`Secret` behind ``ref``, from the default resolver."""
    return default_resolver().get(ref)


async def aresolve(ref: str | SecretRef) -> str:
    """:func:`resolve` for asyncio."""
    return await default_resolver().aresolve(ref)


async def aget(ref: str | SecretRef) -> Secret:
    """:func:`get` for asyncio."""
    return await default_resolver().aget(ref)


def lease(
    ref: str | SecretRef, *, on_rotate: RotateCallback | None = None
) -> AbstractContextManager[LeaseHandle]:
    """Hold ``ref``'s lease on the default resolver. See :meth:`Resolver.lease`."""
    return default_resolver().lease(ref, on_rotate=on_rotate)


class _Attempt:
    def __init__(self, owner: retry_on_rotation) -> None:
        self._owner = owner
        self.failed = False

    def __enter__(self) -> _Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, self._owner.on):
            return False
        self.failed = True
        return self._owner.rejected()


class retry_on_rotation:
    """Ride out a credential rotation: when the consumer's SDK rejects a credential with one of
    the ``on`` exceptions, invalidate ``ref``, re-resolve and retry with backoff, for up to
    ``window`` seconds.

    As a decorator (the function is called again)::

        @leaseline.retry_on_rotation("openai", on=(openai.AuthenticationError,))
        def ask(prompt): return client(leaseline.resolve("openai")).complete(prompt)

    As an iterator of attempts (the block runs again)::

        for attempt in leaseline.retry_on_rotation(ref, on=(AuthError,)):
            with attempt:
                call(leaseline.resolve(ref))

    As a plain ``with`` block: the rejection still propagates, but ``ref`` is invalidated, so the
    caller's next try gets the new credential.

    Where the rejection is not an exception (an HTTP hook that sees a 401), call
    :meth:`rejected` and retry when it returns ``True``. ``ref`` may be several references that
    make up one credential (a username and a password): all are invalidated. ``attempts`` bounds
    the tries (the first included) besides ``window``.
    """

    def __init__(
        self,
        ref: str | SecretRef | Sequence[str | SecretRef],
        on: tuple[type[BaseException], ...] = (PermissionError,),
        *,
        window: float = 30.0,
        attempts: int | None = None,
        resolver: Resolver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ref = ref
        self.refs: tuple[str | SecretRef, ...] = (
            (ref,) if isinstance(ref, str | SecretRef) else tuple(ref)
        )
        self.on = on
        self.window = window
        self.attempts = attempts
        self._failures = 0
        self._resolver = resolver
        self._sleep = sleep
        self._monotonic = monotonic
        self._start: float | None = None
        self._delays = Backoff(0.05, 2.0, random.random)
        self._done = False

    @property
    def resolver(self) -> Resolver:
        return self._resolver or default_resolver()

    def _invalidate(self) -> None:
        resolver = self.resolver
        for ref in self.refs:
            resolver.invalidate(ref)

    def rejected(self) -> bool:
        """The credential was refused: invalidate its references and wait the backoff;
        ``True`` when another attempt is allowed (inside ``window`` and ``attempts``)."""
        now = self._monotonic()
        if self._start is None:
            self._start = now
        self._failures += 1
        self._invalidate()
        if now - self._start > self.window:
            return False
        if self.attempts is not None and self._failures >= self.attempts:
            return False
        self._sleep(next(self._delays))
        return True

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = retry_on_rotation(
                self.ref,
                self.on,
                window=self.window,
                attempts=self.attempts,
                resolver=self._resolver,
                sleep=self._sleep,
                monotonic=self._monotonic,
            )
            while True:
                try:
                    return fn(*args, **kwargs)
                except state.on:
                    if not state.rejected():
                        raise

        return wrapper  # type: ignore[return-value]

    def __iter__(self) -> Iterator[_Attempt]:
        while True:
            attempt = _Attempt(self)
            yield attempt
            if not attempt.failed:
                return

    def __enter__(self) -> retry_on_rotation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, self.on):
            self._invalidate()
