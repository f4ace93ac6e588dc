"""Shared helpers for the rotation tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from leaseline.audit import Auditor
from leaseline.backends.memory import MemoryBackend


class ListSink:
    """An audit sink that keeps the lines (the events are checked, never printed)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def close(self) -> None:
        pass

    def events(self, event: str = "rotation") -> list[dict[str, Any]]:
        return [e for e in map(json.loads, self.lines) if e["event"] == event]

    def phases(self, ref: str | None = None) -> list[tuple[str, str]]:
        """(phase, outcome) of the engine's events (the resolver's own ``rotation`` events, for
        a changed value it picked up, have no phase)."""
        return [
            (e["phase"], e["outcome"])
            for e in self.events()
            if "phase" in e and (ref is None or e["ref"] == ref)
        ]


@pytest.fixture
def audit() -> tuple[ListSink, Auditor]:
    sink = ListSink()
    return sink, Auditor(sink, hmac_key=b"test-audit-key")


@pytest.fixture(autouse=True)
def _clean_memory() -> Iterator[None]:
    MemoryBackend.reset()
    yield
    MemoryBackend.reset()
