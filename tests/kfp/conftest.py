from __future__ import annotations

from collections.abc import Iterator

import pytest
from leaseline.masking import masker


@pytest.fixture(autouse=True)
def _fresh_process_masker() -> Iterator[None]:
    """``check_spec`` flags any value *this process* resolved; values resolved by earlier tests
    in the same pytest process (short ones like a region name) would make it flag honest specs."""
    masker().clear()
    yield
