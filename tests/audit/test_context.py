"""Events written inside real orchestrator runs carry the run's context.

- KFP: a pipeline run by ``kfp.local.SubprocessRunner``: each task is its own Python process,
  resolving through the real OpenBao; KFP's local runner sets no environment for this, so the
  task prelude (``leaseline.kfp._task.kfp_context``) reads it from the executor input.
- Prefect: a flow with a task, in a fresh process under ``prefect_test_harness`` (a real Prefect
  API), also resolving through the real OpenBao.
- Airflow: ``tests/airflow/test_integration.py`` asserts dag/task context on the events of an
  ``airflow dags test`` run (with this same auditor); not repeated here (~30 s per run).
"""

# No ``from __future__ import annotations``: KFP reads the component functions' annotations.
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import leaseline.kfp
import pytest
from kfp import dsl, local

from tests.audit.conftest import events
from tests.servers import OpenBao

pytestmark = pytest.mark.timeout(300)


def key_length() -> int:
    import os

    return len(os.environ["LLM_KEY"])


def _kv(bao: OpenBao, value: str) -> str:
    path = f"audit-ctx/{secrets.token_hex(4)}"
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=path, secret={"api_key": value}, mount_point="secret"
    )
    return f"vault://secret/{path}"


def test_kfp_local_run_events_carry_pipeline_run_and_task(
    vault_env: OpenBao,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    canary: Any,
) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("LEASELINE_AUDIT__SINK", f"file://{log}")
    monkeypatch.setenv("LEASELINE_AUDIT__HMAC_KEY", secrets.token_hex(16))
    root = tmp_path / "pipeline_root"
    canary.watch(root)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(tmp_path / "workspace"),
    )
    ref = _kv(vault_env, canary.new())
    comp = leaseline.kfp.component(
        key_length,
        base_image="python:3.11",
        install_leaseline=False,
        install_kfp_package=False,
        secrets={"LLM_KEY": f"{ref}#api_key"},
    )

    @dsl.pipeline(name="audit-context")
    def pipeline() -> int:
        return comp().output

    run = pipeline()
    assert run.output > 0
    mine = [e for e in events(log) if e["ref"] == ref]
    reads = [e for e in mine if e["event"] == "read"]
    assert len(reads) == 1
    ctx = reads[0]["actor"]["kfp"]
    # the task's cache hits, flushed when its resolver closed, are the task's too
    assert all(e["actor"]["kfp"] == ctx for e in mine)
    assert ctx["pipeline"] == "audit-context"
    assert ctx["task"] == "key-length"
    assert ctx["run_id"].startswith("audit-context-")
    assert (root / ctx["run_id"] / "key-length").is_dir()  # the run's own directory
    assert reads[0]["value_hmacs"]["api_key"].startswith("hmac-sha256:")
    assert reads[0]["actor"]["pid"] != os.getpid()  # written by the task's own process


PREFECT_SCRIPT = r"""
import json, sys
from prefect import flow, task
from prefect.testing.utilities import prefect_test_harness
import leaseline.prefect  # registers the Prefect context provider
from leaseline.prefect import LeaselineStore, SecretReference

ref = sys.argv[1]

@task
def read_key() -> int:
    store = LeaselineStore(store_name="audited", store_type="vault",
                           options={"addr": sys.argv[2], "token": "env://AUDIT_CTX_TOKEN"})
    return len(SecretReference(ref=ref, store=store).get())

@flow(name="audit-context")
def audited() -> int:
    return read_key()

with prefect_test_harness():
    state = audited(return_state=True)
    print(json.dumps({"ok": state.is_completed(),
                      "flow_run_id": str(state.state_details.flow_run_id)}))
"""


def test_prefect_flow_events_carry_flow_and_task_run(
    openbao: OpenBao, tmp_path: Path, canary: Any
) -> None:
    log = tmp_path / "audit.jsonl"
    (tmp_path / "empty.toml").write_text("")
    ref = _kv(openbao, canary.new()).replace("vault://", "audited://")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAULT_", "BAO_", "PREFECT_", "LEASELINE_"))
    }
    env.update(
        LEASELINE_AUDIT__SINK=f"file://{log}",
        AUDIT_CTX_TOKEN=openbao.root_token,
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LEASELINE_CONFIG=str(tmp_path / "empty.toml"),
    )
    proc = subprocess.run(
        [sys.executable, "-c", PREFECT_SCRIPT, f"{ref}#api_key", openbao.addr],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"], proc.stderr[-3000:]
    reads = [e for e in events(log) if e["ref"] == ref and e["event"] == "read"]
    assert len(reads) == 1
    ctx = reads[0]["actor"]["prefect"]
    assert ctx["flow_run_id"] == result["flow_run_id"]
    assert ctx["flow_name"] == "audit-context"
    assert ctx["task_name"] == "read_key"
    assert uuid.UUID(ctx["task_run_id"])
    assert openbao.root_token not in log.read_text()
