"""Per-stage child tokens for the example KFP pipeline, run with ``kfp.local`` against OpenBao.

The compiled spec is planned and applied (``leaseline plan --apply``: one policy per task and the
token role); the tasks then run under a worker token that reads nothing itself, and each task's
reads are made with a token holding only its own stage's policy (OpenBao's audit log). A copy
whose ``train`` reads the database credential of ``prepare-data`` is refused by the server; the
other task still succeeds.
"""

# No ``from __future__ import annotations``: KFP reads the component functions' annotations.
import secrets
from pathlib import Path
from typing import Any

import leaseline.kfp
import pytest
from leaseline.plan._server import worker_policy

from tests.cli.conftest import base_env
from tests.cli.conftest import leaseline as leaseline_cli
from tests.kfp.test_local_run import live_leases, load_example, local_runner  # noqa: F401
from tests.servers import DatabaseEngine, OpenBao, Postgres

pytestmark = pytest.mark.timeout(300)

PIPELINE = "leaseline-training"


def requests_for(bao: OpenBao, path: str, since: int) -> list[dict[str, Any]]:
    return [
        line
        for line in bao.audit_lines()[since:]
        if line.get("type") == "request" and line["request"].get("path") == path
    ]


def policies(line: dict[str, Any]) -> list[str]:
    return list(line["auth"]["policies"])


@pytest.fixture
def applied(
    vault_env: OpenBao, vault_db: DatabaseEngine, canary: Any, tmp_path: Path
) -> dict[str, Any]:
    """The example pipeline compiled, planned and applied; its LLM key in OpenBao."""
    example = load_example()
    llm_path = f"llm/openai-{secrets.token_hex(4)}"
    llm_key = f"vault://secret/{llm_path}#api_key"
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path=llm_path, secret={"api_key": canary.new("llm")}, mount_point="secret"
    )
    spec = tmp_path / "pipeline.yaml"
    leaseline.kfp.compile(
        example.build_pipeline(packaged=False, vault_addr=vault_env.addr, llm_key=llm_key), spec
    )
    env = {**base_env(tmp_path), **vault_env.env()}
    result = leaseline_cli("plan", str(spec), "--addr", vault_env.addr, "--apply", env=env)
    assert result.returncode == 0, result.stderr
    for task in ("prepare-data", "train"):
        assert f"# stage {PIPELINE}/{task} " in result.stdout
        assert f"wrote policy leaseline-{PIPELINE}-{task}" in result.stderr
    assert "wrote token role leaseline" in result.stderr
    return {"example": example, "llm_key": llm_key, "llm_path": llm_path}


@pytest.fixture
def worker(vault_env: OpenBao, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tasks' login: may make tokens, reads nothing (inherited by kfp.local's processes)."""
    token = vault_env.token_with_policy(worker_policy("leaseline"))
    monkeypatch.setenv("VAULT_TOKEN", token)
    monkeypatch.setenv("LEASELINE_STORES__VAULT__CHILD_TOKEN__POLICIES", "per-stage")
    return token


def test_after_plan_apply_each_task_reads_with_its_stage_token(
    vault_env: OpenBao,
    vault_db: DatabaseEngine,
    postgres: Postgres,
    applied: dict[str, Any],
    worker: str,
    local_runner: Path,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    seen = len(vault_env.audit_lines())
    pipeline = applied["example"].build_pipeline(
        packaged=False, vault_addr=vault_env.addr, llm_key=applied["llm_key"]
    )
    run = pipeline(db_host=postgres.host, db_port=postgres.port)
    assert run.outputs["rows"] == 3
    creds = requests_for(vault_env, vault_db.creds_path(), seen)
    llm = requests_for(vault_env, f"secret/data/{applied['llm_path']}", seen)
    assert creds and llm
    assert {tuple(policies(x)) for x in creds} == {
        ("default", f"leaseline-{PIPELINE}-prepare-data")
    }
    assert {tuple(policies(x)) for x in llm} == {("default", f"leaseline-{PIPELINE}-train")}
    assert len(requests_for(vault_env, "auth/token/create/leaseline", seen)) == 2
    assert live_leases(vault_env, vault_db.creds_path()) == set()  # revoked with the task
    assert worker not in capfd.readouterr().out


def test_a_task_changed_to_read_another_stages_secret_is_denied_and_the_other_succeeds(
    vault_env: OpenBao,
    vault_db: DatabaseEngine,
    postgres: Postgres,
    applied: dict[str, Any],
    worker: str,
    local_runner: Path,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    creds = f"vault://{vault_db.creds_path()}"
    seen = len(vault_env.audit_lines())
    changed = applied["example"].build_pipeline(
        packaged=False, vault_addr=vault_env.addr, llm_key=f"{creds}#password"
    )
    with pytest.raises(RuntimeError):
        changed(db_host=postgres.host, db_port=postgres.port)
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert "prepared 3 rows" in output  # prepare-data ran, with its own credential
    denial = next(line for line in output.splitlines() if "permission denied on" in line)
    assert f"permission denied on {vault_db.creds_path()}" in denial
    assert f"stage '{PIPELINE}/train'" in denial
    assert f"leaseline-{PIPELINE}-train" in denial
    assert "leaseline plan --apply" in denial
    denied = [
        line
        for line in requests_for(vault_env, vault_db.creds_path(), seen)
        if f"leaseline-{PIPELINE}-train" in policies(line)
    ]
    assert denied  # the server was asked, under train's token, and refused
