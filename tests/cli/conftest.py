"""Helpers for driving the real `leaseline` binary in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.servers import OpenBao

LEASELINE = [sys.executable, "-m", "leaseline.cli"]


def leaseline(
    *args: str, env: dict[str, str], timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run `leaseline ARGS...`; output captured as text (never printed by the test)."""
    return subprocess.run(
        [*LEASELINE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_", "LEASELINE_", "AWS_"))
    }
    env["LEASELINE_LEDGER__PATH"] = str(tmp_path / "ledger.jsonl")
    env["LEASELINE_CONFIG"] = str(tmp_path / "absent-leaseline.toml")
    (tmp_path / "absent-leaseline.toml").write_text("")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def cli_env(openbao: OpenBao, tmp_path: Path) -> dict[str, str]:
    """Environment for a `leaseline` subprocess pointed at the session's OpenBao."""
    env = base_env(tmp_path)
    env.update(openbao.env())
    return env


def put_kv(bao: OpenBao, path: str, fields: dict[str, str]) -> str:
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret=fields, mount_point="secret"
    )
    return f"vault://secret/{path}"


def lease_alive(bao: OpenBao, lease_id: str) -> bool:
    import hvac.exceptions

    try:
        bao.client().write_data("sys/leases/lookup", data={"lease_id": lease_id})
    except hvac.exceptions.InvalidRequest:
        return False
    return True


def accessor_alive(bao: OpenBao, accessor: str) -> bool:
    import hvac.exceptions

    try:
        bao.client().auth.token.lookup_accessor(accessor)
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return False
    return True


def ledger_ids(path: Path) -> tuple[list[str], list[str]]:
    """(lease ids, token accessors) recorded in a ledger file."""
    import json

    leases, tokens = [], []
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("op") == "lease":
                leases.append(r["lease_id"])
            elif r.get("op") == "token":
                tokens.append(r["accessor"])
    return leases, tokens


def py(code: str) -> Sequence[str]:
    return [sys.executable, "-c", code]
