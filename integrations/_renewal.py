"""When to renew, and a small timer thread that does it.

A lease is renewed in the window [1/3, 2/3] of its TTL (2/3 at the latest: a failed renewal still
has a third of the TTL to retry in). Inside the window the time is random, and of two random
candidates the scheduler takes the one whose second has fewer jobs already ("two choices"), so
10,000 leases issued in one burst come back as a flat renewal rate, not as a storm. The clock
is injected: the scheduler can be driven by hand (``run_due(now)``) in simulations without a thread or a sleep.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["JITTER", "Scheduler", "renewal_time", "renewal_window"]

log = logging.getLogger("leaseline.renewal")

#: fraction of the 2/3-TTL point by which a renewal may come early (down to 1/3 of the TTL)
JITTER = 0.5


def renewal_window(issued_at: float, ttl: float) -> tuple[float, float]:
    """The (earliest, latest) time to renew a lease of ``ttl`` seconds issued at ``issued_at``."""
    latest = issued_at + ttl * (2.0 / 3.0)
    return latest - ttl * (2.0 / 3.0) * JITTER, latest


def renewal_time(issued_at: float, ttl: float, rng: Callable[[], float] = random.random) -> float:
    """A random time in the renewal window (without the scheduler's load balancing)."""
    earliest, latest = renewal_window(issued_at, ttl)
    return earliest + (latest - earliest) * rng()


class Scheduler:
    """Run callables at wall-clock times, one job per key (scheduling a key again replaces it)."""

    def __init__(self, clock: Callable[[], float] = time.time, name: str = "leaseline-renewer"):
        self._clock = clock
        self._name = name
        self._heap: list[tuple[float, int, Hashable]] = []
        self._jobs: dict[Hashable, tuple[int, Callable[[], None], int]] = {}
        self._load: dict[int, int] = {}  # jobs per whole second, for two-choice placement
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def at(self, when: float, key: Hashable, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            self._forget(key)
            seq = next(self._seq)
            self._jobs[key] = (seq, fn, int(when))
            self._load[int(when)] = self._load.get(int(when), 0) + 1
            heapq.heappush(self._heap, (when, seq, key))
            self._cond.notify()

    def spread(
        self,
        earliest: float,
        latest: float,
        key: Hashable,
        fn: Callable[[], None],
        rng: Callable[[], float] = random.random,
    ) -> float:
        """Schedule ``fn`` in [earliest, latest], at the less loaded of two random seconds."""
        span = max(0.0, latest - earliest)
        a, b = earliest + span * rng(), earliest + span * rng()
        with self._cond:
            when = a if self._load.get(int(a), 0) <= self._load.get(int(b), 0) else b
        self.at(when, key, fn)
        return when

    def _forget(self, key: Hashable) -> None:
        job = self._jobs.pop(key, None)
        if job is not None:
            second = job[2]
            left = self._load.get(second, 1) - 1
            if left > 0:
                self._load[second] = left
            else:
                self._load.pop(second, None)

    def cancel(self, key: Hashable) -> None:
        with self._cond:
            self._forget(key)

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def next_due(self) -> float | None:
        with self._cond:
            self._drop_cancelled()
            return self._heap[0][0] if self._heap else None

    def _drop_cancelled(self) -> None:
        while self._heap:
            _, seq, key = self._heap[0]
            job = self._jobs.get(key)
            if job is not None and job[0] == seq:
                return
            heapq.heappop(self._heap)

    def _pop_due(self, now: float) -> list[Callable[[], None]]:
        due = []
        with self._cond:
            while True:
                self._drop_cancelled()
                if not self._heap or self._heap[0][0] > now:
                    break
                _, _, key = heapq.heappop(self._heap)
                fn = self._jobs[key][1]
                self._forget(key)
                due.append(fn)
        return due

    def run_due(self, now: float | None = None) -> int:
        """Run every job due at ``now``; returns how many ran. Job errors are logged, not raised."""
        due = self._pop_due(self._clock() if now is None else now)
        for fn in due:
            try:
                fn()
            except Exception:
                log.exception("leaseline: a scheduled renewal failed")
        return len(due)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._drop_cancelled()
                wait = None if not self._heap else max(0.0, self._heap[0][0] - self._clock())
                if wait is None or wait > 0:
                    self._cond.wait(timeout=None if wait is None else min(wait, 60.0))
                    continue
            self.run_due()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._load.clear()
            self._heap.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
