"""The example pipeline, compiled and run with KFP's local SubprocessRunner against real servers.

The tasks are separate Python processes started by ``kfp.local``; they inherit VAULT_ADDR and
VAULT_TOKEN from this test's environment (the token never enters the spec) and resolve their
references through the real OpenBao; the database step connects to the real PostgreSQL with a
dynamic credential issued for the step.
"""

# No ``from __future__ import annotations``: KFP reads the component functions' annotations.
import hashlib
import importlib.util
import json
import secrets
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import hvac.exceptions
import leaseline.kfp
import pytest
from kfp import dsl, local

from tests.servers import DatabaseEngine, OpenBao, Postgres

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kfp" / "pipeline.py"

pytestmark = pytest.mark.timeout(300)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("leaseline_kfp_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def live_leases(bao: OpenBao, prefix: str) -> set[str]:
    try:
        listed = bao.client().sys.list_leases(prefix=prefix.rstrip("/") + "/")
    except hvac.exceptions.InvalidPath:
        return set()
    return set(listed["data"]["keys"])


def creds_reads(bao: OpenBao, path: str) -> int:
    return sum(
        1
        for line in bao.audit_lines()
        if line.get("type") == "response" and line.get("request", {}).get("path") == path
    )


@pytest.fixture
def local_runner(tmp_path: Path, canary: Any) -> Path:
    root = tmp_path / "pipeline_root"
    canary.watch(root)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(tmp_path / "workspace"),
    )
    return root


def test_example_pipeline_compiles_and_runs_with_values_only_at_run_time(
    vault_env: OpenBao,
    vault_db: DatabaseEngine,
    postgres: Postgres,
    local_runner: Path,
    tmp_path: Path,
    canary: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    example = load_example()
    llm_path = f"llm/openai-{secrets.token_hex(4)}"
    pipeline = example.build_pipeline(
        packaged=False,
        vault_addr=vault_env.addr,
        llm_key=f"vault://secret/{llm_path}#api_key",
    )
    spec = tmp_path / "pipeline.yaml"
    leaseline.kfp.compile(pipeline, spec)

    # The key is created only now, after compiling: the task can only have it from run time.
    key = canary.new()
    vault_env.client().secrets.kv.v2.create_or_update_secret(
        path=llm_path, secret={"api_key": key}, mount_point="secret"
    )
    text = spec.read_text()
    assert "vault://database/creds/reader#password" in text
    assert f"vault://secret/{llm_path}#api_key" in text
    assert vault_env.root_token not in text
    assert key not in text
    leaseline.kfp.check_spec(spec)

    leases_before = live_leases(vault_env, vault_db.creds_path())
    roles_before = postgres.roles()
    reads_before = creds_reads(vault_env, vault_db.creds_path())

    run = pipeline(db_host=postgres.host, db_port=postgres.port)

    assert run.outputs["rows"] == 3
    assert run.outputs["key_fingerprint"] == (
        "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    )
    model = json.loads(Path(run.outputs["model"].path).read_text())
    assert "fox" in model["vocabulary"]
    # one dynamic credential was issued for the step, and it is gone: lease revoked, role dropped
    assert creds_reads(vault_env, vault_db.creds_path()) == reads_before + 1
    assert live_leases(vault_env, vault_db.creds_path()) <= leases_before
    assert {r for r in postgres.roles() if r.startswith("v-")} <= roles_before
    out = capfd.readouterr().out
    assert "prepared 3 rows" in out and "trained on 3 rows" in out
    assert key not in out
    # the canary plugin also searches the captured output and everything under pipeline_root


def print_and_log(message: str) -> str:
    import logging
    import os
    import sys

    value = os.environ["LLM_KEY"]
    print(f"{message}: {value}")
    print(f"to stderr: {value}", file=sys.stderr)
    logging.getLogger("some.child.logger").warning("logged: %s", value)
    return "done"


def return_the_key() -> str:
    import os

    return os.environ["LLM_KEY"]


def write_the_key(out: dsl.OutputPath(str)) -> None:  # type: ignore[valid-type]
    import os

    with open(out, "w") as f:
        f.write("token=" + os.environ["LLM_KEY"])


def query_after(db_host: str, db_port: int, wait: float) -> int:
    import time

    import psycopg

    time.sleep(wait)  # longer than the credential's TTL: it works only if the lease was renewed
    with psycopg.connect(host=db_host, port=db_port, dbname="postgres", sslmode="disable") as conn:
        return len(conn.execute("SELECT id FROM public.training_rows").fetchall())


def test_a_dynamic_credential_is_renewed_during_a_long_step(
    vault_env: OpenBao, vault_db: DatabaseEngine, postgres: Postgres, local_runner: Path
) -> None:
    role = vault_db.create_db_role("kfp-short", default_ttl="3s", max_ttl="1h")
    creds = f"vault://{vault_db.creds_path(role)}"
    comp = leaseline.kfp.component(
        query_after,
        base_image="python:3.11",
        install_leaseline=False,
        install_kfp_package=False,
        secrets={"PGUSER": f"{creds}#username", "PGPASSWORD": f"{creds}#password"},
    )
    renewals_before = _renewals(vault_env)
    task = comp(db_host=postgres.host, db_port=postgres.port, wait=5.0)
    assert task.output == 3
    assert _renewals(vault_env) > renewals_before
    assert live_leases(vault_env, vault_db.creds_path(role)) == set()


def _renewals(bao: OpenBao) -> int:
    return sum(
        1
        for line in bao.audit_lines()
        if line.get("type") == "response"
        and line.get("request", {}).get("path") in {"sys/leases/renew", "sys/renew"}
    )


def _kv(bao: OpenBao, value: str) -> str:
    path = f"llm/k-{secrets.token_hex(4)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": value}, mount_point="secret"
    )
    return f"vault://secret/{path}#api_key"


def _component(fn: Any, ref: str) -> Any:
    return leaseline.kfp.component(
        fn,
        base_image="python:3.11",
        install_leaseline=False,
        install_kfp_package=False,
        secrets={"LLM_KEY": ref},
    )


def test_values_printed_or_logged_inside_the_task_are_masked(
    vault_env: OpenBao, local_runner: Path, canary: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    key = canary.new()
    task = _component(print_and_log, _kv(vault_env, key))(message="the key is")
    assert task.output == "done"
    out = capfd.readouterr().out
    assert "the key is: ***" in out
    assert "to stderr: ***" in out
    assert "logged: ***" in out
    assert key not in out


@pytest.mark.parametrize("fn", [return_the_key, write_the_key], ids=["return", "output-file"])
def test_a_resolved_value_is_refused_as_an_output(
    fn: Any,
    vault_env: OpenBao,
    local_runner: Path,
    canary: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    key = canary.new()
    with pytest.raises(RuntimeError, match="FAILURE"):
        _component(fn, _kv(vault_env, key))()
    out = capfd.readouterr().out
    assert "SecretOutputRefused" in out
    assert key not in out
