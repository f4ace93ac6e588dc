"""Per-stage child tokens in a Prefect flow run (``prefect_test_harness``) against OpenBao.

Each task is the stage ``FLOW_NAME/TASK_NAME`` (code in the flow itself: ``FLOW_NAME``), the
names ``leaseline plan`` gives flow code; a block's read inside a task is made with a token
holding only that stage's policy, and a task reading another task's secret is refused by the
server.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from leaseline import AccessDenied
from leaseline._stage import policy_name
from leaseline.plan._server import Vault, worker_policy
from leaseline.prefect import LeaselineStore, SecretReference
from leaseline.prefect._runs import prefect_stage
from prefect import flow, task

from tests.prefect.conftest import TOKEN_ENV, PrefectServer
from tests.prefect.test_blocks import put_kv
from tests.servers import OpenBao


def test_each_task_reads_with_its_own_stage_token(
    prefect_server: PrefectServer,
    openbao: OpenBao,
    vault_token_env: str,
    canary: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow_name = f"stages-{secrets.token_hex(4)}"
    refs = {}
    for name in ("load", "score"):
        path = f"prefect/{flow_name}/{name}"
        refs[name] = put_kv(openbao, path, value=canary.new(name)) + "#value"
        openbao.client().sys.create_or_update_policy(
            name=policy_name(f"{flow_name}/{name}"),
            policy=f'path "secret/data/{path}" {{\n  capabilities = ["read"]\n}}\n',
        )
    Vault(openbao.addr, openbao.root_token).write_token_role(
        "leaseline", [policy_name(f"{flow_name}/{n}") for n in refs]
    )
    monkeypatch.setenv(TOKEN_ENV, openbao.token_with_policy(worker_policy("leaseline")))
    store = LeaselineStore(
        store_name="vault",
        options={
            "addr": openbao.addr,
            "token": vault_token_env,
            "child_token": {"policies": "per-stage"},
        },
    )

    @task(name="load")
    def load() -> tuple[str | None, int]:
        return prefect_stage(), len(SecretReference(ref=refs["load"], store=store).get())

    @task(name="score")
    def score() -> tuple[str | None, str]:
        try:
            SecretReference(ref=refs["load"], store=store).get()  # not score's
        except AccessDenied as exc:
            return prefect_stage(), str(exc)
        return prefect_stage(), "read"

    @flow(name=flow_name)
    def pipeline() -> dict[str, Any]:
        return {"flow": prefect_stage(), "load": load(), "score": score()}

    seen = len(openbao.audit_lines())
    result = pipeline()
    assert result["flow"] == flow_name
    assert result["load"][0] == f"{flow_name}/load" and result["load"][1] > 0
    stage, denial = result["score"]
    assert stage == f"{flow_name}/score"
    assert f"permission denied on secret/data/prefect/{flow_name}/load" in denial
    assert policy_name(f"{flow_name}/score") in denial
    reads = [
        line
        for line in openbao.audit_lines()[seen:]
        if line.get("type") == "request"
        and line["request"]["path"] == f"secret/data/prefect/{flow_name}/load"
    ]
    assert {tuple(line["auth"]["policies"]) for line in reads} == {
        ("default", policy_name(f"{flow_name}/load")),
        ("default", policy_name(f"{flow_name}/score")),  # asked under score's token: refused
    }


def test_outside_a_flow_run_there_is_no_stage() -> None:
    assert prefect_stage() is None
