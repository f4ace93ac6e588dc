"""Module-level conveniences on a default resolver, and ``retry_on_rotation``."""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

from ._refs import SecretRef
from ._resolver import LeaseHandle, Resolver, RotateCallback
from ._retry import Backoff
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

_default: Resolver | None = None
_default_lock = threading.Lock()


def default_resolver() -> Resolver:
    """The process's shared resolver, built from the environment and config on first use."""
    global _default
    resolver = _default
    if resolver is None:
        with _default_lock:
            if _default is None:
                _default = Resolver()
            resolver = _default
    return resolver


def _reset_default() -> None:
    """Close and forget the default resolver (tests; after a config change)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


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
        return self._owner._rejected(exc)


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
    """

    def __init__(
        self,
        ref: str | SecretRef,
        on: tuple[type[BaseException], ...] = (PermissionError,),
        *,
        window: float = 30.0,
        resolver: Resolver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ref = ref
        self.on = on
        self.window = window
        self._resolver = resolver
        self._sleep = sleep
        self._monotonic = monotonic
        self._start: float | None = None
        self._delays = Backoff(0.05, 2.0, random.random)
        self._done = False

    @property
    def resolver(self) -> Resolver:
        return self._resolver or default_resolver()

    def _rejected(self, exc: BaseException) -> bool:
        """Invalidate and wait; ``True`` when another attempt is allowed."""
        now = self._monotonic()
        if self._start is None:
            self._start = now
        self.resolver.invalidate(self.ref)
        if now - self._start > self.window:
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
                resolver=self._resolver,
                sleep=self._sleep,
                monotonic=self._monotonic,
            )
            while True:
                try:
                    return fn(*args, **kwargs)
                except state.on as exc:
                    if not state._rejected(exc):
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
            self.resolver.invalidate(self.ref)
