"""Helpers for the container/CI tests: a private directory for rendered secret files.

Rendered files hold secret values by design, so they are written to a private tmpfs directory
(not ``tmp_path``, which the canary plugin scans for leaks) and removed after each test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def secret_dir() -> Iterator[Path]:
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="leaseline-render-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a `leaseline` subprocess: no inherited store/CI settings, own ledger."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_", "LEASELINE_", "AWS_", "GITHUB_", "ACTIONS_", "CI"))
    }
    env["LEASELINE_LEDGER__PATH"] = str(tmp_path / "ledger.jsonl")
    env["LEASELINE_CONFIG"] = str(tmp_path / "absent-leaseline.toml")
    (tmp_path / "absent-leaseline.toml").write_text("")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env
