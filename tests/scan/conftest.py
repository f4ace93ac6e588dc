from __future__ import annotations

from pathlib import Path

import pytest
from leaseline.scan.corpus import Planted, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Planted]]:
    """The synthetic corpus, generated now (values from ``secrets``, never committed)."""
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root)


def fragments(value: str) -> list[str]:
    """The value and its 12-character pieces: none may appear in any output."""
    return [value] + [value[i : i + 12] for i in range(0, max(len(value) - 12, 0) + 1, 6)]


def assert_no_values(text: str, planted: list[Planted]) -> None:
    for item in planted:
        for piece in fragments(item.value.strip()):
            if piece.strip("-\n ") and "PRIVATE KEY" not in piece and len(piece) >= 12:
                assert piece not in text, f"{item.family} value from {item.path} leaked"
