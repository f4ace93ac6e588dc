"""`leaseline rotation check|run` as a user runs them: a subprocess, a config file, real OpenBao."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.servers import OpenBao


def leaseline(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leaseline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def setup(openbao: OpenBao, tmp_path: Path, canary: Any) -> tuple[dict[str, str], str]:
    prefix = f"rotcli{secrets.token_hex(4)}"
    client = openbao.client()
    for name in ("llm/openai", "cloud/gcp"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"{prefix}/{name}", secret={"api_key": canary.new()}, mount_point="secret"
        )
    config = tmp_path / "leaseline.toml"
    config.write_text(
        f"""
[rotation]
deploy_marker = "{tmp_path / "deploy.json"}"

[[rotation.policies]]
match = "vault://secret/{prefix}/llm/*"
kind = "llm-api-key"

[[rotation.policies]]
match = "vault://secret/{prefix}/cloud/*"
kind = "cloud-credential"
rotator = "random-token"
"""
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "LEASELINE_"))
    }
    env.update(openbao.env())
    env["LEASELINE_CONFIG"] = str(config)
    env["LEASELINE_LEDGER__PATH"] = str(tmp_path / "ledger.jsonl")
    return env, prefix


def test_check_exit_codes_and_json(openbao: OpenBao, tmp_path: Path, canary: Any) -> None:
    env, prefix = setup(openbao, tmp_path, canary)
    fresh = leaseline("rotation", "check", env=env)
    assert fresh.returncode == 0, fresh.stderr
    assert "llm-api-key" in fresh.stdout and "cloud-credential" in fresh.stdout
    soon = leaseline("rotation", "check", "--now", str(time.time() + 25 * 86400), env=env)
    assert soon.returncode == 0 and "due-soon" in soon.stdout  # warns only
    strict = leaseline(
        "rotation", "check", "--strict", "--now", str(time.time() + 25 * 86400), env=env
    )
    assert strict.returncode == 1
    later = leaseline(
        "rotation", "check", "--format", "json", "--now", str(time.time() + 40 * 86400), env=env
    )
    assert later.returncode == 1, later.stderr
    rows = {row["ref"]: row for row in json.loads(later.stdout)}
    assert {ref: row["status"] for ref, row in rows.items()} == {
        f"vault://secret/{prefix}/cloud/gcp": "overdue",
        f"vault://secret/{prefix}/llm/openai": "ok",
    }
    assert rows[f"vault://secret/{prefix}/cloud/gcp"]["limit"] == "30d"


def test_run_dry_run_then_rotate(openbao: OpenBao, tmp_path: Path, canary: Any) -> None:
    env, prefix = setup(openbao, tmp_path, canary)
    future = str(time.time() + 40 * 86400)
    dry = leaseline("rotation", "run", "--dry-run", "--format", "json", "--now", future, env=env)
    assert dry.returncode == 0, dry.stderr
    assert [(r["ref"], r["outcome"]) for r in json.loads(dry.stdout)] == [
        (f"vault://secret/{prefix}/cloud/gcp", "would-rotate")
    ]
    done = leaseline("rotation", "run", "--now", future, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "rotated" in done.stdout
    meta = openbao.client().secrets.kv.v2.read_secret_metadata(
        path=f"{prefix}/cloud/gcp", mount_point="secret"
    )["data"]
    assert meta["current_version"] == 2
    # the llm key has no rotator of its own: forcing it fails, and says why
    forced = leaseline("rotation", "run", "--ref", f"vault://secret/{prefix}/llm/openai", env=env)
    assert forced.returncode == 1 and "only its provider can mint" in forced.stdout


def test_config_errors_exit_2(openbao: OpenBao, tmp_path: Path, canary: Any) -> None:
    env, _ = setup(openbao, tmp_path, canary)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rotation.policies]]\nmatch = "vault://x/*"\nkind = "nope"\n')
    env["LEASELINE_CONFIG"] = str(bad)
    result = leaseline("rotation", "check", env=env)
    assert result.returncode == 2 and "rotation.policies[0].kind" in result.stderr
    (tmp_path / "empty.toml").write_text("")
    env["LEASELINE_CONFIG"] = str(tmp_path / "empty.toml")
    assert leaseline("rotation", "run", env=env).returncode == 2
