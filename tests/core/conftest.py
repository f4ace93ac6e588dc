from __future__ import annotations

from collections.abc import Iterator

import pytest
from leaseline.backends.memory import MemoryBackend


class FakeClock:
    """Wall-clock stand-in: tests move time by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _fresh_memory_store() -> Iterator[None]:
    MemoryBackend.reset()
    yield
    MemoryBackend.reset()
