"""Shared helpers for the audit tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leaseline.backends.memory import MemoryBackend


@pytest.fixture(autouse=True)
def _fresh_memory_store() -> Iterator[None]:
    MemoryBackend.reset()
    yield
    MemoryBackend.reset()


def events(path: Path) -> list[dict[str, Any]]:
    """The parsed lines of an audit file (torn lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
