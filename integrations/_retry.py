"""Capped exponential backoff with full jitter, inside a deadline."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from ._exceptions import BackendUnavailable

__all__ = ["Backoff", "call_with_retry"]

T = TypeVar("T")


class Backoff:
    """Full-jitter delays: ``uniform(0, min(cap, base * 2**attempt))``."""

    def __init__(self, base: float, cap: float, rng: Callable[[], float]) -> None:
        self.base: float = base
        self.cap: float = cap
        self.rng: Callable[[], float] = rng
        self.attempt = 0

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        # the exponent stops growing once past the cap (2.0**1024 would overflow)
        ceiling = min(self.cap, self.base * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        return self.rng() * ceiling


def call_with_retry(
    fn: Callable[[], T],
    *,
    deadline: float,
    what: str,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    base: float = 0.1,
    cap: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> T:
    """Call ``fn``; retry transient :class:`BackendUnavailable` errors until ``deadline`` seconds.

    The last error is re-raised with how many attempts were made and how long they took.
    """
    start = monotonic()
    delays = Backoff(base, cap, rng)
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except BackendUnavailable as exc:
            if not exc.transient:
                raise
            delay = next(delays)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            elapsed = monotonic() - start
            if elapsed + delay > deadline:
                raise BackendUnavailable(
                    f"{exc.message} (gave up on {what} after {attempts} attempt"
                    f"{'s' if attempts > 1 else ''} in {elapsed:.1f}s; deadline {deadline:g}s)",
                    ref=exc.ref,
                    store=exc.store,
                    transient=True,
                ) from exc
            sleep(delay)
